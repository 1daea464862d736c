/**
 * Long-running processes: a 10,000-step script runs to the end with a process
 * record that does not grow with it, and a runtime killed (SIGKILL) in the
 * middle of one resumes at the exact step: no step runs twice, none is skipped.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { expireLeases, makeEnv, rawRows } from "./_helpers.ts";
import { ON_PG } from "./_pg.ts";

/**
 * Steps of the long scripts. On PostgreSQL a quantum is a dozen round trips
 * to the server (SQLite answers in-process), so the suite's second run uses
 * a fifth of the length to stay within CI's time; the kill points scale with it.
 */
const STEPS = ON_PG ? 2_000 : 10_000;
const KILLS = [STEPS / 4, (STEPS * 13) / 20];
const MID = Math.round(STEPS * 0.4321);
const UNBOUNDED = { max_quanta: null, max_wall_ms: null, max_syscalls: null };

function putScript(n: number) {
  return {
    steps: Array.from({ length: n }, (_, i) => ({
      tool: "put_object",
      args: { kind: "observation", name: `s${i}`, payload: { i } },
    })),
  };
}

Deno.test("scheduler: a process with a 10,000-step script finishes correctly", async () => {
  await using env = await makeEnv();
  const { pid } = await env.rt.launch({
    image: { name: "long", tools: ["now"], budgets: UNBOUNDED },
    workspace: env.ws,
    grants: [{ resource: "clock:now", rights: ["read"] }],
    script: { steps: Array.from({ length: STEPS }, () => ({ tool: "now", args: {} })) },
  });
  // Part way: the record holds a cursor, not the script (which would be ~270 KB).
  assert.deepEqual(await env.rt.runUntilIdle(2 * MID), { quanta: 2 * MID, idle: false });
  const mid = await env.rt.process(pid);
  assert.deepEqual(mid.model, { kind: "scripted", state: { position: MID } });
  assert.ok(JSON.stringify(mid).length < 2000, `${JSON.stringify(mid).length} characters`);

  // Two quanta a step and one for the model's exit.
  const rest = await env.rt.runUntilIdle();
  assert.deepEqual(rest, { quanta: 2 * (STEPS - MID) + 1, idle: true });
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "exited");
  assert.equal(rec.exit_code, 0);
  assert.equal(rec.usage.quanta, 2 * STEPS + 1);
  assert.equal(rec.usage.syscalls, STEPS + 1);
  assert.deepEqual(rec.model, { kind: "scripted", state: { position: STEPS } });
  const steps = await env.rt.steps(pid);
  assert.equal(steps.length, STEPS);
  steps.forEach((s, i) => {
    assert.equal(s.step, i);
    assert.ok(s.ok && typeof (s.value as { epoch_ms: unknown }).epoch_ms === "number", `step ${i}`);
  });
  const audited = await env.rt.kernel.store.listAudit({ action: "clock.now", actor: `pid:${pid}` });
  assert.equal(audited.length, STEPS);
  assert.ok(audited.every((r) => r.decision === "allow"));
  assert.ok((await env.rt.kernel.store.verifyAudit()).ok);
});

/** Results recorded so far for `pids`, read by a connection of its own. */
async function recorded(storePath: string, pids: number[]): Promise<number> {
  let n = 0;
  for (const pid of pids) {
    const [r] = await rawRows(
      storePath,
      "SELECT COUNT(*) AS n FROM step_results WHERE pid = ?",
      pid,
    );
    n += Number(r.n);
  }
  return n;
}

/**
 * Run the store's scheduler in a child process until `pids` have `kill`
 * results between them, then SIGKILL it.
 */
