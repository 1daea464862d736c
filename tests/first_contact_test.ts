/**
 * What a new user meets first: the default store works from any directory, a
 * relative `--store` works for JIT tools, `--help` and `--version` answer, and
 * no refusal, syscall error or audit text names a host path (the store's
 * directory, the JIT cache, the checkout, the workspace root).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { CODE_ROOT } from "../runtime/host_paths.ts";
import { LibosError } from "../runtime/errors.ts";
import { cap, launch, libos, makeEnv, rejectsCode } from "./_helpers.ts";

const COUNT_LINES = `export async function run(args, libos) {
  const text = await libos.syscall("filesystem.read", { path: args.path });
  return text.split("\\n").length;
}
`;

async function tempDir(prefix: string): Promise<string> {
  return await Deno.realPath(await Deno.makeTempDir({ prefix }));
}

Deno.test("cli: the default store is created (mode 0700) on first use; read-only commands still need it", async () => {
  const root = await tempDir("libos-first-");
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    await Deno.writeTextFile(join(ws, "notes.txt"), "a\nb");
    await Deno.writeTextFile(join(root, "count.ts"), COUNT_LINES);
    const cwd = join(root, "project");
    await Deno.mkdir(cwd);
    // Read-only commands on a directory with no store say so, and create nothing.
    for (const cmd of [["ps"], ["audit"], ["events"]]) {
      const r = await libos(cmd, { cwd });
      assert.equal(r.code, 2, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, /--store: '\.libos\/libos\.db' does not exist/);
    }
    await assert.rejects(Deno.stat(join(cwd, ".libos")));

    const r = await libos([
      "tool",
      "run",
      "../count.ts",
      "--workspace",
      "../ws",
      "--grant",
      "filesystem:workspace:notes.txt=read",
      "--args",
      '{"path":"notes.txt"}',
      "--json",
    ], { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { ok: true, value: 2 });
    const dir = await Deno.stat(join(cwd, ".libos"));
    assert.ok(dir.isDirectory);
    assert.equal(dir.mode! & 0o777, 0o700);

    const ps = await libos(["ps", "--json"], { cwd });
    assert.equal(ps.code, 0, ps.stderr);
    assert.equal(JSON.parse(ps.stdout)[0].status, "exited");
    // run creates it too (a fresh directory).
    const cwd2 = join(root, "project2");
    await Deno.mkdir(cwd2);
    await Deno.writeTextFile(join(root, "image.json"), JSON.stringify({ name: "t", tools: [] }));
    await Deno.writeTextFile(join(root, "script.json"), JSON.stringify({ steps: [] }));
    const run = await libos(
      ["run", "../image.json", "--workspace", "../ws", "--script", "../script.json", "--json"],
      { cwd: cwd2 },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await Deno.stat(join(cwd2, ".libos", "libos.db"))).isFile, true);
    // The default store inside the workspace is refused before anything is created.
    const inside = await libos(
      ["run", "../image.json", "--workspace", ".", "--script", "../script.json"],
      { cwd: ws },
    );
    assert.equal(inside.code, 2, inside.stderr);
    assert.match(inside.stderr, /inside the workspace/);
    await assert.rejects(Deno.stat(join(ws, ".libos")));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cli: a relative --store works for JIT tools (store paths are absolute from parse time)", async () => {
  const root = await tempDir("libos-relstore-");
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    await Deno.writeTextFile(join(ws, "notes.txt"), "a\nb\nc");
    await Deno.writeTextFile(join(root, "count.ts"), COUNT_LINES);
    await Deno.mkdir(join(root, "rel"));
    const r = await libos([
      "tool",
      "run",
      "count.ts",
      "--workspace",
      "ws",
      "--store",
      "rel/s.db",
      "--grant",
      "filesystem:workspace:notes.txt=read",
      "--args",
      '{"path":"notes.txt"}',
      "--json",
    ], { cwd: root });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { ok: true, value: 3 });
    assert.ok((await Deno.stat(join(root, "rel", "s.db.jit"))).isDirectory);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("runtime: Runtime.open with a relative store path runs JIT tools from any later directory", async () => {
  const root = await tempDir("libos-relopen-");
  const before = Deno.cwd();
  Deno.chdir(root);
  let rt: Runtime | null = null;
  try {
    await Deno.mkdir("ws");
    await Deno.writeTextFile("ws/notes.txt", "x\ny");
    rt = await Runtime.open({ store: "s.db" });
    // The current directory moves on; nothing derived from the store may follow it.
    Deno.chdir(before);
    const proc = await rt.launch({
      image: { name: "t", tools: [] },
      workspace: join(root, "ws"),
      grants: [cap("tool:count", "write"), cap("filesystem:workspace:notes.txt", "read")],
    });
    const c = await rt.syscall(proc.pid, "jit.propose", { name: "count", source: COUNT_LINES }) as {
      oid: string;
    };
    const a = await rt.syscall(proc.pid, "jit.validate", { oid: c.oid }) as { oid: string };
    await rt.syscall(proc.pid, "jit.register", { oid: a.oid });
    assert.equal(
      await rt.syscall(proc.pid, "jit.call", { name: "count", args: { path: "notes.txt" } }),
      2,
    );
  } finally {
    Deno.chdir(before);
    await rt?.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cli: --help, COMMAND --help and --version exit 0 on stdout; unknown commands exit 2", async () => {
  const help = await libos(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /libos run IMAGE\.json/);
  assert.match(help.stdout, /libos serve/);
  assert.equal(help.stderr, "");
  for (const cmd of ["run", "resume", "human", "audit", "ps", "tool", "serve"]) {
    const r = await libos([cmd, "--help"]);
    assert.equal(r.code, 0, `${cmd} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`libos ${cmd} `));
    assert.ok(!r.stdout.includes("libos events"), `${cmd} --help shows only ${cmd}`);
  }
  const sub = await libos(["human", "approve", "--help"]);
  assert.equal(sub.code, 0);
  assert.match(sub.stdout, /libos human approve ID/);
  const v = await libos(["--version"]);
  assert.equal(v.code, 0);
  const meta = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.match(v.stdout, new RegExp(`^libos ${meta.version.replaceAll(".", "\\.")} `));
  assert.match(v.stdout, new RegExp(`deno ${Deno.version.deno.replaceAll(".", "\\.")}`));
  const bad = await libos(["frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown command 'frobnicate'/);
  assert.equal(bad.stdout, "");
});

/** Tools that fail in every way a host path could show: checkers, stack traces, direct access. */
const FAILING_TOOLS: Record<string, string> = {
  lint_bug: `export function run(args) { let a = args.x; a = a; return a; }\n`,
  type_error: `export function run(args: { a: string }) { const n: number = args.a; return n; }\n`,
  parse_error: `export function run(args) { return (; }\n`,
  bad_import: `import x from "./other.ts";\nexport function run() { return x; }\n`,
  no_run: `export function walk() { return 1; }\n`,
  tests_fail: `export function run() { return 1; }\n`,
};

