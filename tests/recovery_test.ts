/**
 * Unknown outcomes go to a human: an effect a crash left between its intent
 * and its outcome becomes a durable "did this happen?" request; the answer
 * (done or failed) is recorded in the effect ledger and becomes the
 * interrupted step's result; nothing is replayed.
 */
import assert from "node:assert/strict";
import { hashValue } from "../runtime/canonical.ts";
import { Runtime } from "../host/runtime.ts";
import { HostFileSystem } from "../runtime/providers/host.ts";
import { join } from "node:path";
import { cap, type Env, launch, liveWith, makeEnv, rawSql, rejectsCode } from "./_helpers.ts";
import { SQLITE_ONLY } from "./_pg.ts";

/** Counts the writes that reach the disk. */
class CountingFs extends HostFileSystem {
  writes = 0;
  override async writeText(path: string, content: string): Promise<void> {
    this.writes++;
    await super.writeText(path, content);
  }
}

/**
 * A process whose first step (a write of `path`) was under way when the
 * runtime died: the action decided and durable, the process running, the
 * effect's intent in the ledger and no outcome. Returns its pid.
 */
async function crashedInsideWrite(env: Env, path: string): Promise<number> {
  const args = { path, content: `token:${path}` };
  const pid = await launch(env, [cap("filesystem:workspace:*", "write")], {
    script: {
      steps: [
        { tool: "write_file", args },
        { tool: "put_object", args: { kind: "observation", name: "after", payload: 1 } },
      ],
    },
    tools: ["write_file", "put_object"],
  });
  await env.rt.runUntilIdle(1);
  assert.equal((await env.rt.process(pid)).pending?.tool, "write_file");
  assert.ok(await env.rt.kernel.store.updateProcess(pid, { status: "running" }));
  await env.rt.kernel.store.insertEffect({
    effect_id: `fx_${path}`,
    pid,
    syscall: "filesystem.write",
    resource: `filesystem:workspace:${path}`,
    args_hash: hashValue(args),
    status: "pending",
    outcome: null,
    created_at: new Date().toISOString(),
    finished_at: null,
  });
  await env.rt.close();
  return pid;
}

Deno.test("recovery: an effect a crash left unknown becomes a human request; answered done, the step succeeds and nothing is replayed", async () => {
  await using env = await makeEnv();
  const pid = await crashedInsideWrite(env, "x.txt");
  const fs = new CountingFs();
  const rt = await Runtime.open({ store: env.storePath, providers: { fs } });
  try {
    const p = await rt.process(pid);
    assert.equal(p.status, "waiting_human");
    const reqs = await rt.humanRequests();
    assert.equal(reqs.length, 1);
    const r = reqs[0];
    assert.equal(r.kind, "outcome");
    assert.equal(r.effect_id, "fx_x.txt");
    assert.equal(r.effect, "filesystem.write");
    assert.equal(r.resource, "filesystem:workspace:x.txt");
    assert.match(r.summary, /^Did this happen\?/);
    const shown = r.args as {
      effect: { effect_id: string };
      action: { tool: string; args: unknown };
    };
    assert.equal(shown.effect.effect_id, "fx_x.txt");
    assert.deepEqual(shown.action, {
      tool: "write_file",
      args: { path: "x.txt", content: "token:x.txt" },
    });
    assert.deepEqual(p.pending?.outcome, { effect_ids: ["fx_x.txt"], request_ids: [r.request_id] });
    const audit = await rt.kernel.store.listAudit({ action: "effect.unknown" });
    assert.equal(audit.length, 1);
    assert.match(audit[0].reason, new RegExp(r.request_id));
    // Nothing runs while the question is open.
    await rt.runUntilIdle();
    assert.equal((await rt.process(pid)).status, "waiting_human");

    await rt.decide(r.request_id, "done", "human:owner via cli");
    const fx = (await rt.kernel.store.listEffects()).find((e) => e.effect_id === "fx_x.txt")!;
    assert.equal(fx.status, "done");
    assert.deepEqual(fx.outcome, { confirmed_by: "human:owner via cli", request_id: r.request_id });
    await rt.runUntilIdle();
    const steps = await rt.steps(pid);
    assert.equal(steps.length, 2);
    assert.ok(steps[0].ok, JSON.stringify(steps[0]));
    assert.equal((steps[0].value as { outcome: string }).outcome, "done");
    assert.ok(steps[1].ok);
    assert.equal((await rt.process(pid)).status, "exited");
    assert.equal(fs.writes, 0, "the write was never run again");
    const answered = await rt.kernel.store.listAudit({ action: "human.outcome" });
    assert.equal(answered.length, 1);
    assert.equal(answered[0].actor, "human:owner via cli");
    assert.ok((await rt.kernel.store.verifyAudit()).ok);
  } finally {
    await rt.close();
  }
});

