/**
 * JIT tools, part 1: the lifecycle (propose -> validate -> register -> call),
 * validation that refuses bad sources before any of their code runs, the
 * process-local tool table and its delegation, the derived Deno flags (unit
 * tests on runtime/sandbox/flags.ts), and `libos tool run` as a subprocess.
 * Containment and the frame protocol are in jit_containment_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { accessFlags, deriveAccess } from "../runtime/sandbox/flags.ts";
import type { Capability, MemoryObject } from "../runtime/types.ts";
import { cap, capRecord, type Env, launch, libos, makeEnv, rejectsCode } from "./_helpers.ts";

// One artifact cache for the whole file: a source is type-checked once.
const CACHE = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-cache-" }));
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(CACHE, { recursive: true });
  } catch { /* gone */ }
});

/** A runtime over a fresh workspace whose JIT artifacts go to the shared cache. */
function jitEnv(files: Record<string, string> = {}): Promise<Env> {
  return makeEnv({ files, jitCacheDir: CACHE });
}

/** The tool most tests use: echo, one syscall, or one direct read. */
const TOOL = `import type { Libos } from "./libos.ts";

type Args = { mode?: string; [k: string]: unknown };

export async function run(args: Args, libos: Libos): Promise<unknown> {
  if (args.mode === "syscall") {
    return await libos.syscall(String(args.name), (args.args ?? {}) as Record<string, unknown>);
  }
  if (args.mode === "read") return await Deno.readTextFile(String(args.path));
  return await Promise.resolve({ echo: args.value ?? null });
}
`;

interface Installed {
  candidate: string;
  artifact: string;
  sha256: string;
  checks: string[];
}

async function propose(env: Env, pid: number, name: string, source: string, tests?: unknown) {
  const args: Record<string, unknown> = { name, source };
  if (tests !== undefined) args.tests = tests;
  return await env.rt.syscall(pid, "jit.propose", args) as { oid: string; name: string };
}

async function validate(env: Env, pid: number, name: string, source: string, tests?: unknown) {
  const c = await propose(env, pid, name, source, tests);
  return await env.rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
    oid: string;
    sha256: string;
    checks: string[];
  };
}

async function install(env: Env, pid: number, name: string, source = TOOL): Promise<Installed> {
  const c = await propose(env, pid, name, source);
  const a = await env.rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
    oid: string;
    sha256: string;
    checks: string[];
  };
  await env.rt.syscall(pid, "jit.register", { oid: a.oid });
  return { candidate: c.oid, artifact: a.oid, sha256: a.sha256, checks: a.checks };
}

async function call(env: Env, pid: number, name: string, args: Record<string, unknown> = {}) {
  return await env.rt.syscall(pid, "jit.call", { name, args });
}

/** The host is fine: the audit chain verifies and a fresh process can make a syscall. */
async function assertHealthy(env: Env): Promise<void> {
  const v = await env.rt.kernel.store.verifyAudit();
  assert.ok(v.ok, `audit chain broken: ${JSON.stringify(v)}`);
  const pid = await launch(env, [], { tools: [] });
  const self = await env.rt.syscall(pid, "process.self") as { pid: number };
  assert.equal(self.pid, pid);
}

async function audit(env: Env, pid: number, action?: string) {
  return await env.rt.kernel.store.listAudit({ actor: `pid:${pid}`, action });
}

const ALL_STAGES = ["size", "parse", "imports", "exports", "type check", "lint"];

// ---------------------------------------------------------------- lifecycle

Deno.test("jit: propose stores a tool_candidate, validate a tool_artifact, register the table entry, each audited", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:echo", "write")], { tools: [] });
  const c = await propose(env, pid, "echo", TOOL);
  const cand = await env.rt.kernel.store.getObject(c.oid) as MemoryObject;
  assert.equal(cand.kind, "tool_candidate");
  assert.equal(cand.created_by, pid);
  assert.equal((cand.payload as { name: string; source: string }).name, "echo");
  assert.equal((cand.payload as { source: string }).source, TOOL);
  // Proposing registers nothing.
  assert.deepEqual((await env.rt.process(pid)).jit_tools, {});
  await rejectsCode(call(env, pid, "echo"), "ENOENT");

  const a = await env.rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
    oid: string;
    sha256: string;
    checks: string[];
  };
  const art = await env.rt.kernel.store.getObject(a.oid) as MemoryObject;
  assert.equal(art.kind, "tool_artifact");
  assert.deepEqual(art.derived_from, [c.oid]);
  assert.equal((art.payload as { sha256: string }).sha256, a.sha256);
  assert.deepEqual(a.checks, ALL_STAGES);
  assert.match(a.sha256, /^[0-9a-f]{64}$/);
  // Validating registers nothing either.
  assert.deepEqual((await env.rt.process(pid)).jit_tools, {});

  await env.rt.syscall(pid, "jit.register", { oid: a.oid });
  assert.deepEqual((await env.rt.process(pid)).jit_tools, {
    echo: { sha256: a.sha256, artifact: a.oid },
  });
  assert.deepEqual(await call(env, pid, "echo", { value: 42 }), { echo: 42 });

  for (const action of ["jit.propose", "jit.validate", "jit.register", "jit.call"]) {
    const recs = await audit(env, pid, action);
    assert.ok(
      recs.some((r) => r.decision === "allow" && r.target === "tool:echo"),
      `${action} left no allow record: ${JSON.stringify(recs)}`,
    );
  }
  // The failed call before registration is audited too.
  const calls = await audit(env, pid, "jit.call");
  assert.equal(calls.filter((r) => r.decision === "error").length, 1);
  await assertHealthy(env);
});

