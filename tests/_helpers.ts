/**
 * Shared fixtures for tests: a runtime over a fresh temp workspace and store,
 * with deterministic providers where asked.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { DenyingHuman } from "../runtime/providers/scripted.ts";
import type { Providers } from "../runtime/providers/types.ts";
import type { CapabilitySpec } from "../runtime/types.ts";
import { LibosError } from "../runtime/errors.ts";
import { dropPgStore, freshPgStore, ON_PG, pgDump, pgExec } from "./_pg.ts";
import { isPostgresUrl, openStore } from "../runtime/store/open.ts";
import type { Store } from "../runtime/store/store.ts";
import { DatabaseSync } from "node:sqlite";

/**
 * A test environment: temp dir with `ws/` (workspace) and `store.db`, or,
 * when the suite runs on PostgreSQL (`LIBOS_TEST_STORE`), a fresh database.
 */
export interface Env {
  /** Temp root (outside the workspace). */
  root: string;
  /** Workspace real path. */
  ws: string;
  /** Store file path, or the PostgreSQL URL of the environment's own database. */
  storePath: string;
  /** Which store the environment runs on. */
  storeKind: "sqlite" | "postgres";
  /**
   * A file path beside the store (`<store><suffix>`, like the console's token
   * file); in the temp root for a PostgreSQL store, which has no file.
   */
  beside(suffix: string): string;
  /** The runtime. */
  rt: Runtime;
  /** Human channel used (inspect `.asked`, `.shown`). */
  human: DenyingHuman;
  /** Close the runtime and delete the temp dir. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@link makeEnv}. */
export interface EnvOptions {
  /** Files to create in the workspace: relative path -> content. */
  files?: Record<string, string>;
  /** Providers to replace. */
  providers?: Partial<Providers>;
  /** Where JIT artifacts are cached (share one across a file: a source type-checks once). */
  jitCacheDir?: string;
  /** Scheduler slots (the runtime's default unless given; 1 where a test asserts an order). */
  concurrency?: number;
}

/** Create a temp workspace + store and open a runtime on it. Use with `await using`. */
export async function makeEnv(options: EnvOptions = {}): Promise<Env> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(ws);
  for (const [rel, content] of Object.entries(options.files ?? {})) {
    await Deno.mkdir(join(ws, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(ws, rel), content);
  }
  const storePath = ON_PG ? await freshPgStore() : join(root, "store.db");
  const human = (options.providers?.human as DenyingHuman | undefined) ?? new DenyingHuman();
  const rt = await Runtime.open({
    store: storePath,
    providers: { human, ...options.providers },
    jitCacheDir: options.jitCacheDir,
    concurrency: options.concurrency,
    // A file store's directory (the temp root) is hidden from agents as <store>; a
    // PostgreSQL store has none, so the root is declared, keeping host-path tests the same.
    hostPaths: ON_PG ? [{ path: root, name: "<store>" }] : [],
  });
  return {
    root,
    ws,
    storePath,
    storeKind: ON_PG ? "postgres" : "sqlite",
    beside: (suffix) => ON_PG ? join(root, `store${suffix}`) : `${storePath}${suffix}`,
    rt,
    human,
    async [Symbol.asyncDispose]() {
      try {
        await rt.close();
      } catch { /* already closed */ }
      await Deno.remove(root, { recursive: true });
      if (ON_PG) await dropPgStore(storePath);
    },
  };
}

/** Launch a root process with `tools` and `caps` (and an optional policy/script). */
export async function launch(
  env: Env,
  caps: CapabilitySpec[] = [],
  extra: {
    tools?: string[];
    policy?: unknown;
    script?: unknown;
    name?: string;
    budgets?: unknown;
  } = {},
): Promise<number> {
  const image: Record<string, unknown> = {
    name: extra.name ?? "test",
    tools: extra.tools ??
      [
        "read_file",
        "write_file",
        "delete_file",
        "list_dir",
        "shell",
        "put_object",
        "get_object",
        "spawn",
        "fork",
        "wait",
        "send",
        "recv",
        "exit",
        "output",
      ],
  };
  if (extra.policy !== undefined) image.policy = extra.policy;
  if (extra.budgets !== undefined) image.budgets = extra.budgets;
  const proc = await env.rt.launch({
    image,
    workspace: env.ws,
    grants: caps,
    script: extra.script,
  });
  return proc.pid;
}

/** Await a promise expected to fail with a LibosError of `code`; returns the error. */
export async function rejectsCode(p: Promise<unknown>, code: string): Promise<LibosError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof LibosError && e.code === code) return e;
    throw new Error(
      `expected ${code}, got ${e instanceof LibosError ? e.code + " " + e.message : String(e)}`,
    );
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/** Shorthand capability spec. */
export function cap(resource: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return { resource, rights };
}

const _CLI = new URL("../cli/libos.ts", import.meta.url).pathname;

/** What a CLI subprocess printed and returned. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** A test fixture (`tests/fixtures/<file>`) running in another OS process. */
export interface Fixture {
  /** Its first line of output: what it says once it is ready. */
  first: string;
  /** Say go: one line on its stdin, which then closes. */
  go(): Promise<void>;
  /** The rest of its output, once it has exited 0 (asserted, with its stderr as the message). */
  rest(): Promise<string>;
  /** SIGKILL it. */
  kill(): Promise<void>;
}

