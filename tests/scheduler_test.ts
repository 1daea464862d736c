/**
 * The scheduler with the scripted model: round-robin quanta, runUntilIdle
 * limits, per-process budgets, the tool table, model-level exit, waiting on a
 * child, durable model position across a restart, and crash recovery.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import type { StepResult } from "../host/scheduler.ts";
import { HostClock, HostFileSystem } from "../runtime/providers/host.ts";
import { ScriptedModel } from "../runtime/providers/scripted.ts";
import type { ModelContext, ModelProvider } from "../runtime/providers/types.ts";
import {
  cap,
  commitsSucceedAgain,
  type Env,
  expireLeases,
  failCommitsWithMark,
  launch,
  libos,
  makeEnv,
  rawRows,
  rejectsCode,
  startFixture,
} from "./_helpers.ts";
import { ON_PG, SQLITE_ONLY } from "./_pg.ts";

// ---------------------------------------------------------------- local helpers

function putStep(name: string): { tool: string; args: Record<string, unknown> } {
  return { tool: "put_object", args: { kind: "observation", name, payload: { name } } };
}

function putSteps(prefix: string, n: number) {
  return Array.from({ length: n }, (_, i) => putStep(`${prefix}${i}`));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Names of the objects a step created (from put_object results), in step order. */
function summary(steps: StepResult[]): [number, string, boolean][] {
  return steps.map((s) => [s.step, s.tool, s.ok]);
}

async function namedObjects(env: Env | Runtime, pid: number): Promise<string[]> {
  const rt = env instanceof Runtime ? env : env.rt;
  const proc = await rt.process(pid);
  return (await rt.kernel.store.listObjects(proc.namespace))
    .filter((o) => o.kind === "observation")
    .map((o) => o.name ?? "");
}

async function auditActors(rt: Runtime, action: string): Promise<string[]> {
  return (await rt.kernel.store.listAudit({ action })).map((r) => r.actor);
}

/** The actors of `pids` in the order of their first `memory.put` (the first round's order). */
async function firstServed(env: Env, pids: number[]): Promise<string[]> {
  const seen = [...new Set(await auditActors(env.rt, "memory.put"))];
  assert.deepEqual([...seen].sort(), pids.map((p) => `pid:${p}`).sort());
  return seen;
}

// ---------------------------------------------------------------- round robin

Deno.test("scheduler: round-robin interleaves two processes step by step", async () => {
  // The order of quanta across processes is what is checked: one slot.
  await using env = await makeEnv({ concurrency: 1 });
  const a = await launch(env, [], { script: { steps: putSteps("a", 3) } });
  const b = await launch(env, [], { script: { steps: putSteps("b", 3) } });
  const report = await env.rt.runUntilIdle();
  assert.equal(report.idle, true);
  // Each process: 3 model steps + 3 tool steps + 1 exit step.
  assert.equal(report.quanta, 14);
  // Which starts is the store's choice (pid order on SQLite; a fleet takes never-run
  // processes newest first); from then on they alternate.
  const [X, Y] = await firstServed(env, [a, b]);
  assert.deepEqual(await auditActors(env.rt, "memory.put"), [X, Y, X, Y, X, Y]);
  assert.deepEqual(await auditActors(env.rt, "process.exit"), [X, Y]);
  for (const [pid, p] of [[a, "a"], [b, "b"]] as const) {
    const rec = await env.rt.process(pid);
    assert.equal(rec.status, "exited");
    assert.equal(rec.exit_code, 0);
    assert.deepEqual(summary(await env.rt.steps(pid)), [
      [0, "put_object", true],
      [1, "put_object", true],
      [2, "put_object", true],
    ]);
    assert.deepEqual(await namedObjects(env, pid), [`${p}0`, `${p}1`, `${p}2`]);
  }
});

Deno.test("scheduler: round-robin gives three processes of different lengths fair turns", async () => {
  // The order of quanta across processes is what is checked: one slot.
  await using env = await makeEnv({ concurrency: 1 });
  const a = await launch(env, [], { script: { steps: putSteps("a", 1) } });
  const b = await launch(env, [], { script: { steps: putSteps("b", 3) } });
  const c = await launch(env, [], { script: { steps: putSteps("c", 2) } });
  await env.rt.runUntilIdle();
  // Every round, each process still running gets one turn, in the first round's order.
  const order = await firstServed(env, [a, b, c]);
  const steps = new Map([[`pid:${a}`, 1], [`pid:${b}`, 3], [`pid:${c}`, 2]]);
  const expected = [0, 1, 2].flatMap((round) => order.filter((p) => steps.get(p)! > round));
  assert.deepEqual(await auditActors(env.rt, "memory.put"), expected);
  for (const pid of [a, b, c]) assert.equal((await env.rt.process(pid)).status, "exited");
});

Deno.test("scheduler: runUntilIdle(maxQuanta) stops after that many quanta", async () => {
  // The order of quanta across processes is what is checked: one slot.
  await using env = await makeEnv({ concurrency: 1 });
  const a = await launch(env, [], { script: { steps: putSteps("a", 3) } });
  const b = await launch(env, [], { script: { steps: putSteps("b", 3) } });
  assert.deepEqual(await env.rt.runUntilIdle(5), { quanta: 5, idle: false });
  // Quanta 1-4 were model, model, tool, tool: one object each so far; quantum 5 decided
  // the next action of the process served first (x).
  const [X, Y] = await firstServed(env, [a, b]);
  const [x, y] = X === `pid:${a}` ? [[a, "a"], [b, "b"]] as const : [[b, "b"], [a, "a"]] as const;
  assert.deepEqual(await namedObjects(env, x[0]), [`${x[1]}0`]);
  assert.deepEqual(await namedObjects(env, y[0]), [`${y[1]}0`]);
  assert.deepEqual((await env.rt.process(x[0])).pending?.args.name, `${x[1]}1`);
  assert.equal((await env.rt.process(y[0])).pending, null);
  assert.deepEqual(await env.rt.runUntilIdle(1), { quanta: 1, idle: false });
  assert.deepEqual(await env.rt.runUntilIdle(), { quanta: 8, idle: true });
  assert.deepEqual(await env.rt.runUntilIdle(), { quanta: 0, idle: true });
  assert.deepEqual(await auditActors(env.rt, "memory.put"), [X, Y, X, Y, X, Y]);
});