Deno.test("jit: import type from ./libos.ts is accepted and every stage is reported", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:typed", "write")], { tools: [] });
  assert.ok(TOOL.includes(`import type { Libos } from "./libos.ts"`));
  const a = await validate(env, pid, "typed", TOOL);
  assert.deepEqual(a.checks, ALL_STAGES);
  await env.rt.syscall(pid, "jit.register", { oid: a.oid });
  assert.deepEqual(await call(env, pid, "typed", { value: "x" }), { echo: "x" });
});

Deno.test("jit: register changes only the registering process's tool table", async () => {
  await using env = await jitEnv();
  const a = await launch(env, [cap("tool:mine", "write")], { tools: [] });
  const b = await launch(env, [cap("tool:mine", "write")], { tools: [] });
  await install(env, a, "mine");
  assert.deepEqual(await call(env, a, "mine", { value: 1 }), { echo: 1 });
  assert.deepEqual((await env.rt.process(b)).jit_tools, {});
  await rejectsCode(call(env, b, "mine"), "ENOENT");
  await assertHealthy(env);
});

Deno.test("jit: spawned and forked children see a JIT tool only when it is delegated by name", async () => {
  await using env = await jitEnv();
  const parent = await launch(env, [cap("tool:shared", "write"), cap("process:spawn", "execute")], {
    tools: ["spawn", "fork"],
  });
  await install(env, parent, "shared");
  const plain = await env.rt.syscall(parent, "process.spawn", { goal: "g" }) as { pid: number };
  await rejectsCode(call(env, plain.pid, "shared"), "ENOENT");
  const forked = await env.rt.syscall(parent, "process.fork", { mode: "copy" }) as { pid: number };
  await rejectsCode(call(env, forked.pid, "shared"), "ENOENT");
  assert.deepEqual((await env.rt.process(forked.pid)).jit_tools, {});

  const given = await env.rt.syscall(parent, "process.spawn", {
    goal: "g",
    jit_tools: ["shared"],
  }) as {
    pid: number;
  };
  assert.deepEqual(await call(env, given.pid, "shared", { value: "child" }), { echo: "child" });
  const forkGiven = await env.rt.syscall(parent, "process.fork", {
    mode: "copy",
    jit_tools: ["shared"],
  }) as { pid: number };
  assert.deepEqual(await call(env, forkGiven.pid, "shared", { value: 2 }), { echo: 2 });
  // A name the caller does not hold cannot be delegated, not even by a child of the holder.
  await rejectsCode(
    env.rt.syscall(parent, "process.spawn", { goal: "g", jit_tools: ["not_mine"] }),
    "EINVAL",
  );
  await rejectsCode(
    env.rt.syscall(forked.pid, "process.spawn", { goal: "g", jit_tools: ["shared"] }),
    "EINVAL",
  );
  await assertHealthy(env);
});

Deno.test("jit: proposing, validating or registering without tool:<name> write is EPERM", async () => {
  await using env = await jitEnv();
  const owner = await launch(env, [cap("tool:guarded", "write")], { tools: [] });
  const other = await launch(env, [cap("tool:something_else", "write")], { tools: [] });
  await rejectsCode(propose(env, other, "guarded", TOOL), "EPERM");
  const none = await launch(env, [], { tools: [] });
  await rejectsCode(propose(env, none, "guarded", TOOL), "EPERM");
  assert.equal(
    (await env.rt.kernel.store.listObjects((await env.rt.process(none)).namespace))
      .filter((o) => o.kind === "tool_candidate").length,
    0,
  );
  const denials = await audit(env, none, "jit.propose");
  assert.ok(denials.some((r) => r.decision === "deny" && r.target === "tool:guarded"));

  // Another process cannot validate or register the owner's candidate or artifact.
  const c = await propose(env, owner, "guarded", TOOL);
  await rejectsCode(env.rt.syscall(other, "jit.validate", { oid: c.oid }), "EPERM");
  const a = await env.rt.syscall(owner, "jit.validate", { oid: c.oid }) as { oid: string };
  await rejectsCode(env.rt.syscall(other, "jit.register", { oid: a.oid }), "EPERM");
  assert.deepEqual((await env.rt.process(other)).jit_tools, {});
  // Register checks the kind: a candidate is not an artifact.
  await rejectsCode(env.rt.syscall(owner, "jit.register", { oid: c.oid }), "EINVAL");
  await assertHealthy(env);
});

