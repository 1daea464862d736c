/**
 * SQLite backend of the {@link Store} (node:sqlite, WAL). The default store.
 *
 * Concurrency: within one runtime, a transaction holds an async gate so other
 * coroutines' statements never land inside it; across runtimes, SQLite's own
 * write lock (`BEGIN IMMEDIATE`, busy timeout) serializes writers.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { AuditLog, type AuditLogHooks } from "./_audit_log.ts";
import {
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
  EffectRecord,
  EffectStatus,
  HumanRequestRecord,
  HumanRequestStatus,
  Label,
  LibosEvent,
  MailMessage,
  MemoryObject,
  ObjectLink,
  ProcessRecord,
  ProcessStatus,
} from "../types.ts";
import type { AuditDraft, AuditFilter, AuditVerification, EventDraft, Store } from "./store.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processes (
  pid INTEGER PRIMARY KEY AUTOINCREMENT, ppid INTEGER, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS capabilities (
  cap_id TEXT PRIMARY KEY, subject INTEGER NOT NULL, parent_cap_id TEXT, status TEXT NOT NULL,
  uses_remaining INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS caps_subject ON capabilities(subject);
CREATE INDEX IF NOT EXISTS caps_parent ON capabilities(parent_cap_id);
CREATE TABLE IF NOT EXISTS objects (
  oid TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT, version INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS objects_ns ON objects(namespace);
CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects(namespace, name) WHERE name IS NOT NULL;
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
INSERT OR IGNORE INTO meta (key, value) VALUES ('cache_gen', '0');
${
  ["processes", "capabilities", "file_labels"].flatMap((t) =>
    ["INSERT", "UPDATE", "DELETE"].map((op) =>
      `CREATE TRIGGER IF NOT EXISTS cache_gen_${t}_${op.toLowerCase()} AFTER ${op} ON ${t}
       BEGIN UPDATE meta SET value = value + 1 WHERE key = 'cache_gen'; END;`
    )
  ).join("\n")
}
`;

/**
 * Hash of an audit record: sha256 over the previous hash and the record's JSON
 * exactly as stored (the `body` column). Hashing the stored bytes needs no
 * canonical form and no re-serialization, on write or on verify.
 */
export function auditHash(prevHash: string, rec: Omit<AuditRecord, "hash" | "prev_hash">): string {
  return chainHash(prevHash, JSON.stringify(rec));
}

interface _AuditRow {
  seq: number;
  record_id: string;
  actor: string;
  action: string;
  decision: string;
  prev_hash: string;
  hash: string;
  body: string;
}

/**
 * Parsed rows of the hot read path (process, capabilities, file labels). A
 * cache entry is only ever served while the store's `cache_gen` (bumped by
 * triggers on every write to those tables, from any connection) is unchanged
 * since it was read, and every write of ours to those tables clears it, so a
 * revocation from anywhere is seen at once. `PRAGMA data_version` only says
 * when to read `cache_gen` again: it also moves on the audit indexer's
 * commits, which must not empty the cache.
 */
/** Longest a commit by another process can go unseen by the read cache. */
export const FOREIGN_WRITE_WINDOW_MS = 0.25;

interface _ReadCache {
  checkedAt: number;
  /** `PRAGMA data_version` at the last check. */
  dataVersion: unknown;
  /** `meta.cache_gen` at the last check. */
  version: unknown;
  procs: Map<number, ProcessRecord>;
  caps: Map<number, readonly Capability[]>;
  labels: Map<string, Label | null>;
}

function _deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) _deepFreeze(x);
  }
  return v;
}

interface _Shared {
  /** The audit log, when this store holds it (file stores; see `_audit_log.ts`). */
  log: AuditLog | null;
  cache: _ReadCache;
  auditQueue: {
    draft: AuditDraft;
    resolve: () => void;
    reject: (e: unknown) => void;
  }[];
  db: DatabaseSync;
  tx: Promise<void> | null;
  stmts: Map<string, StatementSync>;
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
}

/** The SQLite store. Open with {@link SqliteStore.open}. */
export class SqliteStore implements Store {
  #s: _Shared;
  #inTx: boolean;

  private constructor(shared: _Shared, inTx: boolean) {
    this.#s = shared;
    this.#inTx = inTx;
  }

