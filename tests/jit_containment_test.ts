/**
 * JIT tools, part 2: attacks. A hostile tool tries every door besides
 * `libos.syscall` (files, imports, network, subprocesses, FFI, environment,
 * signals), breaks the frame protocol, floods, loops and bombs memory. Each
 * attempt must fail inside the tool, be reported (and audited where the
 * runtime decided it), and leave the host runtime healthy.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { LibosError } from "../runtime/errors.ts";
import { MAX_BROKER_LINE, PermissionBroker } from "../runtime/sandbox/broker.ts";
import type { AuditRecord, CapabilitySpec } from "../runtime/types.ts";
import { cap, type Env, launch, makeEnv, rejectsCode } from "./_helpers.ts";

// One artifact cache for the whole file: the attack tool is type-checked once.
const CACHE = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-cache-" }));
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(CACHE, { recursive: true });
  } catch { /* gone */ }
});

/** The attack tool: one mode per attempt; `catch: true` returns the failure instead of throwing. */
const ATTACK = String.raw`import type { Libos } from "./libos.ts";

type Args = { mode: string; catch?: boolean; [k: string]: unknown };

const enc = new TextEncoder();

function raw(text: string): void {
  const bytes = enc.encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

function forever(): Promise<never> {
  return new Promise<never>(() => {});
}

async function attempt(args: Args, libos: Libos): Promise<unknown> {
  const s = (k: string) => String(args[k]);
  switch (args.mode) {
    case "echo":
      return args.value ?? null;
    case "syscall":
      return await libos.syscall(s("name"), (args.args ?? {}) as Record<string, unknown>);
    case "remove":
      await Deno.remove(s("path"), { recursive: true });
      return "removed";
    case "chmod":
      await Deno.writeTextFile(s("path"), "#!/bin/sh\n");
      await Deno.chmod(s("path"), Number(args.mode_bits));
      return (await Deno.stat(s("path"))).mode;
    case "rename":
      await Deno.rename(s("from"), s("to"));
      return "renamed";
    case "relay": {
      // Read a file, then try to carry its content out in the names of syscalls.
      const v = String(await libos.syscall("filesystem.read", { path: s("path") }));
      for (const p of args.prefixes as string[]) await libos.syscall(p + v, {}).catch(() => {});
      return "relayed";
    }
    case "read":
      return await Deno.readTextFile(s("path"));
    case "write":
      await Deno.writeTextFile(s("path"), s("content"));
      return "written";
    case "import":
      return (await import(s("spec"))).default ?? "imported";
    case "import_text":
      return (await import(s("spec"), { with: { type: "text" } })).default;
    case "fetch":
      return await (await fetch(s("url"))).text();
    case "connect": {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(args.port) });
      conn.close();
      return "connected";
    }
    case "command":
      return new TextDecoder().decode((await new Deno.Command(s("cmd"), { args: ["/"] }).output()).stdout);
    case "node_read": {
      const fs = await import("node:" + "fs");
      return fs.readFileSync(s("path"), "utf8");
    }
    case "node_exec": {
      const cp = await import("node:" + "child_process");
      return String(cp.execFileSync("/bin/ls", ["/"]));
    }
    case "node_env": {
      const proc = await import("node:" + "process");
      return proc.env[s("name")] ?? "unset";
    }
    case "dlopen": {
      const d = Deno as unknown as { dlopen(p: string, s: Record<string, unknown>): unknown };
      return String(d.dlopen("libc.so.6", {}));
    }
    case "env":
      return Deno.env.get(s("name")) ?? "unset";
    case "env_all":
      return Deno.env.toObject();
    case "kill":
      Deno.kill(Number(args.pid), "SIGKILL");
      return "killed";
    case "busy": {
      let n = 0;
      for (;;) n++;
    }
    case "heap_bomb": {
      const hold: number[][] = [];
      for (;;) hold.push(new Array(1_000_000).fill(hold.length));
    }
    case "rss_bomb": {
      const hold: Uint8Array[] = [];
      for (;;) hold.push(new Uint8Array(64 * 1024 * 1024).fill(1));
    }
    case "stderr_flood":
      for (;;) console.error("x".repeat(1000));
    case "stdout_flood":
      // Valid syscall frames, each padded with whitespace JSON allows.
      for (let i = 1;; i++) raw(JSON.stringify({ type: "syscall", id: i, name: "clock.now", args: {} }) + " ".repeat(8000) + "\n");
    case "raw":
      raw(s("text"));
      return await forever();
    case "flood": {
      let n = 0;
      for (let i = 0; i < Number(args.count); i++) {
        await libos.syscall("clock.now", {}).catch(() => null);
        n++;
      }
      return n;
    }
    case "late_syscall":
      setTimeout(() => {
        libos.syscall("filesystem.write", { path: s("path"), content: "late" }).catch(() => null);
      }, 20);
      return "returned";
    case "late_direct":
      raw(JSON.stringify({ type: "result", value: "early" }) + "\n");
      setTimeout(() => Deno.writeTextFileSync(s("path"), "late"), 20);
      return await forever();
    case "late_sync": {
      raw(JSON.stringify({ type: "result", value: "early" }) + "\n");
      for (let i = 0; i < 200; i++) Deno.writeTextFileSync(s("path") + "." + i, "late");
      return await forever();
    }
    case "fire_and_return":
      libos.syscall(s("name"), (args.args ?? {}) as Record<string, unknown>).catch(() => null);
      return "returned";
    case "exit_then_read": {
      const exit = await libos.syscall("process.exit", { code: 7 });
      const text = await libos.syscall("filesystem.read", { path: s("path") });
      return { exit, text };
    }
    case "log":
      console.log(JSON.stringify({ type: "result", value: "forged" }));
      return "real";
    case "throw":
      throw new Error("boom from the tool");
    case "claim_eperm":
      // What a tool says of its own failure, in the runtime's words for a refusal.
      throw Object.assign(new Error("denied by capability cap_forged"), { code: "EPERM" });
    default:
      throw new Error("unknown mode " + args.mode);
  }
}

export async function run(args: Args, libos: Libos): Promise<unknown> {
  if (!args.catch) return await attempt(args, libos);
  try {
    return { ok: true, value: await attempt(args, libos) };
  } catch (e) {
    const err = e as { name?: string; message?: string; code?: string };
    return { ok: false, name: err.name ?? null, code: err.code ?? null, message: String(err.message ?? e) };
  }
}
`;

const NAME = "attack";

