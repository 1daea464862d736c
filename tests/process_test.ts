/**
 * Process lifecycle and the process.* / capability delegation primitives:
 * statuses and transitions, spawn, fork modes, exec, wait, signal, exit,
 * mailbox, chdir, grant and revoke.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseImage } from "../runtime/images.ts";
import { TRANSITIONS } from "../runtime/lifecycle.ts";
import { BUILTIN_TOOL_NAMES } from "../tools/builtin.ts";
import {
  type Capability,
  type CapabilitySpec,
  PROCESS_STATUSES,
  type ProcessStatus,
} from "../runtime/types.ts";
import { cap, type Env, launch, makeEnv, rejectsCode } from "./_helpers.ts";

// ---------------------------------------------------------------- local helpers

async function statusOf(env: Env, pid: number): Promise<ProcessStatus> {
  return (await env.rt.process(pid)).status;
}

async function forceStatus(env: Env, pid: number, status: ProcessStatus): Promise<void> {
  assert.ok(await env.rt.kernel.store.updateProcess(pid, { status }));
}

async function liveCaps(env: Env, pid: number): Promise<Capability[]> {
  return (await env.rt.kernel.store.capabilitiesOf(pid)).filter((c) => c.status === "active");
}

/** Live capabilities other than the process's own namespace. */
async function foreignCaps(env: Env, pid: number): Promise<Capability[]> {
  const own = `object_namespace:proc:${pid}`;
  return (await liveCaps(env, pid)).filter((c) => c.resource !== own);
}

async function spawn(env: Env, pid: number, args: Record<string, unknown> = {}): Promise<number> {
  const r = await env.rt.syscall(pid, "process.spawn", { goal: "child goal", ...args }) as {
    pid: number;
  };
  return r.pid;
}

async function fork(env: Env, pid: number, args: Record<string, unknown>): Promise<number> {
  const r = await env.rt.syscall(pid, "process.fork", args) as { pid: number };
  return r.pid;
}

async function processCount(env: Env): Promise<number> {
  return (await env.rt.kernel.store.listProcesses()).length;
}

async function read(env: Env, pid: number, path: string): Promise<unknown> {
  return await env.rt.syscall(pid, "filesystem.read", { path });
}

const SPAWN = cap("process:spawn", "execute");
const WS_RW = cap("filesystem:workspace:*", "read", "write");

function registerImage(env: Env, doc: Record<string, unknown>): Promise<void> {
  return env.rt.kernel.store.putImage(parseImage(doc, BUILTIN_TOOL_NAMES), "host");
}

// ---------------------------------------------------------------- lifecycle

Deno.test("process: there are exactly the ten lifecycle statuses", () => {
  assert.deepEqual([...PROCESS_STATUSES], [
    "created",
    "runnable",
    "running",
    "waiting_event",
    "waiting_tool",
    "waiting_human",
    "paused",
    "exited",
    "failed",
    "killed",
  ]);
  assert.deepEqual(Object.keys(TRANSITIONS).sort(), [...PROCESS_STATUSES].sort());
});

Deno.test("process: a launched process starts runnable after passing through created", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  assert.equal(await statusOf(env, pid), "runnable");
  const events = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "process.status" && e.target === `pid:${pid}`
  );
  assert.deepEqual(events.map((e) => e.payload), [{ from: "created", to: "runnable" }]);
});

Deno.test("process: every legal transition in TRANSITIONS is accepted by the kernel", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  let legal = 0;
  for (const from of PROCESS_STATUSES) {
    for (const to of TRANSITIONS[from]) {
      await forceStatus(env, pid, from);
      const rec = await env.rt.kernel.transition(pid, to);
      assert.equal(rec.status, to, `${from} -> ${to}`);
      assert.equal(await statusOf(env, pid), to, `${from} -> ${to} stored`);
      const last = (await env.rt.kernel.store.listEvents()).at(-1)!;
      assert.equal(last.type, "process.status");
      assert.deepEqual(last.payload, { from, to });
      legal++;
    }
  }
  // Sanity: the walk covered transitions (the table is not empty).
  assert.ok(legal >= 30, `only ${legal} legal transitions walked`);
});

Deno.test("process: every transition outside TRANSITIONS is ESTATE and leaves the status unchanged", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  let illegal = 0;
  for (const from of PROCESS_STATUSES) {
    for (const to of PROCESS_STATUSES) {
      if (TRANSITIONS[from].includes(to)) continue;
      await forceStatus(env, pid, from);
      const before = (await env.rt.kernel.store.listEvents()).length;
      await rejectsCode(env.rt.kernel.transition(pid, to), "ESTATE");
      assert.equal(await statusOf(env, pid), from, `${from} -> ${to} must not be stored`);
      assert.equal((await env.rt.kernel.store.listEvents()).length, before, "no status event");
      illegal++;
    }
  }
  assert.ok(illegal >= 50, `only ${illegal} illegal transitions tried`);
});

Deno.test("process: named illegal transitions are ESTATE (exited->runnable, created->running, killed->anything)", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const cases: [ProcessStatus, ProcessStatus][] = [
    ["exited", "runnable"],
    ["created", "running"],
    ["failed", "runnable"],
    ["waiting_event", "running"],
    ["paused", "running"],
    ["paused", "exited"],
    ["runnable", "waiting_event"],
    ["created", "exited"],
    ...PROCESS_STATUSES.map((s) => ["killed", s] as [ProcessStatus, ProcessStatus]),
    ...PROCESS_STATUSES.map((s) => ["exited", s] as [ProcessStatus, ProcessStatus]),
  ];
  for (const [from, to] of cases) {
    await forceStatus(env, pid, from);
    const e = await rejectsCode(env.rt.kernel.transition(pid, to), "ESTATE");
    assert.match(e.message, new RegExp(`${from} -> ${to}`));
    assert.equal(await statusOf(env, pid), from);
  }
});

Deno.test("process: terminal processes cannot issue syscalls", async () => {
  await using env = await makeEnv({ files: { "a.txt": "x" } });
  for (const status of ["exited", "failed", "killed", "paused", "waiting_event"] as const) {
    const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
    assert.equal(await read(env, pid, "a.txt"), "x");
    await forceStatus(env, pid, status);
    await rejectsCode(read(env, pid, "a.txt"), "ESTATE");
    await rejectsCode(env.rt.syscall(pid, "process.self", {}), "ESTATE");
    const last = (await env.rt.kernel.store.listAudit({ actor: `pid:${pid}` })).at(-1)!;
    assert.equal(last.decision, "error");
    assert.match(last.reason, /^ESTATE/);
  }
});

Deno.test("process: exit ends the process with its code and later syscalls are ESTATE", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const r = await env.rt.syscall(pid, "process.exit", { code: 7, result: "done" });
  assert.deepEqual(r, { pid, exit_code: 7 });
  const p = await env.rt.process(pid);
  assert.equal(p.status, "exited");
  assert.equal(p.exit_code, 7);
  assert.equal(p.exit_reason, "done");
  await rejectsCode(env.rt.syscall(pid, "process.exit", { code: 0 }), "ESTATE");
  assert.equal((await env.rt.process(pid)).exit_code, 7);
  await rejectsCode(
    env.rt.syscall(await launch(env), "process.exit", { code: 256 }),
    "EINVAL",
  );
});

// ---------------------------------------------------------------- spawn

Deno.test("process: spawn needs process:spawn execute", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [WS_RW]);
  const n = await processCount(env);
  await rejectsCode(env.rt.syscall(pid, "process.spawn", { goal: "g" }), "EPERM");
  assert.equal(await processCount(env), n, "no child was created");
  const denied = await env.rt.kernel.store.listAudit({ actor: `pid:${pid}`, decision: "deny" });
  assert.equal(denied.at(-1)?.action, "process.spawn");
});