Deno.test("jit: builtin tool names and malformed names are refused", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:*", "write")], { tools: [] });
  for (const name of ["read_file", "shell", "spawn"]) {
    const e = await rejectsCode(propose(env, pid, name, TOOL), "EINVAL");
    assert.match(e.message, /builtin/);
  }
  for (const name of ["Bad", "../x", "a-b", "", "x".repeat(65), "1abc"]) {
    await rejectsCode(propose(env, pid, name, TOOL), "EINVAL");
  }
  assert.equal(
    (await audit(env, pid, "jit.propose")).filter((r) => r.decision === "allow").length,
    0,
  );
  await assertHealthy(env);
});

Deno.test("jit: jit.call of an unregistered or Object.prototype name is ENOENT", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:echo", "write")], { tools: [] });
  await install(env, pid, "echo");
  for (const name of ["nope", "constructor", "__proto__", "toString", "hasOwnProperty"]) {
    await rejectsCode(call(env, pid, name), "ENOENT");
  }
  assert.deepEqual(await call(env, pid, "echo", { value: 0 }), { echo: 0 });
  await assertHealthy(env);
});

Deno.test("jit: a validated source is cached and validating it again re-runs no check", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:cached", "write")], { tools: [] });
  const first = await validate(env, pid, "cached", TOOL);
  const dir = join(CACHE, first.sha256);
  const report = join(dir, "validated.json");
  const before = await Deno.stat(report);
  const dirBefore = await Deno.stat(dir);
  const second = await validate(env, pid, "cached", TOOL);
  assert.notEqual(second.oid, first.oid, "each validate makes its own artifact object");
  assert.equal(second.sha256, first.sha256);
  assert.deepEqual(second.checks, first.checks);
  const after = await Deno.stat(report);
  assert.equal(after.mtime?.getTime(), before.mtime?.getTime(), "validated.json was rewritten");
  assert.equal(after.ino, before.ino);
  assert.equal((await Deno.stat(dir)).ino, dirBefore.ino, "artifact dir was replaced");
  // No half-made work directories are left in the cache.
  for (const e of Deno.readDirSync(CACHE)) assert.ok(!e.name.includes(".tmp-"), e.name);
  await assertHealthy(env);
});

Deno.test("jit: a cached artifact changed on disk is validated again from the source, never run", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:cached2", "write")], { tools: [] });
  const source = TOOL.replace("echo:", "echoed:");
  const inst = await validate(env, pid, "cached2", source);
  await env.rt.syscall(pid, "jit.register", { oid: inst.oid });
  const call = () => env.rt.syscall(pid, "jit.call", { name: "cached2", args: { value: 1 } });
  assert.deepEqual(await call(), { echoed: 1 });
  // Something rewrites the validated tool in the cache (and its client) after validation.
  const dir = join(CACHE, inst.sha256);
  const forged = "export function run() { return { forged: true }; }\n";
  for (const file of ["tool.ts", "libos.ts"]) {
    const original = await Deno.readTextFile(join(dir, file));
    await Deno.writeTextFile(join(dir, file), file === "tool.ts" ? forged : original + "\n// x");
    assert.deepEqual(await call(), { echoed: 1 }, `a changed ${file} ran`);
    assert.equal(await Deno.readTextFile(join(dir, file)), original, `${file} was not restored`);
  }
  await assertHealthy(env);
});

// --------------------------------------------------------------- validation

/** Top-level code that would leave a marker if the tool's module ever ran. */
function marker(root: string): string {
  return `Deno.writeTextFileSync(${JSON.stringify(join(root, "RAN"))}, "ran");\n`;
}

const RUN =
  `export async function run(): Promise<number> {\n  return await Promise.resolve(1);\n}\n`;

async function assertRefused(env: Env, pid: number, source: string, stage: RegExp) {
  const c = await propose(env, pid, "bad", source);
  const e = await rejectsCode(env.rt.syscall(pid, "jit.validate", { oid: c.oid }), "EINVAL");
  assert.match(e.message, stage);
  return e;
}

async function assertNeverRan(env: Env) {
  await assert.rejects(Deno.stat(join(env.root, "RAN")), Deno.errors.NotFound);
}

Deno.test("jit: validation refuses a source that does not parse (stage parse)", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:bad", "write")], { tools: [] });
  await assertRefused(
    env,
    pid,
    marker(env.root) + "export async function run( {",
    /jit\.validate: parse: /,
  );
  await assertRefused(env, pid, marker(env.root) + RUN + "const = ;", /jit\.validate: parse: /);
  await assertNeverRan(env);
  assert.equal((await audit(env, pid, "jit.validate")).at(-1)?.decision, "error");
  await assertHealthy(env);
});

