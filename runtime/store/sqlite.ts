/**
 * SQLite backend of the {@link Store} (node:sqlite, WAL). The default store.
 *
 * Concurrency: within one runtime, a transaction holds an async gate so other
 * coroutines' statements never land inside it; across runtimes, SQLite's own
 * write lock (`BEGIN IMMEDIATE`) serializes writers. This store takes it
 * without waiting inside SQLite: while another process holds it, writes wait
 * on the event loop (timers, HTTP and other quanta go on), and fail `EBUSY`
 * after {@link BUSY_TIMEOUT_MS}.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { AuditLog, type AuditLogHooks } from "./_audit_log.ts";
import {
  type JournalFile,
  type JournalLine,
  type JournalResult,
  StepJournal,
} from "./_step_journal.ts";
import { joinRanges, type RangeReport, verifyRange } from "./_audit_verify.ts";
import { Worker } from "node:worker_threads";
import { setImmediate } from "node:timers";
import {
  auditDraftJson,
  chainHash,
  indexAuditLines,
  insertAuditRows,
  type Prepare,
  setAuditLogOffset,
} from "./_audit_rows.ts";
import type {
  AgentImage,
  AuditRecord,
  Capability,
  CheckpointMeta,
  CheckpointRecord,
  EffectRecord,
  EffectStatus,
  HumanRequestRecord,
  HumanRequestStatus,
  Label,
  LibosEvent,
  MailMessage,
  MemoryObject,
  ModelCallRecord,
  ModelRelease,
  ObjectLink,
  ProcessRecord,
  ProcessStatus,
} from "../types.ts";
import { LibosError } from "../errors.ts";
import { canonicalJson } from "../canonical.ts";
import type {
  AuditDraft,
  AuditFilter,
  AuditVerification,
  EventDraft,
  LedgerMark,
  LedgerSince,
  ObjectVersion,
  Store,
  TransactionOptions,
} from "./store.ts";
import {
  type Hot,
  HOT_COLUMNS,
  HOT_KEYS,
  type HotRow,
  hotValue,
  migrateProcesses,
  parseHot,
  splitPatch,
  type Static,
  staticBody,
  TERMINAL_SQL,
} from "./_process_rows.ts";
import { isTerminal } from "../lifecycle.ts";

/**
 * A new process, or a change of status: bump the cache generation and keep
 * `live_processes` (the processes not ended) in step, in one trigger each (a
 * trigger costs about 1.3 us per row even when its WHEN is false). Only status
 * changes bump: the rest of the row (pending action, cursor, usage) is written
 * by the scheduler holding the store's lease. A quantum's own runnable ->
 * running -> runnable does not either: it ends where it began, or moves on
 * through a change that does bump (a wait, an exit).
 */