Deno.test("process: spawn inherits no authority", async () => {
  await using env = await makeEnv({ files: { "a.txt": "hello", ".env": "KEY=1" } });
  const parent = await launch(env, [
    SPAWN,
    WS_RW,
    cap("shell:*", "execute"),
    cap("human:owner", "write"),
    { resource: "filesystem:workspace:.env", rights: ["read"], effect: "deny" },
  ]);
  await env.rt.syscall(parent, "memory.put", { kind: "plan", name: "secret-plan", payload: 1 });
  const child = await spawn(env, parent, { goal: "do one thing" });

  const caps = await liveCaps(env, child);
  assert.equal(caps.length, 1, JSON.stringify(caps));
  assert.equal(caps[0].resource, `object_namespace:proc:${child}`);
  assert.equal(caps[0].issued_by, "kernel");

  await rejectsCode(read(env, child, "a.txt"), "EPERM");
  await rejectsCode(
    env.rt.syscall(child, "filesystem.write", { path: "b.txt", content: "x" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(child, "process.spawn", { goal: "g" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(child, "memory.list", { namespace: `proc:${parent}` }),
    "EPERM",
  );

  const objs = await env.rt.kernel.store.listObjects(`proc:${child}`);
  assert.equal(objs.length, 1);
  assert.equal(objs[0].kind, "goal");
  assert.deepEqual(objs[0].payload, { text: "do one thing" });

  const rec = await env.rt.process(child);
  assert.equal(rec.ppid, parent);
  assert.deepEqual(rec.lineage, [parent]);
  assert.equal(rec.origin, "spawn");
  assert.equal(rec.goal, "do one thing");
  assert.equal(rec.status, "runnable");
  assert.notEqual(rec.namespace, (await env.rt.process(parent)).namespace);
});

Deno.test("process: spawn lineage grows root first and the child inherits cwd and taint", async () => {
  await using env = await makeEnv({ files: { "sub/s.txt": "s" } });
  const root = await launch(env, [SPAWN, cap("filesystem:workspace:*", "read")], {
    policy: { labels: { "sub/s.txt": "confidential" } },
  });
  await env.rt.syscall(root, "process.chdir", { path: "sub" });
  await read(env, root, "s.txt");
  const mid = await fork(env, root, { mode: "copy" });
  const leaf = await spawn(env, mid);
  const rec = await env.rt.process(leaf);
  assert.deepEqual(rec.lineage, [root, mid]);
  assert.equal(rec.ppid, mid);
  assert.equal(rec.cwd, "sub");
  assert.equal(rec.taint, "confidential");
});

Deno.test("process: the tools argument can only narrow the tool table", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN], { tools: ["read_file", "spawn", "fork", "exit"] });
  const child = await spawn(env, parent, { tools: ["read_file", "exit"] });
  assert.deepEqual((await env.rt.process(child)).tools, ["read_file", "exit"]);
  const forked = await fork(env, parent, { mode: "copy", tools: ["read_file"] });
  assert.deepEqual((await env.rt.process(forked)).tools, ["read_file"]);
  const inherited = await spawn(env, parent);
  assert.deepEqual((await env.rt.process(inherited)).tools, ["read_file", "spawn", "fork", "exit"]);

  const n = await processCount(env);
  await rejectsCode(
    env.rt.syscall(parent, "process.spawn", { goal: "g", tools: ["read_file", "shell"] }),
    "EINVAL",
  );
  await rejectsCode(
    env.rt.syscall(parent, "process.fork", { mode: "copy", tools: ["write_file"] }),
    "EINVAL",
  );
  await rejectsCode(
    env.rt.syscall(parent, "process.spawn", { goal: "g", tools: "shell" }),
    "EINVAL",
  );
  assert.equal(await processCount(env), n);
});

// ---------------------------------------------------------------- fork modes

Deno.test("process: fork copy copies memory and delegates only delegable caps", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const parent = await launch(env, [
    SPAWN,
    WS_RW,
    { resource: "shell:git", rights: ["execute"], delegable: false },
    { resource: "shell:ls", rights: ["execute"], uses_remaining: 3 },
  ]);
  const put = await env.rt.syscall(parent, "memory.put", {
    kind: "plan",
    name: "p1",
    payload: { a: 1 },
  }) as { oid: string };
  const child = await fork(env, parent, { mode: "copy", goal: "forked" });
  assert.equal((await env.rt.process(child)).origin, "fork:copy");

  const parentCaps = await liveCaps(env, parent);
  const byResource = (r: string) => parentCaps.find((c) => c.resource === r)!;
  const got = await foreignCaps(env, child);
  assert.deepEqual(got.map((c) => c.resource).sort(), ["filesystem:workspace:*", "process:spawn"]);
  for (const c of got) {
    const from = byResource(c.resource);
    assert.equal(c.parent_cap_id, from.cap_id);
    assert.deepEqual(c.rights, from.rights);
    assert.equal(c.issued_by, `pid:${parent}`);
    assert.equal(c.delegation_depth, from.delegation_depth + 1);
    assert.equal(c.effect, "allow");
  }
  assert.ok(!got.some((c) => c.resource === "shell:git"), "non-delegable cap not delegated");
  // The limited grant was neither copied nor drained.
  assert.equal(byResource("shell:ls").uses_remaining, 3);

  assert.equal(await read(env, child, "a.txt"), "A");
  await env.rt.syscall(child, "filesystem.write", { path: "c.txt", content: "C" });
  assert.equal(await Deno.readTextFile(join(env.ws, "c.txt")), "C");

  const objs = await env.rt.kernel.store.listObjects(`proc:${child}`);
  const goal = objs.filter((o) => o.kind === "goal");
  assert.equal(goal.length, 1);
  assert.deepEqual(goal[0].payload, { text: "forked" });
  const copy = objs.find((o) => o.name === "p1")!;
  assert.ok(copy);
  assert.notEqual(copy.oid, put.oid);
  assert.deepEqual(copy.payload, { a: 1 });
  assert.deepEqual(copy.derived_from, [put.oid]);
  // The child reads its copy; the original stays out of reach.
  const viaChild = await env.rt.syscall(child, "memory.get", { oid: copy.oid }) as {
    payload: unknown;
  };
  assert.deepEqual(viaChild.payload, { a: 1 });
  await rejectsCode(env.rt.syscall(child, "memory.get", { oid: put.oid }), "EPERM");
});

Deno.test("process: fork restricted delegates only the listed capabilities", async () => {
  await using env = await makeEnv({ files: { "src/a.ts": "a", "b.txt": "b" } });
  const parent = await launch(env, [SPAWN, WS_RW, cap("shell:*", "execute")]);
  const child = await fork(env, parent, {
    mode: "restricted",
    capabilities: [cap("filesystem:workspace:src/*", "read")],
  });
  const got = await foreignCaps(env, child);
  assert.equal(got.length, 1);
  assert.equal(got[0].resource, "filesystem:workspace:src/*");
  assert.deepEqual(got[0].rights, ["read"]);
  const from = (await liveCaps(env, parent)).find((c) => c.resource === "filesystem:workspace:*")!;
  assert.equal(got[0].parent_cap_id, from.cap_id);

  assert.equal(await read(env, child, "src/a.ts"), "a");
  await rejectsCode(read(env, child, "b.txt"), "EPERM");
  await rejectsCode(
    env.rt.syscall(child, "filesystem.write", { path: "src/a.ts", content: "x" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "src/a.ts")), "a");
});