Deno.test("jit: validation refuses a source without a run export (stage exports)", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:bad", "write")], { tools: [] });
  const sources = [
    marker(env.root) +
    "export async function walk(): Promise<number> {\n  return await Promise.resolve(1);\n}\n",
    marker(env.root) +
    "async function run(): Promise<number> {\n  return await Promise.resolve(1);\n}\nexport const x = run;\n",
    marker(env.root) +
    "export default async function run(): Promise<number> {\n  return await Promise.resolve(1);\n}\n",
    // An export named run that is not a function.
    marker(env.root) + "export const run = 5;\n",
  ];
  for (const s of sources) await assertRefused(env, pid, s, /jit\.validate: exports: .*run/);
  await assertNeverRan(env);
  await assertHealthy(env);
});

Deno.test("jit: a source over 64K characters is refused before anything is stored or checked", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:big", "write")], { tools: [] });
  const big = RUN + "// " + "x".repeat(64 * 1024) + "\n";
  const e = await rejectsCode(propose(env, pid, "big", big), "EINVAL");
  assert.match(e.message, /source.*65536/);
  const ns = (await env.rt.process(pid)).namespace;
  assert.equal(
    (await env.rt.kernel.store.listObjects(ns)).filter((o) => o.kind === "tool_candidate").length,
    0,
  );
  // The provider refuses it at its own size stage too (defence in depth).
  await assert.rejects(
    env.rt.kernel.providers.sandbox.prepare(big),
    (err: Error) => /jit\.validate: size: /.test(err.message),
  );
  // Exactly at the limit is fine as far as size goes.
  const edge = RUN + "//" + "x".repeat(64 * 1024 - RUN.length - 3) + "\n";
  assert.equal(edge.length, 64 * 1024);
  await propose(env, pid, "big", edge);
  await assertHealthy(env);
});

Deno.test("jit: validation refuses every kind of import before any code runs (stage imports)", async () => {
  await using env = await jitEnv({ "x.ts": "export const x = 1;\nexport default 1;\n" });
  const pid = await launch(env, [cap("tool:bad", "write")], { tools: [] });
  await Deno.writeTextFile(join(env.root, "evil.ts"), marker(env.root) + "export const x = 1;\n");
  const m = marker(env.root);
  const cases: [string, string][] = [
    ["./x.ts", `import { x } from "./x.ts";\n${m}${RUN}export const y = x;\n`],
    [
      "/etc/passwd",
      `import t from "/etc/passwd" with { type: "text" };\n${m}${RUN}export const y = t;\n`,
    ],
    [
      join(env.root, "evil.ts"),
      `import { x } from "${join(env.root, "evil.ts")}";\n${m}${RUN}export const y = x;\n`,
    ],
    [
      "node:fs",
      `import { readFileSync } from "node:fs";\n${m}${RUN}export const y = readFileSync;\n`,
    ],
    ["npm:zod", `import { z } from "npm:zod";\n${m}${RUN}export const y = z;\n`],
    [
      "https://example.com/x.js",
      `import { z } from "https://example.com/x.js";\n${m}${RUN}export const y = z;\n`,
    ],
    [
      "./x.ts",
      `${m}export async function run(): Promise<unknown> {\n  return await import("./x.ts");\n}\n`,
    ],
    ["./x.ts", `export { x } from "./x.ts";\n${m}${RUN}`],
    ["./libos.ts", `import "./libos.ts";\n${m}${RUN}`],
    ["./libos.ts", `import { type Libos } from "./libos.ts";\nexport type L = Libos;\n${m}${RUN}`],
  ];
  for (const [spec, source] of cases) {
    const e = await assertRefused(env, pid, source, /jit\.validate: imports: /);
    // An absolute specifier is named with its host part hidden, like every refusal.
    const named = env.rt.kernel.hidePaths(spec, env.ws);
    assert.ok(e.message.includes(`'${named}'`), `${spec}: ${e.message}`);
    assert.ok(!e.message.includes(env.root), e.message);
  }
  await assertNeverRan(env);
  // Nothing of a refused source reaches the artifact cache.
  const cached = [...Deno.readDirSync(CACHE)].map((e) => e.name);
  assert.ok(cached.every((n) => !n.includes(".tmp-")), cached.join(","));
  await assertHealthy(env);
});

Deno.test("jit: a type error fails validation at the type check stage", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:bad", "write")], { tools: [] });
  const source = marker(env.root) +
    `import type { Libos } from "./libos.ts";\n` +
    `export async function run(_a: unknown, libos: Libos): Promise<number> {\n` +
    `  const s: string = await libos.syscall<number>("clock.now");\n  return s.length;\n}\n`;
  const e = await assertRefused(env, pid, source, /jit\.validate: type check: /);
  assert.match(e.message, /TS2322/);
  await assertNeverRan(env);
  await assertHealthy(env);
});

