/**
 * A private PostgreSQL cluster for a benchmark: Debian's binaries
 * (`/usr/lib/postgresql/<version>/bin`), `initdb` in a temp directory as the
 * `postgres` OS user when run as root, a unix socket in that directory (no
 * TCP), trust authentication, PostgreSQL's default durability (fsync and
 * synchronous commit on), stopped and removed by `stop()`.
 * @module
 */
import { join } from "node:path";

/** A running private cluster. */
export interface PgCluster {
  /** Base URL (database `postgres`). */
  url: string;
  /** The same server, another database. */
  urlFor(db: string): string;
  /** Run SQL through psql as the superuser. */
  psql(sql: string, db?: string): Promise<string>;
  /** Stop the server and remove its directory. */
  stop(): Promise<void>;
}

function _binDir(): string {
  const base = "/usr/lib/postgresql";
  const versions = [...Deno.readDirSync(base)].map((e) => e.name).filter((n) => /^\d+$/.test(n))
    .sort((a, b) => Number(a) - Number(b));
  if (!versions.length) throw new Error("no PostgreSQL under /usr/lib/postgresql");
  return join(base, versions.at(-1)!, "bin");
}

async function _run(cmd: string[], asPostgres: boolean): Promise<string> {
  const argv = asPostgres ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd[0]}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** Start a private cluster (`extra`: more `-c name=value` server settings). */
export async function startCluster(extra: string[] = []): Promise<PgCluster> {
  const bin = _binDir();
  const root = Deno.uid() === 0;
  const dir = await Deno.makeTempDir({ prefix: "libos-bench-pg-" });
  if (root) await _run(["chown", "postgres:postgres", dir], false);
  await Deno.chmod(dir, 0o700);
  await _run(
    [
      join(bin, "initdb"),
      "-D",
      join(dir, "data"),
      "-A",
      "trust",
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C",
    ],
    root,
  );
  let port = 0;
  for (let i = 0; i < 5 && !port; i++) {
    const p = 20000 + Math.floor(Math.random() * 20000);
    const opts = [`-p ${p}`, `-k ${dir}`, "-c listen_addresses=", "-c max_connections=300"]
      .concat(extra.map((e) => `-c ${e}`)).join(" ");
    try {
      await _run(
        [
          join(bin, "pg_ctl"),
          "-D",
          join(dir, "data"),
          "-l",
          join(dir, "server.log"),
          "-w",
          "-o",
          opts,
          "start",
        ],
        root,
      );
      port = p;
    } catch { /* port taken: another */ }
  }
  if (!port) throw new Error("PostgreSQL did not start");
  const urlFor = (db: string) => `postgres://postgres@localhost/${db}?host=${dir}&port=${port}`;
  return {
    url: urlFor("postgres"),
    urlFor,
    psql: (sql, db = "postgres") =>
      _run(
        ["psql", "-h", dir, "-p", String(port), "-U", "postgres", "-d", db, "-Atqc", sql],
        false,
      ),
    async stop() {
      await _run([join(bin, "pg_ctl"), "-D", join(dir, "data"), "-m", "fast", "stop"], root)
        .catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