Deno.test("process: fork restricted asking for more than the parent holds is EPERM and creates no child", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN, cap("filesystem:workspace:src/*", "read")]);
  const n = await processCount(env);
  const capsBefore = (await env.rt.kernel.store.capabilitiesOf(parent)).length;
  const wider: CapabilitySpec[][] = [
    [cap("filesystem:workspace:*", "read")],
    [cap("filesystem:workspace:src/*", "read", "write")],
    [cap("shell:*", "execute")],
    // One legal and one illegal: all or nothing.
    [cap("filesystem:workspace:src/a.ts", "read"), cap("filesystem:workspace:b.txt", "read")],
  ];
  for (const capabilities of wider) {
    await rejectsCode(
      env.rt.syscall(parent, "process.fork", { mode: "restricted", capabilities }),
      "EPERM",
    );
    assert.equal(await processCount(env), n, JSON.stringify(capabilities));
  }
  await rejectsCode(
    env.rt.syscall(parent, "process.fork", {
      mode: "restricted",
      capabilities: [{ ...cap("filesystem:workspace:src/*", "read"), effect: "deny" }],
    }),
    "EPERM",
  );
  assert.equal(await processCount(env), n);
  // Nothing was granted to anyone along the way.
  assert.equal((await env.rt.kernel.store.capabilitiesOf(parent)).length, capsBefore);
  assert.equal((await env.rt.kernel.store.capabilitiesOf(n + 1)).length, 0);
});

Deno.test("process: fork speculative keeps only read and diff rights", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const parent = await launch(env, [
    SPAWN,
    cap("filesystem:workspace:*", "read", "write", "delete", "diff"),
    cap("shell:*", "execute"),
  ]);
  const child = await fork(env, parent, { mode: "speculative" });
  const got = await foreignCaps(env, child);
  assert.equal(got.length, 1, JSON.stringify(got));
  assert.deepEqual(got[0].rights, ["read", "diff"]);
  assert.equal(await read(env, child, "a.txt"), "A");
  await rejectsCode(
    env.rt.syscall(child, "filesystem.write", { path: "a.txt", content: "changed" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(child, "filesystem.delete", { path: "a.txt" }), "EPERM");
  await rejectsCode(env.rt.syscall(child, "process.spawn", { goal: "g" }), "EPERM");
  assert.equal(await Deno.readTextFile(join(env.ws, "a.txt")), "A");
  await rejectsCode(
    env.rt.syscall(parent, "process.fork", { mode: "speculative", capabilities: [] }),
    "EINVAL",
  );
});

Deno.test("process: fork worker gets listed caps only and no memory but its goal", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A", "b.txt": "B" } });
  const parent = await launch(env, [SPAWN, WS_RW]);
  await env.rt.syscall(parent, "memory.put", { kind: "plan", name: "p", payload: 1 });
  await env.rt.syscall(parent, "memory.put", { kind: "evidence", payload: 2 });
  const child = await fork(env, parent, {
    mode: "worker",
    goal: "summarize a",
    capabilities: [cap("filesystem:workspace:a.txt", "read")],
  });
  const got = await foreignCaps(env, child);
  assert.deepEqual(got.map((c) => [c.resource, c.rights]), [[
    "filesystem:workspace:a.txt",
    ["read"],
  ]]);
  assert.equal(await read(env, child, "a.txt"), "A");
  await rejectsCode(read(env, child, "b.txt"), "EPERM");
  const objs = await env.rt.kernel.store.listObjects(`proc:${child}`);
  assert.deepEqual(objs.map((o) => o.kind), ["goal"]);
  assert.deepEqual(objs[0].payload, { text: "summarize a" });
  await rejectsCode(env.rt.syscall(parent, "process.fork", { mode: "clone" }), "EINVAL");
});

// ---------------------------------------------------------------- deny and ask travel

Deno.test("process: a parent's DENY travels to every forked child", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A", ".env": "KEY=1" } });
  const denyEnv: CapabilitySpec = {
    resource: "filesystem:workspace:.env",
    rights: ["read"],
    effect: "deny",
  };
  const parent = await launch(env, [SPAWN, cap("filesystem:workspace:*", "read"), denyEnv]);
  await rejectsCode(read(env, parent, ".env"), "EPERM");
  const parentDeny = (await liveCaps(env, parent)).find((c) => c.effect === "deny")!;
  const forks: Record<string, unknown>[] = [
    { mode: "copy" },
    { mode: "speculative" },
    { mode: "restricted", capabilities: [cap("filesystem:workspace:*", "read")] },
    { mode: "worker", capabilities: [cap("filesystem:workspace:*", "read")] },
  ];
  for (const args of forks) {
    const child = await fork(env, parent, args);
    assert.equal(await read(env, child, "a.txt"), "A", String(args.mode));
    await rejectsCode(read(env, child, ".env"), "EPERM");
    const d = (await liveCaps(env, child)).filter((c) => c.effect === "deny");
    assert.equal(d.length, 1, String(args.mode));
    assert.equal(d[0].parent_cap_id, parentDeny.cap_id);
    assert.equal(d[0].resource, "filesystem:workspace:.env");
  }
  // And on down to a grandchild.
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await fork(env, child, { mode: "copy" });
  assert.equal(await read(env, grandchild, "a.txt"), "A");
  await rejectsCode(read(env, grandchild, ".env"), "EPERM");
});