const _PROCESS_STATE_TRIGGERS = `
CREATE TRIGGER IF NOT EXISTS process_state_insert AFTER INSERT ON process_state BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'cache_gen';
  INSERT OR IGNORE INTO live_processes (pid) SELECT NEW.pid WHERE NEW.status NOT IN ${TERMINAL_SQL};
END;
CREATE TRIGGER IF NOT EXISTS process_state_status AFTER UPDATE OF status ON process_state
  WHEN NOT (OLD.status IN ('runnable', 'running') AND NEW.status IN ('runnable', 'running'))
BEGIN
  UPDATE meta SET value = value + 1 WHERE key = 'cache_gen';
  DELETE FROM live_processes WHERE pid = NEW.pid AND NEW.status IN ${TERMINAL_SQL};
  INSERT OR IGNORE INTO live_processes (pid) SELECT NEW.pid WHERE NEW.status NOT IN ${TERMINAL_SQL};
END;`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processes (
  pid INTEGER PRIMARY KEY AUTOINCREMENT, ppid INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS processes_ppid ON processes(ppid);
CREATE TABLE IF NOT EXISTS process_state (
  pid INTEGER PRIMARY KEY, status TEXT NOT NULL, pending TEXT, model TEXT, usage TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS live_processes (pid INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS model_inputs (pid INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model_log (
  pid INTEGER NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (pid, seq))
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS step_results (
  pid INTEGER NOT NULL, step INTEGER NOT NULL, oid TEXT NOT NULL, PRIMARY KEY (pid, step))
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS capabilities (
  cap_id TEXT PRIMARY KEY, subject INTEGER NOT NULL, parent_cap_id TEXT, status TEXT NOT NULL,
  uses_remaining INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS caps_subject ON capabilities(subject);
CREATE INDEX IF NOT EXISTS caps_parent ON capabilities(parent_cap_id);
CREATE TABLE IF NOT EXISTS objects (
  oid TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT, version INTEGER NOT NULL, body TEXT NOT NULL);
-- One index serves lookups by name and listings by namespace (a step's result
-- then updates two B-trees, not three); the older pair is dropped.
DROP INDEX IF EXISTS objects_ns;
DROP INDEX IF EXISTS objects_name;
CREATE UNIQUE INDEX IF NOT EXISTS objects_ns_name ON objects(namespace, name);
CREATE TABLE IF NOT EXISTS object_versions (
  oid TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (oid, version));
CREATE TABLE IF NOT EXISTS links (
  from_oid TEXT NOT NULL, to_oid TEXT NOT NULL, relation TEXT NOT NULL,
  PRIMARY KEY (from_oid, to_oid, relation));
CREATE TABLE IF NOT EXISTS mailbox (
  msg_id INTEGER PRIMARY KEY AUTOINCREMENT, to_pid INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mailbox_to ON mailbox(to_pid);
CREATE TABLE IF NOT EXISTS images (name TEXT PRIMARY KEY, registered_by TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_labels (path TEXT PRIMARY KEY, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  decision TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  event_id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS effects (
  effect_id TEXT PRIMARY KEY, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS effects_status ON effects(status);
CREATE TABLE IF NOT EXISTS human_requests (
  request_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS human_requests_status ON human_requests(status, pid);
CREATE TABLE IF NOT EXISTS model_calls (
  call_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS model_calls_pid ON model_calls(pid);
CREATE INDEX IF NOT EXISTS model_calls_status ON model_calls(status);
CREATE TABLE IF NOT EXISTS checkpoints (
  checkpoint_id TEXT PRIMARY KEY, root_pid INTEGER NOT NULL, sha256 TEXT NOT NULL, meta TEXT NOT NULL,
  body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS checkpoints_root ON checkpoints(root_pid);
CREATE TABLE IF NOT EXISTS model_releases (
  pid INTEGER NOT NULL, sha256 TEXT NOT NULL, endpoint TEXT NOT NULL, body TEXT NOT NULL,
  PRIMARY KEY (pid, sha256, endpoint)) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('cache_gen', '0');
INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_epoch', '0');
${
  [
    ...["processes", "capabilities", "file_labels"].flatMap((t) =>
      ["INSERT", "UPDATE", "DELETE"].map((op) => _genTrigger(t, op, op))
    ),
    _genTrigger("process_state", "delete", "DELETE"),
  ].join("\n")
}
${_PROCESS_STATE_TRIGGERS}
`;

/**
 * The SQLite layout's version, kept in the file (`PRAGMA user_version`). A
 * file at 0 is new, or was made before versions were kept (its older layouts
 * are migrated at open, as before). A later layout change adds a step here and
 * raises the number.
 */
export const SQLITE_SCHEMA_VERSION = 1;

/** Open the file, or say in one line why it cannot be a store (EINVAL). */
function _openFile(path: string): DatabaseSync {
  try {
    // A new store is the owner's alone (SQLite gives its -wal and -shm the same mode):
    // it holds object payloads and labelled data, not for other local users.
    try {
      Deno.openSync(path, { write: true, createNew: true, mode: 0o600 }).close();
    } catch { /* there already, or SQLite will say why not */ }
    return new DatabaseSync(path);
  } catch (e) {
    let why = (e as Error).message;
    try {
      if (Deno.statSync(path).isDirectory) why = "it is a directory";
    } catch { /* SQLite's reason stands */ }
    throw new LibosError("EINVAL", `store: cannot open ${path}: ${why}`);
  }
}

/**
 * Refuse a file this runtime must not write to, before anything is written: not
 * a SQLite database (EINVAL), a database of another application (tables, but
 * not a libos store's: EINVAL), or a libos store of a newer layout (ESTATE).
 * Returns the file's schema version.
 */
function _checkStoreFile(db: DatabaseSync, path: string): number {
  let version: number;
  try {
    version = Number(
      (db.prepare("PRAGMA user_version").get() as { user_version: number })
        .user_version,
    );
  } catch (e) {
    if (/not a database|encrypted/i.test(String(e))) {
      throw new LibosError("EINVAL", `store: ${path} is not a SQLite database`);
    }
    throw e;
  }
  if (version > SQLITE_SCHEMA_VERSION) {
    throw new LibosError(
      "ESTATE",
      `store: ${path} is at schema version ${version}, newer than this runtime's ${SQLITE_SCHEMA_VERSION}`,
    );
  }
  if (version === 0 && !_emptyOrLibos(db)) {
    throw new LibosError(
      "EINVAL",
      `store: ${path} is a SQLite database of something else (it has tables, but not a libos ` +
        "store's); nothing was written to it",
    );
  }
  return version;
}

/**
 * Whether a file holds no tables, or a libos store's: every layout so far has
 * had `processes` and a `meta (key, value)` table.
 */
function _emptyOrLibos(db: DatabaseSync): boolean {
  const tables = new Set(
    (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as {
      name: string;
    }[]).map((t) => t.name),
  );
  if (tables.size === 0) return true;
  if (!tables.has("processes") || !tables.has("meta")) return false;
  const meta = db.prepare("PRAGMA table_info(meta)").all() as { name: string }[];
  return meta.map((c) => c.name).join(",") === "key,value";
}

function _genTrigger(table: string, name: string, event: string): string {
  return `CREATE TRIGGER IF NOT EXISTS cache_gen_${table}_${name.toLowerCase()} AFTER ${event}
    ON ${table} BEGIN UPDATE meta SET value = value + 1 WHERE key = 'cache_gen'; END;`;
}

/**
 * Hash of an audit record: sha256 over the previous hash and the record's JSON
 * exactly as stored (the `body` column). Hashing the stored bytes needs no
 * canonical form and no re-serialization, on write or on verify.
 */
export function auditHash(prevHash: string, rec: Omit<AuditRecord, "hash" | "prev_hash">): string {
  return chainHash(prevHash, JSON.stringify(rec));
}

/**
 * Parsed rows of the hot read path (processes, capabilities, file labels). A
 * cache entry is only ever served while the store's `cache_gen` (bumped by
 * triggers on every write to those tables, from any connection; for
 * `process_state`, on every change of a status) has moved by
 * nothing but our own writes since it was read, so a revocation from anywhere
 * is seen at once. Our own writes run with SQLite's write lock held and read
 * `cache_gen` before and after: a move before ours is someone else's (the whole
 * cache goes), the move during ours is ours (only the entries we wrote go, or
 * are replaced by what we wrote). `PRAGMA data_version` only says when to read
 * `cache_gen` again: it also moves on the audit indexer's commits, which must
 * not empty the cache.
 */
/** Longest a commit by another process can go unseen by the read cache. */
export const FOREIGN_WRITE_WINDOW_MS = 0.25;

/**
 * Longest deferred writes stay uncommitted once the event loop is free (ms).
 * Within a run of quanta they commit sooner: with the next write that is not
 * deferred (a tool step's `running` mark), or when the scheduler yields.
 */
export const GROUP_MAX_MS = 2;

/** How long a write waits for another connection's write transaction before EBUSY (ms). */
export const BUSY_TIMEOUT_MS = 5000;

/** Whether the scheduler lease names a runtime id. */
const _LEASE_HELD =
  "SELECT 1 AS held FROM meta WHERE key = 'scheduler_lease' AND json_extract(value, '$.id') = ?";

/** What `#begin` returns while another connection holds the write lock. */
const _LOCKED = Symbol("locked");

/** WAL pages after which a commit checkpoints, when no indexer thread does it. */
export const WAL_AUTOCHECKPOINT = 8000;

/**
 * The same with an indexer thread checkpointing every few hundred ms: only if
 * it cannot keep up (or is gone) does the kernel's thread checkpoint itself.
 */
export const WAL_AUTOCHECKPOINT_FALLBACK = 64000;

/** Most characters of model inputs kept parsed in memory (they never change once stored). */
export const INPUT_CACHE_CHARS = 64 * 1024 * 1024;

/** Statements that write (they open a deferred transaction's savepoint). */
const _WRITES = /^\s*(INSERT|UPDATE|DELETE|REPLACE|WITH\b[\s\S]*\b(INSERT|UPDATE|DELETE)\b)/i;

interface _ReadCache {
  checkedAt: number;
  /** `PRAGMA data_version` at the last check. */
  dataVersion: unknown;
  /** `meta.cache_gen` as of the cache's contents. */
  version: unknown;
  /** The rarely changing part of each process (a document parsed once). */
  statics: Map<number, Readonly<Static>>;
  /** The per-quantum part of each process. */
  hots: Map<number, Readonly<Hot>>;
  caps: Map<number, readonly Capability[]>;
  labels: Map<string, Label | null>;
}

/** Parsed model inputs, least recently used first; immutable, so never invalidated. */
interface _InputCache {
  map: Map<number, { value: unknown; chars: number }>;
  chars: number;
}

function _deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) _deepFreeze(x);
  }
  return v;
}

/**
 * What an open write wrote that readers may be served from once it commits:
 * hot process rows and step counts. A savepoint that rolls back undoes what
 * was set since it began (an undo log: no copy per savepoint).
 *
 * Hot rows are written back: a change lands in `hots` only, and the row is
 * written to SQLite once, before the transaction commits or a statement
 * reads `process_state` (see `SqliteStore.#materialize`). A quantum's three
 * changes of its process (decision, running mark, result) thus cost one
 * UPDATE per commit instead of three. `stored` holds each such row as SQLite
 * has it inside the open transaction; it is undone with a savepoint too, as
 * SQLite undoes the row.
 */
class _WriteThrough {
  hots = new Map<number, Readonly<Hot>>();
  stored = new Map<number, Readonly<Hot>>();
  steps = new Map<number, number>();
  #undo: [Map<number, unknown>, number, unknown, boolean][] = [];

  /** Remember `pid`'s hot row as of now. */
  setHot(pid: number, hot: Readonly<Hot> | undefined): void {
    this.#set(this.hots as Map<number, unknown>, pid, hot);
  }

  /** `pid`'s row as SQLite now holds it inside the open transaction. */
  setStored(pid: number, hot: Readonly<Hot>): void {
    this.#set(this.stored as Map<number, unknown>, pid, hot);
  }

  /** Remember `pid`'s step count as of now. */
  setSteps(pid: number, n: number): void {
    this.#set(this.steps as Map<number, unknown>, pid, n);
  }

  #set(map: Map<number, unknown>, pid: number, value: unknown): void {
    this.#undo.push([map, pid, map.get(pid), map.has(pid)]);
    if (value === undefined) map.delete(pid);
    else map.set(pid, value);
  }

  /** A point to roll back to. */
  mark(): number {
    return this.#undo.length;
  }

  /** Undo everything set since `mark`. */
  rollbackTo(mark: number): void {
    while (this.#undo.length > mark) {
      const [map, pid, value, had] = this.#undo.pop()!;
      if (had) map.set(pid, value);
      else map.delete(pid);
    }
  }

  /** Committed: serve it from now on. */
  apply(cache: _ReadCache, stepCounts: Map<number, number>): void {
    for (const [pid, hot] of this.hots) cache.hots.set(pid, hot);
    for (const [pid, n] of this.steps) stepCounts.set(pid, n);
    this.clear();
  }

  /** Rolled back (or applied): forget it. */
  clear(): void {
    if (this.hots.size) this.hots = new Map();
    if (this.stored.size) this.stored = new Map();
    if (this.steps.size) this.steps = new Map();
    this.#undo.length = 0;
  }
}

/** Deferred writes not yet committed (see `_Shared.group`). */
interface _Group {
  /** `cache_gen` when the group began. */
  start: unknown;
  /** A write the step journal cannot replay was made: durability needs the commit. */
  unjournaled: boolean;
  /** A deferred transaction completed in it: its caller went on as if it were stored. */
  acknowledged: boolean;
}

/** What the deferred transaction in progress changed, for its journal lines. */
interface _TxJournal {
  /** Processes whose state row it changed, with the results it recorded for each. */
  lines: Map<number, JournalResult[]>;
  /** Objects it inserted that no step index row has claimed (yet). */
  objects: Map<string, [string, string | null, number, string]>;
}

interface _Shared {
  /** The audit log, when this store holds it (file stores; see `_audit_log.ts`). */
  log: AuditLog | null;
  /** The step journal, held with the audit log (see `_step_journal.ts`). */
  journal: StepJournal | null;
  /** The deferred transaction in progress, when the store has a journal. */
  txJournal: _TxJournal | null;
  /**
   * Processes changed by deferred transactions since the journal was last
   * written, with the results they recorded: the next write puts each one's
   * state row as it then is in one line.
   */
  journalDirty: Map<number, { hot: Readonly<Hot> | undefined; results: JournalResult[] }>;

  /** Set while a write the journal replays runs (it leaves the group journaled). */
  journaling: boolean;
  /**
   * `meta.journal_epoch`: the lines of the journal carry it, and a commit that
   * empties a written journal moves it on in the same transaction, so lines a
   * commit covered are never replayed (the store may stop before it empties
   * the file).
   */
  journalEpoch: number;
  cache: _ReadCache;
  inputs: _InputCache;
  /** What the open write or transaction wrote, cached once it commits. */
  writeThrough: _WriteThrough;
  /** Steps recorded per process (the next step's number), as far as known. */
  stepCounts: Map<number, number>;
  auditQueue: {
    draft: AuditDraft;
    resolve: () => void;
    reject: (e: unknown) => void;
  }[];
  db: DatabaseSync;
  /** The store file (null for `:memory:`). */
  path: string | null;
  /** How many threads check a long audit chain, and from how many records on. */
  verify: { threads: number; above: number };
  /** An explicit transaction in progress: other coroutines' statements wait for it. */
  tx: Promise<void> | null;
  /**
   * Deferred writes not yet committed: an open SQLite write transaction that
   * holds the audit log's write lock (`start`: cache_gen when it began).
   */
  group: _Group | null;
  groupTimer: number | null;
  groupMaxMs: number;
  /** The commit callers of {@link SqliteStore.commitSoon} wait for, once asked. */
  soon: Promise<void> | null;
  /** The journal write the marks in flight wait for (see makeDurable). */
  journalSoon: Promise<void> | null;
  stmts: Map<string, { stmt: StatementSync; writes: boolean }>;
  /**
   * The savepoint of the deferred transaction in progress, opened by its
   * first statement that writes (one that writes nothing needs none: its hot
   * rows are undone in memory).
   */
  savepoint: { open: boolean } | null;
  /**
   * Set when a commit failed after deferred writes were acknowledged: callers
   * acted on them (a journaled mark let its tool run), so the rolled-back
   * tables are behind what happened. Every later statement fails with it (the
   * audit log still takes records); the step journal, which no commit emptied
   * since, is released at once and replayed by the next store to open the file.
   */
  stopped: LibosError | null;
  /**
   * The scheduler lease this store writes under (see
   * {@link SqliteStore.writeUnderLease}): every write transaction first checks
   * the store still names it.
   */
  lease: string | null;
}

/** Options for {@link SqliteStore.open}. */
export interface SqliteOptions {
  /** `FULL` survives power loss; `NORMAL` (default) survives a process crash. */
  synchronous?: "NORMAL" | "FULL";
  /**
   * Write audit appends made outside transactions to the store's audit log,
   * indexed into the table by a thread of its own (default true; a `:memory:`
   * store never does, and a store whose log another store holds commits its
   * appends itself).
   */
  auditLog?: boolean;
  /** Size at which the audit log is emptied once indexed (default 256 MiB). */
  auditLogMaxBytes?: number;
  /**
   * Longest deferred writes stay uncommitted once the event loop is free, in
   * ms (default {@link GROUP_MAX_MS}; a test that makes each commit itself sets
   * it high).
   */
  groupMaxMs?: number;
  /**
   * Threads that check a long audit chain in parallel (default: the cores,
   * at most 4); 1 checks it on the calling thread.
   */
  verifyThreads?: number;
  /** Chains of more records than this are checked in parallel (default 100,000). */
  verifyParallelAbove?: number;
  /** For tests: wrap the step journal's file (to make its writes fail). */
  _wrapJournalFile?: (
    file: Deno.FsFile,
    // `JournalFile` of `_step_journal.ts`, spelled out: that module is not public.
  ) => Pick<Deno.FsFile, "writeSync" | "syncDataSync" | "truncateSync" | "close">;
}

/** Chains longer than this are verified by several threads (see {@link SqliteOptions}). */
export const VERIFY_PARALLEL_ABOVE = 100_000;

/** The SQLite store. Open with {@link SqliteStore.open}. */
export class SqliteStore implements Store {
  /** A SQLite store has one scheduler (the store's lease): no worker leases. */
  readonly leases: null = null;
  /** The file's path (or `:memory:`). */
  readonly name: string;
  #s: _Shared;
  #inTx: boolean;

  private constructor(shared: _Shared, inTx: boolean, name: string) {
    this.#s = shared;
    this.#inTx = inTx;
    this.name = name;
  }

  /** Open (and create) a store file; `:memory:` for a throwaway store. */
  static open(path: string, options: SqliteOptions = {}): SqliteStore {
    const wait = options.groupMaxMs;
    if (wait !== undefined && !(Number.isFinite(wait) && wait >= 0)) {
      throw new LibosError("EINVAL", `store: groupMaxMs must be a number of ms >= 0, not ${wait}`);
    }
    const db = _openFile(path);
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    let version: number;
    try {
      version = _checkStoreFile(db, path);
    } catch (e) {
      db.close();
      throw e;
    }
    if (path !== ":memory:") db.exec("PRAGMA journal_mode = WAL");
    db.exec(`PRAGMA synchronous = ${options.synchronous ?? "NORMAL"}`);
    db.exec("PRAGMA foreign_keys = ON");
    // Fewer, larger checkpoints: each one fsyncs even at synchronous=NORMAL.
    db.exec(`PRAGMA wal_autocheckpoint = ${WAL_AUTOCHECKPOINT}`);
    db.exec(SCHEMA);
    migrateProcesses(db);
    _canonicalObjects(db);
    if (version < SQLITE_SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SQLITE_SCHEMA_VERSION}`);
    const cache = {
      checkedAt: -Infinity,
      dataVersion: null,
      version: null,
      statics: new Map(),
      hots: new Map(),
      caps: new Map(),
      labels: new Map(),
    };
    const synchronous = options.synchronous ?? "NORMAL";
    const single = path !== ":memory:" && options.auditLog !== false;
    // What a stopped store journaled goes in before anything reads the tables.
    const journal = single ? _openJournal(db, path, synchronous, options._wrapJournalFile) : null;
    let log: AuditLog | null = null;
    try {
      log = single
        ? AuditLog.open(path, synchronous, _logHooks(db), options.auditLogMaxBytes)
        : null;
    } catch (e) {
      journal?.close();
      throw e;
    }
    // The log's indexer thread checkpoints; this connection only as a last resort.
    if (log) db.exec(`PRAGMA wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_FALLBACK}`);
    return new SqliteStore(
      {
        log,
        journal,
        txJournal: null,
        journalDirty: new Map(),
        journaling: false,
        journalEpoch: journal ? _journalEpoch(db) : 0,
        cache,
        inputs: { map: new Map(), chars: 0 },
        writeThrough: new _WriteThrough(),
        stepCounts: new Map(),
        auditQueue: [],
        db,
        path: path === ":memory:" ? null : path,
        verify: {
          threads: options.verifyThreads ??
            Math.max(1, Math.min(4, globalThis.navigator?.hardwareConcurrency ?? 1)),
          above: options.verifyParallelAbove ?? VERIFY_PARALLEL_ABOVE,
        },
        tx: null,
        group: null,
        groupTimer: null,
        groupMaxMs: options.groupMaxMs ?? GROUP_MAX_MS,
        soon: null,
        journalSoon: null,
        stmts: new Map(),
        savepoint: null,
        stopped: null,
        lease: null,
      },
      false,
      path,
    );
  }

  #q(sql: string): StatementSync {
    if (this.#s.stopped) throw this.#s.stopped;
    let s = this.#s.stmts.get(sql);
    if (!s) {
      s = { stmt: this.#s.db.prepare(sql), writes: _WRITES.test(sql) };
      this.#s.stmts.set(sql, s);
    }
    if (s.writes) {
      const sp = this.#s.savepoint;
      if (sp && !sp.open) {
        sp.open = true;
        this.#q("SAVEPOINT w").run();
      }
      const g = this.#s.group;
      if (g && !this.#s.journaling) g.unjournaled = true;
    }
    return s.stmt;
  }

  // Another coroutine's open transaction, which our statements must not join.
  // Callers loop `while (this.#busy) await this.#busy;` inline: an extra async
  // hop between the check and the statement would let a transaction slip in.
  get #busy(): Promise<void> | null {
    return this.#inTx ? null : this.#s.tx;
  }

  // The read cache, if it may serve now, and whether a miss may be stored in it.
  // Inside a transaction it was checked when the transaction began and every
  // entry the transaction writes is dropped as it is written, so what is left
  // is current; but what the transaction reads may still roll back, so it is
  // not stored. Outside one it is emptied when another connection committed a
  // change to the cached tables. Asking SQLite costs as much as a row read, so
  // the answer is reused for FOREIGN_WRITE_WINDOW_MS: a commit by another
  // process is seen that late at most (our own writes update the cache at once).
  #fresh(): { c: _ReadCache; fill: boolean } {
    const c = this.#s.cache;
    if (this.#inTx) return { c, fill: false };
    // Deferred writes hold the write lock: nobody else can commit, what was
    // committed before was seen when they began, and the generation read now
    // would include their own bumps.
    if (this.#s.group) return { c, fill: true };
    const now = performance.now();
    if (now - c.checkedAt >= FOREIGN_WRITE_WINDOW_MS) {
      c.checkedAt = now;
      // data_version is cheap and moves on any other connection's commit (the
      // audit indexer's included); only then is the generation read.
      const dv = (this.#q("PRAGMA data_version").get() as { data_version: unknown }).data_version;
      if (dv !== c.dataVersion) {
        c.dataVersion = dv;
        this.#adoptGeneration(this.#generation());
      }
    }
    return { c, fill: true };
  }

  #generation(): unknown {
    return (this.#q("SELECT value FROM meta WHERE key = 'cache_gen'").get() as
      | { value: string }
      | undefined)?.value;
  }

  // The stored generation is `gen`: if it is not the one the cache is at,
  // someone else changed a cached table, and nothing cached can be trusted.
  #adoptGeneration(gen: unknown): void {
    const c = this.#s.cache;
    if (gen === c.version) return;
    this.#invalidate();
    c.version = gen;
  }

  #invalidate(): void {
    const c = this.#s.cache;
    c.statics.clear();
    c.hots.clear();
    c.caps.clear();
    c.labels.clear();
  }

  async transaction<T>(
    fn: (tx: Store) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    if (this.#inTx) return await fn(this);
    while (this.#s.tx) await this.#s.tx;
    let release!: () => void;
    this.#s.tx = new Promise((r) => (release = r));
    const journal = options.defer ? this.#s.journal : null;
    if (journal) this.#s.txJournal = { lines: new Map(), objects: new Map() };
    try {
      const tx = new SqliteStore(this.#s, true, this.name);
      if (!this.#s.group) {
        // Nothing deferred before it: the transaction is the whole of SQLite's.
        await this.#openGroup();
        let out: T;
        try {
          out = await fn(tx);
        } catch (e) {
          this.#rollbackGroup();
          throw e;
        }
        if (!options.defer) this.#commitGroup();
        else this.#acknowledge();
        return out;
      }
      let out: T;
      try {
        out = await this.#savepointAsync(() => fn(tx));
      } catch (e) {
        // Deferred writes before this transaction are still good: they land; its own do not.
        this.#commitGroup();
        throw e;
      }
      if (!options.defer) this.#commitGroup();
      else this.#acknowledge();
      return out;
    } finally {
      this.#s.txJournal = null;
      this.#s.tx = null;
      release();
    }
  }

  /** The error every call fails with once a commit failed after acknowledged writes; else null. */
  get stopped(): LibosError | null {
    return this.#s.stopped;
  }

  async flush(): Promise<void> {
    if (this.#s.stopped) throw this.#s.stopped;
    if (this.#inTx) return;
    while (this.#s.tx) await this.#s.tx;
    this.#commitGroup();
  }

  /**
   * Commit what is deferred once the next task runs (a macrotask: by then the
   * microtasks of every quantum in flight have run, so each one that reached
   * this point wrote its mark and waits here). One commit for all of them.
   */
  commitSoon(): Promise<void> {
    if (this.#inTx) {
      return Promise.reject(new LibosError("EINVAL", "store: commitSoon inside a transaction"));
    }
    return this.#atNextTask("soon", () => this.flush());
  }

  // One promise for every caller until the event loop's next task, settled by
  // `run` then. Later callers wait for a run of their own: what they wait for
  // may come after this one.
  #atNextTask(slot: "soon" | "journalSoon", run: () => Promise<void>): Promise<void> {
    const s = this.#s;
    return s[slot] ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        s[slot] = null;
        run().then(resolve, reject);
      });
    });
  }

  /**
   * Make what is deferred durable before an effect (a tool step's running
   * mark): when every deferred write since the last commit is one the step
   * journal replays, by writing a line for each process changed since its
   * last write; otherwise by the commit of {@link commitSoon}. Like that
   * commit, the write waits for the next task, so the marks of every quantum
   * in flight share one `write` (a commit before then makes them durable
   * instead). The deferred writes then commit with the store's next commit.
   */
  makeDurable(): Promise<void> {
    const s = this.#s;
    if (this.#inTx) {
      return Promise.reject(new LibosError("EINVAL", "store: makeDurable inside a transaction"));
    }
    if (!s.journal || s.journal.torn || !s.group || s.group.unjournaled) return this.commitSoon();
    return this.#atNextTask("journalSoon", () => this.#journalNow());
  }

  // The write makeDurable waited for: one for every mark that got there before
  // the event loop's next task. A commit since then made them durable already.
  #journalNow(): Promise<void> {
    const s = this.#s;
    if (s.stopped) return Promise.reject(s.stopped);
    if (!s.group) return Promise.resolve();
    if (!s.journal || s.journal.torn || s.group.unjournaled) return this.flush();
    try {
      if (this.#writeJournal(s.journal)) return Promise.resolve();
    } catch (e) {
      // Its lines (and the results they carried) are in no journal: only the commit
      // holds them now, so no later mark of the group may count on the journal.
      s.group.unjournaled = true;
      return Promise.reject(e);
    }
    return this.flush();
  }

  // Write a line for each process changed since the last write: its state
  // row as the last completed transaction left it, with the results recorded.
  // False when a process's row is not known (then only the commit will do).
  #writeJournal(journal: StepJournal): boolean {
    const s = this.#s;
    for (const [pid, { hot, results }] of s.journalDirty) {
      if (!hot) {
        s.group!.unjournaled = true;
        journal.dropPending();
        return false;
      }
      const line: JournalLine = {
        e: s.journalEpoch,
        p: pid,
        // The row's column values, in the order the replay's UPDATE sets them.
        h: HOT_KEYS.map((k) => hotValue(k, hot[k])) as JournalLine["h"],
      };
      if (results.length) line.r = results;
      journal.add(line);
    }
    s.journalDirty.clear();
    journal.write();
    return true;
  }

  // A deferred transaction completed: its writes now stand for its caller.
  #acknowledge(): void {
    this.#s.group!.acknowledged = true;
    this.#journalTx();
  }

  // A deferred transaction completed: note what it changed for the next
  // journal write. An object no step claimed is in no line: the group then
  // needs its commit.
  #journalTx(): void {
    const t = this.#s.txJournal;
    if (!t) return;
    const g = this.#s.group;
    if (g && t.objects.size) g.unjournaled = true;
    const dirty = this.#s.journalDirty;
    const hots = this.#s.writeThrough.hots;
    for (const [pid, results] of t.lines) {
      const known = dirty.get(pid);
      // Rows are replaced, never changed: this one is the row as this transaction left it.
      const hot = hots.get(pid);
      if (known) {
        known.hot = hot;
        known.results.push(...results);
      } else dirty.set(pid, { hot, results });
    }
  }

  // Run a write the step journal replays (it leaves the group journaled).
  #journaled<T>(fn: () => T): T {
    const was = this.#s.journaling;
    this.#s.journaling = true;
    try {
      return fn();
    } finally {
      this.#s.journaling = was;
    }
  }

  // Take the audit log's write lock (its indexer takes turns with us), BEGIN,
  // and keep both until the group commits. Deferred writes are committed
  // within groupMaxMs of the event loop being free, at the latest (`timed`:
  // a group #write commits at once needs no timer). SQLite's write lock is
  // taken without waiting inside SQLite: while another connection (another
  // runtime, a CLI, a SQL client) holds it, this thread keeps serving its
  // event loop and tries again, for as long as SQLite's busy timeout would.
  async #openGroup(timed = true): Promise<void> {
    const log = this.#s.log;
    const deadline = performance.now() + BUSY_TIMEOUT_MS;
    for (;;) {
      // Another coroutine opened one while this one waited: it is shared.
      if (this.#s.group) break;
      if (log && !log.tryLock()) {
        await log.unlocked();
        continue;
      }
      let start: unknown;
      try {
        start = this.#begin();
      } catch (e) {
        log?.unlock();
        throw e;
      }
      if (start !== _LOCKED) {
        this.#s.group = { start, unjournaled: false, acknowledged: false };
        break;
      }
      log?.unlock();
      if (performance.now() >= deadline) {
        throw new LibosError(
          "EBUSY",
          `store: another connection has held the write lock for ${BUSY_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    if (timed && this.#s.groupTimer === null) {
      const t = setTimeout(() => {
        this.#s.groupTimer = null;
        this.flush().catch(() => {/* the next write reports it */});
      }, this.#s.groupMaxMs) as unknown as number;
      // Uncommitted writes at exit are a crash's to recover, not a reason to stay alive.
      Deno.unrefTimer(t);
      this.#s.groupTimer = t;
    }
  }

  #commitGroup(): void {
    const g = this.#closeGroup();
    if (!g) return;
    try {
      this.#commit(g.acknowledged);
    } finally {
      this.#s.log?.unlock();
    }
  }

  #rollbackGroup(): void {
    const g = this.#closeGroup();
    if (!g) return;
    try {
      this.#rollback(g.start);
    } finally {
      this.#s.log?.unlock();
    }
  }

  // The timer stays armed: when it fires it commits whatever group is open
  // then (one timer per groupMaxMs, not one per group).
  #closeGroup(): _Group | null {
    const g = this.#s.group;
    this.#s.group = null;
    return g;
  }

  // BEGIN IMMEDIATE, or _LOCKED at once if another connection holds the
  // write lock (the busy timeout stays for reads, which may meet a recovery).
  // With the lock held, a generation other than the cache's is someone
  // else's write: nothing cached can be trusted then.
  #begin(): unknown {
    this.#q("PRAGMA busy_timeout = 0").run();
    try {
      this.#q("BEGIN IMMEDIATE").run();
    } catch (e) {
      if (e instanceof Error && e.message === "database is locked") return _LOCKED;
      throw e;
    } finally {
      this.#q(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`).run();
    }
    if (!this.#leaseHeld()) {
      this.#rollback(null);
      throw this.#fence();
    }
    try {
      const start = this.#generation();
      this.#adoptGeneration(start);
      return start;
    } catch (e) {
      this.#rollback(null);
      throw e;
    }
  }

  // With the write lock held: does the store still name this runtime's lease?
  #leaseHeld(): boolean {
    const id = this.#s.lease;
    return id === null || this.#q(_LEASE_HELD).get(id) !== undefined;
  }

  // Another runtime has taken the lease (this one stalled past it): the store
  // stops, nothing more is written or served here.
  #fence(): LibosError {
    this.#s.journal?.close();
    this.#s.journal = null;
    return this.#s.stopped = new LibosError(
      "EFENCED",
      "store: another runtime has taken over this store's scheduler lease (this one stalled " +
        "past it): it writes nothing more here",
    );
  }

  /**
   * Write only while the store's scheduler lease (the `scheduler_lease` meta
   * entry) names `id`, the runtime that holds it; `null` ends the check (the
   * runtime is letting go of it). Checked inside every write transaction, so
   * a runtime that stalled past its lease and lost the store to another
   * commits nothing after (`EFENCED`, and the store stops).
   */
  writeUnderLease(id: string | null): void {
    this.#s.lease = id;
  }

  // COMMIT. The move of the generation since BEGIN is ours, and the entries we
  // wrote were dropped as they were written or are replaced by what we wrote.
  #commit(acknowledged: boolean): void {
    let end;
    const journal = this.#s.journal;
    const covers = journal !== null && journal.written > 0;
    try {
      this.#materialize();
      if (covers) this.#q(_BUMP_EPOCH).run(String(this.#s.journalEpoch + 1));
      end = this.#generation();
      this.#q("COMMIT").run();
    } catch (e) {
      this.#rollback(null);
      if (acknowledged) throw this.#stop(e);
      throw e;
    }
    if (covers) this.#s.journalEpoch++;
    this.#s.cache.version = end;
    this.#s.writeThrough.apply(this.#s.cache, this.#s.stepCounts);
    // Everything the journal held or was to hold is in the tables now.
    this.#s.journal?.clear();
    this.#s.journalDirty.clear();
  }

  // Stop the store (see `_Shared.stopped`): nothing may be served or written
  // from tables that no longer hold what callers acted on.
  #stop(cause: unknown): LibosError {
    const why = cause instanceof Error ? cause.message : String(cause);
    // Release the journal (its lock) now: the next store to open the file replays
    // it, even while this one stays open. Nothing here writes it again.
    try {
      this.#s.journal?.close();
    } catch { /* closed by the process's exit at the latest */ }
    this.#s.journal = null;
    return this.#s.stopped = new LibosError(
      "EIO",
      `store: a commit failed after deferred writes were acknowledged (${why}); ` +
        "the store is stopped: reopen it to recover (the step journal is replayed then)",
    );
  }

  // ROLLBACK: the stored generation is back at `start` (null: unknown, so
  // nothing cached is trusted until it is read again).
  #rollback(start: unknown): void {
    try {
      this.#q("ROLLBACK").run();
    } catch { /* SQLite already rolled it back */ }
    this.#s.writeThrough.clear();
    // Lines not yet written were never acted on; written ones stay until a commit.
    this.#s.journal?.dropPending();
    this.#s.journalDirty.clear();
    if (start === null) {
      this.#invalidate();
      this.#s.stepCounts.clear();
    }
    this.#s.cache.version = start;
  }

  // Run `fn` inside the open transaction as a savepoint: all of it lands or none.
  #savepoint<T>(fn: () => T): T {
    const saved = this.#s.writeThrough.mark();
    this.#q("SAVEPOINT w").run();
    try {
      const out = fn();
      this.#q("RELEASE w").run();
      return out;
    } catch (e) {
      this.#undoSavepoint(saved);
      throw e;
    }
  }

  // The savepoint is opened by fn's first statement that writes (see #q).
  async #savepointAsync<T>(fn: () => Promise<T>): Promise<T> {
    const saved = this.#s.writeThrough.mark();
    const sp = this.#s.savepoint = { open: false };
    try {
      const out = await fn();
      if (sp.open) this.#q("RELEASE w").run();
      return out;
    } catch (e) {
      if (sp.open) this.#undoSavepoint(saved);
      else this.#s.writeThrough.rollbackTo(saved);
      throw e;
    } finally {
      this.#s.savepoint = null;
    }
  }

  #undoSavepoint(saved: number): void {
    try {
      this.#q("ROLLBACK TO w").run();
      this.#q("RELEASE w").run();
    } catch {
      // SQLite rolled the whole transaction back (an I/O error, a full disk):
      // the deferred writes before it are gone too.
      if (this.#s.group) {
        this.#s.group = null;
        this.#s.log?.unlock();
      }
      this.#rollback(null);
      return;
    }
    this.#s.writeThrough.rollbackTo(saved);
  }

  /**
   * Run the synchronous write `fn` once no other coroutine's transaction is
   * open, inside a group: the one deferred writes hold open, or one opened
   * for it (see #openGroup: this thread never waits inside SQLite, neither
   * for its own indexer nor for another connection). The group commits with
   * `fn`'s writes: deferred writes still open may precede an effect. Inside a
   * transaction, `fn` runs at once.
   */
  async #write<T>(fn: () => T): Promise<T> {
    if (this.#inTx) return fn();
    for (;;) {
      if (this.#s.tx) {
        await this.#s.tx;
        continue;
      }
      if (this.#s.group) {
        try {
          return fn();
        } finally {
          this.#commitGroup();
        }
      }
      await this.#openGroup(false);
    }
  }

  // Run a synchronous write atomically: as a savepoint of the group #write
  // holds it in, unless a transaction holds it (which lands whole or not at
  // all). `many`: fn runs more than one statement (one is atomic by itself).
  #atomic<T>(fn: () => T, many = true): T {
    if (this.#inTx || !many) return fn();
    return this.#savepoint(fn);
  }

  async close(): Promise<void> {
    // A stopped store commits nothing more: its journal stays for the next open.
    if (!this.#s.stopped) await this.flush();
    if (this.#s.groupTimer !== null) {
      clearTimeout(this.#s.groupTimer);
      this.#s.groupTimer = null;
    }
    try {
      await this.#s.log?.close();
    } finally {
      this.#s.journal?.close();
      this.#s.db.close();
    }
  }

  // ---- processes
  async insertProcess(p: Omit<ProcessRecord, "pid">): Promise<ProcessRecord> {
    return await this.#write(() =>
      this.#atomic(() => {
        const r = this.#q("INSERT INTO processes (ppid, body) VALUES (?, ?)").run(
          p.ppid,
          staticBody(p),
        );
        const pid = Number(r.lastInsertRowid);
        this.#q(`INSERT INTO process_state (pid, ${HOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`).run(
          pid,
          p.status,
          hotValue("pending", p.pending),
          hotValue("model", p.model),
          hotValue("usage", p.usage),
          p.updated_at,
        );
        return { pid, ...p };
      })
    );
  }

  async getProcess(pid: number): Promise<ProcessRecord | null> {
    while (this.#busy) await this.#busy;
    const { c, fill } = this.#fresh();
    const st = c.statics.get(pid) ?? this.#loadStatic(pid, fill);
    if (!st) return null;
    const hot = this.#s.writeThrough.hots.get(pid) ?? c.hots.get(pid) ??
      this.#loadHot(pid, fill);
    if (!hot) return null;
    // A fresh top-level object: callers may set top-level fields; nested ones are frozen.
    return { ...st, ...hot };
  }

  #loadStatic(pid: number, fill: boolean): Readonly<Static> | null {
    const row = this.#q("SELECT body FROM processes WHERE pid = ?").get(pid) as
      | { body: string }
      | undefined;
    if (!row) return null;
    const st = _deepFreeze({ pid, ...JSON.parse(row.body) } as Static);
    if (fill) this.#s.cache.statics.set(pid, st);
    return st;
  }

  #loadHot(pid: number, fill: boolean): Readonly<Hot> | null {
    const row = this.#q(`SELECT ${HOT_COLUMNS} FROM process_state WHERE pid = ?`).get(pid) as
      | HotRow
      | undefined;
    if (!row) return null;
    const hot = _deepFreeze(parseHot(row));
    if (fill) this.#s.cache.hots.set(pid, hot);
    return hot;
  }

  async listProcesses(): Promise<ProcessRecord[]> {
    while (this.#busy) await this.#busy;
    this.#materialize();
    const rows = this.#q(
      `SELECT p.pid, p.body, ${HOT_COLUMNS} FROM processes p JOIN process_state s USING (pid)
       ORDER BY p.pid`,
    ).all() as unknown as (HotRow & { pid: number; body: string })[];
    return rows.map((r) => ({ pid: r.pid, ...JSON.parse(r.body), ...parseHot(r) }));
  }

  async pidsWithStatus(status: ProcessStatus, after = 0): Promise<number[]> {
    while (this.#busy) await this.#busy;
    // Ended processes are never scanned: a store's history does not slow the scheduler.
    const sql = isTerminal(status)
      ? "SELECT pid FROM process_state WHERE status = ? AND pid > ? ORDER BY pid"
      : `SELECT l.pid FROM live_processes l JOIN process_state s USING (pid)
         WHERE s.status = ? AND l.pid > ? ORDER BY l.pid`;
    const listed = (this.#q(sql).all(status, after) as { pid: number }[]).map((r) => r.pid);
    // Rows changed in memory and not yet written back are read there instead
    // (writing them back for a listing would undo the one UPDATE a commit).
    const hots = this.#s.writeThrough.hots;
    if (hots.size === 0) return listed;
    const out = listed.filter((pid) => !hots.has(pid));
    for (const [pid, hot] of hots) if (pid > after && hot.status === status) out.push(pid);
    return out.sort((a, b) => a - b);
  }

  async subtreePids(root: number): Promise<number[]> {
    while (this.#busy) await this.#busy;
    // Down the ppid index, one level at a time.
    return (this.#q(
      `WITH RECURSIVE tree(pid) AS (
         SELECT pid FROM processes WHERE pid = ?
         UNION SELECT p.pid FROM processes p JOIN tree t ON p.ppid = t.pid)
       SELECT pid FROM tree ORDER BY pid`,
    ).all(root) as { pid: number }[]).map((r) => r.pid);
  }

  async updateProcess(
    pid: number,
    patch: Partial<Omit<ProcessRecord, "pid">>,
    expectStatus?: ProcessStatus | readonly ProcessStatus[],
  ): Promise<boolean> {
    const { hot, rest } = splitPatch(patch);
    const expect = expectStatus === undefined
      ? null
      : typeof expectStatus === "string"
      ? [expectStatus]
      : expectStatus;
    return await this.#write(() =>
      this.#atomic(() => {
        if (!this.#updateHot(pid, hot, expect)) return false;
        if (rest) this.#updateStatic(pid, rest);
        return true;
      }, rest !== null)
    );
  }

  // Change the hot fields in `hot` (compare-and-swap on the status when
  // `expect` is given); false when the process is missing or the status did
  // not match. Runs inside an open write transaction (SQLite's write lock is
  // held, so the row known here is the row), and only in memory: the row is
  // written back before the commit (#materialize).
  #updateHot(pid: number, hot: Partial<Hot>, expect: readonly string[] | null): boolean {
    const wt = this.#s.writeThrough;
    const pending = wt.hots.get(pid);
    let known = pending ?? this.#s.cache.hots.get(pid);
    if (!known) {
      known = this.#loadHot(pid, false) ?? undefined;
      if (!known) return false;
    }
    if (expect && !expect.includes(known.status)) return false;
    // The row as it now is: what was known of it with what we wrote (parsed
    // from the text we would store, so no caller's object is shared or frozen).
    const next: Record<string, unknown> = { ...known };
    for (const k of Object.keys(hot) as (keyof Hot)[]) {
      const v = hotValue(k, hot[k]);
      next[k] = k === "status" || k === "updated_at" || v === null ? v : JSON.parse(v);
    }
    // First change in this transaction: SQLite holds what was known.
    if (pending === undefined && !wt.stored.has(pid)) wt.setStored(pid, known);
    wt.setHot(pid, _deepFreeze(next as unknown as Hot));
    const t = this.#s.txJournal;
    if (t && !t.lines.has(pid)) t.lines.set(pid, []);
    return true;
  }

  // Write the hot rows changed in memory to SQLite (inside the open
  // transaction): before it commits, and before a statement reads them.
  // Only the columns that differ from the stored row are set, so a status
  // that did not change fires no trigger.
  // The journal holds these rows: writing them back leaves the group journaled.
  #materialize(): void {
    const wt = this.#s.writeThrough;
    if (wt.hots.size) this.#journaled(() => this.#materializeRows(wt));
  }

  #materializeRows(wt: _WriteThrough): void {
    for (const [pid, hot] of wt.hots) {
      const stored = wt.stored.get(pid);
      if (stored === hot) continue;
      const keys = HOT_KEYS.filter((k) => stored === undefined || hot[k] !== stored[k]);
      if (keys.length) {
        this.#q(
          `UPDATE process_state SET ${keys.map((k) => `${k} = ?`).join(", ")} WHERE pid = ?`,
        ).run(...keys.map((k) => hotValue(k, hot[k])), pid);
      }
      wt.setStored(pid, hot);
    }
  }

  #updateStatic(pid: number, rest: Record<string, unknown>): void {
    this.#s.cache.statics.delete(pid);
    const row = this.#q("SELECT body FROM processes WHERE pid = ?").get(pid) as
      | { body: string }
      | undefined;
    if (!row) return;
    const next = { ...JSON.parse(row.body), ...rest };
    this.#q("UPDATE processes SET ppid = ?, body = ? WHERE pid = ?").run(
      next.ppid ?? null,
      JSON.stringify(next),
      pid,
    );
  }

  // ---- model state: an immutable input, an append-only log
  async putModelInput(pid: number, input: unknown): Promise<void> {
    const body = JSON.stringify(input ?? null);
    await this.#write(() => {
      this.#q("INSERT INTO model_inputs (pid, body) VALUES (?, ?)").run(pid, body);
    });
  }

  async getModelInput(pid: number): Promise<unknown> {
    while (this.#busy) await this.#busy;
    const cache = this.#s.inputs;
    const hit = cache.map.get(pid);
    if (hit) {
      // Most recently used last: the oldest are dropped first.
      cache.map.delete(pid);
      cache.map.set(pid, hit);
      return hit.value;
    }
    const row = this.#q("SELECT body FROM model_inputs WHERE pid = ?").get(pid) as
      | { body: string }
      | undefined;
    if (!row) return null;
    const value = _deepFreeze(JSON.parse(row.body));
    // Inside a transaction the row may still roll back; inputs never change once committed.
    if (!this.#inTx) this.#cacheInput(pid, value, row.body.length);
    return value;
  }

  #cacheInput(pid: number, value: unknown, chars: number): void {
    const cache = this.#s.inputs;
    if (chars > INPUT_CACHE_CHARS) return;
    cache.map.set(pid, { value, chars });
    cache.chars += chars;
    for (const [old, e] of cache.map) {
      if (cache.chars <= INPUT_CACHE_CHARS) break;
      cache.map.delete(old);
      cache.chars -= e.chars;
    }
  }

  async appendModelLog(pid: number, entries: unknown[]): Promise<number> {
    const bodies = entries.map((e) => JSON.stringify(e ?? null));
    return await this.#write(() =>
      this.#atomic(() => {
        let seq = this.#logLength(pid);
        const ins = this.#q("INSERT INTO model_log (pid, seq, body) VALUES (?, ?, ?)");
        for (const b of bodies) ins.run(pid, seq++, b);
        return seq;
      })
    );
  }

  async readModelLog(pid: number, from: number, to?: number): Promise<unknown[]> {
    while (this.#busy) await this.#busy;
    return (this.#q(
      "SELECT body FROM model_log WHERE pid = ? AND seq >= ? AND seq < ? ORDER BY seq",
    ).all(pid, from, to ?? Number.MAX_SAFE_INTEGER) as { body: string }[]).map((r) =>
      JSON.parse(r.body)
    );
  }

  async modelLogLength(pid: number): Promise<number> {
    while (this.#busy) await this.#busy;
    return this.#logLength(pid);
  }

  async truncateModelLog(pid: number, length: number): Promise<void> {
    await this.#write(() => {
      this.#q("DELETE FROM model_log WHERE pid = ? AND seq >= ?").run(pid, length);
    });
  }

  // The last entry's position, found by key (one index seek, whatever the length).
  #logLength(pid: number): number {
    const r = this.#q("SELECT seq FROM model_log WHERE pid = ? ORDER BY seq DESC LIMIT 1").get(
      pid,
    ) as { seq: number } | undefined;
    return r ? r.seq + 1 : 0;
  }

  // ---- steps: results by number
  async insertStep(pid: number, step: number, oid: string): Promise<void> {
    await this.#write(() => {
      this.#s.stepCounts.delete(pid);
      const insert = () =>
        this.#q("INSERT INTO step_results (pid, step, oid) VALUES (?, ?, ?)").run(pid, step, oid);
      const t = this.#inTx ? this.#s.txJournal : null;
      const obj = t?.objects.get(oid);
      if (t && obj) {
        // A result recorded in this transaction: its line replays both rows.
        this.#journaled(insert);
        t.objects.delete(oid);
        const results = t.lines.get(pid) ?? [];
        results.push([step, oid, ...obj]);
        t.lines.set(pid, results);
      } else insert();
      this.#s.writeThrough.setSteps(pid, step + 1);
      // Outside a transaction the insert has committed already.
      if (!this.#inTx && !this.#s.group) {
        this.#s.writeThrough.apply(this.#s.cache, this.#s.stepCounts);
      }
    });
  }

  async stepCount(pid: number): Promise<number> {
    while (this.#busy) await this.#busy;
    // Only the scheduler holding the store's lease records steps: what this
    // store last saw is the count, without a query per step. A step recorded
    // in the open group counts already, as the group's own query would count
    // it (no transaction is open here: a failed one's step was undone).
    const known = this.#inTx
      ? undefined
      : this.#s.writeThrough.steps.get(pid) ?? this.#s.stepCounts.get(pid);
    if (known !== undefined) return known;
    const r = this.#q(
      "SELECT step FROM step_results WHERE pid = ? ORDER BY step DESC LIMIT 1",
    ).get(pid) as { step: number } | undefined;
    const n = r ? r.step + 1 : 0;
    if (!this.#inTx) this.#s.stepCounts.set(pid, n);
    return n;
  }

  async getStep(pid: number, step: number): Promise<MemoryObject | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q(
      `SELECT o.body FROM step_results s JOIN objects o ON o.oid = s.oid
       WHERE s.pid = ? AND s.step = ?`,
    ).get(pid, step) as { body: string } | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async stepIndex(pid: number): Promise<{ step: number; oid: string }[]> {
    while (this.#busy) await this.#busy;
    return (this.#q("SELECT step, oid FROM step_results WHERE pid = ? ORDER BY step").all(
      pid,
    ) as { step: number; oid: string }[]).map((r) => ({ step: r.step, oid: r.oid }));
  }

  async truncateSteps(pid: number, from: number): Promise<void> {
    await this.#write(() => {
      this.#s.stepCounts.delete(pid);
      this.#q("DELETE FROM step_results WHERE pid = ? AND step >= ?").run(pid, from);
      const left = this.#q(
        "SELECT step FROM step_results WHERE pid = ? ORDER BY step DESC LIMIT 1",
      ).get(pid) as { step: number } | undefined;
      this.#s.writeThrough.setSteps(pid, left ? left.step + 1 : 0);
      if (!this.#inTx && !this.#s.group) {
        this.#s.writeThrough.apply(this.#s.cache, this.#s.stepCounts);
      }
    });
  }

  async listSteps(pid: number): Promise<MemoryObject[]> {
    while (this.#busy) await this.#busy;
    return (this.#q(
      `SELECT o.body FROM step_results s JOIN objects o ON o.oid = s.oid
       WHERE s.pid = ? ORDER BY s.step`,
    ).all(pid) as { body: string }[]).map((r) => JSON.parse(r.body));
  }

  // ---- capabilities
  async insertCapability(c: Capability): Promise<void> {
    return await this.#write(() =>
      this.#atomic(() => {
        this.#s.cache.caps.delete(c.subject);
        this.#q(
          "INSERT INTO capabilities (cap_id, subject, parent_cap_id, status, uses_remaining, body) VALUES (?, ?, ?, ?, ?, ?)",
        ).run(c.cap_id, c.subject, c.parent_cap_id, c.status, c.uses_remaining, JSON.stringify(c));
      })
    );
  }

  #capRow(r: { body: string; status: string; uses_remaining: number | null }): Capability {
    const c = JSON.parse(r.body) as Capability;
    c.status = r.status as Capability["status"];
    c.uses_remaining = r.uses_remaining;
    return c;
  }

  async getCapability(capId: string): Promise<Capability | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body, status, uses_remaining FROM capabilities WHERE cap_id = ?").get(
      capId,
    ) as { body: string; status: string; uses_remaining: number | null } | undefined;
    return r ? this.#capRow(r) : null;
  }

  async capabilitiesOf(subject: number): Promise<Capability[]> {
    while (this.#busy) await this.#busy;
    const { c, fill } = this.#fresh();
    const hit = c.caps.get(subject);
    if (hit) return [...hit];
    const caps = (this.#q(
      "SELECT body, status, uses_remaining FROM capabilities WHERE subject = ? ORDER BY rowid",
    ).all(subject) as { body: string; status: string; uses_remaining: number | null }[]).map((r) =>
      this.#capRow(r)
    );
    if (fill) c.caps.set(subject, _deepFreeze(caps));
    return [...caps];
  }

  async consumeCapability(capId: string): Promise<boolean> {
    return await this.reserveUses(capId, 1);
  }

  async reserveUses(capId: string, n: number): Promise<boolean> {
    return await this.#write(() =>
      this.#atomic(() => {
        // Rare enough (limited grants) to drop every holder's entry rather than look it up.
        this.#s.cache.caps.clear();
        const r = this.#q(
          `UPDATE capabilities SET uses_remaining = uses_remaining - ?,
           status = CASE WHEN uses_remaining - ? <= 0 THEN 'exhausted' ELSE status END
         WHERE cap_id = ? AND status = 'active' AND uses_remaining IS NOT NULL AND uses_remaining >= ?`,
        ).run(n, n, capId, n);
        return Number(r.changes) === 1;
      })
    );
  }

  async revokeCascade(capId: string): Promise<string[]> {
    return await this.#write(() => {
      return this.#atomic(() => {
        this.#s.cache.caps.clear();
        const ids = (this.#q(
          `WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT c.cap_id FROM capabilities c JOIN tree t ON c.parent_cap_id = t.id)
           SELECT id FROM tree`,
        ).all(capId) as { id: string }[]).map((r) => r.id);
        const upd = this.#q(
          "UPDATE capabilities SET status = 'revoked' WHERE cap_id = ? AND status != 'revoked'",
        );
        return ids.filter((id) => Number(upd.run(id).changes) === 1);
      });
    });
  }

  // ---- objects
  // `objects` holds each object's current version; `object_versions` every
  // version it replaced. An update also writes its new version there at once;
  // version 1 and a version a restore made are only in `objects` until they
  // are replaced or removed, when their history row is written (a step's
  // result is stored once and never changed: one row, not two; a restore of
  // 1,000 objects writes 1,000 rows, not 2,000). The two tables together
  // always hold every version an object had.
  async insertObject(o: MemoryObject): Promise<void> {
    // Canonical text: a checkpoint splices it in as it is (listObjectTexts).
    const body = canonicalJson(o);
    const insert = () =>
      this.#q("INSERT INTO objects (oid, namespace, name, version, body) VALUES (?, ?, ?, ?, ?)")
        .run(o.oid, o.namespace, o.name, o.version, body);
    return await this.#write(() => {
      const t = this.#inTx ? this.#s.txJournal : null;
      if (!t) return void insert();
      // A step's result, if a step index row claims it in this transaction.
      this.#journaled(insert);
      t.objects.set(o.oid, [o.namespace, o.name, o.version, body]);
    });
  }

  // Copy the current version of the objects in `oidsJson` (a JSON array)
  // into the version table, before they are replaced or removed (OR IGNORE:
  // one an update made is there already).
  #keepCurrentVersions(oidsJson: string): void {
    this.#q(
      `INSERT OR IGNORE INTO object_versions (oid, version, body)
       SELECT oid, version, body FROM objects WHERE oid IN (SELECT value FROM json_each(?))`,
    ).run(oidsJson);
  }

  async getObject(oid: string): Promise<MemoryObject | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM objects WHERE oid = ?").get(oid) as
      | { body: string }
      | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async getObjectByName(namespace: string, name: string): Promise<MemoryObject | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM objects WHERE namespace = ? AND name = ?").get(
      namespace,
      name,
    ) as { body: string } | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async listObjects(namespace: string): Promise<MemoryObject[]> {
    while (this.#busy) await this.#busy;
    return (this.#q("SELECT body FROM objects WHERE namespace = ? ORDER BY rowid").all(
      namespace,
    ) as { body: string }[]).map((r) => JSON.parse(r.body));
  }

  async listObjectTexts(namespace: string): Promise<string[]> {
    while (this.#busy) await this.#busy;
    // Bodies are stored canonical (every write, and `_canonicalObjects` for older stores).
    return (this.#q("SELECT body FROM objects WHERE namespace = ? ORDER BY rowid").all(
      namespace,
    ) as { body: string }[]).map((r) => r.body);
  }

  async listObjectVersions(namespace: string): Promise<ObjectVersion[]> {
    while (this.#busy) await this.#busy;
    return this.#q(
      "SELECT oid, version, body ->> '$.label' AS label FROM objects WHERE namespace = ? ORDER BY rowid",
    ).all(namespace) as unknown as ObjectVersion[];
  }

  async updateObject(
    oid: string,
    expectVersion: number,
    patch: { payload: unknown; label: Label; updated_at: string },
  ): Promise<MemoryObject | null> {
    return await this.#write(() =>
      this.#atomic(() => {
        const r = this.#q("SELECT body FROM objects WHERE oid = ? AND version = ?").get(
          oid,
          expectVersion,
        ) as { body: string } | undefined;
        if (!r) return null;
        // The version replaced, unless its update wrote it there already.
        this.#q("INSERT OR IGNORE INTO object_versions (oid, version, body) VALUES (?, ?, ?)")
          .run(oid, expectVersion, r.body);
        const next: MemoryObject = { ...JSON.parse(r.body), ...patch, version: expectVersion + 1 };
        const body = canonicalJson(next);
        const upd = this.#q(
          "UPDATE objects SET version = ?, body = ? WHERE oid = ? AND version = ?",
        )
          .run(next.version, body, oid, expectVersion);
        if (Number(upd.changes) !== 1) return null;
        this.#q("INSERT INTO object_versions (oid, version, body) VALUES (?, ?, ?)").run(
          oid,
          next.version,
          body,
        );
        return next;
      })
    );
  }

  async restoreObjects(
    objects: MemoryObject[],
    current?: ReadonlyMap<string, ObjectVersion>,
  ): Promise<void> {
    if (objects.length === 0) return;
    // In oid order: the history's key is (oid, version), and reading and
    // writing along the key touches each of its pages once instead of at
    // random. An oid given twice: the last one counts (no one could see the
    // other as current).
    const sorted = [...new Map(objects.map((o) => [o.oid, o])).values()]
      .sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0));
    await this.#write(() =>
      this.#atomic(() => {
        // The versions replaced stay in the history; the new ones are current only.
        const oids = sorted.map((o) => o.oid);
        this.#keepCurrentVersions(JSON.stringify(oids));
        const last = this.#lastVersions(oids, current);
        // Its row in place when it is still in the same namespace under the
        // same name (no index but the key's is touched); otherwise insert or move it.
        const inPlace = this.#q(
          "UPDATE objects SET version = ?, body = ? WHERE oid = ? AND namespace = ? AND name IS ?",
        );
        const moved = this.#q(
          `INSERT INTO objects (oid, namespace, name, version, body) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(oid) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
             version = excluded.version, body = excluded.body`,
        );
        for (const o of sorted) {
          const v = last.get(o.oid);
          const next: MemoryObject = { ...o, version: v == null ? o.version : v + 1 };
          const body = canonicalJson(next);
          if (
            Number(inPlace.run(next.version, body, next.oid, next.namespace, next.name).changes)
          ) {
            continue;
          }
          moved.run(next.oid, next.namespace, next.name, next.version, body);
        }
      })
    );
  }

  // The last version of each of `oids`: as `current` says (its row, read by
  // the caller in this transaction: no oid had a later version),
  // else the history's last (the current versions are copied there first),
  // one index probe an oid.
  #lastVersions(
    oids: string[],
    current?: ReadonlyMap<string, ObjectVersion>,
  ): Map<string, number | null> {
    const last = new Map<string, number | null>();
    const unknown: string[] = [];
    for (const oid of oids) {
      const v = current?.get(oid)?.version;
      if (v === undefined) unknown.push(oid);
      else last.set(oid, v);
    }
    if (unknown.length === 0) return last;
    const rows = this.#q(
      `SELECT j.value AS oid, (SELECT version FROM object_versions v WHERE v.oid = j.value
         ORDER BY version DESC LIMIT 1) AS v FROM json_each(?) j`,
    ).all(JSON.stringify(unknown)) as { oid: string; v: number | null }[];
    for (const r of rows) last.set(r.oid, r.v);
    return last;
  }

  async removeObjects(oids: string[]): Promise<void> {
    if (oids.length === 0) return;
    await this.#write(() =>
      this.#atomic(() => {
        for (let i = 0; i < oids.length; i += 256) {
          const chunk = JSON.stringify(oids.slice(i, i + 256));
          // Their history stays, the version removed included.
          this.#keepCurrentVersions(chunk);
          this.#q("DELETE FROM objects WHERE oid IN (SELECT value FROM json_each(?))").run(chunk);
          this.#q(
            `DELETE FROM links WHERE from_oid IN (SELECT value FROM json_each(?1))
             OR to_oid IN (SELECT value FROM json_each(?1))`,
          ).run(chunk);
        }
      })
    );
  }

  async insertLink(link: ObjectLink): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT OR IGNORE INTO links (from_oid, to_oid, relation) VALUES (?, ?, ?)").run(
        link.from_oid,
        link.to_oid,
        link.relation,
      );
    });
  }

  async linksFrom(oid: string): Promise<ObjectLink[]> {
    while (this.#busy) await this.#busy;
    return this.#q("SELECT from_oid, to_oid, relation FROM links WHERE from_oid = ? ORDER BY rowid")
      .all(oid) as unknown as ObjectLink[];
  }

  async linksFromNamespace(namespace: string): Promise<ObjectLink[]> {
    while (this.#busy) await this.#busy;
    return this.#q(
      `SELECT l.from_oid, l.to_oid, l.relation FROM links l JOIN objects o ON o.oid = l.from_oid
       WHERE o.namespace = ? ORDER BY l.rowid`,
    ).all(namespace) as unknown as ObjectLink[];
  }

  async removeLinks(links: ObjectLink[]): Promise<void> {
    if (links.length === 0) return;
    await this.#write(() =>
      this.#atomic(() => {
        const del = this.#q("DELETE FROM links WHERE from_oid = ? AND to_oid = ? AND relation = ?");
        for (const l of links) del.run(l.from_oid, l.to_oid, l.relation);
      })
    );
  }

  // ---- mailbox
  async insertMessage(m: Omit<MailMessage, "msg_id">): Promise<MailMessage> {
    return await this.#write(() => {
      const r = this.#q("INSERT INTO mailbox (to_pid, kind, body) VALUES (?, ?, ?)").run(
        m.to_pid,
        m.kind,
        JSON.stringify(m),
      );
      return { msg_id: Number(r.lastInsertRowid), ...m };
    });
  }

  async takeMessages(pid: number, limit: number): Promise<MailMessage[]> {
    return await this.#write(() =>
      this.#atomic(() => {
        const rows = this.#q(
          `SELECT msg_id, body FROM mailbox WHERE to_pid = ?
           ORDER BY CASE kind WHEN 'interrupt' THEN 0 ELSE 1 END, msg_id LIMIT ?`,
        ).all(pid, limit) as { msg_id: number; body: string }[];
        const del = this.#q("DELETE FROM mailbox WHERE msg_id = ?");
        return rows.map((r) => {
          del.run(r.msg_id);
          return { msg_id: r.msg_id, ...JSON.parse(r.body) };
        });
      })
    );
  }

  async listMessages(pid: number): Promise<MailMessage[]> {
    while (this.#busy) await this.#busy;
    return (this.#q(
      `SELECT msg_id, body FROM mailbox WHERE to_pid = ?
       ORDER BY CASE kind WHEN 'interrupt' THEN 0 ELSE 1 END, msg_id`,
    ).all(pid) as { msg_id: number; body: string }[]).map((r) => ({
      msg_id: r.msg_id,
      ...JSON.parse(r.body),
    }));
  }

  // ---- images
  async putImage(image: AgentImage, registeredBy: string): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT OR REPLACE INTO images (name, registered_by, body) VALUES (?, ?, ?)").run(
        image.name,
        registeredBy,
        JSON.stringify(image),
      );
    });
  }

  async getImage(name: string): Promise<AgentImage | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM images WHERE name = ?").get(name) as
      | { body: string }
      | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async listImages(): Promise<AgentImage[]> {
    while (this.#busy) await this.#busy;
    return (this.#q("SELECT body FROM images ORDER BY name").all() as { body: string }[]).map((r) =>
      JSON.parse(r.body)
    );
  }

  // ---- file labels
  async getFileLabel(realPath: string): Promise<Label | null> {
    while (this.#busy) await this.#busy;
    const { c, fill } = this.#fresh();
    if (c.labels.has(realPath)) return c.labels.get(realPath)!;
    const r = this.#q("SELECT label FROM file_labels WHERE path = ?").get(realPath) as
      | { label: Label }
      | undefined;
    const label = r?.label ?? null;
    if (fill) c.labels.set(realPath, label);
    return label;
  }

  async setFileLabel(realPath: string, label: Label): Promise<void> {
    return await this.#write(() =>
      this.#atomic(() => {
        this.#s.cache.labels.delete(realPath);
        this.#q("INSERT OR REPLACE INTO file_labels (path, label) VALUES (?, ?)").run(
          realPath,
          label,
        );
      })
    );
  }

  async fileLabelsUnder(dir: string): Promise<{ path: string; label: Label }[]> {
    while (this.#busy) await this.#busy;
    const prefix = dir.endsWith("/") ? dir : `${dir}/`;
    // A range scan on the primary key: every path that starts with the prefix.
    return this.#q(
      "SELECT path, label FROM file_labels WHERE path >= ? AND path < ? ORDER BY path",
    ).all(prefix, prefix.slice(0, -1) + "0") as { path: string; label: Label }[];
  }

  // ---- audit (hash chain)
  /**
   * Append an audit record; the store numbers and chains it. Inside a
   * transaction it lands with the transaction. Outside one, appends are
   * grouped (every append issued before the next microtask joins one batch)
   * and each caller's promise settles once its record is durable: written to
   * the audit log (indexed into the table by the log's thread), or, without a
   * log, committed here.
   */
  appendAudit(draft: AuditDraft): Promise<void> {
    // Even a stopped store appends to its log (not to the tables): an effect
    // under way when it stopped is still recorded.
    if (this.#inTx) {
      this.#appendAuditRows([draft]);
      return Promise.resolve();
    }
    const s = this.#s;
    return new Promise((resolve, reject) => {
      s.auditQueue.push({ draft, resolve, reject });
      if (s.auditQueue.length === 1) queueMicrotask(() => this.#flushAudit());
    });
  }

  async #flushAudit(): Promise<void> {
    const s = this.#s;
    const log = s.log;
    if (log?.behind) {
      try {
        await this.flush();
        await log.indexed();
      } catch { /* append reports the failure */ }
    }
    if (log?.full) {
      // Offsets are 32-bit: empty the log (once indexed) before it gets near that.
      try {
        await this.flush();
        await log.indexed();
        await this.#write(() => log.maybeTruncate());
      } catch { /* append reports the failure */ }
    }
    if (!log) { while (s.tx) await s.tx; }
    const batch = s.auditQueue.splice(0);
    if (batch.length === 0) return;
    try {
      if (log) log.append(batch.map((b) => auditDraftJson(b.draft)));
      else {await this.#write(() =>
          this.#atomic(() => this.#appendAuditRows(batch.map((b) => b.draft)))
        );}
      for (const b of batch) b.resolve();
    } catch (e) {
      for (const b of batch) b.reject(e);
    }
  }

  // Chain and insert drafts in order; caller provides the transaction.
  #appendAuditRows(drafts: AuditDraft[]): void {
    insertAuditRows((sql) => this.#q(sql), drafts.map((d) => [auditDraftJson(d), d]));
  }

  /**
   * Settles once every audit record appended so far is in the audit table
   * (at once without an audit log). Audit reads wait for this themselves.
   */
  async auditIndexed(): Promise<void> {
    if (this.#inTx) return;
    // The indexer needs the write lock that deferred writes hold.
    await this.flush();
    await this.#s.log?.indexed();
  }

  async listAudit(filter: AuditFilter = {}): Promise<AuditRecord[]> {
    await this.auditIndexed();
    while (this.#busy) await this.#busy;
    const where: string[] = ["seq > ?"];
    const params: (string | number)[] = [filter.afterSeq ?? 0];
    if (filter.actor) (where.push("actor = ?"), params.push(filter.actor));
    if (filter.action) (where.push("action = ?"), params.push(filter.action));
    if (filter.decision) (where.push("decision = ?"), params.push(filter.decision));
    params.push(filter.limit ?? -1);
    return (this.#s.db.prepare(
      `SELECT body, prev_hash, hash FROM audit WHERE ${where.join(" AND ")} ORDER BY seq LIMIT ?`,
    ).all(...params) as { body: string; prev_hash: string; hash: string }[]).map((r) => ({
      ...JSON.parse(r.body),
      prev_hash: r.prev_hash,
      hash: r.hash,
    }));
  }

  /**
   * Check the whole chain: one thread for a short one; a long one (over
   * `verifyParallelAbove` records, on a file store) split by seq ranges among
   * worker threads, each reading with its own connection. Either way the
   * answer names the same first bad record.
   */
  async verifyAudit(): Promise<AuditVerification> {
    await this.auditIndexed();
    while (this.#busy) await this.#busy;
    const db = this.#s.db;
    if (this.#inTx) return joinRanges([verifyRange(db, 0, this.#topSeq())], this.#head());
    // One read snapshot for the last seq and the head: records committed meanwhile
    // (by the indexer or another runtime) must not look like removals.
    let top: number;
    let head: { seq: number; hash: string } | null;
    db.exec("BEGIN");
    try {
      top = this.#topSeq();
      head = this.#head();
      const { threads, above } = this.#s.verify;
      if (top <= above || threads < 2 || this.#s.path === null) {
        return joinRanges([verifyRange(db, 0, top)], head);
      }
    } finally {
      db.exec("COMMIT");
    }
    // Records up to `top` are committed and never change: each thread reads its own range.
    return joinRanges(await this.#verifyInThreads(top), head);
  }

  #topSeq(): number {
    return Number(
      (this.#q("SELECT COALESCE(MAX(seq), 0) AS n FROM audit").get() as { n: number }).n,
    );
  }

  #head(): { seq: number; hash: string } | null {
    const raw = (this.#q("SELECT value FROM meta WHERE key = 'audit_head'").get() as
      | { value: string }
      | undefined)?.value;
    return raw ? JSON.parse(raw) : null;
  }

  async #verifyInThreads(top: number): Promise<RangeReport[]> {
    const n = this.#s.verify.threads;
    const step = Math.ceil(top / n);
    const jobs: Promise<RangeReport>[] = [];
    for (let i = 0; i < n; i++) {
      const from = i * step;
      const to = Math.min(top, from + step);
      if (from >= to) break;
      jobs.push(_verifyInThread(this.#s.path!, from, to));
    }
    return await Promise.all(jobs);
  }

  // ---- events
  async appendEvent(e: EventDraft): Promise<LibosEvent> {
    return await this.#write(() => {
      const r = this.#q("INSERT INTO events (type, body) VALUES (?, ?)").run(
        e.type,
        JSON.stringify(e),
      );
      return { event_id: Number(r.lastInsertRowid), ...e };
    });
  }

  async listEvents(afterId = 0, limit = -1): Promise<LibosEvent[]> {
    while (this.#busy) await this.#busy;
    return (this.#q(
      "SELECT event_id, body FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?",
    )
      .all(afterId, limit) as { event_id: number; body: string }[]).map((r) => ({
        event_id: r.event_id,
        ...JSON.parse(r.body),
      }));
  }

  // ---- effect ledger
  async insertEffect(e: EffectRecord): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT INTO effects (effect_id, status, body) VALUES (?, ?, ?)").run(
        e.effect_id,
        e.status,
        JSON.stringify(e),
      );
    });
  }

  async finishEffect(
    effectId: string,
    status: EffectStatus,
    outcome: unknown,
    at: string,
  ): Promise<void> {
    return await this.#write(() => {
      this.#atomic(() => {
        const r = this.#q("SELECT body FROM effects WHERE effect_id = ?").get(effectId) as
          | { body: string }
          | undefined;
        if (!r) return;
        const next: EffectRecord = { ...JSON.parse(r.body), status, outcome, finished_at: at };
        this.#q("UPDATE effects SET status = ?, body = ? WHERE effect_id = ?").run(
          status,
          JSON.stringify(next),
          effectId,
        );
      });
    });
  }

  async listEffects(status?: EffectStatus): Promise<EffectRecord[]> {
    while (this.#busy) await this.#busy;
    const rows = status
      ? this.#q("SELECT body FROM effects WHERE status = ? ORDER BY rowid").all(status)
      : this.#q("SELECT body FROM effects ORDER BY rowid").all();
    return (rows as { body: string }[]).map((r) => JSON.parse(r.body));
  }

  async markPendingEffectsUnknown(at: string, pid?: number): Promise<number> {
    // One statement over the status index, however long the ledger.
    return await this.#write(() =>
      Number(
        this.#q(
          `UPDATE effects SET status = 'unknown',
             body = json_set(body, '$.status', 'unknown', '$.outcome', NULL, '$.finished_at', ?1)
           WHERE status = 'pending' AND (?2 IS NULL OR json_extract(body, '$.pid') = ?2)`,
        ).run(at, pid ?? null).changes,
      )
    );
  }

  async getEffect(effectId: string): Promise<EffectRecord | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM effects WHERE effect_id = ?").get(effectId) as
      | { body: string }
      | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async ledgerMark(): Promise<LedgerMark> {
    while (this.#busy) await this.#busy;
    const e = this.#q("SELECT COALESCE(MAX(rowid), 0) AS n FROM effects").get() as { n: number };
    const m = this.#q("SELECT COALESCE(MAX(rowid), 0) AS n FROM model_calls").get() as {
      n: number;
    };
    return { effects: Number(e.n), model_calls: Number(m.n) };
  }

  async ledgerSince(
    mark: LedgerMark,
    pids: readonly number[],
    options: { until?: LedgerMark; limit?: number } = {},
  ): Promise<LedgerSince> {
    while (this.#busy) await this.#busy;
    const set = JSON.stringify([...pids]);
    const limit = options.limit ?? 1000;
    // A range scan from the mark: what came before it is never read.
    const fx = `FROM effects WHERE rowid > ? AND rowid <= ? AND json_extract(body, '$.pid') IN
      (SELECT value FROM json_each(?))`;
    const mc = `FROM model_calls WHERE rowid > ? AND rowid <= ?
      AND pid IN (SELECT value FROM json_each(?))`;
    const end = Number.MAX_SAFE_INTEGER;
    const bodies = (sql: string, at: number, to: number) =>
      (this.#q(`SELECT body ${sql} ORDER BY rowid LIMIT ?`).all(at, to, set, limit) as {
        body: string;
      }[]).map((r) => JSON.parse(r.body));
    const count = (sql: string, at: number, to: number) =>
      Number((this.#q(`SELECT COUNT(*) AS n ${sql}`).get(at, to, set) as { n: number }).n);
    const fxTo = options.until?.effects ?? end;
    const mcTo = options.until?.model_calls ?? end;
    return {
      effects: bodies(fx, mark.effects, fxTo),
      model_calls: bodies(mc, mark.model_calls, mcTo),
      effects_total: count(fx, mark.effects, fxTo),
      model_calls_total: count(mc, mark.model_calls, mcTo),
    };
  }

  // ---- LLM call ledger
  async insertModelCall(c: ModelCallRecord): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT INTO model_calls (call_id, pid, status, body) VALUES (?, ?, ?, ?)").run(
        c.call_id,
        c.pid,
        c.status,
        JSON.stringify(c),
      );
    });
  }

  async updateModelCall(
    callId: string,
    patch: Partial<Omit<ModelCallRecord, "call_id" | "pid">>,
  ): Promise<void> {
    return await this.#write(() => {
      this.#atomic(() => {
        const r = this.#q("SELECT body FROM model_calls WHERE call_id = ?").get(callId) as
          | { body: string }
          | undefined;
        if (!r) throw new LibosError("ENOENT", `model call: no call ${callId}`);
        const next: ModelCallRecord = { ...JSON.parse(r.body), ...patch };
        this.#q("UPDATE model_calls SET status = ?, body = ? WHERE call_id = ?").run(
          next.status,
          JSON.stringify(next),
          callId,
        );
      });
    });
  }

  async getModelCall(callId: string): Promise<ModelCallRecord | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM model_calls WHERE call_id = ?").get(callId) as
      | { body: string }
      | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async listModelCalls(filter: { pid?: number } = {}): Promise<ModelCallRecord[]> {
    while (this.#busy) await this.#busy;
    const rows = filter.pid !== undefined
      ? this.#q("SELECT body FROM model_calls WHERE pid = ? ORDER BY rowid").all(filter.pid)
      : this.#q("SELECT body FROM model_calls ORDER BY rowid").all();
    return (rows as { body: string }[]).map((r) => JSON.parse(r.body));
  }

  async markPendingModelCallsUnknown(at: string, pid?: number): Promise<number> {
    return await this.#write(() =>
      Number(
        this.#q(
          `UPDATE model_calls SET status = 'unknown',
             body = json_set(body, '$.status', 'unknown', '$.finished_at', ?1)
           WHERE status = 'pending' AND (?2 IS NULL OR pid = ?2)`,
        ).run(at, pid ?? null).changes,
      )
    );
  }

  async insertModelRelease(r: ModelRelease): Promise<void> {
    return await this.#write(() => {
      this.#q(
        "INSERT OR IGNORE INTO model_releases (pid, sha256, endpoint, body) VALUES (?, ?, ?, ?)",
      ).run(r.pid, r.sha256, r.endpoint, JSON.stringify(r));
    });
  }

  async listModelReleases(pid: number): Promise<ModelRelease[]> {
    while (this.#busy) await this.#busy;
    return (this.#q("SELECT body FROM model_releases WHERE pid = ?").all(pid) as {
      body: string;
    }[]).map((r) => JSON.parse(r.body));
  }

  // ---- human queue
  async insertHumanRequest(r: HumanRequestRecord): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT INTO human_requests (request_id, pid, status, body) VALUES (?, ?, ?, ?)").run(
        r.request_id,
        r.pid,
        r.status,
        JSON.stringify(r),
      );
    });
  }

  async getHumanRequest(id: string): Promise<HumanRequestRecord | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT body FROM human_requests WHERE request_id = ?").get(id) as
      | { body: string }
      | undefined;
    return r ? JSON.parse(r.body) : null;
  }

  async listHumanRequests(
    filter: { status?: HumanRequestStatus; pid?: number } = {},
  ): Promise<HumanRequestRecord[]> {
    while (this.#busy) await this.#busy;
    const rows = this.#q(
      `SELECT body FROM human_requests WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR pid = ?2)
       ORDER BY rowid`,
    ).all(filter.status ?? null, filter.pid ?? null) as { body: string }[];
    return rows.map((r) => JSON.parse(r.body));
  }

  async updateHumanRequest(
    id: string,
    patch: Partial<HumanRequestRecord>,
    expectStatus: HumanRequestStatus,
  ): Promise<boolean> {
    return await this.#write(() =>
      this.#atomic(() => {
        const r = this.#q("SELECT body FROM human_requests WHERE request_id = ? AND status = ?")
          .get(
            id,
            expectStatus,
          ) as { body: string } | undefined;
        if (!r) return false;
        const next = { ...JSON.parse(r.body), ...patch, request_id: id };
        this.#q(
          "UPDATE human_requests SET status = ?, body = ? WHERE request_id = ? AND status = ?",
        )
          .run(next.status, JSON.stringify(next), id, expectStatus);
        return true;
      })
    );
  }

  // ---- checkpoints
  async insertCheckpoint(c: CheckpointRecord): Promise<void> {
    const { body, sha256, ...meta } = c;
    await this.#write(() => {
      this.#q(
        "INSERT INTO checkpoints (checkpoint_id, root_pid, sha256, meta, body) VALUES (?, ?, ?, ?, ?)",
      ).run(c.checkpoint_id, c.root_pid, sha256, JSON.stringify(meta), body);
    });
  }

  async getCheckpoint(id: string): Promise<CheckpointRecord | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT sha256, meta, body FROM checkpoints WHERE checkpoint_id = ?").get(
      id,
    ) as { sha256: string; meta: string; body: string } | undefined;
    return r ? { ...JSON.parse(r.meta), sha256: r.sha256, body: r.body } : null;
  }

  async listCheckpoints(rootPid?: number): Promise<CheckpointMeta[]> {
    while (this.#busy) await this.#busy;
    const rows = rootPid === undefined
      ? this.#q("SELECT sha256, meta FROM checkpoints ORDER BY rowid").all()
      : this.#q("SELECT sha256, meta FROM checkpoints WHERE root_pid = ? ORDER BY rowid").all(
        rootPid,
      );
    return (rows as { sha256: string; meta: string }[]).map((r) => ({
      ...JSON.parse(r.meta),
      sha256: r.sha256,
    }));
  }

  // ---- meta
  async getMeta(key: string): Promise<string | null> {
    while (this.#busy) await this.#busy;
    const r = this.#q("SELECT value FROM meta WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return r?.value ?? null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    return await this.#write(() => {
      this.#q("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(key, value);
    });
  }
}

