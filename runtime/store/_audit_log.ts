/**
 * The audit log of a file store: audit appends made outside transactions are
 * written, a batch per write, as JSON lines to `<store>-auditlog` before the
 * callers' promises settle (as durable as a WAL commit at the same
 * `synchronous` level), and an indexer thread with its own SQLite connection
 * numbers, chains and inserts them into the `audit` table a few milliseconds
 * later. The kernel's thread thus pays one write per batch instead of a
 * commit, and the indexer's work runs on another core.
 *
 * - One writer per log: the store holds an exclusive advisory lock on the
 *   file for its lifetime; a second store on the same file (another process,
 *   or a client runtime) finds it locked and commits its appends itself.
 * - The indexer records how far it got (`meta.audit_log_offset`) in the same
 *   transaction as the rows, so on the next open the lines after that offset
 *   (a crash before indexing) are indexed first, exactly once.
 * - Reads of the audit table wait until every line written so far is indexed.
 * - The store's writes and the indexer's transactions take turns through a
 *   lock in shared memory, so the kernel's thread never sleeps in SQLite's
 *   busy handler waiting for its own indexer.
 * - Chain order is indexing order: a record appended inside a transaction
 *   (committed with it) may precede lines written a moment earlier.
 * @module
 */
import { Worker } from "node:worker_threads";
import { LibosError } from "../errors.ts";
import { openLocked, wholeLines } from "./_locked_lines.ts";

/** Control words in shared memory (Int32 indexes). */
export const CTL = {
  /** Log bytes written by the store (always at a line boundary). */
  WRITTEN: 0,
  /** Log bytes indexed by the indexer. */
  INDEXED: 1,
  /** Who may open a write transaction: 0 free, 1 the store's thread, 2 the indexer. */
  LOCK: 2,
  /** Set by the store: index what is written, then exit. */
  STOP: 3,
  /** 1 while the indexer sleeps waiting for lines. */
  IDLE: 4,
  /** Bytes of the last indexing error in the error area (0: none). */
  ERR_LEN: 5,
  /** Bumped when the store truncates the log (offsets restart at 0). */
  EPOCH: 6,
  /**
   * 1 while the indexer waits for the write lock to restart the WAL: the
   * store then leaves it to the indexer (otherwise a store writing without
   * pause takes it back within microseconds of each release).
   */
  WANT: 7,
} as const;

/** Lock holders. */
export const LOCK_FREE = 0;
/** The store's (kernel's) thread holds the write lock. */
export const LOCK_STORE = 1;
/** The indexer holds the write lock. */
export const LOCK_INDEXER = 2;

/** Shared memory: control words, then the last error message. */
export const SAB_BYTES = 64 + 4096;
/** Offset of the error message in the shared memory. */
export const ERR_OFFSET = 64;

/** Unindexed log bytes at most before appends wait for the indexer. */
export const LOG_MAX_BACKLOG = 8 * 1024 * 1024;

/** Default log size at which it is emptied once indexed (offsets are Int32). */
export const LOG_MAX_BYTES = 256 * 1024 * 1024;

type _WaitAsync = (
  a: Int32Array,
  i: number,
  v: number,
) => { async: boolean; value: Promise<string> | string };
const _waitAsync = (Atomics as unknown as { waitAsync: _WaitAsync }).waitAsync;

const _encoder = new TextEncoder();

/**
 * Wait for `index` of `a` to change from `value`. A pending waitAsync does not
 * count as work for every event loop (`deno test` gives up on it), so a timer
 * keeps the process alive meanwhile.
 */
async function _changed(a: Int32Array, index: number, value: number): Promise<void> {
  const r = _waitAsync(a, index, value);
  if (!r.async) return;
  const keepAlive = setInterval(() => {}, 1000);
  try {
    await r.value;
  } finally {
    clearInterval(keepAlive);
  }
}