Deno.test("process: a child cannot drop a propagated DENY", async () => {
  await using env = await makeEnv({ files: { ".env": "KEY=1" } });
  const parent = await launch(env, [
    SPAWN,
    cap("filesystem:workspace:*", "read"),
    { resource: "filesystem:workspace:.env", rights: ["read"], effect: "deny" },
  ]);
  const child = await fork(env, parent, { mode: "copy" });
  const childDeny = (await liveCaps(env, child)).find((c) => c.effect === "deny")!;
  const parentDeny = (await liveCaps(env, parent)).find((c) => c.effect === "deny")!;
  await rejectsCode(
    env.rt.syscall(child, "capability.revoke", { cap_id: childDeny.cap_id }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(child, "capability.revoke", { cap_id: parentDeny.cap_id }),
    "EPERM",
  );
  // Not even the parent that issued the copy may lift it.
  await rejectsCode(
    env.rt.syscall(parent, "capability.revoke", { cap_id: childDeny.cap_id }),
    "EINVAL",
  );
  await rejectsCode(
    env.rt.syscall(parent, "capability.revoke", { cap_id: parentDeny.cap_id }),
    "EPERM",
  );
  assert.equal((await env.rt.kernel.store.getCapability(childDeny.cap_id))!.status, "active");
  await rejectsCode(read(env, child, ".env"), "EPERM");
  // Dropping its own allow is fine, and the deny still stands afterwards.
  const childAllow = (await liveCaps(env, child)).find((c) =>
    c.resource === "filesystem:workspace:*"
  )!;
  await env.rt.syscall(child, "capability.revoke", { cap_id: childAllow.cap_id });
  await rejectsCode(read(env, child, ".env"), "EPERM");
  assert.equal((await env.rt.kernel.store.getCapability(childDeny.cap_id))!.status, "active");
});

Deno.test("process: a parent's ASK travels to forked children and to granted descendants", async () => {
  await using env = await makeEnv({ files: { "notes.txt": "N", "a.txt": "A" } });
  const parent = await launch(env, [
    SPAWN,
    cap("filesystem:workspace:*", "read"),
    { resource: "filesystem:workspace:notes.txt", rights: ["read"], effect: "ask" },
  ]);
  const child = await fork(env, parent, { mode: "copy" });
  assert.equal(await read(env, child, "a.txt"), "A");
  await rejectsCode(read(env, child, "notes.txt"), "EPERM");
  assert.ok(env.human.asked.some((r) => r.pid === child && r.resource.endsWith("notes.txt")));

  // capability.grant carries the ASK along too.
  const spawned = await spawn(env, parent);
  const allow = (await liveCaps(env, parent)).find((c) =>
    c.resource === "filesystem:workspace:*" && c.effect === "allow"
  )!;
  await env.rt.syscall(parent, "capability.grant", { cap_id: allow.cap_id, to: spawned });
  assert.equal(await read(env, spawned, "a.txt"), "A");
  const asked = env.human.asked.length;
  await rejectsCode(read(env, spawned, "notes.txt"), "EPERM");
  assert.equal(env.human.asked.length, asked + 1);
  assert.equal(env.human.asked.at(-1)!.pid, spawned);
});

// ---------------------------------------------------------------- grant and revoke

Deno.test("process: capability.grant goes only to descendants", async () => {
  await using env = await makeEnv({ files: { "src/a.ts": "a" } });
  const parent = await launch(env, [SPAWN, WS_RW]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await spawn(env, child);
  const sibling = await spawn(env, parent);
  const other = await launch(env, [SPAWN]);
  const pCap = (await liveCaps(env, parent)).find((c) => c.resource === "filesystem:workspace:*")!;
  const cCap = (await liveCaps(env, child)).find((c) => c.resource === "filesystem:workspace:*")!;

  // To a grandchild: fine (a descendant, not only a direct child).
  await env.rt.syscall(parent, "capability.grant", {
    cap_id: pCap.cap_id,
    to: grandchild,
    resource: "filesystem:workspace:src/*",
    rights: ["read"],
  });
  assert.equal(await read(env, grandchild, "src/a.ts"), "a");

  for (
    const [from, capId, to] of [
      [child, cCap.cap_id, parent], // upwards
      [child, cCap.cap_id, sibling], // sideways
      [parent, pCap.cap_id, parent], // to itself
      [parent, pCap.cap_id, other], // to an unrelated root
    ] as [number, string, number][]
  ) {
    await rejectsCode(
      env.rt.syscall(from, "capability.grant", { cap_id: capId, to, rights: ["read"] }),
      "EPERM",
    );
  }
  await rejectsCode(read(env, sibling, "src/a.ts"), "EPERM");
  await rejectsCode(read(env, other, "src/a.ts"), "EPERM");
  // A capability the caller does not hold cannot be granted, even to its own child.
  await rejectsCode(
    env.rt.syscall(child, "capability.grant", { cap_id: pCap.cap_id, to: grandchild }),
    "EPERM",
  );
});

Deno.test("process: capability.grant only narrows", async () => {
  await using env = await makeEnv({ files: { "src/a.ts": "a" } });
  const parent = await launch(env, [
    SPAWN,
    cap("filesystem:workspace:src/*", "read"),
    { resource: "filesystem:workspace:x.txt", rights: ["read"], delegable: false },
  ]);
  const child = await spawn(env, parent);
  const src = (await liveCaps(env, parent)).find((c) => c.resource.endsWith("src/*"))!;
  const nd = (await liveCaps(env, parent)).find((c) => c.resource.endsWith("x.txt"))!;
  const wider = [
    { resource: "filesystem:workspace:*" },
    { rights: ["read", "write"] },
    { resource: "shell:*", rights: ["execute"] },
  ];
  for (const w of wider) {
    await rejectsCode(
      env.rt.syscall(parent, "capability.grant", { cap_id: src.cap_id, to: child, ...w }),
      "EPERM",
    );
  }
  await rejectsCode(
    env.rt.syscall(parent, "capability.grant", { cap_id: nd.cap_id, to: child }),
    "EPERM",
  );
  assert.equal((await foreignCaps(env, child)).length, 0);
  const r = await env.rt.syscall(parent, "capability.grant", {
    cap_id: src.cap_id,
    to: child,
    resource: "filesystem:workspace:src/a.ts",
    delegable: false,
  }) as { cap_id: string };
  const granted = (await env.rt.kernel.store.getCapability(r.cap_id))!;
  assert.equal(granted.parent_cap_id, src.cap_id);
  assert.equal(granted.delegable, false);
  assert.equal(await read(env, child, "src/a.ts"), "a");
});

Deno.test("process: capability.grant of limited uses reserves them from the parent", async () => {
  await using env = await makeEnv({ files: { "x.txt": "X" } });
  const parent = await launch(env, [
    SPAWN,
    { resource: "filesystem:workspace:x.txt", rights: ["read"], uses_remaining: 5 },
  ]);
  const child = await spawn(env, parent);
  const lim = (await liveCaps(env, parent)).find((c) => c.resource.endsWith("x.txt"))!;
  await env.rt.syscall(parent, "capability.grant", {
    cap_id: lim.cap_id,
    to: child,
    uses_remaining: 3,
  });
  assert.equal((await env.rt.kernel.store.getCapability(lim.cap_id))!.uses_remaining, 2);
  // More than is left, or unlimited, is refused and takes nothing.
  await rejectsCode(
    env.rt.syscall(parent, "capability.grant", {
      cap_id: lim.cap_id,
      to: child,
      uses_remaining: 3,
    }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(parent, "capability.grant", { cap_id: lim.cap_id, to: child }),
    "EPERM",
  );
  assert.equal((await env.rt.kernel.store.getCapability(lim.cap_id))!.uses_remaining, 2);
  // The child gets exactly three reads.
  for (let i = 0; i < 3; i++) assert.equal(await read(env, child, "x.txt"), "X");
  await rejectsCode(read(env, child, "x.txt"), "EPERM");
  // The parent still has its remaining two.
  assert.equal(await read(env, parent, "x.txt"), "X");
  assert.equal(await read(env, parent, "x.txt"), "X");
  await rejectsCode(read(env, parent, "x.txt"), "EPERM");
});

Deno.test("process: capability.revoke cascades down the delegation tree", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const parent = await launch(env, [SPAWN, cap("filesystem:workspace:*", "read")]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await fork(env, child, { mode: "copy" });
  for (const p of [parent, child, grandchild]) assert.equal(await read(env, p, "a.txt"), "A");
  const childCap = (await liveCaps(env, child)).find((c) =>
    c.resource === "filesystem:workspace:*"
  )!;
  const gcCap = (await liveCaps(env, grandchild)).find((c) =>
    c.resource === "filesystem:workspace:*"
  )!;
  assert.equal(gcCap.parent_cap_id, childCap.cap_id);

  const r = await env.rt.syscall(parent, "capability.revoke", { cap_id: childCap.cap_id }) as {
    revoked: string[];
  };
  assert.deepEqual(r.revoked.sort(), [childCap.cap_id, gcCap.cap_id].sort());
  assert.equal((await env.rt.kernel.store.getCapability(gcCap.cap_id))!.status, "revoked");
  await rejectsCode(read(env, child, "a.txt"), "EPERM");
  await rejectsCode(read(env, grandchild, "a.txt"), "EPERM");
  assert.equal(await read(env, parent, "a.txt"), "A");
});

Deno.test("process: only the issuer may revoke a delegated capability", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const parent = await launch(env, [SPAWN, cap("filesystem:workspace:*", "read")]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await fork(env, child, { mode: "copy" });
  const sibling = await fork(env, parent, { mode: "copy" });
  const pCap = (await liveCaps(env, parent)).find((c) => c.resource === "filesystem:workspace:*")!;
  const cCap = (await liveCaps(env, child)).find((c) => c.resource === "filesystem:workspace:*")!;
  const gCap = (await liveCaps(env, grandchild)).find((c) =>
    c.resource === "filesystem:workspace:*"
  )!;
  // Not the issuer, not the holder: refused.
  await rejectsCode(
    env.rt.syscall(grandchild, "capability.revoke", { cap_id: cCap.cap_id }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(sibling, "capability.revoke", { cap_id: cCap.cap_id }), "EPERM");
  await rejectsCode(env.rt.syscall(child, "capability.revoke", { cap_id: pCap.cap_id }), "EPERM");
  await rejectsCode(env.rt.syscall(sibling, "capability.revoke", { cap_id: gCap.cap_id }), "EPERM");
  for (const c of [pCap, cCap, gCap]) {
    assert.equal((await env.rt.kernel.store.getCapability(c.cap_id))!.status, "active");
  }
  assert.equal(await read(env, grandchild, "a.txt"), "A");
  // The issuer (the child) may revoke what it gave the grandchild.
  await env.rt.syscall(child, "capability.revoke", { cap_id: gCap.cap_id });
  await rejectsCode(read(env, grandchild, "a.txt"), "EPERM");
  assert.equal(await read(env, child, "a.txt"), "A");
  await rejectsCode(
    env.rt.syscall(parent, "capability.revoke", { cap_id: "cap_nope" }),
    "ENOENT",
  );
});

// ---------------------------------------------------------------- exec

Deno.test("process: exec never grants the image's capabilities", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  await registerImage(env, {
    name: "reviewer",
    tools: ["read_file", "exit"],
    capabilities: [cap("filesystem:workspace:*", "read", "write")],
    required_capabilities: [cap("filesystem:workspace:*", "read")],
    policy: { shell: "always_allow", human_clearance: "secret" },
    budgets: { max_quanta: 1 },
  });
  const lacking = await launch(env, [cap("image:reviewer", "execute")]);
  const n = (await env.rt.kernel.store.capabilitiesOf(lacking)).length;
  await rejectsCode(env.rt.syscall(lacking, "process.exec", { image: "reviewer" }), "EPERM");
  const l = await env.rt.process(lacking);
  assert.equal(l.image, "test");
  assert.ok(l.tools.includes("spawn"));
  assert.equal((await env.rt.kernel.store.capabilitiesOf(lacking)).length, n);
  await rejectsCode(read(env, lacking, "a.txt"), "EPERM");
});

Deno.test("process: exec keeps the pid, swaps tools, keeps policy and budgets", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  await registerImage(env, {
    name: "reviewer",
    system_prompt: "review",
    tools: ["read_file", "exit"],
    capabilities: [cap("filesystem:workspace:*", "read", "write")],
    required_capabilities: [cap("filesystem:workspace:src/*", "read")],
    policy: { shell: "always_allow", human_clearance: "secret" },
    budgets: { max_quanta: 1 },
  });
  const pid = await launch(env, [
    cap("image:reviewer", "execute"),
    cap("filesystem:workspace:*", "read"),
  ], {
    policy: { shell: "always_deny", human_clearance: "normal" },
  });
  const before = await env.rt.process(pid);
  const capsBefore = await env.rt.kernel.store.capabilitiesOf(pid);
  const r = await env.rt.syscall(pid, "process.exec", { image: "reviewer" });
  assert.deepEqual(r, { pid, image: "reviewer" });
  const after = await env.rt.process(pid);
  assert.equal(after.pid, pid);
  assert.equal(after.image, "reviewer");
  assert.deepEqual(after.tools, ["read_file", "exit"]);
  assert.equal(after.system_prompt, "review");
  assert.deepEqual(after.policy, before.policy);
  assert.equal(after.policy.human_clearance, "normal");
  assert.deepEqual(after.budgets, before.budgets);
  assert.deepEqual(await env.rt.kernel.store.capabilitiesOf(pid), capsBefore);
  // The image listed write on the workspace: exec did not hand it out.
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "a.txt", content: "x" }),
    "EPERM",
  );
  assert.equal(await read(env, pid, "a.txt"), "A");
});