interface Ctx {
  env: Env;
  pid: number;
  /** The artifact directory of the attack tool (its cwd, HOME and DENO_DIR live there). */
  dir: string;
  call(args: Record<string, unknown>, extra?: Record<string, unknown>): Promise<unknown>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A runtime over a fresh workspace (files outside it go in `root`), one
 * process holding `caps` plus tool:attack write, with the attack tool registered.
 */
async function setup(
  caps: CapabilitySpec[] = [],
  files: Record<string, string> = {},
  policy?: unknown,
): Promise<Ctx> {
  const env = await makeEnv({ files, jitCacheDir: CACHE });
  const { root, rt } = env;
  await Deno.writeTextFile(join(root, "outside.txt"), "outside the workspace");
  const pid = await launch(env, [cap(`tool:${NAME}`, "write"), ...caps], {
    tools: [],
    ...(policy === undefined ? {} : { policy }),
  });
  const c = await rt.syscall(pid, "jit.propose", { name: NAME, source: ATTACK }) as { oid: string };
  const a = await rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
    oid: string;
    sha256: string;
  };
  await rt.syscall(pid, "jit.register", { oid: a.oid });
  return {
    env,
    pid,
    dir: join(CACHE, a.sha256),
    call: (args, extra = {}) => rt.syscall(pid, "jit.call", { name: NAME, args, ...extra }),
    [Symbol.asyncDispose]: () => env[Symbol.asyncDispose](),
  };
}

type Caught = {
  ok: boolean;
  name: string | null;
  code: string | null;
  message: string;
  value?: unknown;
};

/** Run a mode with `catch: true`: what the tool itself saw. */
async function attempt(
  ctx: Ctx,
  args: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Promise<Caught> {
  return await ctx.call({ ...args, catch: true }, extra) as Caught;
}

async function auditOf(
  ctx: Ctx,
  filter: { action?: string; decision?: string } = {},
): Promise<AuditRecord[]> {
  return await ctx.env.rt.kernel.store.listAudit({ actor: `pid:${ctx.pid}`, ...filter } as never);
}

/**
 * Sandbox access decisions whose target includes `part`; a path inside the
 * workspace is named by its resource.
 */
async function accessRecords(
  ctx: Ctx,
  part: string,
  decision: "allow" | "deny",
): Promise<AuditRecord[]> {
  const ws = ctx.env.ws + "/";
  const want = part.startsWith(ws) ? `filesystem:workspace:${part.slice(ws.length)}` : part;
  // The audit names no host path: the store's directory and the JIT cache appear as placeholders.
  const shown = ctx.env.rt.kernel.hidePaths(part, ctx.env.ws);
  return (await auditOf(ctx, { action: "sandbox.access", decision })).filter((r) =>
    r.target.includes(want) || r.target.includes(shown)
  );
}

/**
 * The host is fine: the audit chain verifies, the attacked process can still
 * call its tool (unless it exited), and a fresh process can make a syscall.
 */
async function assertHealthy(ctx: Ctx): Promise<void> {
  const rt = ctx.env.rt;
  const v = await rt.kernel.store.verifyAudit();
  assert.ok(v.ok, `audit chain broken: ${JSON.stringify(v)}`);
  if ((await rt.process(ctx.pid)).status === "runnable") {
    assert.equal(await ctx.call({ mode: "echo", value: "alive" }), "alive");
  }
  const other = await launch(ctx.env, [], { tools: [] });
  assert.equal((await rt.syscall(other, "process.self") as { pid: number }).pid, other);
  assert.deepEqual(await sandboxPids(ctx.dir), [], "no sandbox process may outlive its call");
}

/**
 * Read /proc through a subprocess: Deno wants --allow-all for /proc itself,
 * and the suite runs with plain --allow-read.
 */
async function procText(script: string): Promise<string> {
  const out = await new Deno.Command("sh", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

/**
 * OS pids of live sandbox subprocesses running the artifact in `dir` (bwrap's
 * too, for a call behind the OS wall); with `denoOnly`, only the Deno process
 * that runs the tool.
 */
async function sandboxPids(dir: string, denoOnly = false): Promise<number[]> {
  // One record per argument: "/proc/<pid>/cmdline:<arg>" (this script's own args never name `dir`).
  const text = await procText("grep -azH . /proc/[0-9]*/cmdline 2>/dev/null; true");
  const argv = new Map<number, string[]>();
  for (const rec of text.split("\0")) {
    const m = rec.match(/^\/proc\/(\d+)\/cmdline:([\s\S]*)$/);
    if (m) argv.set(Number(m[1]), [...argv.get(Number(m[1])) ?? [], m[2]]);
  }
  return [...argv].filter(([, args]) =>
    args.some((a) => a.includes(dir)) && (!denoOnly || args[0] === Deno.execPath())
  ).map(([pid]) => pid);
}

/** Start a call, wait for its subprocess to appear, hand its OS pid to `inspect`, then settle. */
async function whileRunning(
  ctx: Ctx,
  args: Record<string, unknown>,
  extra: Record<string, unknown>,
  inspect: (osPid: number) => void | Promise<void>,
): Promise<unknown> {
  const pending = ctx.call(args, extra);
  const settled = pending.then((v) => ({ v }), (e) => ({ e }));
  let seen = false;
  for (let i = 0; i < 500 && !seen; i++) {
    const pids = await sandboxPids(ctx.dir, true);
    if (pids.length) {
      await inspect(pids[0]);
      seen = true;
    } else await delay(5);
  }
  assert.ok(seen, "the sandbox subprocess was never seen running");
  const r = await settled;
  if ("e" in r) throw r.e;
  return r.v;
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------ syscall broker

Deno.test("jit: a syscall denied inside a tool reaches the tool as EPERM and is audited for the calling pid", async () => {
  await using ctx = await setup([cap("filesystem:workspace:notes.txt", "read")], {
    "notes.txt": "notes",
    ".env": "TOKEN=sk-secret",
  });
  const seen = await attempt(ctx, {
    mode: "syscall",
    name: "filesystem.read",
    args: { path: ".env" },
  });
  assert.equal(seen.ok, false);
  assert.equal(seen.code, "EPERM");
  assert.equal(seen.name, "SyscallError");
  assert.ok(!JSON.stringify(seen).includes("sk-secret"));
  // Uncaught, the tool's failure keeps the code.
  await rejectsCode(
    ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: ".env" } }),
    "EPERM",
  );
  // An allowed syscall works exactly like a builtin tool's.
  assert.equal(
    await ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "notes.txt" } }),
    "notes",
  );

  const denied = await auditOf(ctx, { action: "filesystem.read", decision: "deny" });
  assert.equal(denied.length, 2);
  assert.equal(denied[0].target, "filesystem:workspace:.env");
  // The denial belongs to the jit.call that made it.
  const calls = await auditOf(ctx, { action: "jit.call" });
  assert.ok(
    calls.some((c) => c.correlation_id === denied[0].correlation_id),
    "correlated with its jit.call",
  );
  const events = await ctx.env.rt.kernel.store.listEvents();
  assert.ok(events.some((e) => e.type === "syscall.denied" && e.source === `pid:${ctx.pid}`));
  await assertHealthy(ctx);
});