Deno.test("scheduler: a process without a model exits on its first quantum", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  assert.deepEqual(await env.rt.runUntilIdle(), { quanta: 1, idle: true });
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "exited");
  assert.equal(rec.exit_code, 0);
  assert.deepEqual(await env.rt.steps(pid), []);
});

// ---------------------------------------------------------------- budgets

Deno.test("scheduler: max_quanta stops a busy process while another still completes", async () => {
  await using env = await makeEnv();
  const busy = await launch(env, [], {
    name: "busy",
    budgets: { max_quanta: 5 },
    script: { steps: putSteps("x", 20) },
  });
  const other = await launch(env, [], { name: "other", script: { steps: putSteps("o", 4) } });
  const report = await env.rt.runUntilIdle();
  assert.equal(report.idle, true);

  const b = await env.rt.process(busy);
  assert.equal(b.status, "failed");
  assert.equal(b.exit_code, 1);
  assert.match(b.exit_reason ?? "", /budget exhausted: max_quanta 5/);
  assert.equal(b.usage.quanta, 5);
  // Five quanta: model, tool, model, tool, model.
  assert.deepEqual(await namedObjects(env, busy), ["x0", "x1"]);

  const o = await env.rt.process(other);
  assert.equal(o.status, "exited");
  assert.equal(o.exit_code, 0);
  assert.deepEqual(await namedObjects(env, other), ["o0", "o1", "o2", "o3"]);

  const exhausted = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "budget.exhausted"
  );
  assert.deepEqual(exhausted.map((e) => e.target), [`pid:${busy}`]);
  const fails = await env.rt.kernel.store.listAudit({ action: "process.fail" });
  assert.equal(fails.length, 1);
  assert.equal(fails[0].actor, "scheduler");
  assert.equal(fails[0].target, `process:${busy}`);
});

Deno.test("scheduler: max_syscalls stops a process after its last allowed syscall", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [], {
    budgets: { max_syscalls: 2 },
    script: { steps: putSteps("s", 4) },
  });
  const other = await launch(env, [], { name: "other", script: { steps: putSteps("o", 3) } });
  await env.rt.runUntilIdle();
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "failed");
  assert.match(rec.exit_reason ?? "", /budget exhausted: max_syscalls 2/);
  assert.equal(rec.usage.syscalls, 2);
  // Stopped at the quantum boundary after the second syscall: the third step never started.
  assert.deepEqual(summary(await env.rt.steps(pid)), [
    [0, "put_object", true],
    [1, "put_object", true],
  ]);
  assert.deepEqual(await namedObjects(env, pid), ["s0", "s1"]);
  assert.equal((await env.rt.process(other)).status, "exited");
  assert.deepEqual(await namedObjects(env, other), ["o0", "o1", "o2"]);

  // Issued directly, the syscall past the budget is refused with ELIMIT.
  const direct = await launch(env, [], { name: "direct", budgets: { max_syscalls: 2 } });
  await env.rt.syscall(direct, "process.self", {});
  await env.rt.syscall(direct, "process.self", {});
  await rejectsCode(env.rt.syscall(direct, "process.self", {}), "ELIMIT");
  await rejectsCode(env.rt.syscall(direct, "memory.put", { kind: "plan", payload: 1 }), "ELIMIT");
  assert.deepEqual(await namedObjects(env, direct), []);
  assert.equal((await env.rt.kernel.store.listObjects(`proc:${direct}`)).length, 0);
});

// ---------------------------------------------------------------- tool table

Deno.test("scheduler: a tool outside the tool table is ENOENT and does not run", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("filesystem:workspace:*", "read", "write")], {
    tools: ["put_object", "exit"],
    script: {
      steps: [
        { tool: "write_file", args: { path: "x.txt", content: "x" } },
        { tool: "frobnicate", args: {} },
        { tool: "constructor", args: {} },
        { tool: "filesystem.write", args: { path: "y.txt", content: "y" } },
        putStep("after"),
      ],
    },
  });
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(pid);
  assert.deepEqual(summary(steps), [
    [0, "write_file", false],
    [1, "frobnicate", false],
    [2, "constructor", false],
    [3, "filesystem.write", false],
    [4, "put_object", true],
  ]);
  for (const s of steps.slice(0, 4)) {
    assert.ok(!s.ok && s.error.code === "ENOENT", JSON.stringify(s));
  }
  assert.equal(await exists(join(env.ws, "x.txt")), false);
  assert.equal(await exists(join(env.ws, "y.txt")), false);
  assert.deepEqual(await auditActors(env.rt, "filesystem.write"), []);
  const calls = await env.rt.kernel.store.listAudit({ action: "tool.call" });
  assert.equal(calls.length, 4);
  assert.ok(calls.every((r) => r.decision === "error" && r.actor === `pid:${pid}`));
  assert.equal((await env.rt.process(pid)).status, "exited");
});

Deno.test("scheduler: a tool with an unknown argument is EINVAL and makes no syscall", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("filesystem:workspace:*", "write")], {
    script: {
      steps: [{ tool: "write_file", args: { path: "x.txt", content: "x", mode: "0777" } }],
    },
  });
  await env.rt.runUntilIdle();
  const [s] = await env.rt.steps(pid);
  assert.ok(!s.ok && s.error.code === "EINVAL", JSON.stringify(s));
  assert.equal(await exists(join(env.ws, "x.txt")), false);
  assert.deepEqual(await auditActors(env.rt, "filesystem.write"), []);
});

Deno.test("scheduler: a model-level exit ends the process through the audited process.exit", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("filesystem:workspace:*", "write")], {
    script: {
      steps: [
        putStep("before"),
        { tool: "exit", args: { code: 3, result: "stopped early" } },
        { tool: "write_file", args: { path: "after.txt", content: "x" } },
      ],
    },
  });
  await env.rt.runUntilIdle();
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "exited");
  assert.equal(rec.exit_code, 3);
  assert.equal(rec.exit_reason, "stopped early");
  assert.deepEqual(summary(await env.rt.steps(pid)), [[0, "put_object", true]]);
  assert.equal(await exists(join(env.ws, "after.txt")), false);
  const exits = await env.rt.kernel.store.listAudit({ action: "process.exit" });
  assert.equal(exits.length, 1);
  assert.equal(exits[0].actor, `pid:${pid}`);
  assert.equal(exits[0].decision, "allow");
  assert.equal(exits[0].target, `process:${pid}`);
  const exited = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "process.exited"
  );
  assert.deepEqual(exited.map((e) => e.payload), [{ code: 3 }]);
});