/** Run `tests/fixtures/<file> ...args` with `deno run -A`; resolves once it has said its first line. */
export async function startFixture(file: string, args: string[]): Promise<Fixture> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`./fixtures/${file}`, import.meta.url).pathname, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  let said = "";
  while (!said.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    said += value;
  }
  const cut = said.indexOf("\n");
  const first = cut < 0 ? said : said.slice(0, cut);
  let rest = cut < 0 ? "" : said.slice(cut + 1);
  const stdin = child.stdin.getWriter();
  return {
    first,
    async go() {
      await stdin.write(new TextEncoder().encode("go\n"));
      await stdin.close();
    },
    async rest() {
      for (let r = await lines.read(); !r.done; r = await lines.read()) rest += r.value;
      const status = await child.status;
      assert.equal(status.code, 0, await stderr);
      return rest;
    },
    async kill() {
      child.kill("SIGKILL");
      await child.status;
      await stdin.close().catch(() => {});
    },
  };
}

/** Run `libos ARGS...` as a real subprocess with the task's permissions (in `cwd` if given). */
export async function libos(args: string[], opts: { cwd?: string } = {}): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "--allow-sys",
      "--allow-net",
      _CLI,
      ...args,
    ],
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

// Its own module, free of the helpers' dependencies: fixtures run as another user import it.
export { capRecord } from "./_cap_record.ts";

/** Open the store at `path` (a file, or the PostgreSQL URL of an environment). */
export async function openStoreAt(path: string): Promise<Store> {
  return await openStore(path);
}

/**
 * Run raw SQL (`?` placeholders) against a store, as an attacker with the
 * file or the database password could. Returns how many rows changed.
 */
export async function rawSql(path: string, sql: string, ...params: (string | number)[]) {
  if (isPostgresUrl(path)) return (await pgExec(path, sql, params)).changes;
  const db = new DatabaseSync(path);
  try {
    // The store's own threads (the audit indexer) may hold the write lock a moment.
    db.exec("PRAGMA busy_timeout = 5000");
    return Number(db.prepare(sql).run(...params).changes);
  } finally {
    db.close();
  }
}

/** Rows of a raw SQL query (`?` placeholders) against a store. */
export async function rawRows(
  path: string,
  sql: string,
  ...params: (string | number)[]
): Promise<Record<string, unknown>[]> {
  if (isPostgresUrl(path)) return (await pgExec(path, sql, params)).rows;
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    return db.prepare(sql).all(...params) as Record<string, unknown>[];
  } finally {
    db.close();
  }
}

/**
 * Everything a store holds, as text: every byte of a SQLite store's files
 * (main, WAL, shared memory, audit log), or every row of a PostgreSQL store.
 */
export async function storeBytes(path: string, suffixes = ["", "-wal", "-shm", "-journal"]) {
  if (isPostgresUrl(path)) return await pgDump(path);
  let all = "";
  for (const suffix of suffixes) {
    try {
      // latin1 keeps every byte, so an ASCII needle is found wherever it sits.
      all += new TextDecoder("latin1").decode(await Deno.readFile(path + suffix));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return all;
}

/**
 * Make every commit of a SQLite store fail (as a full disk's would) once it
 * holds a scripted process's running mark for the step at `position` (0 for
 * the first) written back as running: a trigger adds a row whose deferred
 * foreign key is checked only at COMMIT. The mark is journaled first, so its
 * tool runs; only a commit made while the tool is under way holds it as running.
 * Undo with {@link commitsSucceedAgain}.
 */
export async function failCommitsWithMark(path: string, position: number): Promise<void> {
  await _failingRow(path);
  // A decision moves the script's position past the step it decided. Any update (not
  // only of status) counts: the row may be written back running already.
  await rawSql(
    path,
    `CREATE TRIGGER t_fail AFTER UPDATE ON process_state
     WHEN NEW.status = 'running' AND json_extract(NEW.model, '$.state.position') = ${
      Number(position) + 1
    }
     BEGIN INSERT INTO t_child (id) VALUES (42); END`,
  );
}

/**
 * Make every commit of a SQLite store that holds the result of step `step`
 * fail, as {@link failCommitsWithMark} does: whenever it comes, a commit holds it.
 */
export async function failCommitsWithResult(path: string, step: number): Promise<void> {
  await _failingRow(path);
  await rawSql(
    path,
    `CREATE TRIGGER t_fail AFTER INSERT ON step_results WHEN NEW.step = ${Number(step)}
     BEGIN INSERT INTO t_child (id) VALUES (42); END`,
  );
}

/** A table whose rows fail the commit that holds them (a deferred foreign key). */
async function _failingRow(path: string): Promise<void> {
  await rawSql(path, "CREATE TABLE t_parent (id INTEGER PRIMARY KEY)");
  await rawSql(
    path,
    "CREATE TABLE t_child (id INTEGER REFERENCES t_parent(id) DEFERRABLE INITIALLY DEFERRED)",
  );
}

/** Undo {@link failCommitsWithMark} or {@link failCommitsWithResult}. */
export async function commitsSucceedAgain(path: string): Promise<void> {
  await rawSql(path, "DROP TRIGGER t_fail");
}

/**
 * Pretend the leases of a runtime that was killed have run out (as they do
 * after their length): a SQLite store's scheduler lease, or, on PostgreSQL,
 * every worker lease still held on a process.
 */
export async function expireLeases(path: string): Promise<void> {
  if (isPostgresUrl(path)) {
    await rawSql(
      path,
      "UPDATE process_state SET lease_until = now() - interval '1 second' WHERE lease_worker IS NOT NULL",
    );
    return;
  }
  await rawSql(
    path,
    "UPDATE meta SET value = ? WHERE key = 'scheduler_lease'",
    JSON.stringify({ id: "dead", os_pid: 0, heartbeat: 0 }),
  );
}

/** Host pids (not zombies) whose command line contains `marker`. */
export function liveWith(marker: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (!Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(marker)) continue;
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      if (!stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}
