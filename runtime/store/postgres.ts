/**
 * PostgreSQL backend of the {@link Store}, through the `postgres` npm driver:
 * one database shared by several runtimes ("workers"), on one machine or many.
 *
 * It builds on PostgreSQL's own guarantees rather than a protocol of its own:
 * - every compare-and-swap (a status, an object's version, a human request, a
 *   capability's uses) is one conditional `UPDATE`, or a row locked `FOR
 *   UPDATE` in a transaction;
 * - workers claim runnable processes with `FOR UPDATE SKIP LOCKED`, least
 *   recently run first, and hold them by a lease (worker, token, expiry) on
 *   the process's state row ({@link LeaseStore});
 * - every write a worker makes for a process goes through a view fenced by
 *   its lease: the transaction first checks the lease still holds and keeps
 *   the row `FOR KEY SHARE`, so a claim cannot take the process until the
 *   write has committed, and a write after a claim is refused (`EFENCED`);
 * - audit records and events are appended by server-side functions that lock
 *   one head row: one hash chain and gap-free event ids in commit order,
 *   whoever appends;
 * - a process that becomes runnable from outside a quantum sends a `NOTIFY`
 *   that wakes listening workers (which also poll).
 *
 * Deferred transactions commit at once and {@link PgStore.flush} has nothing
 * to do: the interface's semantics hold, without the SQLite store's grouping.
 * Nothing is cached but immutable model inputs: other runtimes write too.
 * @module
 */
import postgres from "postgres";
import { LibosError } from "../errors.ts";
import { canonicalJson } from "../canonical.ts";
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
import type {
  AuditDraft,
  AuditFilter,
  AuditVerification,
  Claim,
  EventDraft,
  Fence,
  LeaseStore,
  LedgerMark,
  LedgerSince,
  ObjectVersion,
  Renewal,
  Store,
  StoreActivity,
  TransactionOptions,
} from "./store.ts";
import { type HotRow, hotValue, parseHot, splitPatch, staticBody } from "./_process_rows.ts";
import { chainHash } from "./_audit_rows.ts";
import { removedFromEnd } from "./_audit_verify.ts";
import { FENCE_SQLSTATE, MIGRATION_LOCK, MIGRATIONS, RUNNABLE_CHANNEL } from "./_pg_schema.ts";
import { parsePgUrl, redactUrl, scrubUrls } from "./_pg_url.ts";

/** Options of {@link PgStore.open}. */
export interface PgOptions {
  /** Most connections in the pool (default 10). */
  maxConnections?: number;
}

/** Most characters of model inputs kept parsed in memory (they never change once stored). */
const _INPUT_CACHE_CHARS = 64 * 1024 * 1024;

/** Transactions retried after PostgreSQL aborted them for a deadlock or a serialization failure. */
const _TX_RETRIES = 3;

type _Row = Record<string, unknown>;
type _Rows = _Row[] & { count: number };

/** The part of the driver's API the store uses (a pool or a transaction). */
interface _Q {
  unsafe(query: string, params?: unknown[], options?: { prepare?: boolean }): Promise<_Rows>;
}

interface _AuditItem {
  draft: AuditDraft;
  fence: Fence | null;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface _Shared {
  sql: postgres.Sql;
  /**
   * One connection for lease claims, renewals and releases, with
   * asynchronous commit: a lease is liveness, not a record. Losing the last
   * of them to a server crash is safe: any write fenced by a claim commits
   * synchronously after it, and the WAL is one sequence, so it brings the
   * claim with it.
   */
  leaseSql: postgres.Sql;
  name: string;
  inputs: { map: Map<number, { value: unknown; chars: number }>; chars: number };
  auditQueue: _AuditItem[];
  auditFlights: Set<Promise<void>>;
  /** Releases put off because another transaction held their rows locked. */
  releaseTimers: Set<number>;
  closed: boolean;
}

/**
 * The start of a lease statement over fences `$1..$3` (pids, workers,
 * tokens): `f`, the fences, and `mine`, the rows still leased by them (and
 * matching `where`), locked, skipping rows another transaction holds locked.
 */
function _leasedRows(where: string): string {
  return `WITH f AS (
         SELECT * FROM unnest($1::integer[], $2::text[], $3::bigint[]) AS f(pid, worker, token)),
       mine AS (
         SELECT s.pid FROM process_state s
         JOIN f ON s.pid = f.pid AND s.lease_worker = f.worker AND s.lease_token = f.token
         ${where}
         FOR NO KEY UPDATE OF s SKIP LOCKED)`;
}

/** How soon a release a locked row put off is tried again (ms). */
const _RELEASE_RETRY_MS = 100;

function _deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) _deepFreeze(x);
  }
  return v;
}

/** A driver error as a LibosError: a lost lease is EFENCED; nothing echoes a password. */
function _translate(e: unknown): unknown {
  if (e instanceof LibosError) return e;
  const pg = e as { code?: string; message?: string; name?: string };
  if (pg && typeof pg === "object" && typeof pg.code === "string") {
    const msg = scrubUrls(String(pg.message ?? ""));
    if (pg.code === FENCE_SQLSTATE) return new LibosError("EFENCED", `store: ${msg}`);
    if (pg.code === "23505") return new LibosError("EEXIST", `store: ${msg}`);
    if (pg.name === "PostgresError") return new LibosError("EIO", `store: ${msg} (${pg.code})`);
  }
  if (e instanceof Error) e.message = scrubUrls(e.message);
  return e;
}

function _lost(fence: Fence): LibosError {
  return new LibosError(
    "EFENCED",
    `store: the lease on process ${fence.pid} was lost (worker ${fence.worker}, token ${fence.token})`,
  );
}

const _HOT_SQL = "s.status, s.pending, s.model, s.usage, s.updated_at";

/** Where a write statement takes its fence condition (see `PgStore.#exec`). */
const _FENCE = "{{FENCE}}";
const _MAX_SEQ = 2147483647;

/** The PostgreSQL store. Open with {@link PgStore.open}. */
export class PgStore implements Store, LeaseStore {
  /** Worker leases: this store itself. */
  readonly leases: LeaseStore;
  /** The URL without its password. */
  readonly name: string;
  #sh: _Shared;
  #q: _Q;
  #inTx: boolean;
  #fence: Fence | null;

  private constructor(sh: _Shared, q: _Q, inTx: boolean, fence: Fence | null) {
    this.#sh = sh;
    this.#q = q;
    this.#inTx = inTx;
    this.#fence = fence;
    this.name = sh.name;
    this.leases = this;
  }

  /**
   * Connect to `url` (`postgres://user@host:port/db`, `?host=/socket/dir` for
   * a unix socket) and apply the schema's migrations. The URL's password is
   * never printed, stored or put in an error.
   */
  static async open(url: string, options: PgOptions = {}): Promise<PgStore> {
    const c = parsePgUrl(url);
    const connect = (max: number, connection: Record<string, string>) =>
      postgres({
        host: c.host,
        port: c.port,
        ...(c.path ? { path: c.path } : {}),
        user: c.user,
        pass: c.pass,
        database: c.database,
        ssl: c.ssl,
        connection: { ...c.connection, ...connection },
        connect_timeout: c.connectTimeout,
        max,
        onnotice: () => {},
        types: {
          // int8 (counts, seq, ids) as numbers: they stay far below 2^53.
          bigint: {
            to: 20,
            from: [20],
            serialize: (x: number) => String(x),
            parse: (x: string) => Number(x),
          },
        },
      } as unknown as postgres.Options<Record<string, postgres.PostgresType>>);
    const sql = connect(options.maxConnections ?? 10, {});
    const leaseSql = connect(1, { synchronous_commit: "off" });
    const sh: _Shared = {
      sql,
      leaseSql,
      name: redactUrl(url),
      inputs: { map: new Map(), chars: 0 },
      auditQueue: [],
      auditFlights: new Set(),
      releaseTimers: new Set(),
      closed: false,
    };
    const store = new PgStore(sh, sql as unknown as _Q, false, null);
    try {
      await store.#migrate();
    } catch (e) {
      await sql.end({ timeout: 1 }).catch(() => {});
      await leaseSql.end({ timeout: 1 }).catch(() => {});
      throw _translate(e);
    }
    return store;
  }