Deno.test("scheduler: a script that runs out exits 0", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [], { script: { steps: [putStep("only")] } });
  await env.rt.runUntilIdle();
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "exited");
  assert.equal(rec.exit_code, 0);
  assert.equal((await env.rt.kernel.store.listAudit({ action: "process.exit" })).length, 1);
});

// ---------------------------------------------------------------- waiting on a child

function waitScript(childPid: number) {
  return {
    steps: [
      {
        tool: "spawn",
        args: {
          goal: "count",
          script: { steps: [putStep("c0"), putStep("c1"), { tool: "exit", args: { code: 4 } }] },
        },
      },
      { tool: "wait", args: { pid: childPid } },
    ],
  };
}

Deno.test("scheduler: a parent waits for a scripted child and no step runs twice", async () => {
  await using env = await makeEnv();
  // Pids are allocated in order; the child is checked to be parent + 1 below.
  const parent = await launch(env, [cap("process:spawn", "execute")], { script: waitScript(2) });
  assert.equal(parent, 1);
  await env.rt.runUntilIdle();
  const child = 2;
  const c = await env.rt.process(child);
  assert.equal(c.ppid, parent);
  assert.equal(c.status, "exited");
  assert.equal(c.exit_code, 4);
  assert.deepEqual(await namedObjects(env, child), ["c0", "c1"]);
  assert.deepEqual(summary(await env.rt.steps(child)), [
    [0, "put_object", true],
    [1, "put_object", true],
  ]);

  const p = await env.rt.process(parent);
  assert.equal(p.status, "exited");
  assert.equal(p.exit_code, 0);
  const steps = await env.rt.steps(parent);
  assert.deepEqual(summary(steps), [[0, "spawn", true], [1, "wait", true]]);
  assert.ok(steps[0].ok && steps[1].ok);
  assert.deepEqual(steps[0].value, { pid: child });
  assert.deepEqual(steps[1].value, { pid: child, status: "exited", exit_code: 4, result: null });

  // The parent blocked, then was woken by the child's exit.
  const moves = (await env.rt.kernel.store.listEvents())
    .filter((e) => e.type === "process.status" && e.target === `pid:${parent}`)
    .map((e) => e.payload as { from: string; to: string });
  const blocked = moves.findIndex((m) => m.to === "waiting_event");
  assert.ok(blocked > 0, JSON.stringify(moves));
  assert.deepEqual(moves[blocked + 1], { from: "waiting_event", to: "runnable" });
  assert.equal(moves.filter((m) => m.to === "waiting_event").length, 1);

  assert.equal((await env.rt.kernel.store.listProcesses()).length, 2);
  const spawns = await env.rt.kernel.store.listAudit({ action: "process.spawn" });
  assert.deepEqual(spawns.map((r) => [r.actor, r.decision]), [[`pid:${parent}`, "allow"]]);
  const waits = await env.rt.kernel.store.listAudit({ action: "process.wait" });
  assert.deepEqual(waits.map((r) => r.decision), ["info", "allow"]);
  assert.deepEqual(await auditActors(env.rt, "memory.put"), [`pid:${child}`, `pid:${child}`]);
});

// ---------------------------------------------------------------- durability

Deno.test("scheduler: the model position survives a restart at every quantum", async () => {
  // 4 tool steps: 4 model quanta + 4 tool quanta + 1 exit quantum.
  for (let cut = 1; cut <= 8; cut++) {
    await using env = await makeEnv();
    const pid = await launch(env, [], { script: { steps: putSteps("s", 4) } });
    assert.deepEqual(await env.rt.runUntilIdle(cut), { quanta: cut, idle: false });
    await env.rt.close();
    const rt = await Runtime.open({ store: env.storePath });
    try {
      const report = await rt.runUntilIdle();
      assert.equal(report.idle, true);
      assert.equal(report.quanta, 9 - cut, `cut ${cut}`);
      const steps = await rt.steps(pid);
      assert.deepEqual(summary(steps), [
        [0, "put_object", true],
        [1, "put_object", true],
        [2, "put_object", true],
        [3, "put_object", true],
      ], `cut ${cut}`);
      assert.deepEqual(
        steps.map((s) => s.ok ? (s.value as { oid: string }).oid : null).filter(Boolean).length,
        4,
      );
      assert.deepEqual(await namedObjects(rt, pid), ["s0", "s1", "s2", "s3"], `cut ${cut}`);
      assert.equal((await auditActors(rt, "memory.put")).length, 4, `cut ${cut}`);
      const rec = await rt.process(pid);
      assert.equal(rec.status, "exited");
      assert.equal(rec.exit_code, 0);
    } finally {
      await rt.close();
    }
  }
});

Deno.test("scheduler: closing the runtime during a run ends the quanta in flight first and starts no more", async () => {
  await using env = await makeEnv();
  const pids: number[] = [];
  // Enough work that the run is surely under way, not over, when the close comes
  // (20 x 20 steps could all run before the first records were seen).
  for (let i = 0; i < 20; i++) {
    pids.push(await launch(env, [], { script: { steps: putSteps(`p${i}-`, 200) } }));
  }
  const run = env.rt.runUntilIdle();
  // Under way: some steps done, quanta in flight.
  while ((await auditActors(env.rt, "memory.put")).length < 10) {
    await new Promise((r) => setTimeout(r, 1));
  }
  await env.rt.close();
  // The run ends without an error from a closed store, short of idle (and ends at all).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the run did not end after the close")), 10_000);
  });
  const report = await Promise.race([run, stuck]).finally(() => clearTimeout(timer));
  assert.equal(report.idle, false);
  assert.ok(report.quanta > 0 && report.quanta < 20 * 401, `${report.quanta} quanta`);
  assert.deepEqual(await env.rt.runUntilIdle(), { quanta: 0, idle: false }, "none after close");
  // Reopened, the rest runs: every step once.
  const rt = await Runtime.open({ store: env.storePath });
  try {
    assert.equal((await rt.runUntilIdle()).idle, true);
    for (const pid of pids) {
      assert.equal((await rt.process(pid)).status, "exited");
      assert.equal((await rt.steps(pid)).filter((s) => s.ok).length, 200);
    }
    assert.equal((await auditActors(rt, "memory.put")).length, 4000);
  } finally {
    await rt.close();
  }
});