async function killMidRun(
  storePath: string,
  pids: number[],
  kill: number,
  dir: string,
  total = STEPS,
) {
  const runtimeUrl = new URL("../host/runtime.ts", import.meta.url).href;
  const child = join(dir, `child-${kill}.ts`);
  await Deno.writeTextFile(
    child,
    `import { Runtime } from ${JSON.stringify(runtimeUrl)};
const rt = await Runtime.open({ store: ${JSON.stringify(storePath)} });
await rt.runUntilIdle();
console.log("finished");
`,
  );
  const proc = new Deno.Command(Deno.execPath(), {
    // The project's config: its import map names the PostgreSQL driver.
    args: [
      "run",
      "--no-check",
      "-A",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      child,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let seen = 0;
  for (let i = 0; i < 3000 && seen < kill; i++) {
    await new Promise((r) => setTimeout(r, 10));
    seen = await recorded(storePath, pids);
  }
  proc.kill("SIGKILL");
  const out = await proc.output();
  assert.equal(out.signal, "SIGKILL", new TextDecoder().decode(out.stderr));
  assert.ok(seen >= kill && seen < total, `killed after ${seen} steps`);
  return seen;
}

Deno.test("scheduler: a runtime killed in the middle of a long script resumes at the exact step; none runs twice, none is skipped", async () => {
  for (const kill of KILLS) {
    await using env = await makeEnv();
    const { pid } = await env.rt.launch({
      image: { name: "long", tools: ["put_object"], budgets: UNBOUNDED },
      workspace: env.ws,
      script: putScript(STEPS),
    });
    await env.rt.close();
    const seen = await killMidRun(env.storePath, [pid], kill, env.root);
    // The killed runtime's lease goes stale after its length; pretend that much time passed.
    await expireLeases(env.storePath);

    const rt = await Runtime.open({ store: env.storePath });
    try {
      const report = await rt.runUntilIdle();
      assert.equal(report.idle, true);
      const rec = await rt.process(pid);
      assert.equal(rec.status, "exited", `kill at ${seen}`);
      assert.equal(rec.exit_code, 0);
      assert.deepEqual(rec.model?.state, { position: STEPS });
      // One result per step, in order: none skipped, none recorded twice.
      const steps = await rt.steps(pid);
      assert.deepEqual(steps.map((s) => s.step), Array.from({ length: STEPS }, (_, i) => i));
      // At most the step in flight at the kill has an unknown outcome; it was not replayed.
      const failed = steps.filter((s) => !s.ok);
      assert.ok(failed.length <= 1, JSON.stringify(failed));
      for (const f of failed) {
        assert.ok(!f.ok && f.error.code === "EIO", JSON.stringify(f));
        assert.ok(f.step >= seen - 1, `the lost step ${f.step} is the one in flight (${seen})`);
      }
      // Every put ran at most once (a second run would be EEXIST), each ok step's exactly once.
      const puts = await rt.kernel.store.listAudit({ action: "memory.put", actor: `pid:${pid}` });
      assert.ok(puts.every((r) => r.decision === "allow"), "a step ran twice");
      const names = (await rt.kernel.store.listObjects(`proc:${pid}`))
        .filter((o) => o.kind === "observation")
        .map((o) => o.name);
      assert.equal(new Set(names).size, names.length);
      const named = new Set(names);
      for (const s of steps) if (s.ok) assert.ok(named.has(`s${s.step}`), `s${s.step}`);
      assert.ok(names.length >= STEPS - 1);
      // A call's audit record follows its effect: the put in flight at the kill may have
      // committed its object without its record (the call never returned). Only that one.
      const unaudited = names.length - puts.length;
      assert.ok(unaudited === 0 || (unaudited === 1 && failed.length === 1), `${unaudited}`);
      if (unaudited === 1) assert.ok(named.has(`s${failed[0].step}`));
      assert.ok((await rt.kernel.store.verifyAudit()).ok);
    } finally {
      await rt.close();
    }
  }
});

/** Processes and steps each of the test below (a fifth of the steps on PostgreSQL, as above). */
const MANY = 8;
const EACH = ON_PG ? 250 : 1_500;

Deno.test("scheduler: a runtime killed while several processes' tool steps share commits resumes each at its exact step", async () => {
  // Eight processes at four slots: the running marks of the tool steps in flight
  // share one commit (SQLite), and `now` writes nothing to the store before its
  // audit line, so its tool acting before its mark is durable would show here as
  // a step run twice. Killed at two points of the run.
  for (const kill of [(MANY * EACH) / 5, (MANY * EACH * 3) / 5]) {
    await using env = await makeEnv({ concurrency: 4 });
    const pids: number[] = [];
    for (let i = 0; i < MANY; i++) {
      const { pid } = await env.rt.launch({
        image: { name: "many", tools: ["now"], budgets: UNBOUNDED },
        workspace: env.ws,
        grants: [{ resource: "clock:now", rights: ["read"] }],
        script: { steps: Array.from({ length: EACH }, () => ({ tool: "now", args: {} })) },
      });
      pids.push(pid);
    }
    await env.rt.close();
    const seen = await killMidRun(env.storePath, pids, kill, env.root, MANY * EACH);
    await expireLeases(env.storePath);

    const rt = await Runtime.open({ store: env.storePath });
    try {
      assert.equal((await rt.runUntilIdle()).idle, true);
      for (const pid of pids) {
        const rec = await rt.process(pid);
        assert.equal(rec.status, "exited", `pid ${pid}, kill at ${seen}`);
        assert.equal(rec.exit_code, 0);
        // One result per step, in order: none skipped, none recorded twice.
        const steps = await rt.steps(pid);
        assert.deepEqual(steps.map((s) => s.step), Array.from({ length: EACH }, (_, i) => i));
        // At most the step in flight at the kill has an unknown outcome; it was not replayed.
        const failed = steps.filter((s) => !s.ok);
        assert.ok(failed.length <= 1, JSON.stringify(failed));
        for (const f of failed) assert.ok(!f.ok && f.error.code === "EIO", JSON.stringify(f));
        // Each ok step's clock.now ran once; the unknown one at most once (its record is
        // durable if the call returned before the kill).
        const ok = steps.length - failed.length;
        const calls = await rt.kernel.store.listAudit({ action: "clock.now", actor: `pid:${pid}` });
        assert.ok(
          calls.length >= ok && calls.length <= ok + failed.length,
          `pid ${pid}: ${calls.length} clock.now records for ${ok} ok steps, ${failed.length} unknown`,
        );
      }
      assert.ok((await rt.kernel.store.verifyAudit()).ok);
    } finally {
      await rt.close();
    }
  }
});