Deno.test("recovery: an unknown effect answered failed fails its step; the process goes on and nothing is replayed", async () => {
  await using env = await makeEnv();
  const pid = await crashedInsideWrite(env, "y.txt");
  const fs = new CountingFs();
  const rt = await Runtime.open({ store: env.storePath, providers: { fs } });
  try {
    const [r] = await rt.humanRequests();
    await rt.decide(r.request_id, "failed");
    assert.equal((await rt.kernel.store.getEffect("fx_y.txt"))!.status, "failed");
    await rt.runUntilIdle();
    const steps = await rt.steps(pid);
    assert.ok(!steps[0].ok && steps[0].error.code === "EIO", JSON.stringify(steps[0]));
    assert.match(steps[0].ok ? "" : steps[0].error.message, /did not happen/);
    assert.ok(steps[1].ok);
    assert.equal((await rt.process(pid)).status, "exited");
    assert.equal(fs.writes, 0);
    await assert.rejects(Deno.stat(`${env.ws}/y.txt`), Deno.errors.NotFound);
  } finally {
    await rt.close();
  }
});

Deno.test("recovery: an outcome request is answered done or failed, once, by the host's human only", async () => {
  await using env = await makeEnv();
  const pid = await crashedInsideWrite(env, "z.txt");
  const rt = await Runtime.open({ store: env.storePath });
  try {
    const [r] = await rt.humanRequests();
    const bad = await rejectsCode(rt.decide(r.request_id, "allow_once"), "EINVAL");
    assert.match(bad.message, /^decision:/);
    // A process holding approve, of an unrelated tree, neither sees nor answers it.
    const judge = await rt.launch({
      image: { name: "judge", tools: [] },
      workspace: env.ws,
      grants: [cap("human:owner", "approve")],
    });
    assert.deepEqual(await rt.syscall(judge.pid, "human.requests", {}), []);
    await rejectsCode(
      rt.syscall(judge.pid, "human.decide", { request_id: r.request_id, decision: "allow_once" }),
      "EPERM",
    );
    await rt.decide(r.request_id, "failed");
    await rejectsCode(rt.decide(r.request_id, "done"), "ESTATE");
    // A permission request is never answered done or failed.
    await rt.runUntilIdle();
    const asker = await rt.launch({
      image: { name: "asker", tools: ["write_file"] },
      workspace: env.ws,
      grants: [{ ...cap("filesystem:workspace:ask.txt", "write"), effect: "ask" }],
      script: { steps: [{ tool: "write_file", args: { path: "ask.txt", content: "?" } }] },
    });
    rt.kernel.providers.human.decide = () => Promise.resolve("defer");
    await rt.runUntilIdle();
    const [ask] = (await rt.humanRequests()).filter((q) => q.pid === asker.pid);
    assert.equal(ask.kind, undefined);
    await rejectsCode(rt.decide(ask.request_id, "done"), "EINVAL");
    assert.equal((await rt.process(pid)).status, "exited");
  } finally {
    await rt.close();
  }
});

Deno.test("recovery: a step caught with no external effect under way is audited as interrupted; an unknown model call asks no human", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [], { script: { steps: [] } });
  const k = env.rt.kernel;
  await k.transition(pid, "running");
  await k.saveProcess(pid, { pending: { tool: "now", args: {} } });
  await k.store.insertModelCall({
    call_id: "mc_lost",
    pid,
    turn: 1,
    purpose: "turn",
    provider: "openai",
    model: "m",
    base_url: null,
    status: "pending",
    request: {
      messages: 1,
      messages_sha256: "0".repeat(64),
      tools: 0,
      tools_sha256: "0".repeat(64),
      est_input_tokens: 1,
      redactions: [],
    },
    attempts: [],
    input_tokens: null,
    output_tokens: null,
    latency_ms: null,
    finish_reason: null,
    reply_oid: null,
    error: null,
    created_at: new Date().toISOString(),
    finished_at: null,
  });
  await env.rt.close();
  const rt = await Runtime.open({ store: env.storePath });
  try {
    assert.equal((await rt.process(pid)).status, "runnable");
    const [rec] = await rt.kernel.store.listAudit({ action: "step.interrupted" });
    assert.equal(rec.actor, "kernel");
    assert.equal(rec.target, `process:${pid}`);
    assert.equal((await rt.kernel.store.getModelCall("mc_lost"))!.status, "unknown");
    // The turn is asked again (no reply was kept); nobody is asked whether the call happened.
    assert.deepEqual(await rt.humanRequests("all"), []);
  } finally {
    await rt.close();
  }
});