Deno.test("scheduler: a spawn and wait survive a restart without a second child", async () => {
  for (const cut of [1, 2, 3, 4, 5, 6, 7]) {
    await using env = await makeEnv();
    const parent = await launch(env, [cap("process:spawn", "execute")], { script: waitScript(2) });
    assert.equal(parent, 1);
    await env.rt.runUntilIdle(cut);
    await env.rt.close();
    const rt = await Runtime.open({ store: env.storePath });
    try {
      await rt.runUntilIdle();
      assert.equal((await rt.kernel.store.listProcesses()).length, 2, `cut ${cut}`);
      assert.equal((await rt.kernel.store.listAudit({ action: "process.spawn" })).length, 1);
      assert.deepEqual(summary(await rt.steps(parent)), [[0, "spawn", true], [1, "wait", true]]);
      assert.deepEqual(await namedObjects(rt, 2), ["c0", "c1"], `cut ${cut}`);
      assert.equal((await rt.process(parent)).status, "exited", `cut ${cut}`);
      assert.equal((await rt.process(2)).exit_code, 4);
    } finally {
      await rt.close();
    }
  }
});

Deno.test(
  "scheduler: a step caught mid-flight by a crash is recorded EIO and not replayed",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const pid = await launch(env, [cap("filesystem:workspace:*", "write")], {
      script: {
        steps: [{ tool: "write_file", args: { path: "crash.txt", content: "x" } }, putStep("next")],
      },
    });
    // One model quantum: the write is decided and durable as the pending action.
    await env.rt.runUntilIdle(1);
    const before = await env.rt.process(pid);
    assert.equal(before.pending?.tool, "write_file");
    // Simulate the runtime dying inside the tool quantum.
    assert.ok(await env.rt.kernel.store.updateProcess(pid, { status: "running" }));
    await env.rt.close();

    const rt = await Runtime.open({ store: env.storePath });
    try {
      const recovered = await rt.process(pid);
      assert.equal(recovered.status, "runnable");
      assert.equal(recovered.pending, null);
      const steps = await rt.steps(pid);
      assert.equal(steps.length, 1);
      const s = steps[0];
      assert.equal(s.tool, "write_file");
      assert.ok(!s.ok && s.error.code === "EIO", JSON.stringify(s));
      assert.match(s.error.message, /outcome unknown/);
      const moved = (await rt.kernel.store.listEvents()).filter((e) =>
        e.type === "process.status" && e.source === "recovery"
      );
      assert.deepEqual(moved.map((e) => e.payload), [{ from: "running", to: "runnable" }]);

      await rt.runUntilIdle();
      assert.equal(await exists(join(env.ws, "crash.txt")), false);
      assert.deepEqual(await auditActors(rt, "filesystem.write"), []);
      assert.deepEqual(summary(await rt.steps(pid)), [
        [0, "write_file", false],
        [1, "put_object", true],
      ]);
      assert.deepEqual(await namedObjects(rt, pid), ["next"]);
      const rec = await rt.process(pid);
      assert.equal(rec.status, "exited");
      assert.equal(rec.exit_code, 0);
    } finally {
      await rt.close();
    }
  },
);

Deno.test(
  "scheduler: a process caught running between steps is recovered without a made-up step",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const pid = await launch(env, [], { script: { steps: [putStep("one")] } });
    assert.ok(await env.rt.kernel.store.updateProcess(pid, { status: "running" }));
    await env.rt.close();
    const rt = await Runtime.open({ store: env.storePath });
    try {
      assert.equal((await rt.process(pid)).status, "runnable");
      assert.deepEqual(await rt.steps(pid), []);
      await rt.runUntilIdle();
      assert.deepEqual(summary(await rt.steps(pid)), [[0, "put_object", true]]);
      assert.equal((await rt.process(pid)).status, "exited");
    } finally {
      await rt.close();
    }
  },
);

Deno.test(
  "scheduler: recovery marks an unfinished effect unknown and never replays it",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const pid = await launch(env);
    await env.rt.kernel.store.insertEffect({
      effect_id: "fx_test_pending",
      pid,
      syscall: "filesystem.write",
      resource: "filesystem:workspace:ghost.txt",
      args_hash: "0".repeat(64),
      status: "pending",
      outcome: null,
      created_at: new Date().toISOString(),
      finished_at: null,
    });
    await env.rt.close();
    const rt = await Runtime.open({ store: env.storePath });
    try {
      assert.deepEqual(await rt.kernel.store.listEffects("pending"), []);
      const unknown = await rt.kernel.store.listEffects("unknown");
      assert.deepEqual(unknown.map((e) => e.effect_id), ["fx_test_pending"]);
      const ev = (await rt.kernel.store.listEvents()).filter((e) => e.type === "effect.unknown");
      assert.deepEqual(ev.map((e) => e.payload), [{ count: 1 }]);
      await rt.runUntilIdle();
      assert.equal(await exists(join(env.ws, "ghost.txt")), false);
      // A second restart finds nothing new to mark.
    } finally {
      await rt.close();
    }
    const again = await Runtime.open({ store: env.storePath });
    try {
      const ev = (await again.kernel.store.listEvents()).filter((e) => e.type === "effect.unknown");
      assert.equal(ev.length, 1);
      assert.equal((await again.kernel.store.listEffects("unknown")).length, 1);
    } finally {
      await again.close();
    }
  },
);