/** One range of the chain checked by a worker thread. */
/**
 * Objects are stored as their canonical JSON, so a checkpoint can splice the
 * stored text (`listObjectTexts`). A store written before that is rewritten
 * once, in one transaction, and marked (`meta.objects_canonical`).
 */
function _canonicalObjects(db: DatabaseSync): void {
  const done = db.prepare("SELECT value FROM meta WHERE key = 'objects_canonical'").get();
  if (done) return;
  db.exec("BEGIN IMMEDIATE");
  try {
    const upd = db.prepare("UPDATE objects SET body = ? WHERE rowid = ?");
    for (
      const r of db.prepare("SELECT rowid AS id, body FROM objects").all() as {
        id: number;
        body: string;
      }[]
    ) {
      const body = canonicalJson(JSON.parse(r.body));
      if (body !== r.body) upd.run(body, r.id);
    }
    db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('objects_canonical', '1')").run();
    db.exec("COMMIT");
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}

function _verifyInThread(storePath: string, from: number, to: number): Promise<RangeReport> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL("./_audit_verifier.ts", import.meta.url), {
      workerData: { storePath, from, to },
    });
    w.once("message", (m: { report?: RangeReport; error?: string }) => {
      if (m.report) resolve(m.report);
      else reject(new LibosError("EIO", `audit verify: ${m.error}`));
    });
    w.once("error", (e: unknown) => reject(new LibosError("EIO", `audit verify: ${String(e)}`)));
    w.once("exit", (code: number) => {
      if (code !== 0) reject(new LibosError("EIO", `audit verify: thread exited ${code}`));
    });
  });
}

