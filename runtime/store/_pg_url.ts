/**
 * PostgreSQL connection URLs: parsed into the driver's options without ever
 * echoing the URL (it may carry a password), shown with the password hidden,
 * and, when the URL has none, the password looked up like libpq does
 * (`PGPASSWORD`, then `~/.pgpass` or `PGPASSFILE`, which must be mode 0600).
 * @module
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { invalid } from "../errors.ts";

/** Does `spec` name a PostgreSQL store (`postgres://` or `postgresql://`)? */
export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}

/** What the `postgres` driver needs to connect. */
export interface PgConnect {
  /** Host name (TCP) or socket directory. */
  host: string;
  /** Port (also names the socket file). */
  port: number;
  /** The socket file, for a socket directory. */
  path: string | null;
  /** Role. */
  user: string;
  /** Database. */
  database: string;
  /** A password from the URL, or a lookup done at connect time. */
  pass: string | (() => string);
  /** TLS mode (`false`: none). */
  ssl: false | "require" | "prefer" | "allow" | "verify-full";
  /** Startup parameters (`search_path`, `application_name`). */
  connection: Record<string, string>;
  /** Seconds to wait for a connection. */
  connectTimeout: number;
}

const _URL =
  /^(postgres(?:ql)?):\/\/(?:([^:@/?#]*)(?::([^@/?#]*))?@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/i;

const _PARAMS = new Set([
  "host",
  "port",
  "sslmode",
  "search_path",
  "application_name",
  "connect_timeout",
]);

/** `url` with its password replaced by `***` (and nothing else changed). */
export function redactUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:@/?#]*):[^@/?#]*@/i, "$1:***@");
}

/** Any PostgreSQL URL inside `text` with its password hidden (for error messages). */
export function scrubUrls(text: string): string {
  return text.replace(/(postgres(?:ql)?:\/\/[^:@/?#\s]*):[^@/?#\s]*@/gi, "$1:***@");
}

function _decode(part: string, field: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw invalid("store", `the URL's ${field} is not valid percent-encoding`);
  }
}

function _int(v: string, field: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) {
    throw invalid("store", `the URL's ${field} must be an integer from ${min} to ${max}`);
  }
  return n;
}

function _ssl(mode: string | undefined): PgConnect["ssl"] {
  if (mode === undefined || mode === "disable") return false;
  if (mode === "require" || mode === "prefer" || mode === "allow" || mode === "verify-full") {
    return mode;
  }
  if (mode === "verify-ca") return "verify-full";
  throw invalid(
    "store",
    "sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
  );
}

function _hostPort(raw: string): { host: string | null; port: number | null } {
  if (raw === "") return { host: null, port: null };
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(raw);
  if (v6) return { host: v6[1], port: v6[2] ? _int(v6[2], "port", 1, 65535) : null };
  if (raw.includes(",")) throw invalid("store", "several hosts in one URL are not supported");
  const i = raw.lastIndexOf(":");
  if (i < 0) return { host: _decode(raw, "host"), port: null };
  return { host: _decode(raw.slice(0, i), "host"), port: _int(raw.slice(i + 1), "port", 1, 65535) };
}

/**
 * Parse a `postgres://user[:password]@host[:port]/database[?params]` URL. A
 * socket directory is given as `?host=/run/postgresql` (or percent-encoded as
 * the host). Parameters: `host`, `port`, `sslmode`, `search_path`,
 * `application_name`, `connect_timeout`; any other is refused. Errors never
 * contain the URL.
 */
export function parsePgUrl(url: string): PgConnect {
  const m = _URL.exec(url);
  if (!m) throw invalid("store", "not a postgres://user@host:port/database URL");
  const [, , rawUser, rawPass, rawHost, rawDb, rawQuery] = m;
  const params = new Map<string, string>();
  for (const kv of (rawQuery ?? "").split("&").filter(Boolean)) {
    const eq = kv.indexOf("=");
    const k = _decode(eq < 0 ? kv : kv.slice(0, eq), "parameter");
    if (!_PARAMS.has(k)) throw invalid("store", `unknown URL parameter '${k.slice(0, 40)}'`);
    params.set(k, _decode(eq < 0 ? "" : kv.slice(eq + 1).replaceAll("+", " "), k));
  }
  const hp = _hostPort(rawHost);
  const host = params.get("host") ?? hp.host ?? Deno.env.get("PGHOST") ?? "localhost";
  const port = params.has("port")
    ? _int(params.get("port")!, "port", 1, 65535)
    : hp.port ?? Number(Deno.env.get("PGPORT") ?? 5432);
  const user = _decode(rawUser ?? "", "user") || Deno.env.get("PGUSER") || _osUser();
  const database = _decode(rawDb ?? "", "database") || Deno.env.get("PGDATABASE") || user;
  const connection: Record<string, string> = {};
  const sp = params.get("search_path");
  if (sp !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_$]*$/.test(sp)) {
      throw invalid("store", "search_path must be one plain schema name");
    }
    connection.search_path = sp;
  }
  connection.application_name = params.get("application_name") ?? "libos";
  const password = rawPass !== undefined ? _decode(rawPass, "password") : null;
  const socket = host.startsWith("/");
  return {
    host,
    port,
    path: socket ? `${host}/.s.PGSQL.${port}` : null,
    user,
    database,
    pass: password ?? (() => lookupPassword({ host, port, database, user })),
    ssl: _ssl(params.get("sslmode")),
    connection,
    connectTimeout: params.has("connect_timeout")
      ? _int(params.get("connect_timeout")!, "connect_timeout", 1, 3600)
      : 10,
  };
}

function _osUser(): string {
  return Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ?? "postgres";
}

/**
 * A password for a connection without one in its URL: `PGPASSWORD`, else the
 * first matching line of the password file (`PGPASSFILE` or `~/.pgpass`,
 * `host:port:database:user:password`, `*` matches anything; ignored unless
 * its mode is 0600 or stricter, as libpq does). Empty when none matches.
 */
export function lookupPassword(
  c: { host: string; port: number; database: string; user: string },
): string {
  const env = Deno.env.get("PGPASSWORD");
  if (env) return env;
  const file = Deno.env.get("PGPASSFILE") ?? join(homedir(), ".pgpass");
  let text: string;
  try {
    const info = Deno.statSync(file);
    if (!info.isFile || (info.mode !== null && (info.mode & 0o077) !== 0)) return "";
    text = Deno.readTextFileSync(file);
  } catch {
    return "";
  }
  const host = c.host.startsWith("/") ? "localhost" : c.host;
  const want = [host, String(c.port), c.database, c.user];
  for (const line of text.split("\n")) {
    if (!line.trim() || line.startsWith("#")) continue;
    const fields = _pgpassFields(line);
    if (fields.length < 5) continue;
    if (want.every((w, i) => fields[i] === "*" || fields[i] === w)) return fields[4];
  }
  return "";
}

// Split a .pgpass line on unescaped colons (`\:` and `\\` are escapes).
function _pgpassFields(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === "\\" && i + 1 < line.length) cur += line[++i];
    else if (ch === ":" && out.length < 4) (out.push(cur), cur = "");
    else cur += ch;
  }
  out.push(cur);
  return out;
}