async function sleeperAndReaders(
  concurrency: number,
): Promise<{ sleepSeq: number; readSeqs: number[] }> {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  await env.rt.close();
  const run = await Runtime.open({ store: env.storePath, concurrency });
  try {
    const image = (name: string) => ({ name, tools: ["read_file", "sleep"] });
    const sleeper = await run.launch({
      image: image("sleeper"),
      workspace: env.ws,
      grants: [{ resource: "clock:sleep", rights: ["execute"] }],
      script: { steps: [{ tool: "sleep", args: { ms: 400 } }] },
    });
    const reader = await run.launch({
      image: image("reader"),
      workspace: env.ws,
      grants: [{ resource: "filesystem:workspace:a.txt", rights: ["read"] }],
      script: { steps: [1, 2, 3].map(() => ({ tool: "read_file", args: { path: "a.txt" } })) },
    });
    await run.runUntilIdle();
    assert.equal((await run.process(sleeper.pid)).status, "exited");
    assert.equal((await run.process(reader.pid)).status, "exited");
    const audit = await run.kernel.store.listAudit();
    return {
      sleepSeq: audit.find((r) => r.action === "clock.sleep")!.seq,
      readSeqs: audit.filter((r) => r.action === "filesystem.read").map((r) => r.seq),
    };
  } finally {
    await run.close();
  }
}

Deno.test("scheduler: with concurrency a slow tool step does not stall other processes", async () => {
  // One slot: the reader waits behind the 400 ms sleep (its later reads land after it).
  const serial = await sleeperAndReaders(1);
  assert.equal(serial.readSeqs.length, 3);
  assert.ok(serial.readSeqs.some((s) => s > serial.sleepSeq));
  // Two slots: the reader finishes every read while the sleeper is still asleep.
  const parallel = await sleeperAndReaders(2);
  assert.equal(parallel.readSeqs.length, 3);
  assert.ok(parallel.readSeqs.every((s) => s < parallel.sleepSeq), JSON.stringify(parallel));
});

Deno.test("scheduler: a child that ends while its parent is parking still wakes it", async () => {
  // With several slots a child can end between its parent's wait finding it
  // alive and the parent parking in waiting_event; that wakeup must not be lost.
  // Each round is one parent and its forked child running side by side.
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  await env.rt.close();
  const run = await Runtime.open({ store: env.storePath, concurrency: 4 });
  try {
    for (let round = 0; round < 60; round++) {
      const child = 2 * round + 2; // pids are allocated in order: parent, then its child
      const { pid } = await run.launch({
        image: { name: "parent", tools: ["fork", "wait", "read_file"] },
        workspace: env.ws,
        grants: [
          { resource: "process:spawn", rights: ["execute"] },
          { resource: "filesystem:workspace:a.txt", rights: ["read"] },
        ],
        script: {
          steps: [
            {
              tool: "fork",
              args: {
                mode: "worker",
                script: { steps: [{ tool: "read_file", args: { path: "a.txt" } }] },
              },
            },
            { tool: "wait", args: { pid: child } },
          ],
        },
      });
      await run.runUntilIdle();
      const p = await run.process(pid);
      assert.equal(p.status, "exited", `round ${round}: parent ${pid} is ${p.status}`);
      const steps = await run.steps(pid);
      assert.deepEqual(steps.map((s) => s.ok), [true, true], JSON.stringify(steps));
    }
  } finally {
    await run.close();
  }
});

// ---------------------------------------------------------------- newcomers, durability

// The round with its admitted newcomers is the SQLite scheduler's; a fleet on PostgreSQL
// claims never-run processes first, newest first (worker_test.ts, bench:scale).
Deno.test(
  "scheduler: a process made runnable during a round gets its turn in that round",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv({ concurrency: 1 });
    const spawner = await launch(env, [cap("process:spawn", "execute")], {
      script: {
        steps: [{ tool: "spawn", args: { goal: "c", script: { steps: [putStep("c0")] } } }],
      },
    });
    const b = await launch(env, [], { script: { steps: putSteps("b", 2) } });
    const c = await launch(env, [], { script: { steps: putSteps("x", 2) } });
    const child = c + 1;
    // Round 1: three model quanta. Round 2: the spawner's spawn (quantum 4) makes the child
    // runnable; it is served next (quantum 5), before b and c's tool quanta.
    assert.deepEqual(await env.rt.runUntilIdle(5), { quanta: 5, idle: false });
    const kid = await env.rt.process(child);
    assert.equal(kid.ppid, spawner);
    assert.deepEqual(kid.model?.state, { position: 1 });
    assert.equal(kid.pending?.tool, "put_object");
    assert.equal((await env.rt.process(b)).pending?.tool, "put_object");
    // Then the round goes on: b and c run their tools; the child's next turn is next round's.
    assert.deepEqual(await env.rt.runUntilIdle(2), { quanta: 2, idle: false });
    assert.equal((await env.rt.process(b)).pending, null);
    assert.equal((await env.rt.process(c)).pending, null);
    assert.equal((await env.rt.process(child)).pending?.tool, "put_object");
    await env.rt.runUntilIdle();
    for (const pid of [spawner, b, c, child]) {
      assert.equal((await env.rt.process(pid)).status, "exited", `pid ${pid}`);
    }
  },
);

/**
 * The newcomer was served within three decisions of when it came, ahead of at least a
 * hundred still to be made (so it was not simply among the last); then every process
 * ran to its end.
 */
async function assertServedSoon(
  env: Env,
  served: number[],
  late: { pid: number; servedBefore: number },
  pids: number[],
  how: string,
): Promise<void> {
  const first = served.indexOf(late.pid);
  assert.ok(first >= 0, "the newcomer was served");
  assert.ok(served.length - late.servedBefore >= 100, `it was ${how} near the end of the run`);
  assert.ok(
    first - late.servedBefore <= 3,
    `served ${first - late.servedBefore} decisions after it was ${how}`,
  );
  for (const pid of [...pids, late.pid]) {
    assert.equal((await env.rt.process(pid)).status, "exited", `pid ${pid}`);
  }
}

/** A scripted model that takes `delayMs` a decision while `slow`, noting whom it served. */
class PacedModel extends ScriptedModel {
  readonly served: number[] = [];
  slow = true;
  onCall: (() => void) | null = null;
  constructor(readonly delayMs: number) {
    super();
  }
  override async next(ctx: ModelContext) {
    this.served.push(ctx.pid);
    this.onCall?.();
    if (this.slow) await new Promise((r) => setTimeout(r, this.delayMs));
    return await super.next(ctx);
  }
}