Deno.test("process: exec needs image execute and a registered image", async () => {
  await using env = await makeEnv();
  await registerImage(env, { name: "plain", tools: ["exit"] });
  const without = await launch(env, []);
  await rejectsCode(env.rt.syscall(without, "process.exec", { image: "plain" }), "EPERM");
  assert.equal((await env.rt.process(without)).image, "test");
  const other = await launch(env, [cap("image:other", "execute")]);
  await rejectsCode(env.rt.syscall(other, "process.exec", { image: "plain" }), "EPERM");
  const wild = await launch(env, [cap("image:*", "execute")]);
  await rejectsCode(env.rt.syscall(wild, "process.exec", { image: "missing" }), "ENOENT");
  await env.rt.syscall(wild, "process.exec", { image: "plain" });
  assert.equal((await env.rt.process(wild)).image, "plain");
});

Deno.test("process: exec required capabilities are not satisfied by a DENY, an ASK or another right", async () => {
  await using env = await makeEnv();
  await registerImage(env, {
    name: "needs-shell",
    tools: ["exit"],
    required_capabilities: [cap("shell:git", "execute")],
  });
  for (
    const held of [
      { resource: "shell:git", rights: ["execute"], effect: "deny" },
      { resource: "shell:git", rights: ["execute"], effect: "ask" },
      { resource: "shell:*", rights: ["read"] },
    ] as CapabilitySpec[]
  ) {
    const pid = await launch(env, [cap("image:needs-shell", "execute"), held]);
    await rejectsCode(env.rt.syscall(pid, "process.exec", { image: "needs-shell" }), "EPERM");
    assert.equal((await env.rt.process(pid)).image, "test");
  }
  const ok = await launch(env, [cap("image:needs-shell", "execute"), cap("shell:*", "execute")]);
  await env.rt.syscall(ok, "process.exec", { image: "needs-shell" });
  assert.equal((await env.rt.process(ok)).image, "needs-shell");
});

// ---------------------------------------------------------------- wait

Deno.test("process: wait reaches only direct children and reports how they ended", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await spawn(env, child);
  const stranger = await launch(env);

  await rejectsCode(env.rt.syscall(parent, "process.wait", { pid: grandchild }), "EPERM");
  await rejectsCode(env.rt.syscall(parent, "process.wait", { pid: stranger }), "EPERM");
  await rejectsCode(env.rt.syscall(child, "process.wait", { pid: parent }), "EPERM");
  await rejectsCode(env.rt.syscall(parent, "process.wait", { pid: 9999 }), "EPERM");

  await rejectsCode(env.rt.syscall(parent, "process.wait", { pid: child }), "EAGAIN");
  await env.rt.syscall(child, "process.exit", { code: 5, result: "five" });
  assert.deepEqual(await env.rt.syscall(parent, "process.wait", { pid: child }), {
    pid: child,
    status: "exited",
    exit_code: 5,
    result: "five",
  });

  await env.rt.syscall(grandchild, "process.exit", { code: 0 });
  // The grandchild ended, but it is still not the root's to wait for.
  await rejectsCode(env.rt.syscall(parent, "process.wait", { pid: grandchild }), "EPERM");
});

Deno.test("process: wait reports killed and failed children", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const a = await spawn(env, parent);
  const b = await spawn(env, parent);
  await env.rt.syscall(parent, "process.signal", { pid: a, signal: "terminate" });
  await env.rt.kernel.transition(b, "failed", { exit_code: 1, exit_reason: "boom" });
  const wa = await env.rt.syscall(parent, "process.wait", { pid: a }) as Record<string, unknown>;
  assert.equal(wa.status, "killed");
  assert.equal(wa.result, "terminated");
  const wb = await env.rt.syscall(parent, "process.wait", { pid: b }) as Record<string, unknown>;
  assert.deepEqual(wb, { pid: b, status: "failed", exit_code: 1, result: "boom" });
});