/** What the log needs from its store (run on the store's own connection). */
export interface AuditLogHooks {
  /** Log bytes already indexed (`meta.audit_log_offset`, 0 if none). */
  indexedOffset(): number;
  /** Index `lines` in one transaction that also records `endOffset`. */
  index(lines: string[], endOffset: number): void;
  /** Record offset 0 (the log was just emptied). */
  resetOffset(): void;
}

/** The log file name of a store file. */
export function auditLogPath(storePath: string): string {
  return `${storePath}-auditlog`;
}

/** The store thread's side of one store's audit log. */
export class AuditLog {
  readonly path: string;
  #file: Deno.FsFile;
  #sync: boolean;
  #ctl: Int32Array;
  #err: Uint8Array;
  #worker: Worker;
  #exited: Promise<void>;
  #written = 0;
  #dead: Error | null = null;

  #hooks: AuditLogHooks;
  #maxBytes: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    storePath: string,
    synchronous: string,
    hooks: AuditLogHooks,
    maxBytes: number,
  ) {
    this.path = path;
    this.#hooks = hooks;
    this.#maxBytes = maxBytes;
    this.#file = file;
    this.#sync = synchronous === "FULL";
    const sab = new SharedArrayBuffer(SAB_BYTES);
    this.#ctl = new Int32Array(sab, 0, 16);
    this.#err = new Uint8Array(sab, ERR_OFFSET);
    this.#worker = new Worker(new URL("./_audit_indexer.ts", import.meta.url), {
      workerData: { storePath, logPath: path, synchronous, sab },
    });
    // An idle indexer must not keep the process alive (a pending wait does).
    this.#worker.unref();
    this.#exited = new Promise((resolve) => this.#worker.once("exit", () => resolve()));
    this.#worker.on("error", (e: unknown) => {
      this.#dead = e instanceof Error ? e : new Error(String(e));
      // Its connection is gone with it; a lock it held (or wanted) guards nothing now.
      Atomics.store(this.#ctl, CTL.LOCK, LOCK_FREE);
      Atomics.store(this.#ctl, CTL.WANT, 0);
      Atomics.notify(this.#ctl, CTL.LOCK);
      Atomics.notify(this.#ctl, CTL.WANT);
      Atomics.notify(this.#ctl, CTL.INDEXED);
    });
  }

  /**
   * Take the log of the store at `storePath` if no other store holds it, and
   * first index what a previous writer left unindexed (a crash) through
   * `hooks`, on the caller's connection. Null when the log is held
   * elsewhere: the caller then commits its audit appends itself.
   */
  static open(
    storePath: string,
    synchronous: string,
    hooks: AuditLogHooks,
    maxBytes = LOG_MAX_BYTES,
  ): AuditLog | null {
    const path = auditLogPath(storePath);
    const file = openLocked(path);
    if (!file) return null;
    try {
      const bytes = wholeLines(path);
      const end = bytes.length;
      let from = hooks.indexedOffset();
      // An offset past the end was left by a truncation: everything was indexed.
      if (from > end) from = end;
      const text = new TextDecoder().decode(bytes.subarray(from, end));
      if (text) hooks.index(text.slice(0, -1).split("\n"), end);
      file.truncateSync(0);
      hooks.resetOffset();
    } catch (e) {
      file.close();
      // Left as it is (not emptied): the store opens once the log holds only records.
      if (e instanceof LibosError) throw new LibosError(e.code, `audit log ${path}: ${e.message}`);
      throw e;
    }
    return new AuditLog(path, file, storePath, synchronous, hooks, Math.min(maxBytes, 2 ** 30));
  }

  /**
   * True when the indexer is more than {@link LOG_MAX_BACKLOG} bytes behind:
   * writers then wait for it, so indexing keeps up and reads never wait long.
   */
  get behind(): boolean {
    return this.#written - Atomics.load(this.#ctl, CTL.INDEXED) > LOG_MAX_BACKLOG;
  }

  /** True when the log should be emptied before more is written. */
  get full(): boolean {
    return this.#written >= this.#maxBytes;
  }

  /** Write `lines` (JSON, one per record) durably; indexing follows shortly. */
  append(lines: string[]): void {
    // Even with the indexer gone the lines are durable: the next open indexes them.
    const bytes = _encoder.encode(lines.join("\n") + "\n");
    let off = 0;
    while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
    if (this.#sync) this.#file.syncDataSync();
    this.#written += bytes.length;
    Atomics.store(this.#ctl, CTL.WRITTEN, this.#written);
    if (Atomics.load(this.#ctl, CTL.IDLE)) Atomics.notify(this.#ctl, CTL.WRITTEN);
  }

  /** Settles once everything written so far is in the audit table. */
  async indexed(): Promise<void> {
    const target = this.#written;
    const epoch = Atomics.load(this.#ctl, CTL.EPOCH);
    for (;;) {
      const errLen = Atomics.load(this.#ctl, CTL.ERR_LEN);
      if (errLen) {
        const msg = new TextDecoder().decode(this.#err.slice(0, errLen));
        throw new LibosError("EIO", `audit log: ${msg}`);
      }
      if (this.#dead) {
        throw new LibosError("EIO", `audit log: indexer failed: ${this.#dead.message}`);
      }
      const done = Atomics.load(this.#ctl, CTL.INDEXED);
      if (Atomics.load(this.#ctl, CTL.EPOCH) !== epoch || done >= target) return;
      await _changed(this.#ctl, CTL.INDEXED, done);
    }
  }

  // ---- the write lock shared with the indexer

  /** Take the write lock if it is free and the indexer is not waiting for it (always, once the indexer is gone). */
  tryLock(): boolean {
    if (this.#dead) return true;
    if (Atomics.load(this.#ctl, CTL.WANT) === 1) return false;
    return Atomics.compareExchange(this.#ctl, CTL.LOCK, LOCK_FREE, LOCK_STORE) === LOCK_FREE;
  }

  /** Release the lock {@link tryLock} took. */
  unlock(): void {
    if (this.#dead) return;
    Atomics.store(this.#ctl, CTL.LOCK, LOCK_FREE);
    Atomics.notify(this.#ctl, CTL.LOCK);
  }

  /** Settles once the indexer neither waits for the lock nor holds it. */
  async unlocked(): Promise<void> {
    while (!this.#dead) {
      if (Atomics.load(this.#ctl, CTL.WANT) === 1) await _changed(this.#ctl, CTL.WANT, 1);
      else if (Atomics.load(this.#ctl, CTL.LOCK) === LOCK_INDEXER) {
        await _changed(this.#ctl, CTL.LOCK, LOCK_INDEXER);
      } else return;
    }
  }

  /**
   * Truncate a large, fully indexed log. Called with the write lock held, so
   * the indexer is between transactions; offset 0 is recorded before any new
   * line is written.
   */
  maybeTruncate(): void {
    if (this.#written < this.#maxBytes) return;
    if (Atomics.load(this.#ctl, CTL.INDEXED) !== this.#written) return;
    this.#file.truncateSync(0);
    this.#hooks.resetOffset();
    this.#written = 0;
    Atomics.store(this.#ctl, CTL.WRITTEN, 0);
    Atomics.store(this.#ctl, CTL.INDEXED, 0);
    Atomics.add(this.#ctl, CTL.EPOCH, 1);
  }

  /** Index everything written, stop the indexer, empty and release the log. */
  async close(): Promise<void> {
    let failure: unknown = null;
    try {
      await this.indexed();
    } catch (e) {
      failure = e;
    }
    Atomics.store(this.#ctl, CTL.STOP, 1);
    Atomics.notify(this.#ctl, CTL.WRITTEN);
    // The worker is unref'd: a timer keeps the process alive while it exits.
    const keepAlive = setInterval(() => {}, 50);
    try {
      await this.#exited;
    } finally {
      clearInterval(keepAlive);
    }
    // Lines the indexer could not take stay in the file for the next open.
    if (!failure && !this.#dead) {
      this.#file.truncateSync(0);
      this.#hooks.resetOffset();
    }
    this.#file.close();
    if (failure) throw failure;
  }
}