Deno.test(
  "scheduler: a process another runtime submits to the store during a round is served in that round",
  SQLITE_ONLY,
  async () => {
    const model = new PacedModel(10);
    await using env = await makeEnv({ concurrency: 1, providers: { models: { scripted: model } } });
    const pids: number[] = [];
    for (let i = 0; i < 300; i++) {
      pids.push(await launch(env, [], { script: { steps: [putStep(`p${i}`)] } }));
    }
    const image = join(env.root, "image.json");
    const script = join(env.root, "script.json");
    await Deno.writeTextFile(image, JSON.stringify({ name: "late", tools: ["put_object"] }));
    await Deno.writeTextFile(script, JSON.stringify({ steps: [putStep("late")] }));
    // Ten quanta into the first round (300 decisions of 10 ms each), `libos submit` creates a
    // process from another OS process: this runtime never hears of it but through the store.
    let submitted: Promise<{ pid: number; servedBefore: number }> | null = null;
    const started = Promise.withResolvers<void>();
    model.onCall = () => {
      if (submitted || model.served.length < 10) return;
      started.resolve();
      submitted = (async () => {
        const out = await libos([
          "submit",
          image,
          "--workspace",
          env.ws,
          "--script",
          script,
          "--store",
          env.storePath,
          "--json",
        ]);
        assert.equal(out.code, 0, out.stderr);
        const { pid } = JSON.parse(out.stdout);
        return { pid, servedBefore: model.served.length };
      })();
    };
    const run = env.rt.runUntilIdle();
    await started.promise;
    const { pid: late, servedBefore } = await submitted!;
    // Once it is in the store, the next decisions made are its own within a yield or two,
    // not after the ~300 still waiting in the round (as when only a new round listed it).
    for (let i = 0; i < 1000 && !model.served.includes(late); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    model.slow = false;
    await run;
    assert.ok(servedBefore < 300, "the submit landed inside the first round");
    await assertServedSoon(env, model.served, { pid: late, servedBefore }, pids, "submitted");
  },
);

// On PostgreSQL a launch is itself several round trips to the server, during which the
// scheduler serves others: there its latency is the fleet's (worker_test.ts, bench:scale).
Deno.test(
  "scheduler: a host's launch during a run is served within a few decisions, not after event-loop turns",
  SQLITE_ONLY,
  async () => {
    const model = new PacedModel(0);
    model.slow = false;
    await using env = await makeEnv({ concurrency: 1, providers: { models: { scripted: model } } });
    const pids: number[] = [];
    // Four decisions each: the run lasts many yields, whenever the launch comes.
    for (let i = 0; i < 500; i++) {
      pids.push(await launch(env, [], { script: { steps: putSteps(`p${i}-`, 3) } }));
    }
    // Twenty decisions into the run, a timer (as an HTTP request would) calls launch.
    // Quanta then run as microtasks and the loop turns only every YIELD_EVERY_MS, so a
    // launch that awaited an fs call there would be served dozens of decisions later.
    let launched: Promise<{ pid: number; servedBefore: number }> | null = null;
    model.onCall = () => {
      if (launched || model.served.length < 20) return;
      launched = new Promise((resolve, reject) => {
        setTimeout(() => {
          const servedBefore = model.served.length;
          env.rt.launch({
            image: { name: "late", tools: ["put_object"] },
            workspace: env.ws,
            script: { steps: [putStep("late")] },
          }).then((p) => resolve({ pid: p.pid, servedBefore }), reject);
        }, 0);
      });
    };
    await env.rt.runUntilIdle();
    assert.ok(launched, "the launch was made");
    const { pid: late, servedBefore } = await launched!;
    await assertServedSoon(env, model.served, { pid: late, servedBefore }, pids, "launched");
  },
);

/**
 * Start the foreign writer (`fixtures/foreign_status.ts`) for `moves` (pid ->
 * status or `revoke`), acting `delayMs` after `go()`; `done` is the steps each
 * process had when it was acted on.
 */
async function foreignStatusWriter(
  storePath: string,
  delayMs: number,
  moves: Map<number, string>,
): Promise<{ go: () => Promise<void>; done: () => Promise<Record<string, number | null>> }> {
  const writer = await startFixture("foreign_status.ts", [
    storePath,
    String(delayMs),
    ...[...moves].map(([pid, to]) => `${pid}:${to}`),
  ]);
  assert.equal(writer.first, "ready");
  return { go: writer.go, done: async () => JSON.parse(await writer.rest()) };
}

Deno.test(
  "scheduler: a process another OS process pauses, kills or revokes during a run starts no step after it that the change would stop",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    // Long enough that the later writer acts mid-run even on a loaded machine.
    const STEPS = 1_200;
    const pids: number[] = [];
    for (let i = 0; i < 30; i++) {
      const p = await env.rt.launch({
        image: {
          name: "clock",
          tools: ["now"],
          budgets: { max_quanta: null, max_wall_ms: null, max_syscalls: null },
        },
        workspace: env.ws,
        grants: [{ resource: "clock:now", rights: ["read"] }],
        script: { steps: Array.from({ length: STEPS }, () => ({ tool: "now", args: {} })) },
      });
      pids.push(p.pid);
    }
    // Two other processes, one early in the run and one later, each pausing, killing and
    // revoking the clock of some processes while the runtime's groups of deferred writes
    // come and go.
    const actions = ["paused", "killed", "revoke"];
    const moves = pids.slice(0, 9).map((pid, i) => [pid, actions[i % 3]] as const);
    const early = await foreignStatusWriter(env.storePath, 50, new Map(moves.slice(0, 5)));
    const late = await foreignStatusWriter(env.storePath, 400, new Map(moves.slice(5)));
    const run = env.rt.runUntilIdle();
    await Promise.all([early.go(), late.go()]);
    const atMove = { ...(await early.done()), ...(await late.done()) };
    assert.equal((await run).idle, true);
    await env.rt.kernel.store.auditIndexed();
    const audited = new Map(
      (await rawRows(
        env.storePath,
        `SELECT actor, COUNT(*) AS n FROM audit WHERE action = 'clock.now' AND decision = 'allow'
         GROUP BY actor`,
      )).map((r) => [r.actor as string, Number(r.n)]),
    );
    const moved = new Map<number, string>(moves);
    for (const pid of pids) {
      const [row] = await rawRows(
        env.storePath,
        `SELECT status, (SELECT COUNT(*) FROM step_results WHERE pid = ?) AS steps
         FROM process_state WHERE pid = ?`,
        pid,
        pid,
      );
      const to = moved.get(pid);
      if (to === undefined) {
        assert.deepEqual([row.status, Number(row.steps)], ["exited", STEPS], `pid ${pid}`);
        continue;
      }
      const n = atMove[pid];
      assert.ok(typeof n === "number" && n < STEPS, `pid ${pid} was acted on mid-run (${n})`);
      if (to === "revoke") {
        // It runs on; the step in flight then (step n) may have been allowed, none after it.
        assert.deepEqual([row.status, Number(row.steps)], ["exited", STEPS], `pid ${pid}`);
        const results = await env.rt.steps(pid);
        assert.ok(results.slice(0, n).every((r) => r.ok), `pid ${pid}: steps before the revoke`);
        const after = results.slice(n + 1).filter((r) => r.ok || r.error?.code !== "EPERM");
        assert.deepEqual(after.map((r) => r.step), [], `pid ${pid}: allowed after the revoke`);
        const allowed = audited.get(`pid:${pid}`) ?? 0;
        assert.ok(
          allowed === n || allowed === n + 1,
          `pid ${pid}: ${allowed} allowed, ${n} before`,
        );
        continue;
      }
      // The runtime never wrote its own status over the other's, and started no step after it.
      assert.equal(row.status, to, `pid ${pid}`);
      assert.equal(Number(row.steps), n, `pid ${pid}: steps recorded after it was ${to}`);
      assert.equal(audited.get(`pid:${pid}`) ?? 0, n, `pid ${pid}: clock.now after it was ${to}`);
    }
  },
);