Deno.test("recovery: a fork of a process waiting to hear what happened records the copy's step as unknown; the original still gets the answer", async () => {
  await using env = await makeEnv();
  const pid = await crashedInsideWrite(env, "q.txt");
  const fs = new CountingFs();
  const rt = await Runtime.open({ store: env.storePath, providers: { fs } });
  try {
    assert.equal((await rt.process(pid)).status, "waiting_human");
    const ck = await rt.createCheckpoint(pid);
    const f = await rt.forkCheckpoint(ck.checkpoint_id);
    const [r] = (await rt.humanRequests()).filter((q) => q.kind === "outcome");
    await rt.decide(r.request_id, "done");
    await rt.runUntilIdle();
    const copy = await rt.steps(f.pid);
    assert.ok(!copy[0].ok && copy[0].error.code === "EIO", JSON.stringify(copy[0]));
    assert.match(copy[0].ok ? "" : copy[0].error.message, /outcome was unknown/);
    const orig = await rt.steps(pid);
    assert.ok(orig[0].ok);
    assert.equal((await rt.process(pid)).status, "exited");
    assert.equal((await rt.process(f.pid)).status, "exited");
    assert.equal(fs.writes, 0, "neither the original nor the copy wrote q.txt again");
  } finally {
    await rt.close();
  }
});

Deno.test(
  "recovery: after a runtime that stalled, its command has ended before anyone is asked whether it happened",
  SQLITE_ONLY,
  async () => {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-stall-" }));
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const store = join(root, "libos.db");
    const marker = `40.${Math.floor(Math.random() * 1e6)}`;
    await Deno.writeTextFile(
      join(root, "image.json"),
      JSON.stringify({
        name: "stall",
        tools: ["shell"],
        capabilities: [{ resource: "shell:sleep", rights: ["execute"] }],
        policy: { shell: "always_allow" },
      }),
    );
    await Deno.writeTextFile(
      join(root, "script.json"),
      JSON.stringify({
        steps: [{ tool: "shell", args: { argv: ["sleep", marker], timeout_ms: 2000 } }],
      }),
    );
    const cli = new URL("../cli/libos.ts", import.meta.url).pathname;
    const stalled = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        cli,
        "run",
        join(root, "image.json"),
        "--workspace",
        ws,
        "--script",
        join(root, "script.json"),
        "--store",
        store,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let b: Runtime | null = null;
    try {
      for (const until = Date.now() + 30_000; Date.now() < until;) {
        if (liveWith(`sleep\u0000${marker}`).length > 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(liveWith(`sleep\u0000${marker}`).length > 0, "the command never started");
      // The runtime stalls mid-command (stopped: alive, its command running on) and
      // its lease goes stale; another runtime takes the store over.
      Deno.kill(stalled.pid, "SIGSTOP");
      await rawSql(
        store,
        "UPDATE meta SET value = json_set(value, '$.heartbeat', 0) WHERE key = 'scheduler_lease'",
      );
      b = await Runtime.open({ store });
      let endedAt = Infinity;
      const watching = (async () => {
        for (const until = Date.now() + 30_000; Date.now() < until;) {
          if (liveWith(`sleep\u0000${marker}`).length === 0) return void (endedAt = Date.now());
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      assert.deepEqual(await b.humanRequests(), [], "asked while the command may still run");
      // Why nothing was asked yet is an event.
      const deferred = (await b.kernel.store.listEvents()).filter((e) =>
        e.type === "recovery.deferred"
      );
      assert.equal(deferred.length, 1);
      let asked: Awaited<ReturnType<Runtime["humanRequests"]>> = [];
      for (const until = Date.now() + 30_000; Date.now() < until && asked.length === 0;) {
        await new Promise((r) => setTimeout(r, 50));
        asked = await b.humanRequests();
      }
      await watching;
      assert.equal(asked.length, 1, "nobody was asked once the command had ended");
      assert.equal(asked[0].kind, "outcome");
      assert.ok(Date.parse(asked[0].created_at) >= endedAt);
    } finally {
      stalled.kill("SIGKILL");
      await stalled.status;
      await b?.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);
