/**
 * The audit log's indexer thread (see `_audit_log.ts`): reads the lines the
 * store has written since it last looked and, in one transaction, numbers
 * and hash-chains them into the `audit` table and records how far it got.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { workerData } from "node:worker_threads";
import {
  type ChainedRows,
  type ChainHead,
  chainRows,
  insertChained,
  parseAuditLines,
  type Prepare,
  readHead,
  setAuditLogOffset,
} from "./_audit_rows.ts";
import { CTL, ERR_OFFSET, LOCK_FREE, LOCK_INDEXER, LOCK_STORE } from "./_audit_log.ts";

/** After new lines appear, wait this long for more so one transaction takes many (ms). */
const GATHER_MS = 2;

/**
 * How often this thread checkpoints the WAL when anything was committed (ms).
 * Copying pages back into the database and its fsyncs run here, so they stall
 * neither the kernel's thread nor its writers (PASSIVE takes no lock writers
 * need). The store's own connection only checkpoints as a last resort.
 */
export const CHECKPOINT_EVERY_MS = 100;

/**
 * WAL pages after which this thread makes the WAL start over. A WAL starts
 * again from its beginning only when a write begins while it is checkpointed
 * to its end; a store writing all the time always has appended something
 * since this thread's last checkpoint, so the WAL would grow until the store's
 * own connection checkpointed all of it (measured: 64,000 pages, and stalls of
 * tens of ms on the kernel's thread). With the store's writes held off (it
 * waits for the lock asynchronously; its event loop keeps running), this
 * thread copies what came in since its unlocked pass and writes one page.
 * Each restart holds the lock 5-10 ms (mostly fsyncs, measured): past 16,000
 * pages (64 MB) rather than 4,000, it happens a quarter as often.
 */
export const RESTART_AFTER_PAGES = 16000;

const init = workerData as {
  storePath: string;
  logPath: string;
  synchronous: string;
  sab: SharedArrayBuffer;
};
const ctl = new Int32Array(init.sab, 0, 16);
const err = new Uint8Array(init.sab, ERR_OFFSET);
const decoder = new TextDecoder();
const encoder = new TextEncoder();

const db = new DatabaseSync(init.storePath);
db.exec("PRAGMA busy_timeout = 5000");
db.exec(`PRAGMA synchronous = ${init.synchronous}`);
// This thread checkpoints on its own schedule (see CHECKPOINT_EVERY_MS).
db.exec("PRAGMA wal_autocheckpoint = 0");
const statements = new Map<string, ReturnType<DatabaseSync["prepare"]>>();
const prepare: Prepare = (sql) => {
  let stmt = statements.get(sql);
  if (!stmt) statements.set(sql, stmt = db.prepare(sql));
  return stmt;
};
const log = Deno.openSync(init.logPath, { read: true });

let indexed = 0;
let epoch = 0;
let checkpointedAt = performance.now();
let seenVersion: unknown = null;
const dataVersion = db.prepare("PRAGMA data_version");
const checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
const countRestart = db.prepare(
  `INSERT INTO meta (key, value) VALUES ('wal_restarts', '1')
   ON CONFLICT(key) DO UPDATE SET value = value + 1`,
);

/** Checkpoint if it is time and someone (this thread included) committed since the last one. */
function maybeCheckpoint(committed: boolean): void {
  if (performance.now() - checkpointedAt < CHECKPOINT_EVERY_MS) return;
  const v = (dataVersion.get() as { data_version: unknown }).data_version;
  if (!committed && v === seenVersion) return;
  seenVersion = v;
  const r = checkpoint.get() as { log: number; checkpointed: number };
  if (r.log >= RESTART_AFTER_PAGES) restartWal();
  checkpointedAt = performance.now();
}

/** Checkpoint to the end with the store's writes held off, then write: the WAL starts over. */
function restartWal(): void {
  lock(true);
  try {
    const r = checkpoint.get() as { log: number; checkpointed: number };
    if (r.checkpointed !== r.log) return;
    db.exec("BEGIN IMMEDIATE");
    try {
      countRestart.run();
      db.exec("COMMIT");
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw e;
    }
  } finally {
    unlock();
  }
}

/**
 * Take the write lock. Indexing takes it when the store leaves it free (lines
 * wait a little longer and more of them share a commit; the store waits for
 * the indexer only when it is far behind). `urgent` (a WAL restart) asks the
 * store to leave it: a store writing without pause takes it back within
 * microseconds of each release.
 */