/** The state row of `pid` and the ledger, as another connection sees them (committed only). */
async function committed(
  storePath: string,
  pid: number,
): Promise<{ status: string; pending: unknown; fx: number }> {
  const [row] = await rawRows(
    storePath,
    "SELECT status, pending FROM process_state WHERE pid = ?",
    pid,
  );
  const [fx] = await rawRows(
    storePath,
    "SELECT COUNT(*) AS n FROM effects WHERE status = 'pending'",
  );
  return {
    status: row.status as string,
    pending: JSON.parse((row.pending as string | null) ?? "null"),
    fx: Number(fx.n),
  };
}

class DurabilityWatchingFs extends HostFileSystem {
  storePath = "";
  watch: number[] = [];
  seen: { status: string; pending: unknown; fx: number }[][] = [];
  override async writeText(path: string, content: string): Promise<void> {
    const seen = [];
    for (const pid of this.watch) seen.push(await committed(this.storePath, pid));
    this.seen.push(seen);
    return await super.writeText(path, content);
  }
}

Deno.test("scheduler: a tool's action is committed as running before it acts, with every decision before it", async () => {
  const fs = new DurabilityWatchingFs();
  await using env = await makeEnv({ providers: { fs }, concurrency: 1 });
  fs.storePath = env.storePath;
  // The writer is served first in each round: launched first on SQLite (pid order), last
  // on PostgreSQL (never-run processes newest first).
  const launchWriter = () =>
    launch(env, [cap("filesystem:workspace:*", "write")], {
      script: { steps: [{ tool: "write_file", args: { path: "out.txt", content: "x" } }] },
    });
  const launchOther = () => launch(env, [], { script: { steps: [putStep("o")] } });
  const otherFirst = ON_PG ? await launchOther() : null;
  const writer = await launchWriter();
  const other = otherFirst ?? await launchOther();
  fs.watch = [writer, other];
  await env.rt.runUntilIdle();
  assert.equal(await Deno.readTextFile(join(env.ws, "out.txt")), "x");
  // Round 1 decided both actions (deferred); the writer's running mark committed them
  // before its tool ran, and the ledger's intent was committed before the write.
  assert.equal(fs.seen.length, 1);
  const [w, o] = fs.seen[0];
  assert.equal(w.status, "running");
  assert.deepEqual(w.pending, { tool: "write_file", args: { path: "out.txt", content: "x" } });
  assert.equal(w.fx, 1);
  assert.equal(o.status, "runnable");
  assert.equal((o.pending as { tool: string }).tool, "put_object");
});

/**
 * A clock whose sleep reads what a crash would leave of the process whose tag
 * (the `ms` it was asked to sleep) it is: the last state the store's step
 * journal holds for it (replayed at the next open), or else its committed
 * status, through a connection of its own. It does not sleep.
 */
class CommitWatchingClock extends HostClock {
  storePath = "";
  pids: number[] = [];
  seen: string[] = [];
  override async sleep(tag: number): Promise<void> {
    const pid = this.pids[tag];
    // The journal first, in one synchronous read: a commit that empties it
    // afterwards has committed the mark, which the second read then sees.
    if (!ON_PG) {
      let text = "";
      try {
        text = Deno.readTextFileSync(`${this.storePath}-steps`);
      } catch { /* no journal */ }
      const mine = text.split("\n").filter((l) => l).map((l) => JSON.parse(l)).filter((l) =>
        l.p === pid
      );
      if (mine.at(-1)?.h[0] === "running") {
        this.seen.push(`${pid}:journal:running`);
        return;
      }
    }
    const [row] = await rawRows(
      this.storePath,
      "SELECT status FROM process_state WHERE pid = ?",
      pid,
    );
    this.seen.push(`${pid}:committed:${row?.status}`);
  }
}