Deno.test("jit: syscalls from a tool raise and check the caller's labels like a builtin tool's", async () => {
  await using ctx = await setup(
    [cap("filesystem:workspace:*", "read", "write")],
    { "secret.txt": "classified", "public.txt": "p" },
    { labels: { "secret.txt": "secret" } },
  );
  assert.equal((await ctx.env.rt.process(ctx.pid)).taint, "public");
  assert.equal(
    await ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "secret.txt" } }),
    "classified",
  );
  assert.equal((await ctx.env.rt.process(ctx.pid)).taint, "secret");
  // Now the process carries secret data: writing it to a normal file is refused.
  const seen = await attempt(ctx, {
    mode: "syscall",
    name: "filesystem.write",
    args: { path: "public.txt", content: "leak" },
  });
  assert.equal(seen.code, "EPERM");
  assert.equal(await Deno.readTextFile(join(ctx.env.ws, "public.txt")), "p");
  await assertHealthy(ctx);
});

Deno.test("jit: path traversal in a tool's syscall arguments is denied", async () => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")], { "a.txt": "a" });
  await Deno.symlink(join(ctx.env.root, "outside.txt"), join(ctx.env.ws, "link"));
  for (
    const path of [
      "../outside.txt",
      "/etc/passwd",
      "a/../../outside.txt",
      join(ctx.env.root, "outside.txt"),
      "link",
    ]
  ) {
    const r = await attempt(ctx, { mode: "syscall", name: "filesystem.read", args: { path } });
    assert.equal(r.code, "EPERM", `${path}: ${JSON.stringify(r)}`);
  }
  const w = await attempt(ctx, {
    mode: "syscall",
    name: "filesystem.write",
    args: { path: "../escape.txt", content: "x" },
  });
  assert.equal(w.code, "EPERM");
  assert.equal(await exists(join(ctx.env.root, "escape.txt")), false);
  assert.equal((await auditOf(ctx, { action: "filesystem.read", decision: "deny" })).length, 5);
  await assertHealthy(ctx);
});

Deno.test("jit: jit.* and sandbox.* syscalls are refused inside a tool", async () => {
  await using ctx = await setup([cap("tool:*", "write")]);
  const tries: [string, Record<string, unknown>][] = [
    ["jit.propose", { name: "inner", source: "export async function run() {}" }],
    ["jit.validate", { oid: "obj_x" }],
    ["jit.register", { oid: "obj_x" }],
    ["jit.call", { name: NAME, args: { mode: "echo" } }],
    ["sandbox.access", { permission: "read", value: "/etc/passwd" }],
    ["sandbox.access", { permission: "net", value: "127.0.0.1:1" }],
  ];
  for (const [name, args] of tries) {
    const r = await attempt(ctx, { mode: "syscall", name, args });
    assert.equal(r.code, "EPERM", `${name}: ${JSON.stringify(r)}`);
  }
  const ns = (await ctx.env.rt.process(ctx.pid)).namespace;
  const kinds = (await ctx.env.rt.kernel.store.listObjects(ns)).map((o) => o.kind);
  assert.equal(kinds.filter((k) => k === "tool_candidate").length, 1, "only the setup's candidate");
  assert.deepEqual(Object.keys((await ctx.env.rt.process(ctx.pid)).jit_tools), [NAME]);
  // Unknown syscalls are just unknown.
  assert.equal((await attempt(ctx, { mode: "syscall", name: "no.such", args: {} })).code, "ENOENT");
  await assertHealthy(ctx);
});

Deno.test("jit: process.exit inside a tool is deferred until the tool returns", async () => {
  await using ctx = await setup([cap("filesystem:workspace:a.txt", "read")], {
    "a.txt": "still alive",
  });
  const out = await ctx.call({ mode: "exit_then_read", path: "a.txt" });
  // The read after the exit request ran while the process was still live.
  assert.deepEqual(out, { exit: { deferred: true }, text: "still alive" });
  const p = await ctx.env.rt.process(ctx.pid);
  assert.equal(p.status, "exited");
  assert.equal(p.exit_code, 7);
  const exits = await auditOf(ctx, { action: "process.exit" });
  const reads = await auditOf(ctx, { action: "filesystem.read" });
  assert.equal(exits.length, 1);
  assert.ok(reads[0].seq < exits[0].seq, "the exit happened after the tool's last syscall");
  // The exited process can no longer call its tool.
  await rejectsCode(ctx.call({ mode: "echo", value: 1 }), "ESTATE");
  await assertHealthy(ctx);
});

Deno.test("jit: a tool's in-flight syscalls finish before jit.call returns", async () => {
  await using ctx = await setup([cap("clock:sleep", "execute")]);
  // The tool starts a 300 ms sleep and returns without awaiting it.
  assert.equal(
    await ctx.call({ mode: "fire_and_return", name: "clock.sleep", args: { ms: 300 } }),
    "returned",
  );
  const sleep = await auditOf(ctx, { action: "clock.sleep" });
  const calls = await auditOf(ctx, { action: "jit.call" });
  assert.equal(sleep.length, 1, "the sleep finished before jit.call returned");
  assert.ok(sleep[0].seq < calls.at(-1)!.seq, "no effect of a call lands after the call");
  await assertHealthy(ctx);
});