Deno.test("jit: a tool's own tests run against mocked syscalls and decide validation", async (t) => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:tested", "write")], { tools: [] });
  const read = { mode: "syscall", name: "filesystem.read", args: { path: "a.txt" } };

  await t.step("passing tests: value, mocked error, no syscalls", async () => {
    const a = await validate(env, pid, "tested", TOOL, [
      {
        name: "reads",
        args: read,
        syscalls: [{ name: "filesystem.read", result: "mocked text" }],
        expect: "mocked text",
      },
      {
        name: "denied",
        args: read,
        syscalls: [{ name: "filesystem.read", error: { code: "EPERM", message: "no" } }],
        expect_error: "EPERM",
      },
      { name: "echo", args: { value: [1, 2] }, expect: { echo: [1, 2] } },
    ]);
    assert.deepEqual(a.checks, [...ALL_STAGES, "tests (3)"]);
  });

  const failing: [string, unknown, RegExp][] = [
    ["wrong value", {
      args: read,
      syscalls: [{ name: "filesystem.read", result: "a" }],
      expect: "b",
    }, /returned "a", expected "b"/],
    [
      "wrong syscall",
      { args: read, syscalls: [{ name: "clock.now", result: 1 }], expect: 1 },
      /expected syscall clock\.now, got filesystem\.read/,
    ],
    [
      "unexpected syscall",
      { args: read, syscalls: [], expect: 1 },
      /expected no more syscalls, got filesystem\.read/,
    ],
    [
      "missing syscall",
      {
        args: read,
        syscalls: [{ name: "filesystem.read", result: 1 }, { name: "clock.now" }],
        expect: 1,
      },
      /did not make 1 expected syscall/,
    ],
    [
      "error expected, value returned",
      { args: { value: 1 }, expect_error: "EPERM" },
      /expected error EPERM, got a value/,
    ],
    [
      "wrong error code",
      {
        args: read,
        syscalls: [{ name: "filesystem.read", error: { code: "ENOENT", message: "x" } }],
        expect_error: "EPERM",
      },
      /expected error EPERM, got ENOENT/,
    ],
  ];
  for (const [name, test, why] of failing) {
    await t.step(`failing test: ${name}`, async () => {
      const c = await propose(env, pid, "tested", TOOL, [{ name, ...(test as object) }]);
      const e = await rejectsCode(env.rt.syscall(pid, "jit.validate", { oid: c.oid }), "EINVAL");
      assert.match(e.message, /jit\.validate: tests: /);
      assert.match(e.message, why);
    });
  }

  await t.step("tests run with no permissions at all", async () => {
    // A direct read during validation is refused: the test expecting EPERM passes...
    await validate(env, pid, "tested", TOOL, [
      {
        name: "no direct read",
        args: { mode: "read", path: "/etc/hostname" },
        expect_error: "EPERM",
      },
    ]);
    // ...and one expecting the file's content fails.
    const c = await propose(env, pid, "tested", TOOL, [
      { name: "reads hostname", args: { mode: "read", path: "/etc/hostname" }, expect: "x" },
    ]);
    const e = await rejectsCode(env.rt.syscall(pid, "jit.validate", { oid: c.oid }), "EINVAL");
    assert.match(e.message, /failed: EPERM/);
  });

  await t.step("malformed tests are refused at propose", async () => {
    await rejectsCode(propose(env, pid, "tested", TOOL, "nope"), "EINVAL");
    await rejectsCode(propose(env, pid, "tested", TOOL, [{ args: {}, extra: 1 }]), "EINVAL");
    await rejectsCode(propose(env, pid, "tested", TOOL, Array(33).fill({ args: {} })), "EINVAL");
  });
  await assertHealthy(env);
});

// ------------------------------------------------------------- derived flags

let _capSeq = 0;
function capObj(
  resource: string,
  rights: Capability["rights"],
  extra: Partial<Capability> = {},
): Capability {
  return capRecord({
    cap_id: `cap_t${++_capSeq}`,
    resource,
    rights,
    created_at: new Date(0).toISOString(),
    ...extra,
  });
}

