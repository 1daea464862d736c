/**
 * PostgreSQL for tests: with `LIBOS_TEST_STORE=postgres://...` (the cluster
 * `.ci/run` starts) every test environment gets a database of its own,
 * copied from a template migrated once (`CREATE DATABASE ... TEMPLATE`, tens
 * of milliseconds), and dropped when the environment is disposed. Also raw
 * SQL against a store, for tests that tamper with it.
 * @module
 */
import postgres from "postgres";
import { MIGRATIONS } from "../runtime/store/_pg_schema.ts";
import { PgStore } from "../runtime/store/postgres.ts";
import { sha256 } from "../runtime/canonical.ts";

/** The PostgreSQL URL the suite runs against, or null (SQLite). */
export const PG_TEST_URL: string | null = Deno.env.get("LIBOS_TEST_STORE") ?? null;

/** True when the suite runs against PostgreSQL. */
export const ON_PG = PG_TEST_URL !== null;

/**
 * A PostgreSQL URL for tests that need one whatever store the suite runs on
 * (workers, fencing): `LIBOS_TEST_STORE`, else `LIBOS_TEST_PG`. Null when
 * neither is set: those tests are then ignored (and counted as such).
 */
export const PG_URL: string | null = PG_TEST_URL ?? Deno.env.get("LIBOS_TEST_PG") ?? null;

/** `url` with its database replaced by `db`. */
export function withDatabase(url: string, db: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^/?#]*)(?:\/[^?#]*)?/i, `$1/${db}`);
}

let _template: string | null = null;
let _count = 0;

/** Driver options for `url`'s server, connected to database `db`. */
function _options(url: string, db?: string): postgres.Options<Record<string, never>> {
  const u = new URL(url.replace(/^postgres(ql)?:/i, "http:"));
  const host = u.searchParams.get("host") ?? (u.hostname || "localhost");
  const port = Number(u.searchParams.get("port") ?? (u.port || 5432));
  return {
    host,
    port,
    ...(host.startsWith("/") ? { path: `${host}/.s.PGSQL.${port}` } : {}),
    user: decodeURIComponent(u.username) || "postgres",
    pass: decodeURIComponent(u.password),
    database: db ?? (u.pathname.slice(1) || "postgres"),
    max: 1,
    onnotice: () => {},
  };
}

// One connection per call: a test must not end with a connection open.
async function _admin<T>(fn: (sql: postgres.Sql) => Promise<T>, db?: string): Promise<T> {
  const sql = postgres(_options(PG_URL!, db));
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

// One template per schema version (named by a hash of the migrations), migrated once.
async function _templateDb(base: string): Promise<string> {
  if (_template) return _template;
  const name = `libos_tpl_${sha256(MIGRATIONS.join("\n")).slice(0, 12)}`;
  const found = await _admin((a) =>
    a.unsafe("SELECT 1 FROM pg_database WHERE datname = $1", [name])
  );
  if (found.length === 0) {
    const tmp = `${name}_${Deno.pid}`;
    await _admin((a) => a.unsafe(`CREATE DATABASE ${tmp} ENCODING 'UTF8' TEMPLATE template0`));
    const s = await PgStore.open(withDatabase(base, tmp));
    await s.close();
    try {
      await _admin((a) => a.unsafe(`ALTER DATABASE ${tmp} RENAME TO ${name}`));
    } catch {
      // Another test process made it first.
      await _admin((a) => a.unsafe(`DROP DATABASE IF EXISTS ${tmp}`));
    }
  }
  return _template = name;
}

/** A fresh, migrated, empty PostgreSQL store: its URL (needs {@link PG_URL}). */
export async function freshPgStore(): Promise<string> {
  if (!PG_URL) throw new Error("no PostgreSQL for tests: set LIBOS_TEST_STORE or LIBOS_TEST_PG");
  const tpl = await _templateDb(PG_URL);
  const db = `libos_t_${Deno.pid}_${++_count}_${crypto.randomUUID().slice(0, 6)}`;
  await _admin((a) => a.unsafe(`CREATE DATABASE ${db} TEMPLATE ${tpl}`));
  return withDatabase(PG_URL, db);
}

function _dbOf(url: string): string | undefined {
  return /^postgres(?:ql)?:\/\/[^/?#]*\/([^?#]+)/i.exec(url)?.[1];
}

/** Drop a store made by {@link freshPgStore} (closing whatever is still connected to it). */
export async function dropPgStore(url: string): Promise<void> {
  const db = _dbOf(url);
  if (!PG_URL || !db || !db.startsWith("libos_t_")) return;
  await _admin((a) => a.unsafe(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
}

/** A connection of its own to a PostgreSQL store (a client that holds locks, say); end it. */
export function pgClient(url: string): postgres.Sql {
  return postgres({ ..._options(url), max: 1 });
}

/**
 * Run `sql` (with `?` placeholders) directly against a PostgreSQL store, as
 * someone with the database's password could: for tests that tamper.
 * Returns the rows and how many rows changed.
 */
export async function pgExec(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<{ rows: Record<string, unknown>[]; changes: number }> {
  let i = 0;
  const text = sql.replace(/\?/g, () => `$${++i}`);
  const sqlc = postgres(_options(url));
  try {
    const rows = await sqlc.unsafe(text, params as never[]);
    return { rows: [...rows] as Record<string, unknown>[], changes: rows.count ?? 0 };
  } finally {
    await sqlc.end();
  }
}

/**
 * Every row of every table of a PostgreSQL store as text (what someone
 * reading the database would see), for tests that look for what must never
 * be stored.
 */
export async function pgDump(url: string): Promise<string> {
  const { rows } = await pgExec(
    url,
    `SELECT table_name FROM information_schema.tables
     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`,
  );
  let all = "";
  for (const r of rows) {
    const t = String(r.table_name);
    const data = await pgExec(url, `SELECT t::text AS row FROM "${t}" t`);
    all += data.rows.map((d) => `${t}: ${d.row}`).join("\n") + "\n";
  }
  return all;
}

/**
 * Options of a test that only means something on a SQLite store (its file,
 * its audit log, its one-scheduler rule, recovery at open): ignored, and
 * counted as such, when the suite runs on PostgreSQL.
 */
export const SQLITE_ONLY: { ignore: boolean } = { ignore: ON_PG };

/** Options of a test that needs PostgreSQL whatever the suite runs on: ignored without one. */
export const NEEDS_PG: { ignore: boolean } = { ignore: PG_URL === null };