Deno.test("process: a child ending wakes a parent blocked in waiting_event", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await spawn(env, parent);
  await forceStatus(env, parent, "waiting_event");
  await env.rt.syscall(child, "process.exit", { code: 0 });
  assert.equal(await statusOf(env, parent), "runnable");
  // A paused parent is not woken by it.
  const child2 = await spawn(env, parent);
  await forceStatus(env, parent, "paused");
  await env.rt.syscall(child2, "process.exit", { code: 0 });
  assert.equal(await statusOf(env, parent), "paused");
});

// ---------------------------------------------------------------- signal

Deno.test("process: signals reach direct children only", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await spawn(env, child);
  const sibling = await spawn(env, parent);
  const stranger = await launch(env);
  const cases: [number, number][] = [
    [parent, grandchild],
    [child, parent],
    [sibling, child],
    [parent, stranger],
    [parent, parent],
  ];
  for (const [from, to] of cases) {
    for (const signal of ["pause", "terminate", "cancel"]) {
      await rejectsCode(env.rt.syscall(from, "process.signal", { pid: to, signal }), "EPERM");
      assert.equal(await statusOf(env, to), "runnable", `${from} -> ${to} ${signal}`);
    }
  }
  const denials = await env.rt.kernel.store.listAudit({
    action: "process.signal",
    decision: "deny",
  });
  assert.equal(denials.length, cases.length * 3);
  // The direct parent can.
  await env.rt.syscall(child, "process.signal", { pid: grandchild, signal: "terminate" });
  assert.equal(await statusOf(env, grandchild), "killed");
});

Deno.test("process: pause, resume and terminate move the child's status", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await spawn(env, parent);
  const sig = (signal: string) => env.rt.syscall(parent, "process.signal", { pid: child, signal });
  await sig("pause");
  assert.equal(await statusOf(env, child), "paused");
  await rejectsCode(sig("pause"), "ESTATE");
  await rejectsCode(env.rt.syscall(child, "process.self", {}), "ESTATE");
  await sig("resume");
  assert.equal(await statusOf(env, child), "runnable");
  await rejectsCode(sig("resume"), "ESTATE");
  await sig("pause");
  await sig("terminate");
  const rec = await env.rt.process(child);
  assert.equal(rec.status, "killed");
  assert.equal(rec.exit_reason, "terminated");
  for (const s of ["pause", "resume", "cancel", "terminate"]) {
    await rejectsCode(sig(s), "ESTATE");
    assert.equal(await statusOf(env, child), "killed");
  }
  await rejectsCode(sig("stop"), "EINVAL");
  const signals = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "process.signal"
  );
  assert.deepEqual(signals.map((e) => (e.payload as { signal: string }).signal), [
    "pause",
    "resume",
    "pause",
    "terminate",
  ]);
});

Deno.test("process: cancel kills an idle child now and a running child at its next quantum", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const idle = await spawn(env, parent);
  await env.rt.syscall(parent, "process.signal", { pid: idle, signal: "cancel" });
  assert.equal(await statusOf(env, idle), "killed");
  assert.equal((await env.rt.process(idle)).exit_reason, "cancelled");

  const busy = await spawn(env, parent, {
    script: { steps: [{ tool: "put_object", args: { kind: "observation", payload: 1 } }] },
  });
  await forceStatus(env, busy, "running");
  await env.rt.syscall(parent, "process.signal", { pid: busy, signal: "cancel" });
  let rec = await env.rt.process(busy);
  assert.equal(rec.status, "running", "a running child is not yanked mid-quantum");
  assert.equal(rec.cancel_requested, true);
  await env.rt.kernel.transition(busy, "runnable");
  await env.rt.runUntilIdle();
  rec = await env.rt.process(busy);
  assert.equal(rec.status, "killed");
  assert.equal(rec.exit_reason, "cancelled");
  assert.equal((await env.rt.steps(busy)).length, 0, "no step ran after the cancel");
});

// ---------------------------------------------------------------- mailbox

Deno.test("process: messages go only to the parent or a child", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await fork(env, parent, { mode: "copy" });
  const grandchild = await spawn(env, child);
  const sibling = await spawn(env, parent);
  const stranger = await launch(env);
  await env.rt.syscall(child, "process.send", { pid: parent, body: "up" });
  await env.rt.syscall(parent, "process.send", { pid: child, body: "down" });
  await env.rt.syscall(grandchild, "process.send", { pid: child, body: "up2" });
  for (
    const [from, to] of [
      [child, sibling],
      [parent, grandchild],
      [grandchild, parent],
      [stranger, parent],
      [parent, stranger],
      [parent, 9999],
    ]
  ) {
    await rejectsCode(env.rt.syscall(from, "process.send", { pid: to, body: "x" }), "EPERM");
  }
  const toParent = await env.rt.syscall(parent, "process.recv", {}) as { body: unknown }[];
  assert.deepEqual(toParent.map((m) => m.body), ["up"]);
  const toChild = await env.rt.syscall(child, "process.recv", {}) as { body: unknown }[];
  assert.deepEqual(toChild.map((m) => m.body), ["down", "up2"]);
  assert.deepEqual(await env.rt.syscall(sibling, "process.recv", {}), []);
  assert.deepEqual(await env.rt.syscall(stranger, "process.recv", {}), []);

  await env.rt.syscall(sibling, "process.exit", {});
  await rejectsCode(env.rt.syscall(parent, "process.send", { pid: sibling, body: "x" }), "ESTATE");
});

Deno.test("process: interrupts are delivered before normal messages", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN]);
  const child = await spawn(env, parent);
  const send = (body: string, kind?: string) =>
    env.rt.syscall(parent, "process.send", { pid: child, body, ...(kind ? { kind } : {}) });
  await send("n1");
  await send("i1", "interrupt");
  await send("n2", "normal");
  await send("i2", "interrupt");
  await rejectsCode(send("x", "urgent"), "EINVAL");
  const first = await env.rt.syscall(child, "process.recv", { limit: 3 }) as {
    body: string;
    kind: string;
    from: number;
  }[];
  assert.deepEqual(first.map((m) => m.body), ["i1", "i2", "n1"]);
  assert.deepEqual(first.map((m) => m.kind), ["interrupt", "interrupt", "normal"]);
  assert.ok(first.every((m) => m.from === parent));
  const rest = await env.rt.syscall(child, "process.recv", {}) as { body: string }[];
  assert.deepEqual(rest.map((m) => m.body), ["n2"]);
  assert.deepEqual(await env.rt.syscall(child, "process.recv", {}), []);
});

Deno.test("process: a message's label raises the receiver's taint", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "s3cr3t", "out.txt": "" } });
  const parent = await launch(env, [SPAWN, cap("filesystem:workspace:*", "read")], {
    policy: { labels: { "secret.txt": "secret" } },
  });
  const child = await fork(env, parent, { mode: "worker", capabilities: [] });
  assert.equal((await env.rt.process(child)).taint, "public");
  assert.equal(await read(env, parent, "secret.txt"), "s3cr3t");
  assert.equal((await env.rt.process(parent)).taint, "secret");
  await env.rt.syscall(parent, "process.send", { pid: child, body: { leaked: "s3cr3t" } });
  // Queued, not yet read: no taint.
  assert.equal((await env.rt.process(child)).taint, "public");
  const got = await env.rt.syscall(child, "process.recv", {}) as { label: string }[];
  assert.equal(got[0].label, "secret");
  assert.equal((await env.rt.process(child)).taint, "secret");
  // And it follows into what the child writes.
  const put = await env.rt.syscall(child, "memory.put", {
    kind: "observation",
    payload: 1,
    label: "normal",
  }) as { label: string };
  assert.equal(put.label, "secret");
});