/** A workspace with files, a subdirectory, and symlinks in and out. */
async function flagsWorkspace() {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-flags-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(join(ws, "src/deep"), { recursive: true });
  await Deno.mkdir(join(ws, "other"));
  await Deno.writeTextFile(join(ws, "a.txt"), "a");
  await Deno.writeTextFile(join(ws, "secret.txt"), "s");
  await Deno.writeTextFile(join(ws, "src/x.ts"), "x");
  await Deno.writeTextFile(join(ws, "src/deep/y.ts"), "y");
  await Deno.writeTextFile(join(ws, "a,b.txt"), "comma");
  await Deno.writeTextFile(join(root, "outside.txt"), "o");
  await Deno.symlink(join(root, "outside.txt"), join(ws, "src/out_link"));
  await Deno.symlink(join(ws, "secret.txt"), join(ws, "src/secret_link"));
  await Deno.symlink(join(ws, "secret.txt"), join(ws, "alias.txt"));
  await Deno.symlink(join(ws, "other"), join(ws, "linkdir"));
  await Deno.symlink(join(ws, "src/x.ts"), join(ws, "src/inner_link"));
  return {
    root,
    ws,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

const NOW = Date.parse("2030-01-01T00:00:00Z");
const DEADLINE = NOW + 5_000;

Deno.test("jit: derived flags map unconditional ALLOW filesystem capabilities to real paths only", async () => {
  await using w = await flagsWorkspace();
  const a = deriveAccess(
    [
      capObj("filesystem:workspace:a.txt", ["read"]),
      capObj("filesystem:workspace:src/x.ts", ["read", "write"]),
      capObj("filesystem:workspace:new.txt", ["write"]), // not there yet: writable, not readable
      capObj("filesystem:workspace:missing.txt", ["read"]),
      capObj("filesystem:workspace:src", ["read"]), // a directory itself: listing, not its subtree
      capObj("filesystem:workspace:a.txt", ["delete", "execute"]), // rights with no flag
    ],
    w.ws,
    NOW,
    DEADLINE,
  );
  assert.deepEqual(a, {
    read: [join(w.ws, "a.txt"), join(w.ws, "src/x.ts")],
    write: [join(w.ws, "new.txt"), join(w.ws, "src/x.ts")],
    denyRead: [],
    denyWrite: [],
  });
  assert.deepEqual(accessFlags(a), [
    `--allow-read=${join(w.ws, "a.txt")},${join(w.ws, "src/x.ts")}`,
    `--allow-write=${join(w.ws, "new.txt")},${join(w.ws, "src/x.ts")}`,
  ]);
  // The whole workspace maps to the workspace itself, never above it.
  const all = deriveAccess([capObj("filesystem:workspace:*", ["read"])], w.ws, NOW, DEADLINE);
  assert.deepEqual(all.read, [w.ws]);
  // Every derived path is a real path inside the workspace.
  for (const p of [...a.read, ...a.write]) assert.ok(p.startsWith(w.ws + "/"), p);
});

Deno.test("jit: ASK, one-shot, constrained, binding and expiring capabilities derive no allow flag", async () => {
  await using w = await flagsWorkspace();
  const r = "filesystem:workspace:a.txt";
  const soon = new Date(NOW + 1_000).toISOString(); // before the call's deadline
  const later = new Date(DEADLINE + 60_000).toISOString();
  const conditional: [string, Capability][] = [
    ["ask", capObj(r, ["read", "write"], { effect: "ask" })],
    ["one-shot", capObj(r, ["read", "write"], { uses_remaining: 1 })],
    ["limited uses", capObj(r, ["read", "write"], { uses_remaining: 50 })],
    ["constrained", capObj(r, ["read", "write"], { constraints: { max_bytes: 10 } })],
    [
      "binding",
      capObj(r, ["read", "write"], {
        constraints: { binding: { syscall: "filesystem.read", args_hash: "x" } },
      }),
    ],
    ["expires before the deadline", capObj(r, ["read", "write"], { expires_at: soon })],
    ["expired", capObj(r, ["read", "write"], { expires_at: new Date(NOW - 1).toISOString() })],
    ["revoked", capObj(r, ["read", "write"], { status: "revoked" })],
    ["exhausted", capObj(r, ["read", "write"], { uses_remaining: 0, status: "exhausted" })],
  ];
  for (const [why, c] of conditional) {
    const a = deriveAccess([c], w.ws, NOW, DEADLINE);
    assert.deepEqual([a.read, a.write], [[], []], why);
    assert.ok(accessFlags(a).every((f) => !f.startsWith("--allow-")), why);
  }
  // Expiring after the deadline is unconditional enough.
  const ok = deriveAccess([capObj(r, ["read"], { expires_at: later })], w.ws, NOW, DEADLINE);
  assert.deepEqual(ok.read, [join(w.ws, "a.txt")]);
});

Deno.test("jit: DENY and ASK capabilities derive --deny flags that win over allows", async () => {
  await using w = await flagsWorkspace();
  const a = deriveAccess(
    [
      capObj("filesystem:workspace:src/*", ["read", "write"]),
      capObj("filesystem:workspace:src/x.ts", ["read"], { effect: "deny" }),
      capObj("filesystem:workspace:src/deep/*", ["write"], { effect: "ask" }),
      capObj("filesystem:workspace:a.txt", ["read", "write"], { effect: "deny" }),
    ],
    w.ws,
    NOW,
    DEADLINE,
  );
  assert.deepEqual(a.denyRead, [join(w.ws, "a.txt"), join(w.ws, "src/x.ts")]);
  assert.deepEqual(a.denyWrite, [join(w.ws, "a.txt"), join(w.ws, "src/deep")]);
  const flags = accessFlags(a);
  assert.ok(
    flags.includes(`--deny-read=${join(w.ws, "a.txt")},${join(w.ws, "src/x.ts")}`),
    flags.join(" "),
  );
  assert.ok(
    flags.includes(`--deny-write=${join(w.ws, "a.txt")},${join(w.ws, "src/deep")}`),
    flags.join(" "),
  );
  // The allowed read of src/x.ts is still listed, but the deny flag covers it.
  assert.ok(a.read.includes(join(w.ws, "src/x.ts")));
});

Deno.test("jit: a DENY or ASK on delete derives --deny-write (to the OS, deleting is writing)", async () => {
  await using w = await flagsWorkspace();
  const a = deriveAccess(
    [
      capObj("filesystem:workspace:src/*", ["read", "write", "delete"]),
      capObj("filesystem:workspace:src/x.ts", ["delete"], { effect: "deny" }),
      capObj("filesystem:workspace:a.txt", ["delete"], { effect: "ask" }),
    ],
    w.ws,
    NOW,
    DEADLINE,
  );
  assert.deepEqual(a.denyWrite, [join(w.ws, "a.txt"), join(w.ws, "src/x.ts")]);
  assert.deepEqual(a.denyRead, []);
});

Deno.test("jit: dir/* derives dir's children, never dir, and drops symlinks leaving dir", async () => {
  await using w = await flagsWorkspace();
  const a = deriveAccess([capObj("filesystem:workspace:src/*", ["read"])], w.ws, NOW, DEADLINE);
  // src/deep (a directory child covers its subtree) and src/x.ts; inner_link resolves to src/x.ts.
  assert.deepEqual(a.read, [join(w.ws, "src/deep"), join(w.ws, "src/x.ts")]);
  assert.ok(!a.read.includes(join(w.ws, "src")), "dir itself must not be granted");
  assert.ok(!a.read.includes(join(w.root, "outside.txt")), "a symlink out of the workspace");
  assert.ok(!a.read.includes(join(w.ws, "secret.txt")), "a symlink out of dir into the workspace");
  // A symlinked directory or file names something its real path does not.
  assert.deepEqual(
    deriveAccess([capObj("filesystem:workspace:linkdir/*", ["read"])], w.ws, NOW, DEADLINE).read,
    [],
  );
  assert.deepEqual(
    deriveAccess(
      [capObj("filesystem:workspace:alias.txt", ["read", "write"])],
      w.ws,
      NOW,
      DEADLINE,
    ),
    {
      read: [],
      write: [],
      denyRead: [],
      denyWrite: [],
    },
  );
  assert.deepEqual(
    deriveAccess([capObj("filesystem:workspace:src/out_link", ["read"])], w.ws, NOW, DEADLINE).read,
    [],
  );
  assert.deepEqual(
    deriveAccess([capObj("filesystem:workspace:linkdir/new.txt", ["write"])], w.ws, NOW, DEADLINE)
      .write,
    [],
  );
  // A path Deno's comma-separated flag lists cannot name is left out.
  assert.deepEqual(
    deriveAccess([capObj("filesystem:workspace:a,b.txt", ["read"])], w.ws, NOW, DEADLINE).read,
    [],
  );
});

Deno.test("jit: no filesystem capability derives no flags; net, shell and env never derive flags", async () => {
  await using w = await flagsWorkspace();
  const none = deriveAccess([], w.ws, NOW, DEADLINE);
  assert.deepEqual(accessFlags(none), []);
  const others = deriveAccess(
    [
      capObj("net:example.com", ["read", "write", "execute"]),
      capObj("shell:ls", ["execute", "read"]),
      capObj("env:HOME", ["read"]),
      capObj("process:spawn", ["execute"]),
      capObj("tool:x", ["write"]),
      capObj("object_namespace:ns1", ["read", "write"]),
      capObj("filesystem:workspace:a.txt", ["read"], { effect: "deny", status: "revoked" }),
    ],
    w.ws,
    NOW,
    DEADLINE,
  );
  const flags = accessFlags(others);
  assert.deepEqual(flags, []);
  const mixed = accessFlags(deriveAccess(
    [
      capObj("filesystem:workspace:*", ["read", "write", "delete", "execute"]),
      capObj("net:*", ["read", "write", "execute"]),
    ],
    w.ws,
    NOW,
    DEADLINE,
  ));
  assert.deepEqual(mixed.map((f) => f.split("=")[0]), ["--allow-read", "--allow-write"]);
});

// ---------------------------------------------------------------------- CLI

const COUNT_LINES = `import type { Libos } from "./libos.ts";

export async function run(args: { path: string }, libos: Libos): Promise<number> {
  const text = await libos.syscall<string>("filesystem.read", { path: args.path });
  return text.split("\\n").length;
}
`;

Deno.test("jit: cli tool run prints ok/value JSON and exits 0, or the error code and exits 1", async (t) => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-cli-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    await Deno.writeTextFile(join(ws, "notes.txt"), "one\ntwo\nthree");
    await Deno.writeTextFile(join(ws, ".env"), "TOKEN=x");
    const tool = join(root, "count_lines.ts");
    await Deno.writeTextFile(tool, COUNT_LINES);
    const store = join(root, "store.db"); // one store: the artifact is validated once
    const base = ["tool", "run", tool, "--workspace", ws, "--store", store, "--json"];

    await t.step("granted read", async () => {
      const r = await libos([
        ...base,
        "--grant",
        "filesystem:workspace:notes.txt=read",
        "--args",
        '{"path":"notes.txt"}',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { ok: true, value: 3 });
    });
    await t.step("denied read", async () => {
      const r = await libos([
        ...base,
        "--grant",
        "filesystem:workspace:notes.txt=read",
        "--args",
        '{"path":".env"}',
      ]);
      assert.equal(r.code, 1, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.ok, false);
      assert.equal(out.error.code, "EPERM");
      assert.ok(!r.stdout.includes("TOKEN=x"));
    });
    await t.step("no grant at all", async () => {
      const r = await libos([...base, "--args", '{"path":"notes.txt"}', "--timeout-ms", "5000"]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(JSON.parse(r.stdout).error.code, "EPERM");
    });
    await t.step("the runs are in the store's audit", async () => {
      const r = await libos(["audit", "--store", store, "--json"]);
      const recs = JSON.parse(r.stdout) as { action: string; decision: string; target: string }[];
      assert.ok(
        recs.some((x) =>
          x.action === "jit.call" && x.decision === "allow" && x.target === "tool:count_lines"
        ),
      );
      assert.ok(
        recs.some((x) =>
          x.action === "filesystem.read" && x.decision === "deny" && x.target.endsWith(".env")
        ),
      );
    });
    await t.step("invalid tool: EINVAL, exit 1", async () => {
      const bad = join(root, "bad_tool.ts");
      await Deno.writeTextFile(
        bad,
        `import { readFileSync } from "node:fs";\n${RUN}export const y = readFileSync;\n`,
      );
      const r = await libos(["tool", "run", bad, "--workspace", ws, "--store", store, "--json"]);
      assert.equal(r.code, 1, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.ok, false);
      assert.equal(out.error.code, "EINVAL");
      assert.match(out.error.message, /imports/);
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("jit: cli tool run exits 2 on bad usage", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-cli-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const tool = join(root, "count_lines.ts");
    await Deno.writeTextFile(tool, COUNT_LINES);
    const store = join(root, "store.db");
    const cases: [string[], RegExp][] = [
      [["tool", "run", tool, "--store", store, "--json"], /--workspace/],
      [["tool", "run", tool, "--workspace", ws, "--store", store, "--args", "{not json"], /--args/],
      [["tool", "run", tool, "--workspace", ws, "--store", store, "--args", "[1]"], /--args/],
      [
        ["tool", "run", tool, "--workspace", ws, "--store", store, "--timeout-ms", "0"],
        /--timeout-ms/,
      ],
      [
        ["tool", "run", tool, "--workspace", ws, "--store", store, "--timeout-ms", "70000"],
        /--timeout-ms/,
      ],
      [
        ["tool", "run", tool, "--workspace", ws, "--store", store, "--grant", "nonsense"],
        /--grant/,
      ],
      [["tool", "run", "--workspace", ws, "--store", store], /TOOL\.ts/],
      [["tool", "walk", tool], /subcommand/],
    ];
    for (const [args, why] of cases) {
      const r = await libos(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, why);
    }
    // Bad usage leaves no store behind.
    await assert.rejects(Deno.stat(store), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Bytes of every file under `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) n += await treeBytes(p);
    else if (e.isFile) n += (await Deno.lstat(p)).size;
  }
  return n;
}

Deno.test("jit: a tool cannot grow its Deno cache without bound through data: imports", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:importer", "write")], { tools: [] });
  // Each call imports 20 distinct modules of ~1 MB: Deno transpiles and caches each.
  const source = `export async function run(args: { seed: number }): Promise<unknown> {
  const pad = "/*" + "x".repeat(1_000_000) + "*/";
  for (let i = 0; i < 20; i++) {
    const code = "export const v: number = " + (args.seed * 1000 + i) + ";" + pad;
    await import("data:application/typescript," + encodeURIComponent(code));
  }
  return "imported";
}
`;
  const t = await install(env, pid, "importer", source);
  const denoDir = join(CACHE, t.sha256, "deno_dir");
  for (let seed = 1; seed <= 4; seed++) {
    assert.equal(await call(env, pid, "importer", { seed }), "imported");
  }
  // Before, four calls left about 350 MB here.
  const size = await treeBytes(denoDir);
  assert.ok(size <= 64 * 1024 * 1024, `the tool's cache holds ${Math.round(size / 1e6)} MB`);
  // The tool still works (its own module is cached again as needed).
  assert.equal(await call(env, pid, "importer", { seed: 5 }), "imported");
});

Deno.test("jit: a tool looping over refused syscalls ends when its process's syscalls run out", async () => {
  await using env = await jitEnv();
  const pid = await launch(env, [cap("tool:looper", "write")], {
    tools: [],
    budgets: { max_syscalls: 30 },
  });
  const source = `import type { Libos } from "./libos.ts";
export async function run(_args: unknown, libos: Libos): Promise<unknown> {
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    try {
      await libos.syscall("nope.x" + i, {});
    } catch {
      refused++;
    }
  }
  return refused;
}
`;
  await install(env, pid, "looper", source);
  // Before, every one was audited (and its event stored) up to the call's own limit,
  // whatever the process's budget: 5,000 records for a budget of 30.
  await rejectsCode(
    env.rt.syscall(pid, "jit.call", { name: "looper", args: {}, max_syscalls: 100_000 }),
    "ELIMIT",
  );
  const records = await audit(env, pid);
  assert.ok(records.length <= 40, `${records.length} audit records for a budget of 30 syscalls`);
});