const RUNTIME_FAILURES: Record<string, string> = {
  throws: `export function run() { throw new Error("boom"); }\n`,
  reads_cwd_store: `export function run() {
  Deno.readTextFileSync("../../store.db");
  return "read";
}
`,
  reads_cwd: `export function run() { return Deno.cwd().length; }\n`,
  reads_workspace_abs: `export function run(args) { return Deno.readTextFileSync(args.path); }\n`,
};

Deno.test("host paths: no refusal, syscall error, audit text or event names the temp dir or the checkout", async () => {
  await using env = await makeEnv({
    files: { "notes.txt": "n", "dir/a.txt": "a", ".env": "SECRET=1" },
  });
  await Deno.writeTextFile(join(env.root, "outside.txt"), "outside");
  const names = [...Object.keys(FAILING_TOOLS), ...Object.keys(RUNTIME_FAILURES)];
  const pid = await launch(env, [
    cap("filesystem:workspace:notes.txt", "read"),
    cap("filesystem:workspace:dir/*", "read"),
    { resource: "filesystem:workspace:.env", rights: ["read"], effect: "deny" },
    cap("shell:cat", "execute"),
    cap("shell:no-such-program", "execute"),
    ...names.map((n) => cap(`tool:${n}`, "write")),
  ], { policy: { shell: "always_allow" } });
  const messages: string[] = [];
  const attempt = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      if (!(e instanceof LibosError)) throw e;
      messages.push(e.message);
    }
  };
  for (const [name, source] of Object.entries(FAILING_TOOLS)) {
    const tests = name === "tests_fail" ? [{ name: "t", args: {}, expect: 2 }] : undefined;
    const c = await env.rt.syscall(pid, "jit.propose", { name, source, tests }) as { oid: string };
    await attempt(env.rt.syscall(pid, "jit.validate", { oid: c.oid }));
  }
  assert.equal(messages.length, Object.keys(FAILING_TOOLS).length, "every bad tool was refused");
  for (const [name, source] of Object.entries(RUNTIME_FAILURES)) {
    const c = await env.rt.syscall(pid, "jit.propose", { name, source }) as { oid: string };
    const a = await env.rt.syscall(pid, "jit.validate", { oid: c.oid }) as { oid: string };
    await env.rt.syscall(pid, "jit.register", { oid: a.oid });
    await attempt(env.rt.syscall(pid, "jit.call", { name, args: { path: join(env.ws, ".env") } }));
  }
  const sys = (name: string, args: Record<string, unknown>) =>
    attempt(env.rt.syscall(pid, name, args));
  await sys("filesystem.read", { path: "../outside.txt" });
  await sys("filesystem.read", { path: "../store.db" });
  await sys("filesystem.read", { path: ".env" });
  await sys("filesystem.read", { path: "dir/missing.txt" });
  await sys("filesystem.read", { path: "dir" });
  await sys("filesystem.list", { path: "dir/a.txt" });
  await sys("shell.run", { argv: ["no-such-program"] });
  await sys("shell.run", { argv: ["cat", "../outside.txt"] });
  assert.ok(messages.length >= 16, `expected every attempt to fail, got ${messages.length}`);

  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({}));
  const events = JSON.stringify(await env.rt.kernel.store.listEvents());
  const texts: [string, string][] = [
    ...messages.map((m, i) => [`error ${i}`, m] as [string, string]),
    ["audit", audit],
    ["events", events],
  ];
  for (const [what, text] of texts) {
    for (const hidden of [env.root, CODE_ROOT]) {
      assert.ok(
        !text.includes(hidden),
        `${what} names a host path (${hidden}): ${text.slice(0, 400)}`,
      );
    }
  }
  // The refusals still say what was wrong, in the tool's own terms.
  assert.ok(messages.some((m) => /tool\.ts:1: no-self-assign/.test(m)), messages.join("\n"));
  assert.ok(messages.some((m) => /'\.\/other\.ts' is imported/.test(m)));
});