Deno.test("jit: malformed frames are EPROTO and the host survives", async (t) => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")]);
  const frames: [string, string, RegExp][] = [
    ["garbage line", "garbage\n", /garbage on stdout/],
    ["empty line", "\n", /garbage on stdout/],
    [
      "unknown field in a result",
      '{"type":"result","value":1,"extra":2}\n',
      /unknown field 'extra'/,
    ],
    [
      "unknown field in a syscall",
      '{"type":"syscall","id":1,"name":"clock.now","args":{},"pid":1}\n',
      /unknown field 'pid'/,
    ],
    [
      "id as a string",
      '{"type":"syscall","id":"1","name":"clock.now","args":{}}\n',
      /id must be a positive integer/,
    ],
    [
      "id zero",
      '{"type":"syscall","id":0,"name":"clock.now","args":{}}\n',
      /id must be a positive integer/,
    ],
    [
      "args as an array",
      '{"type":"syscall","id":1,"name":"clock.now","args":[]}\n',
      /args must be an object/,
    ],
    [
      "name not a string",
      '{"type":"syscall","id":1,"name":7,"args":{}}\n',
      /name must be a string/,
    ],
    ["error message not a string", '{"type":"error","message":1}\n', /message must be a string/],
    ["result without a value", '{"type":"result"}\n', /value is required/],
    [
      "host-side frame type",
      '{"type":"syscall_result","id":1,"ok":true,"payload":1}\n',
      /no known type/,
    ],
    ["run frame", '{"type":"run","tool":"file:///etc/passwd","args":{}}\n', /no known type/],
    ["array frame", "[1,2]\n", /no known type/],
    // Storing or hashing a value recurses through it: thousands of levels overflow the stack.
    [
      "a result nested 5,000 deep",
      `{"type":"result","value":${"[".repeat(5000)}${"]".repeat(5000)}}\n`,
      /result frame nests deeper than 64 levels/,
    ],
    [
      "syscall arguments nested 5,000 deep",
      `{"type":"syscall","id":1,"name":"filesystem.write","args":{"path":"deep.txt","content":"x","x":${
        "[".repeat(5000)
      }${"]".repeat(5000)}}}\n`,
      /syscall frame nests deeper than 64 levels/,
    ],
  ];
  for (const [what, text, why] of frames) {
    await t.step(what, async () => {
      const e = await rejectsCode(ctx.call({ mode: "raw", text }), "EPROTO");
      assert.match(e.message, why);
    });
  }
  await t.step(
    "an oversized frame (terminated or not) is EPROTO and never dispatched",
    async () => {
      const big = JSON.stringify({
        type: "syscall",
        id: 1,
        name: "filesystem.write",
        args: { path: "big.txt", content: "x".repeat(600 * 1024) },
      });
      const e1 = await rejectsCode(ctx.call({ mode: "raw", text: big + "\n" }), "EPROTO");
      assert.match(e1.message, /frame longer than/);
      const e2 = await rejectsCode(
        ctx.call({ mode: "raw", text: "x".repeat(600 * 1024) }),
        "EPROTO",
      );
      assert.match(e2.message, /frame longer than/);
      assert.equal(await exists(join(ctx.env.ws, "big.txt")), false);
    },
  );
  await t.step("console.log cannot forge a frame", async () => {
    assert.equal(await ctx.call({ mode: "log" }), "real");
  });
  await assertHealthy(ctx);
});

Deno.test("jit: a frame after the result is EPROTO", async () => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")]);
  // Result and garbage in one write: the whole call is tainted.
  const e = await rejectsCode(
    ctx.call({ mode: "raw", text: '{"type":"result","value":1}\ngarbage\n' }),
    "EPROTO",
  );
  assert.match(e.message, /garbage/);
  // Result, then a syscall frame in the same write: refused and never dispatched.
  const late = JSON.stringify({
    type: "syscall",
    id: 1,
    name: "filesystem.write",
    args: { path: "late.txt", content: "x" },
  });
  const e2 = await rejectsCode(
    ctx.call({ mode: "raw", text: '{"type":"result","value":1}\n' + late + "\n" }),
    "EPROTO",
  );
  assert.match(e2.message, /after the call ended/);
  // Two results.
  await rejectsCode(
    ctx.call({ mode: "raw", text: '{"type":"result","value":1}\n{"type":"result","value":2}\n' }),
    "EPROTO",
  );
  await delay(100);
  assert.equal(await exists(join(ctx.env.ws, "late.txt")), false);
  assert.equal((await auditOf(ctx, { action: "filesystem.write" })).length, 0);
  await assertHealthy(ctx);
});

Deno.test("jit: a syscall flood beyond max_syscalls is ELIMIT", async () => {
  await using ctx = await setup([cap("clock:now", "read")]);
  assert.equal(await ctx.call({ mode: "flood", count: 5 }, { max_syscalls: 5 }), 5);
  const e = await rejectsCode(
    ctx.call({ mode: "flood", count: 1000 }, { max_syscalls: 5 }),
    "ELIMIT",
  );
  assert.match(e.message, /more than 5 syscalls/);
  // The default cap holds without max_syscalls too.
  await rejectsCode(ctx.call({ mode: "flood", count: 1000 }), "ELIMIT");
  // At most the cap reached the kernel per call: 5 + 5 + 64 (default).
  assert.equal((await auditOf(ctx, { action: "clock.now" })).length, 5 + 5 + 64);
  await rejectsCode(ctx.call({ mode: "flood", count: 1 }, { max_syscalls: 100_001 }), "EINVAL");
  await assertHealthy(ctx);
});

// -------------------------------------------------------------- containment

Deno.test("jit: direct file access outside the derived flags is denied inside the tool", async () => {
  await using ctx = await setup([], { "notes.txt": "notes" });
  const ws = ctx.env.ws;
  const reads = [
    "/etc/hostname",
    join(ws, "notes.txt"),
    join(ctx.env.root, "outside.txt"),
    join(ctx.dir, "validated.json"),
    "/proc/self/environ",
  ];
  for (const path of reads) {
    const r = await attempt(ctx, { mode: "read", path });
    assert.equal(r.ok, false, path);
    assert.equal(r.name, "NotCapable", `${path}: ${JSON.stringify(r)}`);
    assert.equal(
      (await accessRecords(ctx, path, "deny")).length >= 1,
      true,
      `no audit for ${path}`,
    );
  }
  // Uncaught, a denial is EPERM.
  await rejectsCode(ctx.call({ mode: "read", path: join(ws, "notes.txt") }), "EPERM");
  // Writes: outside the workspace, inside it, and over the tool's own cached artifact.
  const toolPath = join(ctx.dir, "tool.ts");
  const before = await Deno.readTextFile(toolPath);
  for (
    const path of [
      join(ctx.env.root, "planted.txt"),
      join(ws, "planted.txt"),
      toolPath,
      join(ctx.dir, "validated.json"),
      join(ctx.dir, "deno_dir", "planted.js"),
      join(ctx.dir, "home", ".bashrc"),
    ]
  ) {
    const r = await attempt(ctx, { mode: "write", path, content: "pwned" });
    assert.equal(r.name, "NotCapable", `${path}: ${JSON.stringify(r)}`);
    assert.ok((await accessRecords(ctx, path, "deny")).length >= 1, `no audit for ${path}`);
  }
  assert.equal(await exists(join(ctx.env.root, "planted.txt")), false);
  assert.equal(await exists(join(ws, "planted.txt")), false);
  assert.equal(await Deno.readTextFile(toolPath), before, "the cached artifact was modified");
  await assertHealthy(ctx);
});