function lock(urgent = false): void {
  if (urgent) Atomics.store(ctl, CTL.WANT, 1);
  while (Atomics.compareExchange(ctl, CTL.LOCK, LOCK_FREE, LOCK_INDEXER) !== LOCK_FREE) {
    Atomics.wait(ctl, CTL.LOCK, LOCK_STORE, 50);
  }
  if (urgent) {
    Atomics.store(ctl, CTL.WANT, 0);
    Atomics.notify(ctl, CTL.WANT);
  }
}

function unlock(): void {
  Atomics.store(ctl, CTL.LOCK, LOCK_FREE);
  Atomics.notify(ctl, CTL.LOCK);
}

/** Log bytes [from, to). */
function readLog(from: number, to: number): Uint8Array {
  const buf = new Uint8Array(to - from);
  log.seekSync(from, Deno.SeekMode.Start);
  let n = 0;
  while (n < buf.length) {
    const r = log.readSync(buf.subarray(n));
    if (r === null) throw new Error(`log ends at ${from + n}, expected ${to}`);
    n += r;
  }
  return buf;
}

/** The log's lines in bytes [from, to), parsed. */
function linesOf(from: number, to: number): ReturnType<typeof parseAuditLines> {
  return parseAuditLines(decoder.decode(readLog(from, to)).slice(0, -1).split("\n"));
}

/**
 * The table's head as this thread last left it (null: not known). Only this
 * thread and the store's transactions (records appended inside one) move it.
 */
let head: ChainHead | null = null;

/**
 * Index everything written so far. The lines are read, parsed, numbered and
 * hashed before the write lock is taken, chained after the head this thread
 * last wrote, so the lock (which the store's writes wait for) is held only
 * for the statements. If the head moved meanwhile (a record appended inside
 * one of the store's transactions), they are chained again under the lock.
 * Lines are read outside the lock only within the current epoch and past
 * what is indexed: the store empties the log only once all of it is indexed.
 */
function indexNew(): void {
  let early: { to: number; rows: ChainedRows } | null = null;
  const known = head;
  if (known && Atomics.load(ctl, CTL.EPOCH) === epoch) {
    const to = Atomics.load(ctl, CTL.WRITTEN);
    if (to > indexed) early = { to, rows: chainRows(known, linesOf(indexed, to)) };
  }
  lock();
  try {
    const e = Atomics.load(ctl, CTL.EPOCH);
    if (e !== epoch) {
      epoch = e;
      indexed = 0;
      early = null;
    }
    const written = Atomics.load(ctl, CTL.WRITTEN);
    if (written <= indexed) return;
    head = null;
    db.exec("BEGIN IMMEDIATE");
    try {
      const cur = readHead(prepare);
      const batches: ChainedRows[] = [];
      if (early && early.rows.after.seq === cur.seq && early.rows.after.hash === cur.hash) {
        batches.push(early.rows);
        if (written > early.to) {
          batches.push(chainRows(early.rows.head, linesOf(early.to, written)));
        }
      } else {
        batches.push(chainRows(cur, linesOf(indexed, written)));
      }
      for (const b of batches) insertChained(prepare, b);
      setAuditLogOffset(prepare, written);
      db.exec("COMMIT");
      head = batches[batches.length - 1].head;
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw e;
    }
    indexed = written;
  } finally {
    unlock();
  }
}

try {
  for (;;) {
    const written = Atomics.load(ctl, CTL.WRITTEN);
    const stopping = Atomics.load(ctl, CTL.STOP) === 1;
    if (written === indexed && Atomics.load(ctl, CTL.EPOCH) === epoch) {
      if (stopping) break;
      maybeCheckpoint(false);
      Atomics.store(ctl, CTL.IDLE, 1);
      Atomics.wait(ctl, CTL.WRITTEN, written, CHECKPOINT_EVERY_MS);
      Atomics.store(ctl, CTL.IDLE, 0);
      continue;
    }
    // Let a few more batches arrive: one transaction per burst, not per batch.
    if (!stopping) Atomics.wait(ctl, CTL.STOP, 0, GATHER_MS);
    try {
      indexNew();
    } catch (e) {
      const msg = encoder.encode(e instanceof Error ? e.message : String(e)).subarray(0, 4000);
      err.set(msg);
      Atomics.store(ctl, CTL.ERR_LEN, msg.length);
      Atomics.notify(ctl, CTL.INDEXED);
      break;
    }
    Atomics.store(ctl, CTL.INDEXED, indexed);
    Atomics.notify(ctl, CTL.INDEXED);
    maybeCheckpoint(true);
  }
} finally {
  log.close();
  db.close();
}