// ---------------------------------------------------------------- chdir

Deno.test("process: chdir stays inside the workspace", async () => {
  await using env = await makeEnv({ files: { "sub/inner.txt": "in", "top.txt": "top" } });
  await Deno.symlink(env.root, join(env.ws, "escape"));
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  assert.deepEqual(await env.rt.syscall(pid, "process.chdir", { path: "sub" }), { cwd: "sub" });
  assert.equal((await env.rt.process(pid)).cwd, "sub");
  assert.equal(await read(env, pid, "inner.txt"), "in");
  assert.equal(await read(env, pid, "../top.txt"), "top");
  for (const path of ["../..", "..//..", "/", env.root, "../escape"]) {
    await rejectsCode(env.rt.syscall(pid, "process.chdir", { path }), "EPERM");
    assert.equal((await env.rt.process(pid)).cwd, "sub", path);
  }
  await rejectsCode(env.rt.syscall(pid, "process.chdir", { path: "inner.txt" }), "EINVAL");
  await rejectsCode(env.rt.syscall(pid, "process.chdir", { path: "nope" }), "ENOENT");
  await env.rt.syscall(pid, "process.chdir", { path: ".." });
  assert.equal((await env.rt.process(pid)).cwd, ".");
});

Deno.test("process: chdir needs read on the directory", async () => {
  await using env = await makeEnv({ files: { "sub/inner.txt": "in", "other/o.txt": "o" } });
  const pid = await launch(env, [cap("filesystem:workspace:sub", "read")]);
  await rejectsCode(env.rt.syscall(pid, "process.chdir", { path: "other" }), "EPERM");
  assert.equal((await env.rt.process(pid)).cwd, ".");
  await env.rt.syscall(pid, "process.chdir", { path: "sub" });
  assert.equal((await env.rt.process(pid)).cwd, "sub");
  // A cwd is not a capability: files below still need their own grant.
  await rejectsCode(read(env, pid, "inner.txt"), "EPERM");
});

Deno.test("process: a copy-forked child of a scripted parent runs its own steps", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [SPAWN], {
    tools: ["put_object", "fork", "wait", "exit"],
    script: {
      steps: [
        { tool: "put_object", args: { kind: "plan", payload: "p" } },
        {
          tool: "fork",
          args: {
            mode: "copy",
            script: { steps: [{ tool: "put_object", args: { kind: "evidence", payload: "c" } }] },
          },
        },
      ],
    },
  });
  await env.rt.runUntilIdle();
  const child = parent + 1;
  const rec = await env.rt.process(child);
  assert.equal(rec.ppid, parent);
  assert.equal(rec.status, "exited", `${rec.exit_reason}`);
  assert.equal(rec.exit_code, 0);
  const steps = await env.rt.steps(child);
  assert.deepEqual(steps.map((s) => [s.step, s.tool, s.ok]), [[0, "put_object", true]]);
  // The parent's own history was copied as memory, not as the child's steps.
  assert.deepEqual((await env.rt.steps(parent)).map((s) => s.tool), ["put_object", "fork"]);
  const copied = (await env.rt.kernel.store.listObjects(rec.namespace)).filter((o) =>
    o.kind === "tool_result" && o.created_by === parent
  );
  assert.equal(copied.length, 1);
  assert.equal((copied[0].payload as { tool: string }).tool, "put_object");
});