Deno.test("jit: a direct read the derived flags allow works and is audited as sandbox.access", async () => {
  await using ctx = await setup(
    [
      cap("filesystem:workspace:notes.txt", "read"),
      cap("filesystem:workspace:secret.txt", "read"),
      cap("filesystem:workspace:out.txt", "write"),
    ],
    { "notes.txt": "notes", "secret.txt": "classified" },
    { labels: { "secret.txt": "secret" } },
  );
  const notes = join(ctx.env.ws, "notes.txt");
  assert.equal(await ctx.call({ mode: "read", path: notes }), "notes");
  const allows = await accessRecords(ctx, "filesystem:workspace:notes.txt", "allow");
  assert.equal(allows.length, 1);
  assert.ok(allows[0].capability_refs.length > 0, "the deciding capability is named");
  const calls = await auditOf(ctx, { action: "jit.call" });
  assert.equal(allows[0].correlation_id, calls.at(-1)!.correlation_id);
  // A computed import of an allowed file is decided and audited the same way.
  assert.equal(await ctx.call({ mode: "import_text", spec: `file://${notes}` }), "notes");
  assert.equal((await accessRecords(ctx, "filesystem:workspace:notes.txt", "allow")).length, 2);
  // A direct read carries the file's label into the process, as filesystem.read does...
  assert.equal(
    await ctx.call({ mode: "read", path: join(ctx.env.ws, "secret.txt") }),
    "classified",
  );
  assert.equal((await ctx.env.rt.process(ctx.pid)).taint, "secret");
  // ...and a direct write of tainted data to a lower-labelled file is refused.
  const w = await attempt(ctx, {
    mode: "write",
    path: join(ctx.env.ws, "out.txt"),
    content: "leak",
  });
  assert.equal(w.ok, false);
  assert.equal(await exists(join(ctx.env.ws, "out.txt")), false);
  await assertHealthy(ctx);
});

Deno.test("jit: one-shot, expiring and ASK capabilities allow syscalls but no direct access", async () => {
  // Expires 30 s from now: inside a 60 s call's deadline, long after this test's syscalls.
  const soon = new Date(Date.now() + 30_000).toISOString();
  await using ctx = await setup([
    { resource: "filesystem:workspace:once.txt", rights: ["read"], uses_remaining: 5 },
    { resource: "filesystem:workspace:soon.txt", rights: ["read"], expires_at: soon },
    { resource: "filesystem:workspace:ask.txt", rights: ["read"], effect: "ask" },
  ], { "once.txt": "once", "soon.txt": "soon", "ask.txt": "ask" });
  for (const f of ["once.txt", "soon.txt", "ask.txt"]) {
    const r = await attempt(ctx, { mode: "read", path: join(ctx.env.ws, f) }, {
      timeout_ms: 60_000,
    });
    assert.equal(r.name, "NotCapable", `${f}: ${JSON.stringify(r)}`);
    const d = await accessRecords(ctx, `filesystem:workspace:${f}`, "deny");
    assert.equal(d.length, 1, f);
    assert.match(d[0].reason, /outside the derived/);
  }
  // The denied direct read spent no use of the limited capability.
  const uses = async () =>
    (await ctx.env.rt.kernel.store.capabilitiesOf(ctx.pid)).find((c) =>
      c.resource.endsWith("once.txt")
    )!.uses_remaining;
  assert.equal(await uses(), 5);
  // The syscall path still honours them (a limited use is spent; the ASK goes to the human).
  assert.equal(
    await ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "once.txt" } }),
    "once",
  );
  assert.equal(await uses(), 4);
  assert.equal(
    await ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "soon.txt" } }),
    "soon",
  );
  await rejectsCode(
    ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "ask.txt" } }),
    "EPERM",
  );
  assert.equal(ctx.env.human.asked.length, 1);
  await assertHealthy(ctx);
});

Deno.test("jit: a DENY capability inside an allowed directory wins for direct reads", async () => {
  await using ctx = await setup([
    cap("filesystem:workspace:docs/*", "read"),
    { resource: "filesystem:workspace:docs/secret.txt", rights: ["read"], effect: "deny" },
  ], { "docs/a.txt": "doc a", "docs/secret.txt": "no", "top.txt": "top" });
  assert.equal(await ctx.call({ mode: "read", path: join(ctx.env.ws, "docs/a.txt") }), "doc a");
  for (const f of ["docs/secret.txt", "top.txt", "docs"]) {
    const r = await attempt(ctx, { mode: "read", path: join(ctx.env.ws, f) });
    assert.equal(r.name, "NotCapable", `${f}: ${JSON.stringify(r)}`);
  }
  assert.equal(
    (await accessRecords(ctx, "filesystem:workspace:docs/secret.txt", "deny")).length,
    1,
  );
  // And through the syscall path.
  assert.equal(
    (await attempt(ctx, {
      mode: "syscall",
      name: "filesystem.read",
      args: { path: "docs/secret.txt" },
    })).code,
    "EPERM",
  );
  await assertHealthy(ctx);
});

Deno.test("jit: a symlink out of the workspace cannot be read through directly", async () => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read")], {
    "a.txt": "a",
    "sub/b.txt": "b",
  });
  const ws = ctx.env.ws;
  await Deno.symlink(join(ctx.env.root, "outside.txt"), join(ws, "link"));
  await Deno.symlink(ctx.env.root, join(ws, "sub/rootlink"));
  assert.equal(await ctx.call({ mode: "read", path: join(ws, "a.txt") }), "a");
  for (
    const p of [
      join(ws, "link"),
      join(ws, "sub/rootlink/outside.txt"),
      join(ws, "sub/rootlink/store.db"),
    ]
  ) {
    const r = await attempt(ctx, { mode: "read", path: p });
    assert.equal(r.ok, false, p);
    assert.equal(r.name, "NotCapable", `${p}: ${JSON.stringify(r)}`);
    assert.ok((await accessRecords(ctx, p, "deny")).length >= 1, `no audit for ${p}`);
  }
  await assertHealthy(ctx);
});