Deno.test("scheduler: with quanta in flight sharing a commit, no tool runs before its own running mark is durable", async () => {
  // Steps whose syscall writes nothing to the store first (no ledger intent),
  // eight processes, four quanta at once: the marks of a wave of tool steps are
  // made durable together (on SQLite by the step journal, or a commit), and
  // each tool acts only after that.
  const clock = new CommitWatchingClock();
  await using env = await makeEnv({ providers: { clock }, concurrency: 4 });
  clock.storePath = env.storePath;
  const n = 8;
  for (let tag = 0; tag < n; tag++) {
    clock.pids.push(
      await launch(env, [cap("clock:sleep", "execute")], {
        tools: ["sleep"],
        script: { steps: Array.from({ length: 3 }, () => ({ tool: "sleep", args: { ms: tag } })) },
      }),
    );
  }
  const report = await env.rt.runUntilIdle();
  assert.equal(report.idle, true);
  assert.equal(clock.seen.length, n * 3);
  assert.deepEqual(clock.seen.filter((s) => !s.endsWith(":running")), []);
  // On SQLite the journal, not a commit, made most of them durable.
  if (!ON_PG) assert.ok(clock.seen.some((s) => s.includes(":journal:")), String(clock.seen));
  for (const pid of clock.pids) {
    const steps = await env.rt.steps(pid);
    assert.deepEqual(steps.map((s) => [s.step, s.ok]), [[0, true], [1, true], [2, true]]);
  }
});

/** A clock whose sleeps are counted: each one is a tool's effect. */
class CountingClock extends HostClock {
  slept = 0;
  /** Called as each sleep begins, with how many began before it. */
  onSleep: (n: number) => Promise<void> = async () => {};
  override async sleep(ms: number): Promise<void> {
    await this.onSleep(this.slept++);
    return await super.sleep(ms);
  }
}

Deno.test(
  "scheduler: a commit that fails after steps were journaled stops the store; reopened, no step runs twice",
  SQLITE_ONLY,
  async () => {
    // A commit can fail after its tools acted (a full disk, an I/O error): the marks that let
    // them act are in the step journal, not the tables. Rolled back in memory, those processes
    // would look as if their steps never ran. Here a commit fails once it holds step 1's running
    // mark (a deferred foreign key, checked only at COMMIT): the mark is journaled, the sleep
    // begins, and the commit is made while it is under way (as the store's timer may).
    await using env = await makeEnv();
    await env.rt.close();
    await failCommitsWithMark(env.storePath, 1);
    const clock = new CountingClock();
    const rt = await Runtime.open({ store: env.storePath, concurrency: 1, providers: { clock } });
    let stoppedUnder: unknown = null;
    clock.onSleep = async (n) => {
      if (n !== 1) return;
      await rt.kernel.store.flush().catch(() => {});
      stoppedUnder = rt.kernel.store.stopped;
    };
    let pid = 0;
    try {
      pid = (await rt.launch({
        image: { name: "sleeper", tools: ["sleep"] },
        workspace: env.ws,
        grants: [{ resource: "clock:sleep", rights: ["execute"] }],
        script: { steps: [0, 1, 2, 3].map(() => ({ tool: "sleep", args: { ms: 0 } })) },
      })).pid;
      await rejectsCode(rt.runUntilIdle(), "EIO");
      assert.ok(stoppedUnder, "the store stopped while step 1's sleep was under way");
      assert.equal(clock.slept, 2);
      // Stopped: nothing more runs, and nothing is served from the rolled-back state.
      await rejectsCode(rt.runUntilIdle(), "EIO");
      await rejectsCode(rt.process(pid), "EIO");
      assert.equal(clock.slept, 2);

      // Reopened while the stopped runtime is still open (a supervisor restarting it as the
      // old one lingers): the stop released the journal, so the new store replays it.
      await commitsSucceedAgain(env.storePath);
      // A stopped runtime cannot release its scheduler lease: it runs out, as a crashed one's does.
      await expireLeases(env.storePath);
      clock.onSleep = async () => {};
      const again = await Runtime.open({
        store: env.storePath,
        concurrency: 1,
        providers: { clock },
      });
      try {
        await again.runUntilIdle();
        const rec = await again.process(pid);
        assert.equal(rec.status, "exited");
        // Step 1 was caught marked (the journal's replay): EIO, outcome unknown, not run again.
        const steps = await again.steps(pid);
        assert.deepEqual(summary(steps), [
          [0, "sleep", true],
          [1, "sleep", false],
          [2, "sleep", true],
          [3, "sleep", true],
        ]);
        assert.ok(!steps[1].ok && steps[1].error.code === "EIO", JSON.stringify(steps[1]));
        assert.equal(clock.slept, 4);
      } finally {
        await again.close();
      }
    } finally {
      // Closing releases everything; what could not be written is reported (EIO).
      await rejectsCode(rt.close(), "EIO");
    }
    // Each sleep ran once, and each is audited: step 1's too, though the store had stopped
    // under it (the stopped store's audit log is indexed as it closes).
    const [audited] = await rawRows(
      env.storePath,
      "SELECT COUNT(*) AS n FROM audit WHERE action = 'clock.sleep'",
    );
    assert.equal(Number(audited.n), 4);
  },
);

/** A model that reaches outside (like a model API): it checks what others can already see. */
class OutsideModel implements ModelProvider {
  readonly pure: boolean;
  storePath = "";
  lagged = 0;
  #inner = new ScriptedModel();
  constructor(pure: boolean) {
    this.pure = pure;
  }
  async next(ctx: ModelContext) {
    const [r] = await rawRows(
      this.storePath,
      "SELECT COUNT(*) AS n FROM step_results WHERE pid = ?",
      ctx.pid,
    );
    if (Number(r.n) !== await ctx.stepCount()) this.lagged++;
    return await this.#inner.next(ctx);
  }
}

Deno.test("scheduler: a model that reaches outside is only asked once every result before it is committed", async () => {
  // The control needs deferred writes, which only a SQLite store keeps (PostgreSQL commits at once).
  for (const pure of ON_PG ? [false] : [false, true]) {
    const model = new OutsideModel(pure);
    await using env = await makeEnv({ providers: { models: { scripted: model } }, concurrency: 1 });
    model.storePath = env.storePath;
    const pid = await launch(env, [], { script: { steps: putSteps("s", 20) } });
    await env.rt.runUntilIdle();
    assert.equal((await env.rt.process(pid)).status, "exited");
    if (!pure) assert.equal(model.lagged, 0, "a result was not committed when the model was asked");
    // Control: a pure model is asked while the last result may still be deferred.
    else assert.ok(model.lagged > 0, "the check never saw a deferred result");
  }
});