/** The audit log's view of a store connection (used before the store object exists). */
/**
 * Replay what the step journal of a stopped store held (see
 * `_step_journal.ts`), in order, in one transaction: each result (object
 * and step index row, unless there already) and each state row, unless
 * another runtime has since moved the process out of `runnable` and
 * `running` (a kill while this one was down wins).
 */
function _replayJournal(db: DatabaseSync, lines: JournalLine[]): void {
  const epoch = _journalEpoch(db);
  const obj = db.prepare(
    "INSERT OR IGNORE INTO objects (oid, namespace, name, version, body) VALUES (?, ?, ?, ?, ?)",
  );
  const step = db.prepare("INSERT OR IGNORE INTO step_results (pid, step, oid) VALUES (?, ?, ?)");
  const hot = db.prepare(
    `UPDATE process_state SET ${HOT_KEYS.map((k) => `${k} = ?`).join(", ")}
     WHERE pid = ? AND status IN ('runnable', 'running')`,
  );
  db.exec("BEGIN IMMEDIATE");
  try {
    for (const l of lines) {
      // A line of an earlier epoch was committed (the store stopped before emptying it).
      if (l.e !== epoch) continue;
      for (const [n, oid, namespace, name, version, body] of l.r ?? []) {
        obj.run(oid, namespace, name, version, body);
        step.run(l.p, n, oid);
      }
      hot.run(...l.h, l.p);
    }
    db.prepare(_BUMP_EPOCH).run(String(epoch + 1));
    db.exec("COMMIT");
  } catch (e) {
    db.exec("ROLLBACK");
    throw e;
  }
}