Deno.test("jit: computed dynamic imports of local files, remote URLs and npm packages fail", async () => {
  await using ctx = await setup([], { "mod.ts": "export default 'workspace module';\n" });
  const evil = join(ctx.env.root, "evil.ts");
  const marker = join(ctx.env.root, "RAN");
  await Deno.writeTextFile(
    evil,
    `Deno.writeTextFileSync(${JSON.stringify(marker)}, "ran");\nexport default "pwned";\n`,
  );
  for (
    const spec of [evil, `file://${evil}`, `file://${join(ctx.env.ws, "mod.ts")}`, "/etc/passwd"]
  ) {
    const r = await attempt(ctx, { mode: spec === "/etc/passwd" ? "import_text" : "import", spec });
    assert.equal(r.ok, false, `${spec}: ${JSON.stringify(r)}`);
    assert.match(r.message, /denied|Requires|not capable/i, spec);
  }
  assert.ok((await accessRecords(ctx, evil, "deny")).length >= 1);
  assert.ok((await accessRecords(ctx, "mod.ts", "deny")).length >= 1);
  for (const spec of ["https://example.com/x.js", "npm:zod", "jsr:@std/path"]) {
    const r = await attempt(ctx, { mode: "import", spec });
    assert.equal(r.ok, false, `${spec}: ${JSON.stringify(r)}`);
  }
  // Node built-ins load through a computed specifier, but what they do is checked.
  const nodeRead = await attempt(ctx, { mode: "node_read", path: "/etc/hostname" });
  assert.equal(nodeRead.ok, false, JSON.stringify(nodeRead));
  assert.ok((await accessRecords(ctx, "/etc/hostname", "deny")).length >= 1);
  assert.equal(await exists(marker), false, "imported code ran");
  await assertHealthy(ctx);
});

Deno.test("jit: network access to a loopback server is denied and the server sees nothing", async () => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")]);
  let hits = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    hits++;
    return new Response("export default 'served';");
  });
  try {
    const port = server.addr.port;
    for (const url of [`http://127.0.0.1:${port}/`, `http://localhost:${port}/x`]) {
      const r = await attempt(ctx, { mode: "fetch", url });
      assert.equal(r.ok, false, url);
      assert.equal(r.name, "NotCapable", `${url}: ${JSON.stringify(r)}`);
    }
    await rejectsCode(ctx.call({ mode: "fetch", url: `http://127.0.0.1:${port}/` }), "EPERM");
    const c = await attempt(ctx, { mode: "connect", port });
    assert.equal(c.name, "NotCapable", JSON.stringify(c));
    // A remote import from the same server is refused by --no-remote before any request.
    const imp = await attempt(ctx, { mode: "import", spec: `http://127.0.0.1:${port}/mod.js` });
    assert.equal(imp.ok, false);
    assert.ok((await accessRecords(ctx, `sandbox:net:127.0.0.1`, "deny")).length >= 2);
  } finally {
    await server.shutdown();
  }
  assert.equal(hits, 0, "the server saw a request");
  await assertHealthy(ctx);
});

Deno.test("jit: subprocesses, FFI and signals to the host are denied", async () => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")]);
  for (const c of ["/bin/ls", "/usr/bin/env", Deno.execPath(), "ls"]) {
    const r = await attempt(ctx, { mode: "command", cmd: c });
    assert.equal(r.ok, false, `${c}: ${JSON.stringify(r)}`);
    // A bare name is not even found: the tool's PATH is empty.
    assert.equal(r.name, c === "ls" ? "NotFound" : "NotCapable", `${c}: ${JSON.stringify(r)}`);
  }
  await rejectsCode(ctx.call({ mode: "command", cmd: "/bin/ls" }), "EPERM");
  const nodeExec = await attempt(ctx, { mode: "node_exec" });
  assert.equal(nodeExec.ok, false, JSON.stringify(nodeExec));
  const ffi = await attempt(ctx, { mode: "dlopen" });
  assert.equal(ffi.ok, false);
  assert.equal(ffi.name, "NotCapable", JSON.stringify(ffi));
  const kill = await attempt(ctx, { mode: "kill", pid: Deno.pid });
  assert.equal(kill.name, "NotCapable", JSON.stringify(kill));
  for (const part of ["sandbox:run", "sandbox:ffi"]) {
    assert.ok((await accessRecords(ctx, part, "deny")).length >= 1, part);
  }
  await assertHealthy(ctx);
});

Deno.test("jit: the environment is neither readable nor inherited by a tool", async () => {
  const SECRET = "sk-jit-env-secret-5c1d";
  Deno.env.set("LIBOS_JIT_TEST_SECRET", SECRET);
  try {
    await using ctx = await setup([cap("filesystem:workspace:*", "read")]);
    for (
      const args of [
        { mode: "env", name: "HOME" },
        { mode: "env", name: "LIBOS_JIT_TEST_SECRET" },
        { mode: "env_all" },
      ]
    ) {
      const r = await attempt(ctx, args);
      assert.equal(r.name, "NotCapable", JSON.stringify(r));
      assert.ok(!JSON.stringify(r).includes(SECRET));
    }
    const viaNode = await attempt(ctx, { mode: "node_env", name: "LIBOS_JIT_TEST_SECRET" });
    assert.ok(!JSON.stringify(viaNode).includes(SECRET), JSON.stringify(viaNode));
    assert.ok(!viaNode.ok || viaNode.value === "unset", JSON.stringify(viaNode));
    assert.ok((await accessRecords(ctx, "sandbox:env", "deny")).length >= 3);
    // The subprocess's real environment: a cleared one, with nothing of ours.
    let environ = "";
    await assert.rejects(
      whileRunning(ctx, { mode: "raw", text: "" }, { timeout_ms: 1000 }, async (osPid) => {
        environ = await procText(`cat /proc/${osPid}/environ`);
      }),
      (e: unknown) => e instanceof LibosError && e.code === "ETIMEDOUT",
    );
    const vars = environ.split("\0").filter(Boolean).map((kv) => kv.split("=")[0]).sort();
    assert.ok(!environ.includes(SECRET), "the secret reached the tool's environment");
    assert.ok(!vars.includes("PATH") && !vars.includes("LIBOS_JIT_TEST_SECRET"), vars.join(","));
    assert.ok(environ.includes(`HOME=${join(ctx.dir, "home")}`), environ);
    await assertHealthy(ctx);
  } finally {
    Deno.env.delete("LIBOS_JIT_TEST_SECRET");
  }
});