Deno.test("cli: deno task libos resolves paths and the default store from the directory it was typed in", async () => {
  const root = await tempDir("libos-task-");
  try {
    await Deno.mkdir(join(root, "ws"));
    await Deno.writeTextFile(join(root, "ws", "notes.txt"), "1\n2\n3\n4");
    await Deno.writeTextFile(join(root, "count.ts"), COUNT_LINES);
    const config = new URL("../deno.json", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "task",
        "--config",
        config,
        "libos",
        "tool",
        "run",
        "count.ts",
        "--workspace",
        "ws",
        "--grant",
        "filesystem:workspace:notes.txt=read",
        "--args",
        '{"path":"notes.txt"}',
        "--json",
      ],
      cwd: root,
      // As typed in a fresh shell: deno task itself says where (INIT_CWD), nobody before it.
      clearEnv: true,
      env: { NO_COLOR: "1", PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(stdout.trim().split("\n").at(-1)!), { ok: true, value: 4 });
    assert.ok((await Deno.stat(join(root, ".libos", "libos.db"))).isFile);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("host paths: a sibling whose name starts with the workspace's keeps its own name", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  await Deno.mkdir(`${env.ws}-backup`);
  await Deno.writeTextFile(`${env.ws}-backup/key.txt`, "k");
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  const err = await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: `${env.ws}-backup/key.txt` }),
    "EPERM",
  );
  // Never `.-backup/key.txt`: that would name a path inside the workspace.
  assert.ok(!err.message.includes(".-backup"), err.message);
  const [rec] = await env.rt.kernel.store.listAudit({ action: "filesystem.read" });
  assert.ok(rec.target.endsWith("ws-backup/key.txt"), rec.target);
  assert.equal(
    env.rt.kernel.hidePaths(`${env.ws}/a.txt and ${env.ws} and ${env.ws}-old`, env.ws),
    "a.txt and . and <store>/ws-old",
  );
});