  // Apply the migrations this database has not seen, in one transaction.
  async #migrate(): Promise<void> {
    await this.#sh.sql.begin(async (tx) => {
      const q = tx as unknown as _Q;
      const enc = await q.unsafe("SHOW server_encoding");
      if (String(enc[0].server_encoding).toUpperCase() !== "UTF8") {
        throw new LibosError(
          "EINVAL",
          `store: the database's encoding is ${
            enc[0].server_encoding
          }; create it with ENCODING 'UTF8'`,
        );
      }
      await q.unsafe("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK.toString()]);
      await q.unsafe(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
           version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const done = await q.unsafe("SELECT coalesce(max(version), 0) AS v FROM schema_migrations");
      const at = Number(done[0].v);
      if (at === 0) {
        // A fresh schema holds nothing else: another application's tables are not migrated.
        const other = await q.unsafe(
          `SELECT count(*) AS n FROM information_schema.tables
            WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'`,
        );
        if (Number(other[0].n) > 0) {
          throw new LibosError(
            "EINVAL",
            "store: the database's schema holds tables of something else (and no libos " +
              "migrations); nothing was written to it",
          );
        }
      }
      if (at > MIGRATIONS.length) {
        throw new LibosError(
          "ESTATE",
          `store: the database is at schema version ${at}, newer than this runtime's ${MIGRATIONS.length}`,
        );
      }
      for (let v = at + 1; v <= MIGRATIONS.length; v++) {
        await q.unsafe(MIGRATIONS[v - 1]);
        await q.unsafe("INSERT INTO schema_migrations (version) VALUES ($1)", [v]);
      }
    });
  }

  // ---- plumbing

  // One statement on this view's connection (the pool, or the transaction's).
  async #run(query: string, params: unknown[] = [], q: _Q = this.#q): Promise<_Rows> {
    try {
      return await q.unsafe(query, params, { prepare: true });
    } catch (e) {
      throw _translate(e);
    }
  }

  // A read: no fence needed.
  async #read(query: string, params: unknown[] = []): Promise<_Rows> {
    return await this.#run(query, params);
  }

  /**
   * One write statement. Where it says `{{FENCE}}` (a condition of its WHERE)
   * a fenced view checks its lease in the same statement: the row is held
   * `FOR KEY SHARE` until the statement commits, and a lost lease fails it
   * (EFENCED). Inside a transaction the fence was checked when it began.
   */
  async #exec(query: string, params: unknown[] = []): Promise<_Rows> {
    const f = this.#inTx ? null : this.#fence;
    if (!f) return await this.#run(query.replaceAll(_FENCE, "true"), params);
    if (!query.includes(_FENCE)) throw new Error("store: an unfenced write on a fenced view");
    const n = params.length;
    const cond = `libos_fenced($${n + 1}::integer, $${n + 2}::text, $${n + 3}::bigint)`;
    return await this.#run(query.replaceAll(_FENCE, cond), [...params, f.pid, f.worker, f.token]);
  }

  /**
   * A write of several statements: in this view's transaction, or in one of
   * its own that first checks the fence (a fenced view).
   */
  async #atomic<T>(fn: (q: _Q) => Promise<T>): Promise<T> {
    if (this.#inTx) return await fn(this.#q);
    return await this.#begin(fn, false);
  }

  /**
   * A transaction. Its first statements (the fence check of a fenced view;
   * for a deferred one, asynchronous commit) are sent with `fn`'s first
   * statement, without waiting a round trip for them. A deferred
   * transaction commits without waiting for the WAL flush: visible to every
   * runtime at once, durable a few hundred milliseconds later at the latest,
   * and in any case before any later synchronous commit (the WAL is one
   * sequence), which is what a deferred write promises. Retried when
   * PostgreSQL aborts it for a deadlock.
   */
  async #begin<T>(fn: (q: _Q) => Promise<T>, defer: boolean): Promise<T> {
    const fence = this.#fence;
    for (let attempt = 0;; attempt++) {
      try {
        return await this.#sh.sql.begin(async (tx) => {
          const q = tx as unknown as _Q;
          const first: Promise<unknown>[] = [];
          if (defer) first.push(q.unsafe("SET LOCAL synchronous_commit TO off"));
          if (fence) {
            first.push(q.unsafe("SELECT libos_fenced($1, $2, $3)", [
              fence.pid,
              fence.worker,
              fence.token,
            ], { prepare: true }));
          }
          const sent = Promise.all(first);
          sent.catch(() => {});
          try {
            const out = await fn(q);
            await sent;
            return out;
          } catch (e) {
            // The fence's own error, rather than the "transaction aborted" after it.
            await sent;
            throw e;
          }
        }) as T;
      } catch (e) {
        const code = (e as { code?: string })?.code;
        if ((code === "40P01" || code === "40001") && attempt < _TX_RETRIES) continue;
        throw _translate(e);
      }
    }
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>, options?: TransactionOptions): Promise<T> {
    if (this.#inTx) return await fn(this);
    return await this.#begin(
      (q) => fn(new PgStore(this.#sh, q, true, this.#fence)),
      options?.defer === true,
    );
  }

  /** Nothing is deferred: every transaction commits when it ends. */
  async flush(): Promise<void> {}

  async close(): Promise<void> {
    if (this.#sh.closed) return;
    await this.auditIndexed();
    this.#sh.closed = true;
    for (const t of this.#sh.releaseTimers) clearTimeout(t);
    this.#sh.releaseTimers.clear();
    await this.#sh.sql.end({ timeout: 5 });
    await this.#sh.leaseSql.end({ timeout: 5 });
  }

  // ---- leases (LeaseStore)

  fenced(fence: Fence): Store {
    return new PgStore(this.#sh, this.#sh.sql as unknown as _Q, false, { ...fence });
  }

  async claim(
    worker: string,
    max: number,
    leaseMs: number,
    only: { pid?: number; abandoned?: boolean } = {},
  ): Promise<Claim[]> {
    // Three statements rather than one with optional conditions: each walks its own index
    // (the claim order's, the primary key) instead of sorting every candidate.
    const which = only.pid !== undefined
      ? "pid = $4"
      : only.abandoned
      ? "(status = 'running' OR lease_worker IS NOT NULL)"
      : "true";
    const rows = await this.#run(
      `WITH c AS (
         SELECT pid, lease_worker AS prev FROM process_state
         WHERE status IN ('runnable', 'running')
           AND (lease_until IS NULL OR lease_until < clock_timestamp()) AND ${which}
         ORDER BY last_run NULLS FIRST, (CASE WHEN last_run IS NULL THEN -pid ELSE pid END)
         LIMIT $2
         FOR UPDATE SKIP LOCKED)
       UPDATE process_state s SET lease_worker = $1, lease_token = s.lease_token + 1,
         lease_until = clock_timestamp() + $3::float8 * interval '1 millisecond'
       FROM c WHERE s.pid = c.pid
       RETURNING s.pid, s.lease_token, s.status, c.prev,
         (extract(epoch FROM s.last_run) * 1000000)::int8 AS last_run_us`,
      only.pid !== undefined ? [worker, max, leaseMs, only.pid] : [worker, max, leaseMs],
      this.#sh.leaseSql as unknown as _Q,
    );
    // In the order they were chosen: never run first (newest first), then oldest last run
    // (in microseconds, as stored: two releases can share a millisecond).
    const key = (r: _Row) => r.last_run_us === null ? -Infinity : Number(r.last_run_us);
    rows.sort((a, b) =>
      key(a) - key(b) ||
      (a.last_run_us === null ? Number(b.pid) - Number(a.pid) : Number(a.pid) - Number(b.pid))
    );
    return rows.map((r) => ({
      pid: Number(r.pid),
      worker,
      token: Number(r.lease_token),
      status: r.status as ProcessStatus,
      // Nobody runs a claimed process: one caught mid-step was left by a runtime that stopped.
      takenOver: r.prev !== null || r.status === "running",
    }));
  }

  async renew(fences: readonly Fence[], leaseMs: number): Promise<Renewal> {
    if (fences.length === 0) return { renewed: [], lost: [] };
    // A row another transaction has locked (a decision being written, a client
    // that stalled holding it) is skipped, not waited for: one such row would
    // hold up every other lease of this worker until they expired. It is
    // neither renewed nor lost now: the caller tries it again soon.
    const rows = await this.#run(
      `${_leasedRows("WHERE s.lease_until > clock_timestamp()")},
       up AS (
         UPDATE process_state s
         SET lease_until = clock_timestamp() + $4::float8 * interval '1 millisecond'
         FROM mine WHERE s.pid = mine.pid RETURNING s.pid)
       SELECT f.pid, up.pid IS NOT NULL AS renewed, EXISTS (
         SELECT 1 FROM process_state s
         WHERE s.pid = f.pid AND s.lease_worker = f.worker AND s.lease_token = f.token
           AND s.lease_until > clock_timestamp()) AS held
       FROM f LEFT JOIN up ON up.pid = f.pid`,
      [fences.map((f) => f.pid), fences.map((f) => f.worker), fences.map((f) => f.token), leaseMs],
      this.#sh.leaseSql as unknown as _Q,
    );
    const renewed = new Set<number>();
    const lost = new Set<number>();
    for (const r of rows) {
      if (r.renewed) renewed.add(Number(r.pid));
      else if (!r.held) lost.add(Number(r.pid));
    }
    return {
      renewed: fences.filter((f) => renewed.has(f.pid)),
      lost: fences.filter((f) => lost.has(f.pid)),
    };
  }

  async hold(worker: string, pids: readonly number[], leaseMs: number): Promise<Claim[]> {
    if (pids.length === 0) return [];
    const rows = await this.#run(
      `WITH c AS (
         SELECT pid, lease_worker AS prev FROM process_state
         WHERE pid = ANY($2::integer[])
           AND (lease_until IS NULL OR lease_until < clock_timestamp())
         FOR UPDATE SKIP LOCKED)
       UPDATE process_state s SET lease_worker = $1, lease_token = s.lease_token + 1,
         lease_until = clock_timestamp() + $3::float8 * interval '1 millisecond'
       FROM c WHERE s.pid = c.pid
       RETURNING s.pid, s.lease_token, s.status, c.prev`,
      [worker, [...pids], leaseMs],
      this.#sh.leaseSql as unknown as _Q,
    );
    return rows.map((r) => ({
      pid: Number(r.pid),
      worker,
      token: Number(r.lease_token),
      status: r.status as ProcessStatus,
      takenOver: r.prev !== null,
    }));
  }

  /**
   * A row another transaction holds locked is not waited for (every lease
   * statement of this runtime would wait behind it): it is given back again
   * shortly, in the background, until it is, or is no longer this lease.
   */
  async release(fences: readonly Fence[], stamp = true): Promise<void> {
    if (fences.length === 0) return;
    const busy = await this.#releaseOnce(fences, stamp);
    if (busy.length) this.#releaseLater(busy, stamp);
  }

  // Give back what is not locked now; returns the fences whose rows were.
  async #releaseOnce(fences: readonly Fence[], stamp: boolean): Promise<Fence[]> {
    const rows = await this.#run(
      `${_leasedRows("")},
       up AS (
         UPDATE process_state s SET lease_worker = NULL, lease_until = NULL,
           last_run = CASE WHEN $4 THEN clock_timestamp() ELSE s.last_run END
         FROM mine WHERE s.pid = mine.pid RETURNING s.pid)
       SELECT f.pid FROM f
       WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.pid = f.pid) AND EXISTS (
         SELECT 1 FROM process_state s
         WHERE s.pid = f.pid AND s.lease_worker = f.worker AND s.lease_token = f.token)`,
      [
        fences.map((f) => f.pid),
        fences.map((f) => f.worker),
        fences.map((f) => f.token),
        stamp,
      ],
      this.#sh.leaseSql as unknown as _Q,
    );
    const busy = new Set(rows.map((r) => Number(r.pid)));
    return fences.filter((f) => busy.has(f.pid));
  }

  #releaseLater(fences: readonly Fence[], stamp: boolean): void {
    const sh = this.#sh;
    if (sh.closed) return;
    const timer = setTimeout(async () => {
      sh.releaseTimers.delete(timer);
      if (sh.closed) return;
      const busy = await this.#releaseOnce(fences, stamp).catch(() => []);
      if (busy.length) this.#releaseLater(busy, stamp);
    }, _RELEASE_RETRY_MS) as unknown as number;
    sh.releaseTimers.add(timer);
  }

  async activity(): Promise<StoreActivity> {
    const r = (await this.#read(
      `SELECT count(*) FILTER (WHERE status = 'runnable') AS runnable,
              count(*) FILTER (WHERE status = 'running') AS running,
              count(*) FILTER (WHERE lease_until IS NULL OR lease_until < clock_timestamp())
                AS claimable,
              extract(epoch FROM min(lease_until) FILTER (WHERE lease_until > clock_timestamp())
                - clock_timestamp()) * 1000 AS next_ms
       FROM process_state WHERE status IN ('runnable', 'running')`,
    ))[0];
    return {
      runnable: Number(r.runnable),
      running: Number(r.running),
      claimable: Number(r.claimable),
      nextExpiryMs: r.next_ms === null ? null : Math.max(0, Number(r.next_ms)),
    };
  }

  async onRunnable(fn: () => void): Promise<() => Promise<void>> {
    try {
      const l = await this.#sh.sql.listen(RUNNABLE_CHANNEL, () => fn());
      return async () => {
        await l.unlisten().catch(() => {});
      };
    } catch (e) {
      throw _translate(e);
    }
  }

  // ---- processes

  async insertProcess(p: Omit<ProcessRecord, "pid">): Promise<ProcessRecord> {
    const rows = await this.#exec(
      `WITH p AS (
         INSERT INTO processes (ppid, body) SELECT $1, $2 WHERE {{FENCE}} RETURNING pid)
       INSERT INTO process_state (pid, status, pending, model, usage, updated_at)
       SELECT pid, $3, $4, $5, $6, $7 FROM p RETURNING pid`,
      [
        p.ppid,
        staticBody(p),
        p.status,
        hotValue("pending", p.pending),
        hotValue("model", p.model),
        hotValue("usage", p.usage),
        p.updated_at,
      ],
    );
    return { pid: Number(rows[0].pid), ...p };
  }

  async getProcess(pid: number): Promise<ProcessRecord | null> {
    const rows = await this.#read(
      `SELECT p.body, ${_HOT_SQL} FROM processes p JOIN process_state s USING (pid)
       WHERE p.pid = $1`,
      [pid],
    );
    return rows.length ? _procRow(pid, rows[0]) : null;
  }

  async listProcesses(): Promise<ProcessRecord[]> {
    const rows = await this.#read(
      `SELECT p.pid, p.body, ${_HOT_SQL} FROM processes p JOIN process_state s USING (pid)
       ORDER BY p.pid`,
    );
    return rows.map((r) => _procRow(Number(r.pid), r));
  }

  async pidsWithStatus(status: ProcessStatus, after = 0): Promise<number[]> {
    const rows = await this.#read(
      "SELECT pid FROM process_state WHERE status = $1 AND pid > $2 ORDER BY pid",
      [status, after],
    );
    return rows.map((r) => Number(r.pid));
  }

  async subtreePids(root: number): Promise<number[]> {
    const rows = await this.#read(
      `WITH RECURSIVE tree(pid) AS (
         SELECT pid FROM processes WHERE pid = $1
         UNION SELECT p.pid FROM processes p JOIN tree t ON p.ppid = t.pid)
       SELECT pid FROM tree ORDER BY pid`,
      [root],
    );
    return rows.map((r) => Number(r.pid));
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
      : [...expectStatus];
    if (!rest) return await this.#updateHot(this, pid, hot, expect);
    return await this.#atomic(async (q) => {
      const tx = new PgStore(this.#sh, q, true, this.#fence);
      if (!(await this.#updateHot(tx, pid, hot, expect))) return false;
      await this.#updateStatic(q, pid, rest);
      return true;
    });
  }

  async #updateHot(
    view: PgStore,
    pid: number,
    hot: Record<string, unknown>,
    expect: string[] | null,
  ): Promise<boolean> {
    const keys = Object.keys(hot) as ("status" | "pending" | "model" | "usage" | "updated_at")[];
    const params: unknown[] = keys.map((k) => hotValue(k, hot[k]));
    const set = keys.length ? keys.map((k, i) => `${k} = $${i + 1}`).join(", ") : "pid = pid";
    params.push(pid);
    let where = `pid = $${params.length}`;
    if (expect) {
      params.push(expect);
      where += ` AND status = ANY($${params.length}::text[])`;
    }
    const r = await view.#exec(
      `UPDATE process_state SET ${set} WHERE ${where} AND {{FENCE}}`,
      params,
    );
    return r.count === 1;
  }

  async #updateStatic(q: _Q, pid: number, rest: Record<string, unknown>): Promise<void> {
    const rows = await this.#run("SELECT body FROM processes WHERE pid = $1 FOR UPDATE", [pid], q);
    if (!rows.length) return;
    const next = { ...JSON.parse(rows[0].body as string), ...rest };
    await this.#run(
      "UPDATE processes SET ppid = $1, body = $2 WHERE pid = $3",
      [next.ppid ?? null, JSON.stringify(next), pid],
      q,
    );
  }

  // ---- model state: an immutable input, an append-only log

  async putModelInput(pid: number, input: unknown): Promise<void> {
    const body = JSON.stringify(input ?? null);
    await this.#exec("INSERT INTO model_inputs (pid, body) SELECT $1, $2 WHERE {{FENCE}}", [
      pid,
      body,
    ]);
  }

  async getModelInput(pid: number): Promise<unknown> {
    const cache = this.#sh.inputs;
    const hit = cache.map.get(pid);
    if (hit) {
      cache.map.delete(pid);
      cache.map.set(pid, hit);
      return hit.value;
    }
    const rows = await this.#read("SELECT body FROM model_inputs WHERE pid = $1", [pid]);
    if (!rows.length) return null;
    const body = rows[0].body as string;
    const value = _deepFreeze(JSON.parse(body));
    // Inside a transaction the row may still roll back; once committed it never changes.
    if (!this.#inTx && body.length <= _INPUT_CACHE_CHARS) {
      cache.map.set(pid, { value, chars: body.length });
      cache.chars += body.length;
      for (const [old, e] of cache.map) {
        if (cache.chars <= _INPUT_CACHE_CHARS) break;
        cache.map.delete(old);
        cache.chars -= e.chars;
      }
    }
    return value;
  }

  async appendModelLog(pid: number, entries: unknown[]): Promise<number> {
    if (entries.length === 0) return await this.modelLogLength(pid);
    const bodies = entries.map((e) => JSON.stringify(e ?? null));
    const rows = await this.#exec(
      `INSERT INTO model_log (pid, seq, body)
       SELECT $1, (SELECT coalesce(max(seq) + 1, 0) FROM model_log WHERE pid = $1) + t.o - 1, t.b
       FROM unnest($2::text[]) WITH ORDINALITY AS t(b, o) WHERE {{FENCE}}
       RETURNING seq`,
      [pid, bodies],
    );
    return Math.max(...rows.map((r) => Number(r.seq))) + 1;
  }

  async readModelLog(pid: number, from: number, to?: number): Promise<unknown[]> {
    const rows = await this.#read(
      "SELECT body FROM model_log WHERE pid = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
      [pid, from, Math.min(to ?? _MAX_SEQ, _MAX_SEQ)],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  async modelLogLength(pid: number): Promise<number> {
    const rows = await this.#read(
      "SELECT seq FROM model_log WHERE pid = $1 ORDER BY seq DESC LIMIT 1",
      [pid],
    );
    return rows.length ? Number(rows[0].seq) + 1 : 0;
  }

  async truncateModelLog(pid: number, length: number): Promise<void> {
    await this.#exec("DELETE FROM model_log WHERE pid = $1 AND seq >= $2 AND {{FENCE}}", [
      pid,
      length,
    ]);
  }

  // ---- steps: results by number

  async insertStep(pid: number, step: number, oid: string): Promise<void> {
    await this.#exec(
      "INSERT INTO step_results (pid, step, oid) SELECT $1, $2, $3 WHERE {{FENCE}}",
      [pid, step, oid],
    );
  }

  async stepCount(pid: number): Promise<number> {
    const rows = await this.#read(
      "SELECT step FROM step_results WHERE pid = $1 ORDER BY step DESC LIMIT 1",
      [pid],
    );
    return rows.length ? Number(rows[0].step) + 1 : 0;
  }

  async getStep(pid: number, step: number): Promise<MemoryObject | null> {
    const rows = await this.#read(
      `SELECT o.body FROM step_results s JOIN objects o ON o.oid = s.oid
       WHERE s.pid = $1 AND s.step = $2`,
      [pid, step],
    );
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async listSteps(pid: number): Promise<MemoryObject[]> {
    const rows = await this.#read(
      `SELECT o.body FROM step_results s JOIN objects o ON o.oid = s.oid
       WHERE s.pid = $1 ORDER BY s.step`,
      [pid],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  async stepIndex(pid: number): Promise<{ step: number; oid: string }[]> {
    const rows = await this.#read(
      "SELECT step, oid FROM step_results WHERE pid = $1 ORDER BY step",
      [pid],
    );
    return rows.map((r) => ({ step: Number(r.step), oid: r.oid as string }));
  }

  async truncateSteps(pid: number, from: number): Promise<void> {
    await this.#exec("DELETE FROM step_results WHERE pid = $1 AND step >= $2 AND {{FENCE}}", [
      pid,
      from,
    ]);
  }

  // ---- capabilities

  /**
   * Insert a capability. A delegation takes its parent's row `FOR SHARE`, so
   * it cannot land beside a revocation of the parent in flight: it waits for
   * it and is refused (EPERM) once the parent is revoked.
   */
  async insertCapability(c: Capability): Promise<void> {
    const r = await this.#exec(
      `WITH parent AS (SELECT status FROM capabilities WHERE cap_id = $3 FOR SHARE)
       INSERT INTO capabilities (cap_id, subject, parent_cap_id, status, uses_remaining, body)
       SELECT $1, $2, $3, $4, $5, $6
       WHERE NOT EXISTS (SELECT 1 FROM parent WHERE status = 'revoked') AND {{FENCE}}`,
      [c.cap_id, c.subject, c.parent_cap_id, c.status, c.uses_remaining, JSON.stringify(c)],
    );
    if (r.count !== 1) {
      throw new LibosError(
        "EPERM",
        `capability: ${c.parent_cap_id} was revoked; nothing can be delegated from it`,
      );
    }
  }

  async getCapability(capId: string): Promise<Capability | null> {
    const rows = await this.#read(
      "SELECT body, status, uses_remaining FROM capabilities WHERE cap_id = $1",
      [capId],
    );
    return rows.length ? _capRow(rows[0]) : null;
  }

  async capabilitiesOf(subject: number): Promise<Capability[]> {
    const rows = await this.#read(
      "SELECT body, status, uses_remaining FROM capabilities WHERE subject = $1 ORDER BY n",
      [subject],
    );
    return rows.map(_capRow);
  }

  async consumeCapability(capId: string): Promise<boolean> {
    return await this.reserveUses(capId, 1);
  }

  async reserveUses(capId: string, n: number): Promise<boolean> {
    const r = await this.#exec(
      `UPDATE capabilities SET uses_remaining = uses_remaining - $1,
         status = CASE WHEN uses_remaining - $1 <= 0 THEN 'exhausted' ELSE status END
       WHERE cap_id = $2 AND status = 'active' AND uses_remaining IS NOT NULL
         AND uses_remaining >= $1 AND {{FENCE}}`,
      [n, capId],
    );
    return r.count === 1;
  }

  /**
   * Revoke a capability and everything delegated from it. Each pass sees
   * what committed before it (a new snapshot per statement) and revokes what
   * is still live in the tree; a delegation in flight holds its parent `FOR
   * SHARE`, so it either lands before a pass (and the next one revokes it) or
   * waits and is refused. It ends with a pass that finds nothing left.
   */
  async revokeCascade(capId: string): Promise<string[]> {
    return await this.#atomic(async (q) => {
      const changed: string[] = [];
      for (;;) {
        const rows = await this.#run(
          `WITH RECURSIVE tree(id, depth) AS (
             SELECT $1::text, 0
             UNION SELECT c.cap_id, t.depth + 1 FROM capabilities c JOIN tree t
               ON c.parent_cap_id = t.id)
           UPDATE capabilities c SET status = 'revoked' FROM tree
           WHERE c.cap_id = tree.id AND c.status <> 'revoked'
           RETURNING c.cap_id, tree.depth, c.n`,
          [capId],
          q,
        );
        if (rows.length === 0) return changed;
        rows.sort((a, b) => Number(a.depth) - Number(b.depth) || Number(a.n) - Number(b.n));
        changed.push(...rows.map((r) => r.cap_id as string));
      }
    });
  }

  // ---- objects

  async insertObject(o: MemoryObject): Promise<void> {
    const body = JSON.stringify(o);
    await this.#exec(
      `WITH o AS (
         INSERT INTO objects (oid, namespace, name, version, body)
         SELECT $1, $2, $3, $4, $5 WHERE {{FENCE}} RETURNING oid)
       INSERT INTO object_versions (oid, version, body) SELECT oid, $4, $5 FROM o`,
      [o.oid, o.namespace, o.name, o.version, body],
    );
  }

  async getObject(oid: string): Promise<MemoryObject | null> {
    const rows = await this.#read("SELECT body FROM objects WHERE oid = $1", [oid]);
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async getObjectByName(namespace: string, name: string): Promise<MemoryObject | null> {
    const rows = await this.#read(
      "SELECT body FROM objects WHERE namespace = $1 AND name = $2",
      [namespace, name],
    );
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async listObjects(namespace: string): Promise<MemoryObject[]> {
    const rows = await this.#read(
      "SELECT body FROM objects WHERE namespace = $1 ORDER BY n",
      [namespace],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  async listObjectVersions(namespace: string): Promise<ObjectVersion[]> {
    const rows = await this.#read(
      "SELECT oid, version, body::json ->> 'label' AS label FROM objects WHERE namespace = $1 ORDER BY n",
      [namespace],
    );
    return rows.map((r) => ({
      oid: r.oid as string,
      version: Number(r.version),
      label: r.label as Label,
    }));
  }

  async listObjectTexts(namespace: string): Promise<string[]> {
    // Bodies here are stored as written (not canonical): each is put in canonical form.
    return (await this.listObjects(namespace)).map((o) => canonicalJson(o));
  }

  async updateObject(
    oid: string,
    expectVersion: number,
    patch: { payload: unknown; label: Label; updated_at: string },
  ): Promise<MemoryObject | null> {
    return await this.#atomic(async (q) => {
      const rows = await this.#run(
        "SELECT body FROM objects WHERE oid = $1 AND version = $2 FOR UPDATE",
        [oid, expectVersion],
        q,
      );
      if (!rows.length) return null;
      const next: MemoryObject = {
        ...JSON.parse(rows[0].body as string),
        ...patch,
        version: expectVersion + 1,
      };
      const body = JSON.stringify(next);
      await this.#run(
        "UPDATE objects SET version = $1, body = $2 WHERE oid = $3",
        [next.version, body, oid],
        q,
      );
      await this.#run(
        "INSERT INTO object_versions (oid, version, body) VALUES ($1, $2, $3)",
        [oid, next.version, body],
        q,
      );
      return next;
    });
  }

  /**
   * Make each object current again at a version after every one its oid ever
   * had (or its own, for an oid never stored): versions never go back.
   */
  async restoreObjects(objects: MemoryObject[]): Promise<void> {
    if (objects.length === 0) return;
    await this.#atomic(async (q) => {
      const last = new Map(
        (await this.#run(
          `SELECT oid, max(version) AS v FROM object_versions WHERE oid = ANY($1::text[])
           GROUP BY oid`,
          [objects.map((o) => o.oid)],
          q,
        )).map((r) => [r.oid as string, Number(r.v)]),
      );
      for (const o of objects) {
        const v = last.get(o.oid);
        const next: MemoryObject = { ...o, version: v === undefined ? o.version : v + 1 };
        const body = JSON.stringify(next);
        await this.#run(
          "INSERT INTO object_versions (oid, version, body) VALUES ($1, $2, $3)",
          [next.oid, next.version, body],
          q,
        );
        await this.#run(
          `INSERT INTO objects (oid, namespace, name, version, body) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (oid) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
             version = excluded.version, body = excluded.body`,
          [next.oid, next.namespace, next.name, next.version, body],
          q,
        );
        last.set(o.oid, next.version);
      }
    });
  }

  async removeObjects(oids: string[]): Promise<void> {
    if (oids.length === 0) return;
    await this.#atomic(async (q) => {
      await this.#run("DELETE FROM objects WHERE oid = ANY($1::text[])", [oids], q);
      await this.#run(
        "DELETE FROM links WHERE from_oid = ANY($1::text[]) OR to_oid = ANY($1::text[])",
        [oids],
        q,
      );
    });
  }

  async insertLink(link: ObjectLink): Promise<void> {
    await this.#exec(
      `INSERT INTO links (from_oid, to_oid, relation) SELECT $1, $2, $3 WHERE {{FENCE}}
       ON CONFLICT DO NOTHING`,
      [link.from_oid, link.to_oid, link.relation],
    );
  }

  async linksFrom(oid: string): Promise<ObjectLink[]> {
    const rows = await this.#read(
      "SELECT from_oid, to_oid, relation FROM links WHERE from_oid = $1 ORDER BY n",
      [oid],
    );
    return rows.map((r) => ({
      from_oid: r.from_oid as string,
      to_oid: r.to_oid as string,
      relation: r.relation as string,
    }));
  }

  async linksFromNamespace(namespace: string): Promise<ObjectLink[]> {
    const rows = await this.#read(
      `SELECT l.from_oid, l.to_oid, l.relation FROM links l JOIN objects o ON o.oid = l.from_oid
       WHERE o.namespace = $1 ORDER BY l.n`,
      [namespace],
    );
    return rows.map((r) => ({
      from_oid: r.from_oid as string,
      to_oid: r.to_oid as string,
      relation: r.relation as string,
    }));
  }

  async removeLinks(links: ObjectLink[]): Promise<void> {
    if (links.length === 0) return;
    await this.#exec(
      `DELETE FROM links l USING unnest($1::text[], $2::text[], $3::text[]) AS d(f, t, r)
       WHERE l.from_oid = d.f AND l.to_oid = d.t AND l.relation = d.r AND {{FENCE}}`,
      [links.map((l) => l.from_oid), links.map((l) => l.to_oid), links.map((l) => l.relation)],
    );
  }

  // ---- mailbox

  async insertMessage(m: Omit<MailMessage, "msg_id">): Promise<MailMessage> {
    const rows = await this.#exec(
      "INSERT INTO mailbox (to_pid, kind, body) SELECT $1, $2, $3 WHERE {{FENCE}} RETURNING msg_id",
      [m.to_pid, m.kind, JSON.stringify(m)],
    );
    return { msg_id: Number(rows[0].msg_id), ...m };
  }

  async takeMessages(pid: number, limit: number): Promise<MailMessage[]> {
    const rows = await this.#exec(
      `DELETE FROM mailbox WHERE msg_id IN (
         SELECT msg_id FROM mailbox WHERE to_pid = $1
         ORDER BY (kind <> 'interrupt'), msg_id LIMIT $2 FOR UPDATE SKIP LOCKED) AND {{FENCE}}
       RETURNING msg_id, kind, body`,
      [pid, limit],
    );
    rows.sort((a, b) =>
      Number(a.kind !== "interrupt") - Number(b.kind !== "interrupt") ||
      Number(a.msg_id) - Number(b.msg_id)
    );
    return rows.map((r) => ({ msg_id: Number(r.msg_id), ...JSON.parse(r.body as string) }));
  }

  async listMessages(pid: number): Promise<MailMessage[]> {
    const rows = await this.#read(
      `SELECT msg_id, body FROM mailbox WHERE to_pid = $1
       ORDER BY (kind <> 'interrupt'), msg_id`,
      [pid],
    );
    return rows.map((r) => ({ msg_id: Number(r.msg_id), ...JSON.parse(r.body as string) }));
  }

  // ---- images

  async putImage(image: AgentImage, registeredBy: string): Promise<void> {
    await this.#exec(
      `INSERT INTO images (name, registered_by, body) SELECT $1, $2, $3 WHERE {{FENCE}}
       ON CONFLICT (name) DO UPDATE SET registered_by = excluded.registered_by,
         body = excluded.body`,
      [image.name, registeredBy, JSON.stringify(image)],
    );
  }

  async getImage(name: string): Promise<AgentImage | null> {
    const rows = await this.#read("SELECT body FROM images WHERE name = $1", [name]);
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async listImages(): Promise<AgentImage[]> {
    const rows = await this.#read("SELECT body FROM images ORDER BY name");
    return rows.map((r) => JSON.parse(r.body as string));
  }

  // ---- file labels

  async getFileLabel(realPath: string): Promise<Label | null> {
    const rows = await this.#read("SELECT label FROM file_labels WHERE path = $1", [realPath]);
    return rows.length ? rows[0].label as Label : null;
  }

  async setFileLabel(realPath: string, label: Label): Promise<void> {
    await this.#exec(
      `INSERT INTO file_labels (path, label) SELECT $1, $2 WHERE {{FENCE}}
       ON CONFLICT (path) DO UPDATE SET label = excluded.label`,
      [realPath, label],
    );
  }

  async fileLabelsUnder(dir: string): Promise<{ path: string; label: Label }[]> {
    const prefix = dir.endsWith("/") ? dir : `${dir}/`;
    // A range scan on the primary key (byte order: the column is COLLATE "C").
    const rows = await this.#read(
      "SELECT path, label FROM file_labels WHERE path >= $1 AND path < $2 ORDER BY path",
      [prefix, prefix.slice(0, -1) + "0"],
    );
    return rows.map((r) => ({ path: r.path as string, label: r.label as Label }));
  }

  // ---- audit (one hash chain, whoever appends)

  /**
   * Append an audit record; the store numbers and chains it. Inside a
   * transaction it lands with the transaction (the chain head stays locked
   * until it commits). Outside one, appends issued before the next microtask
   * share one call of the append function (one round trip, the head locked
   * only while it runs), and each caller's promise settles once its record
   * is committed. A fenced view's record lands only while its lease holds.
   */
  appendAudit(draft: AuditDraft): Promise<void> {
    if (this.#inTx) {
      return this.#appendAuditRows(this.#q, [{ draft, fence: null }]).then((ok) => {
        if (!ok[0]) throw _lost(this.#fence!);
      });
    }
    const sh = this.#sh;
    return new Promise((resolve, reject) => {
      sh.auditQueue.push({ draft, fence: this.#fence, resolve, reject });
      if (sh.auditQueue.length === 1) queueMicrotask(() => this.#flushAudit());
    });
  }

  #flushAudit(): void {
    const sh = this.#sh;
    const batch = sh.auditQueue.splice(0);
    if (batch.length === 0) return;
    const flight = (async () => {
      try {
        const ok = await this.#appendAuditRows(sh.sql as unknown as _Q, batch);
        batch.forEach((b, i) => ok[i] ? b.resolve() : b.reject(_lost(b.fence!)));
      } catch (e) {
        for (const b of batch) b.reject(e);
      }
    })();
    sh.auditFlights.add(flight);
    flight.finally(() => sh.auditFlights.delete(flight));
  }

  async #appendAuditRows(
    q: _Q,
    items: { draft: AuditDraft; fence: Fence | null }[],
  ): Promise<boolean[]> {
    const rows = await this.#run(
      `SELECT libos_append_audit($1::text[], $2::text[], $3::text[], $4::text[],
         $5::integer[], $6::text[], $7::bigint[]) AS ok`,
      [
        items.map((i) => JSON.stringify(i.draft)),
        items.map((i) => i.draft.actor),
        items.map((i) => i.draft.action),
        items.map((i) => i.draft.decision),
        items.map((i) => i.fence?.pid ?? null),
        items.map((i) => i.fence?.worker ?? null),
        items.map((i) => i.fence?.token ?? null),
      ],
      q,
    );
    return rows[0].ok as boolean[];
  }

  /** Settles once every append issued so far has committed. */
  async auditIndexed(): Promise<void> {
    if (this.#inTx) return;
    while (this.#sh.auditQueue.length || this.#sh.auditFlights.size) {
      if (this.#sh.auditQueue.length) this.#flushAudit();
      await Promise.allSettled([...this.#sh.auditFlights]);
    }
  }

  async listAudit(filter: AuditFilter = {}): Promise<AuditRecord[]> {
    await this.auditIndexed();
    const where = ["seq > $1"];
    const params: unknown[] = [filter.afterSeq ?? 0];
    for (const k of ["actor", "action", "decision"] as const) {
      if (filter[k]) {
        params.push(filter[k]);
        where.push(`${k} = $${params.length}`);
      }
    }
    params.push(filter.limit ?? null);
    const rows = await this.#read(
      `SELECT body, prev_hash, hash FROM audit WHERE ${where.join(" AND ")}
       ORDER BY seq LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({
      ...JSON.parse(r.body as string),
      prev_hash: r.prev_hash,
      hash: r.hash,
    }));
  }

  /**
   * Recompute the hash chain in one read-only snapshot (records committed
   * meanwhile must not look like removals), reading it in pages.
   */
  async verifyAudit(): Promise<AuditVerification> {
    await this.auditIndexed();
    const run = async (q: _Q) => await _verifyChain(q);
    if (this.#inTx) return await run(this.#q);
    try {
      return await this.#sh.sql.begin(
        "isolation level repeatable read read only",
        (tx) => run(tx as unknown as _Q),
      ) as AuditVerification;
    } catch (e) {
      throw _translate(e);
    }
  }

  // ---- events

  async appendEvent(e: EventDraft): Promise<LibosEvent> {
    const f = this.#inTx ? null : this.#fence;
    const rows = await this.#run(
      "SELECT libos_append_event($1, $2, $3, $4, $5) AS id",
      [e.type, JSON.stringify(e), f?.pid ?? null, f?.worker ?? null, f?.token ?? null],
    );
    if (rows[0].id === null) throw _lost(f!);
    return { event_id: Number(rows[0].id), ...e };
  }

  async listEvents(afterId = 0, limit = -1): Promise<LibosEvent[]> {
    const rows = await this.#read(
      "SELECT event_id, body FROM events WHERE event_id > $1 ORDER BY event_id LIMIT $2",
      [afterId, limit < 0 ? null : limit],
    );
    return rows.map((r) => ({ event_id: Number(r.event_id), ...JSON.parse(r.body as string) }));
  }

  // ---- effect ledger

  /**
   * The intent of an external effect, which the caller performs as soon as
   * this returns. Under a lease of known length the effect must also start
   * while the lease surely holds: the lease has at least a third of its
   * length left when the row is written (renewals keep two thirds), and this
   * returns no later than that third after the statement was sent, by this
   * runtime's clock. Otherwise a worker that stalled here could act after
   * another worker took the process over: it is refused (`EFENCED`) and the
   * intent marked failed (nothing was done).
   */
  async insertEffect(e: EffectRecord): Promise<void> {
    const f = this.#fence;
    const body = JSON.stringify(e);
    if (!f?.leaseMs) {
      await this.#exec(
        "INSERT INTO effects (effect_id, pid, status, body) SELECT $1, $2, $3, $4 WHERE {{FENCE}}",
        [e.effect_id, e.pid, e.status, body],
      );
      return;
    }
    const margin = Math.floor(f.leaseMs / 3);
    const sent = performance.now();
    const rows = await this.#run(
      `INSERT INTO effects (effect_id, pid, status, body) SELECT $1, $2, $3, $4
       WHERE libos_fenced($5::integer, $6::text, $7::bigint) AND EXISTS (
         SELECT 1 FROM process_state WHERE pid = $5
           AND lease_until > clock_timestamp() + $8::float8 * interval '1 millisecond')
       RETURNING effect_id`,
      [e.effect_id, e.pid, e.status, body, f.pid, f.worker, f.token, margin],
    );
    if (rows.length === 0) {
      throw new LibosError(
        "EFENCED",
        `store: the lease on process ${f.pid} has less than ${margin} ms left: no effect starts`,
      );
    }
    if (performance.now() - sent >= margin) {
      // Too late to be sure the lease still holds: record that nothing was done.
      await this.finishEffect(e.effect_id, "failed", {
        code: "EFENCED",
        message: "not started: the lease could have expired before it",
      }, e.created_at).catch(() => {});
      throw new LibosError(
        "EFENCED",
        `store: the lease on process ${f.pid} could have expired before the effect started`,
      );
    }
  }

  /** One statement: the outcome goes to columns of its own (the intent's record stays as written). */
  async finishEffect(
    effectId: string,
    status: EffectStatus,
    outcome: unknown,
    at: string,
  ): Promise<void> {
    await this.#exec(
      `UPDATE effects SET status = $2, outcome = $3, finished_at = $4
       WHERE effect_id = $1 AND {{FENCE}}`,
      [effectId, status, JSON.stringify(outcome ?? null), at],
    );
  }

  async listEffects(status?: EffectStatus): Promise<EffectRecord[]> {
    const rows = await this.#read(
      `SELECT body, status, outcome, finished_at FROM effects
       WHERE ($1::text IS NULL OR status = $1) ORDER BY n`,
      [status ?? null],
    );
    return rows.map(_effectRow);
  }

  async markPendingEffectsUnknown(at: string, pid?: number): Promise<number> {
    const rows = await this.#read(
      `SELECT effect_id FROM effects WHERE status = 'pending' AND ($1::integer IS NULL OR pid = $1)
       ORDER BY n`,
      [pid ?? null],
    );
    for (const r of rows) await this.finishEffect(r.effect_id as string, "unknown", null, at);
    return rows.length;
  }

  async getEffect(effectId: string): Promise<EffectRecord | null> {
    const rows = await this.#read(
      "SELECT body, status, outcome, finished_at FROM effects WHERE effect_id = $1",
      [effectId],
    );
    return rows.length ? _effectRow(rows[0]) : null;
  }

  /**
   * The ledgers' last positions. A position is the row's serial: an entry
   * whose transaction is still open may later show up below a mark, but only
   * for a process inside a quantum, which a checkpoint (the user of marks)
   * never covers: it waits for a quiescent point.
   */
  async ledgerMark(): Promise<LedgerMark> {
    const r = (await this.#read(
      `SELECT (SELECT coalesce(max(n), 0) FROM effects) AS e,
              (SELECT coalesce(max(n), 0) FROM model_calls) AS m`,
    ))[0];
    return { effects: Number(r.e), model_calls: Number(r.m) };
  }

  async ledgerSince(
    mark: LedgerMark,
    pids: readonly number[],
    options: { until?: LedgerMark; limit?: number } = {},
  ): Promise<LedgerSince> {
    const limit = options.limit ?? 1000;
    const end = Number.MAX_SAFE_INTEGER;
    const fxTo = options.until?.effects ?? end;
    const mcTo = options.until?.model_calls ?? end;
    const set = [...pids];
    const fx = await this.#read(
      `SELECT body, status, outcome, finished_at, count(*) OVER () AS total FROM effects
       WHERE n > $1 AND n <= $2 AND pid = ANY($3::integer[]) ORDER BY n LIMIT $4`,
      [mark.effects, fxTo, set, limit],
    );
    const mc = await this.#read(
      `SELECT body, count(*) OVER () AS total FROM model_calls
       WHERE n > $1 AND n <= $2 AND pid = ANY($3::integer[]) ORDER BY n LIMIT $4`,
      [mark.model_calls, mcTo, set, limit],
    );
    return {
      effects: fx.map(_effectRow),
      model_calls: mc.map((r) => JSON.parse(r.body as string)),
      effects_total: fx.length ? Number(fx[0].total) : 0,
      model_calls_total: mc.length ? Number(mc[0].total) : 0,
    };
  }

  // ---- LLM call ledger

  async insertModelCall(c: ModelCallRecord): Promise<void> {
    await this.#exec(
      "INSERT INTO model_calls (call_id, pid, status, body) SELECT $1, $2, $3, $4 WHERE {{FENCE}}",
      [c.call_id, c.pid, c.status, JSON.stringify(c)],
    );
  }

  async updateModelCall(
    callId: string,
    patch: Partial<Omit<ModelCallRecord, "call_id" | "pid">>,
  ): Promise<void> {
    await this.#atomic(async (q) => {
      const rows = await this.#run(
        "SELECT body FROM model_calls WHERE call_id = $1 FOR UPDATE",
        [callId],
        q,
      );
      if (!rows.length) throw new LibosError("ENOENT", `model call: no call ${callId}`);
      const next: ModelCallRecord = { ...JSON.parse(rows[0].body as string), ...patch };
      await this.#run(
        "UPDATE model_calls SET status = $1, body = $2 WHERE call_id = $3",
        [next.status, JSON.stringify(next), callId],
        q,
      );
    });
  }

  async getModelCall(callId: string): Promise<ModelCallRecord | null> {
    const rows = await this.#read("SELECT body FROM model_calls WHERE call_id = $1", [callId]);
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async listModelCalls(filter: { pid?: number } = {}): Promise<ModelCallRecord[]> {
    const rows = await this.#read(
      "SELECT body FROM model_calls WHERE ($1::integer IS NULL OR pid = $1) ORDER BY n",
      [filter.pid ?? null],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  async markPendingModelCallsUnknown(at: string, pid?: number): Promise<number> {
    const rows = await this.#read(
      `SELECT call_id FROM model_calls WHERE status = 'pending'
         AND ($1::integer IS NULL OR pid = $1) ORDER BY n`,
      [pid ?? null],
    );
    for (const r of rows) {
      await this.updateModelCall(r.call_id as string, { status: "unknown", finished_at: at });
    }
    return rows.length;
  }

  async insertModelRelease(r: ModelRelease): Promise<void> {
    await this.#exec(
      `INSERT INTO model_releases (pid, sha256, endpoint, body) SELECT $1, $2, $3, $4
       WHERE {{FENCE}} ON CONFLICT DO NOTHING`,
      [r.pid, r.sha256, r.endpoint, JSON.stringify(r)],
    );
  }

  async listModelReleases(pid: number): Promise<ModelRelease[]> {
    const rows = await this.#read(
      "SELECT body FROM model_releases WHERE pid = $1 ORDER BY n",
      [pid],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  // ---- human queue

  async insertHumanRequest(r: HumanRequestRecord): Promise<void> {
    await this.#exec(
      `INSERT INTO human_requests (request_id, pid, status, body) SELECT $1, $2, $3, $4
       WHERE {{FENCE}}`,
      [r.request_id, r.pid, r.status, JSON.stringify(r)],
    );
  }

  async getHumanRequest(id: string): Promise<HumanRequestRecord | null> {
    const rows = await this.#read("SELECT body FROM human_requests WHERE request_id = $1", [id]);
    return rows.length ? JSON.parse(rows[0].body as string) : null;
  }

  async listHumanRequests(
    filter: { status?: HumanRequestStatus; pid?: number } = {},
  ): Promise<HumanRequestRecord[]> {
    const rows = await this.#read(
      `SELECT body FROM human_requests
       WHERE ($1::text IS NULL OR status = $1) AND ($2::integer IS NULL OR pid = $2) ORDER BY n`,
      [filter.status ?? null, filter.pid ?? null],
    );
    return rows.map((r) => JSON.parse(r.body as string));
  }

  /** Compare-and-swap on the status: the row is locked, so two deciders never both land. */
  async updateHumanRequest(
    id: string,
    patch: Partial<HumanRequestRecord>,
    expectStatus: HumanRequestStatus,
  ): Promise<boolean> {
    return await this.#atomic(async (q) => {
      const rows = await this.#run(
        "SELECT body FROM human_requests WHERE request_id = $1 AND status = $2 FOR UPDATE",
        [id, expectStatus],
        q,
      );
      if (!rows.length) return false;
      const next = { ...JSON.parse(rows[0].body as string), ...patch, request_id: id };
      await this.#run(
        "UPDATE human_requests SET status = $1, body = $2 WHERE request_id = $3",
        [next.status, JSON.stringify(next), id],
        q,
      );
      return true;
    });
  }

  // ---- checkpoints

  async insertCheckpoint(c: CheckpointRecord): Promise<void> {
    const { body, sha256, ...meta } = c;
    await this.#exec(
      `INSERT INTO checkpoints (checkpoint_id, root_pid, sha256, meta, body)
       SELECT $1, $2, $3, $4, $5 WHERE {{FENCE}}`,
      [c.checkpoint_id, c.root_pid, sha256, JSON.stringify(meta), body],
    );
  }

  async getCheckpoint(id: string): Promise<CheckpointRecord | null> {
    const rows = await this.#read(
      "SELECT sha256, meta, body FROM checkpoints WHERE checkpoint_id = $1",
      [id],
    );
    if (!rows.length) return null;
    return { ...JSON.parse(rows[0].meta as string), sha256: rows[0].sha256, body: rows[0].body };
  }

  async listCheckpoints(rootPid?: number): Promise<CheckpointMeta[]> {
    const rows = await this.#read(
      `SELECT sha256, meta FROM checkpoints WHERE ($1::integer IS NULL OR root_pid = $1)
       ORDER BY n`,
      [rootPid ?? null],
    );
    return rows.map((r) => ({ ...JSON.parse(r.meta as string), sha256: r.sha256 as string }));
  }

  // ---- meta

  async getMeta(key: string): Promise<string | null> {
    const rows = await this.#read("SELECT value FROM meta WHERE key = $1", [key]);
    return rows.length ? rows[0].value as string : null;
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.#exec(
      `INSERT INTO meta (key, value) SELECT $1, $2 WHERE {{FENCE}}
       ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      [key, value],
    );
  }
}

function _procRow(pid: number, r: _Row): ProcessRecord {
  return { pid, ...JSON.parse(r.body as string), ...parseHot(r as unknown as HotRow) };
}

/** An effect: the intent as written, with its outcome from the columns it went to. */
function _effectRow(r: _Row): EffectRecord {
  const e = JSON.parse(r.body as string) as EffectRecord;
  e.status = r.status as EffectStatus;
  if (r.finished_at !== null) {
    e.outcome = JSON.parse(r.outcome as string);
    e.finished_at = r.finished_at as string;
  }
  return e;
}

function _capRow(r: _Row): Capability {
  const c = JSON.parse(r.body as string) as Capability;
  c.status = r.status as Capability["status"];
  c.uses_remaining = r.uses_remaining === null ? null : Number(r.uses_remaining);
  return c;
}

/** Rows the verifier reads at a time. */
const _VERIFY_PAGE = 5000;

/** Walk the chain from the first record: the first one that does not check out is named. */
async function _verifyChain(q: _Q): Promise<AuditVerification> {
  let prev = "";
  let expectSeq = 1;
  let count = 0;
  let after = 0;
  for (;;) {
    const rows = await q.unsafe(
      `SELECT seq, record_id, actor, action, decision, prev_hash, hash, body FROM audit
       WHERE seq > $1 ORDER BY seq LIMIT $2`,
      [after, _VERIFY_PAGE],
      { prepare: true },
    );
    for (const r of rows) {
      const seq = Number(r.seq);
      const bad = (problem: string): AuditVerification => ({
        ok: false,
        count,
        head: prev,
        firstBad: { seq, record_id: r.record_id as string, problem },
      });
      if (seq !== expectSeq) return bad(`expected record ${expectSeq}: a record was removed`);
      let rec: AuditRecord;
      try {
        rec = JSON.parse(r.body as string);
      } catch {
        return bad("record body is not valid JSON");
      }
      if (r.prev_hash !== prev) return bad("prev_hash does not match the previous record");
      if (rec.seq !== seq || rec.record_id !== r.record_id || r.record_id !== `a${seq}`) {
        return bad("record id altered");
      }
      if (chainHash(prev, r.body as string) !== r.hash) {
        return bad("hash does not match the record's contents");
      }
      if (r.actor !== rec.actor || r.action !== rec.action || r.decision !== rec.decision) {
        return bad("indexed columns disagree with the hashed record");
      }
      prev = r.hash as string;
      expectSeq++;
      count++;
      after = seq;
    }
    if (rows.length < _VERIFY_PAGE) break;
  }
  const head = (await q.unsafe("SELECT audit_seq, audit_hash FROM chain_head WHERE id = 1"))[0];
  const headSeq = head ? Number(head.audit_seq) : null;
  if (headSeq !== count || head.audit_hash !== prev) {
    return removedFromEnd(count, prev, headSeq);
  }
  return { ok: true, count, head: prev };
}