// ------------------------------------------------------------------- limits

Deno.test("jit: a busy loop is killed at the wall-clock limit and its OS process is gone", async () => {
  await using ctx = await setup();
  let osPid = 0;
  const e = await whileRunning(ctx, { mode: "busy" }, { timeout_ms: 1000 }, (p) => {
    osPid = p;
  }).then(() => null, (e) => e);
  assert.ok(e instanceof LibosError && e.code === "ETIMEDOUT", String(e));
  assert.match(e.message, /1000 ms/);
  assert.ok(osPid > 0);
  assert.deepEqual(await sandboxPids(ctx.dir), [], "the busy tool still runs");
  await assertHealthy(ctx);
});

Deno.test("jit: a memory bomb is killed at the heap limit", async () => {
  await using ctx = await setup();
  const e = await rejectsCode(ctx.call({ mode: "heap_bomb" }, { timeout_ms: 10_000 }), "ELIMIT");
  assert.match(e.message, /heap|memory/);
  await assertHealthy(ctx);
});

Deno.test("jit: an off-heap memory bomb is killed by the RSS watchdog", async () => {
  await using ctx = await setup();
  const e = await rejectsCode(ctx.call({ mode: "rss_bomb" }, { timeout_ms: 10_000 }), "ELIMIT");
  assert.match(e.message, /memory|heap/);
  await assertHealthy(ctx);
});

Deno.test("jit: output floods are killed at the stderr and stdout caps", async () => {
  await using ctx = await setup([cap("clock:now", "read")]);
  const err = await rejectsCode(
    ctx.call({ mode: "stderr_flood" }, { timeout_ms: 30_000 }),
    "ELIMIT",
  );
  assert.match(err.message, /stderr/);
  // Valid (padded) syscall frames, so only the byte cap can stop them.
  const out = await rejectsCode(
    ctx.call({ mode: "stdout_flood" }, { timeout_ms: 30_000, max_syscalls: 100_000 }),
    "ELIMIT",
  );
  assert.match(out.message, /stdout/);
  await assertHealthy(ctx);
});

Deno.test("jit: effects a tool schedules after its result never happen", async (t) => {
  await using ctx = await setup([cap("filesystem:workspace:*", "read", "write")]);
  const ws = ctx.env.ws;
  await t.step("a syscall from a timer after run returned", async () => {
    assert.equal(await ctx.call({ mode: "late_syscall", path: "late1.txt" }), "returned");
    await delay(200);
    assert.equal(await exists(join(ws, "late1.txt")), false);
    assert.equal((await auditOf(ctx, { action: "filesystem.write" })).length, 0);
  });
  await t.step("a direct write from a timer after a self-written result", async () => {
    assert.equal(await ctx.call({ mode: "late_direct", path: join(ws, "late2.txt") }), "early");
    await delay(200);
    assert.equal(await exists(join(ws, "late2.txt")), false);
  });
  await t.step("direct writes right after a self-written result", async () => {
    assert.equal(await ctx.call({ mode: "late_sync", path: join(ws, "late3") }), "early");
    await delay(200);
    assert.deepEqual(
      [...Deno.readDirSync(ws)].map((e) => e.name).filter((n) => n.startsWith("late")),
      [],
    );
  });
  await assertHealthy(ctx);
});

Deno.test("jit: a tool whose run throws reports the error", async () => {
  await using ctx = await setup();
  const e = await rejectsCode(ctx.call({ mode: "throw" }), "EIO");
  assert.match(e.message, /boom from the tool/);
  const unknown = await rejectsCode(ctx.call({ mode: "no_such_mode" }), "EIO");
  assert.match(unknown.message, /unknown mode/);
  const rec = (await auditOf(ctx, { action: "jit.call" })).at(-1)!;
  assert.equal(rec.decision, "error");
  assert.match(rec.reason, /unknown mode/);
  await assertHealthy(ctx);
});

Deno.test("jit: a permission request longer than the broker's line limit closes the connection; nothing of it is buffered", async () => {
  // Straight to the broker: a line that never ends is cut off at MAX_BROKER_LINE.
  const broker = await PermissionBroker.start();
  try {
    const conn = await Deno.connect({ transport: "unix", path: broker.path });
    const chunk = new TextEncoder().encode("A".repeat(16 * 1024));
    let sent = 0;
    try {
      while (sent < 4 * MAX_BROKER_LINE) sent += await conn.write(chunk);
    } catch { /* closed under us: what we want */ }
    const ended = await Promise.race([
      conn.read(new Uint8Array(16)).then((n) => n === null, () => true),
      delay(5000).then(() => false),
    ]);
    conn.close();
    assert.ok(ended, "the broker kept reading a line past its limit");
  } finally {
    await broker.close();
  }
  // From a tool: asking for a variable named with 1 MB ends the tool (its checks fail
  // closed once the broker hangs up); the runtime goes on.
  await using ctx = await setup();
  const e = await rejectsCode(ctx.call({ mode: "env", name: "A".repeat(1024 * 1024) }), "EIO");
  assert.match(e.message, /tool exited .* without a result/);
  await assertHealthy(ctx);
});

Deno.test("jit: a tainted tool cannot carry what it read into the audit in the names of syscalls", async () => {
  const SECRET = "sk-LABELLED-SECRET-0042";
  await using ctx = await setup([cap("filesystem:workspace:secret.txt", "read")], {
    "secret.txt": SECRET,
  }, { labels: { "secret.txt": "secret" } });
  const prefixes = ["x.", "jit.", "sandbox.", "model.", ""];
  assert.equal(await ctx.call({ mode: "relay", path: "secret.txt", prefixes }), "relayed");
  assert.equal((await ctx.env.rt.process(ctx.pid)).taint, "secret");
  // And straight from the caller, outside any tool.
  for (const p of prefixes) {
    await ctx.env.rt.syscall(ctx.pid, p + SECRET, {}).catch(() => {});
  }
  const records = await auditOf(ctx);
  assert.ok(records.length >= 2 * prefixes.length, `${records.length} records`);
  const leaked = records.filter((r) => JSON.stringify(r).includes(SECRET));
  assert.deepEqual(leaked.map((r) => [r.action, r.reason]), []);
  const events = JSON.stringify(await ctx.env.rt.kernel.store.listEvents(0, 10_000));
  assert.ok(!events.includes(SECRET), "a syscall's name carried the secret into the events");
});