  /** Open (and create) a store file; `:memory:` for a throwaway store. */
  static open(path: string, options: SqliteOptions = {}): SqliteStore {
    const db = new DatabaseSync(path);
    db.exec("PRAGMA busy_timeout = 5000");
    if (path !== ":memory:") db.exec("PRAGMA journal_mode = WAL");
    db.exec(`PRAGMA synchronous = ${options.synchronous ?? "NORMAL"}`);
    db.exec("PRAGMA foreign_keys = ON");
    // Fewer, larger checkpoints: each one fsyncs even at synchronous=NORMAL.
    db.exec("PRAGMA wal_autocheckpoint = 8000");
    db.exec(SCHEMA);
    const cache = {
      checkedAt: -Infinity,
      dataVersion: null,
      version: null,
      procs: new Map(),
      caps: new Map(),
      labels: new Map(),
    };
    const synchronous = options.synchronous ?? "NORMAL";
    const log = path !== ":memory:" && options.auditLog !== false
      ? AuditLog.open(path, synchronous, _logHooks(db), options.auditLogMaxBytes)
      : null;
    return new SqliteStore({ log, cache, auditQueue: [], db, tx: null, stmts: new Map() }, false);
  }

  #q(sql: string): StatementSync {
    let s = this.#s.stmts.get(sql);
    if (!s) {
      s = this.#s.db.prepare(sql);
      this.#s.stmts.set(sql, s);
    }
    return s;
  }

  // Another coroutine's open transaction, which our statements must not join.
  // Callers loop `while (this.#busy) await this.#busy;` inline: an extra async
  // hop between the check and the statement would let a transaction slip in.
  get #busy(): Promise<void> | null {
    return this.#inTx ? null : this.#s.tx;
  }

  // The read cache, if it may serve now: never inside a transaction (its reads
  // may be rolled back), and emptied when another connection has committed.
  // Asking SQLite costs as much as a row read, so the answer is reused for
  // FOREIGN_WRITE_WINDOW_MS: a commit by another process is seen that late at most
  // (our own writes clear the cache at once).
  #fresh(): _ReadCache | null {
    if (this.#inTx) return null;
    const c = this.#s.cache;
    const now = performance.now();
    if (now - c.checkedAt >= FOREIGN_WRITE_WINDOW_MS) {
      c.checkedAt = now;
      // data_version is cheap and moves on any other connection's commit (the
      // audit indexer's included); only then is the generation read.
      const dv = (this.#q("PRAGMA data_version").get() as { data_version: unknown }).data_version;
      if (dv !== c.dataVersion) {
        c.dataVersion = dv;
        const v = (this.#q("SELECT value FROM meta WHERE key = 'cache_gen'").get() as
          | { value: string }
          | undefined)?.value;
        if (v !== c.version) {
          this.#invalidate();
          c.version = v;
        }
      }
    }
    return c;
  }

  #invalidate(): void {
    const c = this.#s.cache;
    c.procs.clear();
    c.caps.clear();
    c.labels.clear();
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.#inTx) return await fn(this);
    while (this.#s.tx) await this.#s.tx;
    let release!: () => void;
    this.#s.tx = new Promise((r) => (release = r));
    const log = this.#s.log;
    try {
      while (log && !log.tryLock()) await log.unlocked();
      this.#s.db.exec("BEGIN IMMEDIATE");
      try {
        const out = await fn(new SqliteStore(this.#s, true));
        this.#s.db.exec("COMMIT");
        return out;
      } catch (e) {
        this.#s.db.exec("ROLLBACK");
        throw e;
      } finally {
        log?.unlock();
      }
    } finally {
      this.#invalidate();
      this.#s.tx = null;
      release();
    }
  }

  /**
   * Run the synchronous write `fn` once no other coroutine's transaction is
   * open and the audit indexer is not committing. The lock is taken and
   * released with no await between, so this thread never waits inside SQLite
   * for its own indexer. Inside a transaction, `fn` runs at once.
   */
  async #write<T>(fn: () => T): Promise<T> {
    for (;;) {
      if (this.#busy) {
        await this.#busy;
        continue;
      }
      const log = this.#inTx ? null : this.#s.log;
      if (!log || log.tryLock()) {
        try {
          return fn();
        } finally {
          log?.unlock();
        }
      }
      await log.unlocked();
    }
  }

  // Run a synchronous multi-statement write atomically (own tx unless inside one).
  #atomic<T>(fn: () => T): T {
    if (this.#inTx) return fn();
    this.#s.db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.#s.db.exec("COMMIT");
      return out;
    } catch (e) {
      this.#s.db.exec("ROLLBACK");
      throw e;
    }
  }

  async close(): Promise<void> {
    while (this.#busy) await this.#busy;
    try {
      await this.#s.log?.close();
    } finally {
      this.#s.db.close();
    }
  }

  // ---- processes
  async insertProcess(p: Omit<ProcessRecord, "pid">): Promise<ProcessRecord> {
    return await this.#write(() => {
      this.#invalidate();
      const r = this.#q("INSERT INTO processes (ppid, status, body) VALUES (?, ?, ?)").run(
        p.ppid,
        p.status,
        "{}",
      );
      const rec: ProcessRecord = { pid: Number(r.lastInsertRowid), ...p };
      this.#q("UPDATE processes SET body = ? WHERE pid = ?").run(JSON.stringify(rec), rec.pid);
      return rec;
    });
  }

  async getProcess(pid: number): Promise<ProcessRecord | null> {
    while (this.#busy) await this.#busy;
    const cache = this.#fresh();
    const hit = cache?.procs.get(pid);
    // A shallow copy: callers may set top-level fields; nested ones are frozen.
    if (hit) return { ...hit };
    const row = this.#q("SELECT body FROM processes WHERE pid = ?").get(pid) as
      | { body: string }
      | undefined;
    if (!row) return null;
    const rec = JSON.parse(row.body) as ProcessRecord;
    if (!cache) return rec;
    cache.procs.set(pid, _deepFreeze(rec));
    return { ...rec };
  }

  async listProcesses(): Promise<ProcessRecord[]> {
    while (this.#busy) await this.#busy;
    return (this.#q("SELECT body FROM processes ORDER BY pid").all() as { body: string }[]).map(
      (r) => JSON.parse(r.body),
    );
  }

  async updateProcess(
    pid: number,
    patch: Partial<Omit<ProcessRecord, "pid">>,
    expectStatus?: ProcessStatus,
  ): Promise<boolean> {
    return await this.#write(() => {
      this.#invalidate();
      return this.#atomic(() => {
        const row = this.#q("SELECT body FROM processes WHERE pid = ?").get(pid) as
          | { body: string }
          | undefined;
        if (!row) return false;
        const cur = JSON.parse(row.body) as ProcessRecord;
        if (expectStatus !== undefined && cur.status !== expectStatus) return false;
        const next = { ...cur, ...patch, pid };
        this.#q("UPDATE processes SET status = ?, body = ? WHERE pid = ?").run(
          next.status,
          JSON.stringify(next),
          pid,
        );
        return true;
      });
    });
  }

  // ---- capabilities
  async insertCapability(c: Capability): Promise<void> {
    return await this.#write(() => {
      this.#invalidate();
      this.#q(
        "INSERT INTO capabilities (cap_id, subject, parent_cap_id, status, uses_remaining, body) VALUES (?, ?, ?, ?, ?, ?)",
      ).run(c.cap_id, c.subject, c.parent_cap_id, c.status, c.uses_remaining, JSON.stringify(c));
    });
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
    const cache = this.#fresh();
    const hit = cache?.caps.get(subject);
    if (hit) return [...hit];
    const caps = (this.#q(
      "SELECT body, status, uses_remaining FROM capabilities WHERE subject = ? ORDER BY rowid",
    ).all(subject) as { body: string; status: string; uses_remaining: number | null }[]).map((r) =>
      this.#capRow(r)
    );
    if (cache) cache.caps.set(subject, _deepFreeze(caps));
    return [...caps];
  }

  async consumeCapability(capId: string): Promise<boolean> {
    return await this.reserveUses(capId, 1);
  }

  async reserveUses(capId: string, n: number): Promise<boolean> {
    return await this.#write(() => {
      this.#invalidate();
      const r = this.#q(
        `UPDATE capabilities SET uses_remaining = uses_remaining - ?,
           status = CASE WHEN uses_remaining - ? <= 0 THEN 'exhausted' ELSE status END
         WHERE cap_id = ? AND status = 'active' AND uses_remaining IS NOT NULL AND uses_remaining >= ?`,
      ).run(n, n, capId, n);
      return Number(r.changes) === 1;
    });
  }

  async revokeCascade(capId: string): Promise<string[]> {
    return await this.#write(() => {
      this.#invalidate();
      return this.#atomic(() => {
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
  async insertObject(o: MemoryObject): Promise<void> {
    return await this.#write(() => {
      this.#atomic(() => {
        this.#q("INSERT INTO objects (oid, namespace, name, version, body) VALUES (?, ?, ?, ?, ?)")
          .run(o.oid, o.namespace, o.name, o.version, JSON.stringify(o));
        this.#q("INSERT INTO object_versions (oid, version, body) VALUES (?, ?, ?)").run(
          o.oid,
          o.version,
          JSON.stringify(o),
        );
      });
    });
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
        const next: MemoryObject = { ...JSON.parse(r.body), ...patch, version: expectVersion + 1 };
        const upd = this.#q(
          "UPDATE objects SET version = ?, body = ? WHERE oid = ? AND version = ?",
        )
          .run(next.version, JSON.stringify(next), oid, expectVersion);
        if (Number(upd.changes) !== 1) return null;
        this.#q("INSERT INTO object_versions (oid, version, body) VALUES (?, ?, ?)").run(
          oid,
          next.version,
          JSON.stringify(next),
        );
        return next;
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
    const cache = this.#fresh();
    if (cache?.labels.has(realPath)) return cache.labels.get(realPath)!;
    const r = this.#q("SELECT label FROM file_labels WHERE path = ?").get(realPath) as
      | { label: Label }
      | undefined;
    const label = r?.label ?? null;
    cache?.labels.set(realPath, label);
    return label;
  }

  async setFileLabel(realPath: string, label: Label): Promise<void> {
    return await this.#write(() => {
      this.#invalidate();
      this.#q("INSERT OR REPLACE INTO file_labels (path, label) VALUES (?, ?)").run(
        realPath,
        label,
      );
    });
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
        await log.indexed();
      } catch { /* append reports the failure */ }
    }
    if (log?.full) {
      // Offsets are 32-bit: empty the log (once indexed) before it gets near that.
      try {
        await log.indexed();
        await this.#write(() => log.maybeTruncate());
      } catch { /* append reports the failure */ }
    }
    if (!log) { while (s.tx) await s.tx; }
    const batch = s.auditQueue.splice(0);
    if (batch.length === 0) return;
    try {
      if (log) log.append(batch.map((b) => JSON.stringify(b.draft)));
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
    insertAuditRows((sql) => this.#q(sql), drafts.map((d) => [JSON.stringify(d), d]));
  }

  /**
   * Settles once every audit record appended so far is in the audit table
   * (at once without an audit log). Audit reads wait for this themselves.
   */
  async auditIndexed(): Promise<void> {
    if (!this.#inTx) await this.#s.log?.indexed();
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

  async verifyAudit(): Promise<AuditVerification> {
    await this.auditIndexed();
    while (this.#busy) await this.#busy;
    if (this.#inTx) return this.#verifyChain();
    // One read snapshot for the rows and the head: records committed meanwhile
    // (by the indexer or another runtime) must not look like removals.
    this.#s.db.exec("BEGIN");
    try {
      return this.#verifyChain();
    } finally {
      this.#s.db.exec("COMMIT");
    }
  }

  #verifyChain(): AuditVerification {
    let prev = "";
    let expectSeq = 1;
    let count = 0;
    const rows = this.#q(
      "SELECT seq, record_id, actor, action, decision, prev_hash, hash, body FROM audit ORDER BY seq",
    ).iterate() as Iterable<_AuditRow>;
    for (const row of rows) {
      const bad = (problem: string): AuditVerification => ({
        ok: false,
        count,
        head: prev,
        firstBad: { seq: row.seq, record_id: row.record_id, problem },
      });
      if (row.seq !== expectSeq) return bad(`expected record ${expectSeq}: a record was removed`);
      let rec: AuditRecord;
      try {
        rec = JSON.parse(row.body);
      } catch {
        return bad("record body is not valid JSON");
      }
      if (row.prev_hash !== prev) return bad("prev_hash does not match the previous record");
      // record_id is a function of seq (no index keeps it unique: one less page per commit).
      if (
        rec.seq !== row.seq || rec.record_id !== row.record_id || row.record_id !== `a${row.seq}`
      ) {
        return bad("record id altered");
      }
      if (chainHash(prev, row.body) !== row.hash) {
        return bad("hash does not match the record's contents");
      }
      if (row.actor !== rec.actor || row.action !== rec.action || row.decision !== rec.decision) {
        return bad("indexed columns disagree with the hashed record");
      }
      prev = row.hash;
      expectSeq++;
      count++;
    }
    const headRaw = (this.#q("SELECT value FROM meta WHERE key = 'audit_head'").get() as
      | { value: string }
      | undefined)?.value;
    if (count > 0 || headRaw) {
      const head = headRaw ? JSON.parse(headRaw) as { seq: number; hash: string } : null;
      if (!head || head.seq !== count || head.hash !== prev) {
        return {
          ok: false,
          count,
          head: prev,
          firstBad: {
            seq: count + 1,
            record_id: `a${count + 1}`,
            problem: `chain head says ${
              head ? head.seq : "nothing"
            } records, found ${count}: records were removed from the end`,
          },
        };
      }
    }
    return { ok: true, count, head: prev };
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

  async markPendingEffectsUnknown(at: string): Promise<number> {
    const pending = await this.listEffects("pending");
    for (const e of pending) await this.finishEffect(e.effect_id, "unknown", null, at);
    return pending.length;
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

/** The audit log's view of a store connection (used before the store object exists). */
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