/** Take the store's step journal (null if another store holds it) and replay what it held. */
function _openJournal(
  db: DatabaseSync,
  path: string,
  synchronous: string,
  wrap?: (file: Deno.FsFile) => JournalFile,
): StepJournal | null {
  let opened;
  try {
    opened = StepJournal.open(path, synchronous, wrap);
    if (opened?.left.length) _replayJournal(db, opened.left);
    opened?.journal.clear();
  } catch (e) {
    opened?.journal.close();
    db.close();
    throw e;
  }
  return opened?.journal ?? null;
}

/** Sets the journal's epoch: every commit that empties a written journal moves it on. */
const _BUMP_EPOCH = "UPDATE meta SET value = ? WHERE key = 'journal_epoch'";

function _journalEpoch(db: DatabaseSync): number {
  return Number(
    (db.prepare("SELECT value FROM meta WHERE key = 'journal_epoch'").get() as { value: string })
      .value,
  );
}

function _logHooks(db: DatabaseSync): AuditLogHooks {
  const prepare: Prepare = (sql) => db.prepare(sql);
  return {
    indexedOffset: () =>
      Number(
        (prepare("SELECT value FROM meta WHERE key = 'audit_log_offset'").get() as
          | { value: string }
          | undefined)?.value ?? 0,
      ),
    index: (lines, endOffset) => indexAuditLines(db, prepare, lines, endOffset),
    resetOffset: () => setAuditLogOffset(prepare, 0),
  };
}