Deno.test("jit: a tool cannot rename or remove a directory above a DENY'd or labelled path", async () => {
  await using ctx = await setup([
    cap("filesystem:workspace:*", "read", "write"),
    { resource: "filesystem:workspace:config/.env", rights: ["read", "write"], effect: "deny" },
  ], {
    "config/.env": "TOKEN=SECRET-4711",
    "keys/id.txt": "SECRET-KEY-9999",
    "free/x.txt": "x",
  }, { labels: { "keys/id.txt": "secret" } });
  const ws = ctx.env.ws;
  for (const [from, to] of [["config", "moved"], ["keys", "k2"]]) {
    const r = await attempt(ctx, { mode: "rename", from: join(ws, from), to: join(ws, to) });
    assert.equal(r.ok, false, `rename ${from}: ${JSON.stringify(r)}`);
    assert.equal(r.name, "NotCapable", JSON.stringify(r));
    const gone = await attempt(ctx, { mode: "remove", path: join(ws, from) });
    assert.equal(gone.ok, false, `remove ${from}: ${JSON.stringify(gone)}`);
  }
  assert.equal(await Deno.readTextFile(join(ws, "config/.env")), "TOKEN=SECRET-4711");
  assert.equal(await Deno.readTextFile(join(ws, "keys/id.txt")), "SECRET-KEY-9999");
  // A directory holding nothing protected is the tool's to rename.
  const free = await attempt(ctx, {
    mode: "rename",
    from: join(ws, "free"),
    to: join(ws, "free2"),
  });
  assert.equal(free.ok, true, JSON.stringify(free));
  const refused = await accessRecords(ctx, join(ws, "config"), "deny");
  assert.ok(refused.some((a) => /config\/\.env/.test(a.reason)), JSON.stringify(refused));
});

// ------------------------------------------------------------ the OS wall under a tool's files

/** Swaps ws/a and ws/b, or reads or writes through ws/a/d, as fast as it can for `ms`. */
const RACE = String.raw`import type { Libos } from "./libos.ts";
export async function run(args: { ws: string; mode: string; ms: number }, _libos: Libos): Promise<unknown> {
  const ws = args.ws;
  const t0 = Date.now();
  let tries = 0;
  let got: string | null = null;
  while (Date.now() - t0 < args.ms && !got) {
    tries++;
    try {
      if (args.mode === "swap") {
        Deno.renameSync(ws + "/a", ws + "/t");
        Deno.renameSync(ws + "/b", ws + "/a");
        Deno.renameSync(ws + "/t", ws + "/b");
      } else if (args.mode === "read") {
        const s = Deno.readTextFileSync(ws + "/a/d/secret.txt");
        if (s.includes("OUTSIDE")) got = s;
      } else {
        Deno.writeTextFileSync(ws + "/a/d/planted.txt", "written by a JIT tool");
      }
    } catch (_) { /* denied or missing: again */ }
  }
  return { mode: args.mode, tries, got };
}
`;

Deno.test("jit: a directory swapped in by a concurrent tool after the broker's check leads nowhere outside the workspace", async () => {
  // A link out of the workspace inside it (cloned content, a venv): b/d -> the directory above.
  await using env = await makeEnv({
    files: { "a/d/secret.txt": "decoy inside the workspace", "b/.keep": "" },
    jitCacheDir: CACHE,
  });
  await Deno.writeTextFile(join(env.root, "secret.txt"), "OUTSIDE-SECRET-42");
  await Deno.symlink(env.root, join(env.ws, "b", "d"));
  const pid = await launch(env, [
    cap("tool:race", "write"),
    cap("filesystem:workspace:*", "read", "write"),
  ], { tools: [], budgets: { max_syscalls: 1_000_000 } });
  const c = await env.rt.syscall(pid, "jit.propose", { name: "race", source: RACE }) as {
    oid: string;
  };
  const a = await env.rt.syscall(pid, "jit.validate", { oid: c.oid }) as { oid: string };
  await env.rt.syscall(pid, "jit.register", { oid: a.oid });
  const call = (mode: string, ms: number) =>
    env.rt.syscall(pid, "jit.call", {
      name: "race",
      args: { ws: env.ws, mode, ms },
      timeout_ms: ms + 4000,
    }) as Promise<{ tries: number; got: string | null }>;
  const [, read] = await Promise.all([call("swap", 2500), call("read", 2500)]);
  assert.equal(read.got, null, `read outside the workspace after ${read.tries} tries`);
  assert.ok(read.tries > 10, `${read.tries} tries`);
  await Promise.all([call("swap", 1500), call("write", 1500)]);
  assert.equal(await exists(join(env.root, "planted.txt")), false, "written outside the workspace");
});

Deno.test("jit: a tool cannot set set-id bits on a file it may write", async () => {
  await using ctx = await setup([cap("filesystem:workspace:build/*", "read", "write")], {
    "build/tool.bin": "",
  });
  const file = join(ctx.env.ws, "build", "tool.bin");
  for (const mode of [0o4755, 0o2755, 0o6755]) {
    const r = await attempt(ctx, { mode: "chmod", path: file, mode_bits: mode });
    assert.equal(r.ok, false, `chmod ${mode.toString(8)}: ${JSON.stringify(r)}`);
    const st = await Deno.stat(file);
    assert.equal(st.mode! & 0o6000, 0, `mode on disk ${st.mode!.toString(8)}`);
  }
  // Plain mode bits stay the tool's to set.
  assert.equal(
    (await ctx.call({ mode: "chmod", path: file, mode_bits: 0o755 }) as number) & 0o777,
    0o755,
  );
  await assertHealthy(ctx);
});

Deno.test("jit: a tool that fails with EPERM of its own is audited as an error, not as the runtime's refusal", async () => {
  await using ctx = await setup();
  const e = await rejectsCode(ctx.call({ mode: "claim_eperm" }), "EPERM");
  assert.match(e.message, /tool failed: denied by capability cap_forged/);
  const rec = (await auditOf(ctx, { action: "jit.call" })).at(-1)!;
  assert.equal(rec.decision, "error", `${rec.decision}: ${rec.reason}`);
  // A refusal the runtime made stays a deny.
  await rejectsCode(
    ctx.call({ mode: "syscall", name: "filesystem.read", args: { path: "x" } }),
    "EPERM",
  );
  const refused = await auditOf(ctx, { action: "filesystem.read" });
  assert.equal(refused.at(-1)!.decision, "deny");
  await assertHealthy(ctx);
});