Deno.test("process: a refused chdir names, in its audit record, the path it was asked for", async () => {
  await using env = await makeEnv({ files: { "src/a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  await rejectsCode(env.rt.syscall(pid, "process.chdir", { path: "../.." }), "EPERM");
  assert.equal((await env.rt.process(pid)).cwd, ".");
  const [rec] = await env.rt.kernel.store.listAudit({ action: "process.chdir" });
  assert.equal(rec.decision, "deny");
  assert.equal(rec.target, "filesystem:workspace:../..");
});

Deno.test("process: a use-limited delegation from an unlimited capability gets exactly its uses", async () => {
  await using env = await makeEnv({ files: { "r/.keep": "" } });
  const pid = await launch(env, [
    cap("process:spawn", "execute"),
    cap("filesystem:workspace:r/*", "read", "write"),
  ]);
  const child = await env.rt.syscall(pid, "process.fork", {
    mode: "restricted",
    capabilities: [{ resource: "filesystem:workspace:r/*", rights: ["write"], uses_remaining: 1 }],
  }) as { pid: number };
  await env.rt.syscall(child.pid, "filesystem.write", { path: "r/one.txt", content: "1" });
  await rejectsCode(
    env.rt.syscall(child.pid, "filesystem.write", { path: "r/two.txt", content: "2" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "r/one.txt")), "1");
  await assert.rejects(Deno.stat(join(env.ws, "r/two.txt")));
  // The parent's own capability is untouched: still unlimited.
  await env.rt.syscall(pid, "filesystem.write", { path: "r/three.txt", content: "3" });
});

/** Every process of the store's total use of `counter`. */
async function treeUsage(env: Env, counter: "syscalls" | "quanta" | "store_bytes") {
  let n = 0;
  for (const p of await env.rt.kernel.store.listProcesses()) n += p.usage[counter] ?? 0;
  return n;
}

/** A failed step's error. */
function errorOf(s: { ok: boolean }): { code: string; message: string } {
  assert.equal(s.ok, false);
  return (s as unknown as { error: { code: string; message: string } }).error;
}

const putStep = (name: string, size = 10) => ({
  tool: "put_object",
  args: { kind: "observation", name, payload: { pad: "x".repeat(size) } },
});

Deno.test("process: a fork bomb runs out of its root's budgets: the tree does no more than the host gave the root", async () => {
  await using env = await makeEnv();
  // Each child would do 50 syscalls; the root may do 60 in all.
  const child = { steps: Array.from({ length: 50 }, (_, i) => putStep(`c${i}`)) };
  const root = await launch(env, [SPAWN], {
    script: {
      steps: Array.from(
        { length: 30 },
        () => ({ tool: "spawn", args: { goal: "g", script: child } }),
      ),
    },
    budgets: { max_quanta: 10_000, max_wall_ms: null, max_syscalls: 60 },
  });
  await env.rt.runUntilIdle();
  const all = await env.rt.kernel.store.listProcesses();
  assert.ok(all.length > 1, "no child ran");
  // Before, every child got the root's 60 syscalls anew: 30 children, 1,530 syscalls.
  const used = await treeUsage(env, "syscalls");
  assert.ok(used <= 60, `the tree issued ${used} syscalls against the root's 60`);
  const steps = await env.rt.steps(root);
  const refused = steps.filter((s) => !s.ok);
  assert.ok(refused.length > 0, "every spawn went through");
  assert.match(errorOf(refused[0]).message, /budgets\.max_syscalls: \d+ left/);
  assert.equal(errorOf(refused[0]).code, "ELIMIT");
});

Deno.test("process: max_store_bytes bounds what a process adds to the store, refused before anything is written", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [], {
    script: { steps: [putStep("a", 4000), putStep("b", 4000), putStep("c", 4000)] },
    budgets: { max_store_bytes: 10_000 },
  });
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(pid);
  assert.deepEqual(steps.map((s) => s.ok), [true, true, false]);
  assert.equal(errorOf(steps[2]).code, "ELIMIT");
  assert.match(errorOf(steps[2]).message, /max_store_bytes 10000/);
  const names = (await env.rt.kernel.store.listObjects(`proc:${pid}`))
    .filter((o) => o.kind === "observation").map((o) => o.name);
  assert.deepEqual(names, ["a", "b"]);
  // A bad budget is named.
  await rejectsCode(launch(env, [], { budgets: { max_store_bytes: 0 } }), "EINVAL");
});

Deno.test("process: a child's budgets come out of its parent's and what it leaves comes back when the parent waits", async () => {
  await using env = await makeEnv();
  const child = { steps: [putStep("only"), { tool: "exit", args: { code: 0 } }] };
  const parent = await launch(env, [SPAWN], {
    script: {
      steps: [
        { tool: "spawn", args: { goal: "g", script: child, budgets: { max_syscalls: 40 } } },
        { tool: "wait", args: { pid: 2 } },
        { tool: "spawn", args: { goal: "g", script: child, budgets: { max_syscalls: 1000 } } },
      ],
    },
    budgets: { max_quanta: 10_000, max_wall_ms: null, max_syscalls: 100 },
  });
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(parent);
  assert.equal(steps[0].ok, true);
  assert.equal((await env.rt.process(2)).budgets.max_syscalls, 40);
  assert.equal(steps[1].ok, true);
  // The child used 2 of its 40 (put_object, exit): 38 came back to the parent.
  const p = await env.rt.process(parent);
  assert.equal(p.budgets.max_syscalls, 100 - 40 + 38);
  // More than the parent has left is refused, naming what is left.
  assert.equal(steps[2].ok, false);
  assert.equal(errorOf(steps[2]).code, "ELIMIT");
  assert.match(errorOf(steps[2]).message, /max_syscalls: 1000 asked, \d+ left to give/);
  // Waiting again gives nothing back twice.
  assert.equal((await env.rt.process(2)).budgets_returned, true);
});

Deno.test("process: spawns, waits and writes in flight together each take budgets from what the others left", async () => {
  // Twenty spawns at once (a JIT tool's Promise.all): each carved from the same
  // limits, they used to give the children 800 of a root's 100 syscalls.
  {
    await using env = await makeEnv();
    const root = await launch(env, [SPAWN], { budgets: { max_syscalls: 100 } });
    const spawned = await Promise.allSettled(
      Array.from({ length: 20 }, () => env.rt.syscall(root, "process.spawn", { goal: "g" })),
    );
    let total = (await env.rt.process(root)).budgets.max_syscalls!;
    for (const r of spawned) {
      if (r.status === "fulfilled") {
        total += (await env.rt.process((r.value as { pid: number }).pid)).budgets.max_syscalls!;
      } else assert.equal((r.reason as { code?: string }).code, "ELIMIT", String(r.reason));
    }
    assert.ok(total <= 100, `the tree holds ${total} syscalls of the root's 100`);
  }
  // A wait beside a spawn: the wait used to write back limits from before the spawn's carve.
  {
    await using env = await makeEnv();
    const root = await launch(env, [SPAWN], { budgets: { max_syscalls: 1000 } });
    const { pid: first } = await env.rt.syscall(root, "process.spawn", {
      goal: "a",
      budgets: { max_syscalls: 10 },
    }) as { pid: number };
    await env.rt.syscall(first, "process.exit", {});
    const [, second] = await Promise.all([
      env.rt.syscall(root, "process.wait", { pid: first }),
      env.rt.syscall(root, "process.spawn", { goal: "b", budgets: { max_syscalls: 400 } }),
    ]) as [unknown, { pid: number }];
    const r = await env.rt.process(root);
    const c1 = await env.rt.process(first);
    const c2 = await env.rt.process(second.pid);
    const total = r.budgets.max_syscalls! + c1.usage.syscalls + c2.budgets.max_syscalls!;
    assert.ok(total <= 1000, `the tree holds ${total} syscalls of the root's 1000`);
  }
  // A write beside a spawn checks the limit as the spawn left it.
  {
    await using env = await makeEnv();
    const root = await launch(env, [SPAWN], { budgets: { max_store_bytes: 1_000_000 } });
    const [s, p] = await Promise.allSettled([
      env.rt.syscall(root, "process.spawn", { goal: "b", budgets: { max_store_bytes: 900_000 } }),
      env.rt.syscall(root, "memory.put", { kind: "evidence", payload: "x".repeat(800_000) }),
    ]);
    assert.ok(s.status === "rejected" || p.status === "rejected", "both went through");
    await env.rt.kernel.flushUsage();
    const r = await env.rt.process(root);
    assert.ok((r.usage.store_bytes ?? 0) <= r.budgets.max_store_bytes!);
  }
});

Deno.test("process: max_store_bytes counts UTF-8 bytes, step results included", async () => {
  await using env = await makeEnv();
  // 100,000 euro signs are 300,000 bytes stored, not 100,000.
  const a = await launch(env, [], { budgets: { max_store_bytes: 110_000 } });
  await rejectsCode(
    env.rt.syscall(a, "memory.put", { kind: "evidence", payload: "€".repeat(100_000) }),
    "ELIMIT",
  );
  // Each step's result is stored too: reading a big object over and over used to add
  // it to the store every step, uncounted.
  const b = await launch(env, [], {
    script: {
      steps: [
        putStep("big", 250_000),
        ...Array.from({ length: 30 }, () => ({
          tool: "get_object",
          args: { name: "big" },
        })),
      ],
    },
    budgets: { max_store_bytes: 600_000 },
  });
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(b);
  // The first read's result fits; every later one is not kept (its step says so).
  assert.deepEqual(steps.slice(0, 3).map((s) => s.ok), [true, true, false]);
  assert.match(errorOf(steps[2]).message, /not kept: over max_store_bytes 600000/);
  const p = await env.rt.process(b);
  assert.ok((p.usage.store_bytes ?? 0) <= 600_000, `${p.usage.store_bytes} bytes stored`);
});

Deno.test("process: image.register counts against max_store_bytes", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("image:*", "write")], {
    budgets: { max_store_bytes: 10_000 },
  });
  const image = { name: "big", tools: [], system_prompt: "p".repeat(100_000) };
  await rejectsCode(env.rt.syscall(pid, "image.register", { image }), "ELIMIT");
  assert.equal((await env.rt.kernel.store.listImages()).some((i) => i.name === "big"), false);
});

Deno.test("process: what an ASK and an exit store count against max_store_bytes", async () => {
  await using env = await makeEnv();
  // A request keeps the arguments it asks about: 2 MB of them over a 1,000-byte budget
  // used to be stored five times over, each denied.
  const asker = await launch(env, [{
    resource: "filesystem:workspace:big.txt",
    rights: ["write"],
    effect: "ask",
  }], { budgets: { max_store_bytes: 1000 } });
  await rejectsCode(
    env.rt.syscall(asker, "filesystem.write", { path: "big.txt", content: "x".repeat(2_000_000) }),
    "ELIMIT",
  );
  assert.deepEqual(await env.rt.humanRequests(), []);
  // An exit's result is kept only within the budget; the process ends either way.
  const exiter = await launch(env, [], { budgets: { max_store_bytes: 1000 } });
  await env.rt.syscall(exiter, "process.exit", { code: 0, result: "r".repeat(50_000) });
  const p = await env.rt.process(exiter);
  assert.equal(p.status, "exited");
  assert.match(p.exit_reason!, /a result of 50000 bytes was dropped: over max_store_bytes/);
});
