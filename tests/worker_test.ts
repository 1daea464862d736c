/**
 * Workers on one PostgreSQL store: processes are claimed with leases, every
 * write a worker makes for a process is fenced by its lease, a killed worker's
 * processes finish on another with each effect once, a decision made through
 * `serve` wakes a worker, claims go fleet-wide to the least recently run
 * process, and the audit stays one chain whoever appends. These tests need
 * PostgreSQL (`LIBOS_TEST_STORE` or `LIBOS_TEST_PG`; `.ci/run` starts one).
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { ScriptedModel } from "../runtime/providers/scripted.ts";
import { QueueHuman } from "../runtime/providers/scripted.ts";
import type { ModelContext, ModelDecision } from "../runtime/providers/types.ts";
import type { CapabilitySpec } from "../runtime/types.ts";
import { PgStore } from "../runtime/store/postgres.ts";
import { parsePgUrl, redactUrl, scrubUrls } from "../runtime/store/_pg_url.ts";
import { serve } from "../server/serve.ts";
import { libos, liveWith, rawRows, rawSql, rejectsCode, storeBytes } from "./_helpers.ts";
import { dropPgStore, freshPgStore, NEEDS_PG, pgClient } from "./_pg.ts";

const UNBOUNDED = { max_quanta: null, max_wall_ms: null, max_syscalls: null };
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const CLI = new URL("../cli/libos.ts", import.meta.url).pathname;

/** A fresh PostgreSQL store and a workspace, removed on dispose. */
async function fleetEnv(): Promise<{
  url: string;
  ws: string;
  root: string;
  [Symbol.asyncDispose](): Promise<void>;
}> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-fleet-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(ws);
  const url = await freshPgStore();
  return {
    url,
    ws,
    root,
    async [Symbol.asyncDispose]() {
      await Deno.remove(root, { recursive: true });
      await dropPgStore(url);
    },
  };
}

/** Submit `n` processes (a client runtime: it schedules nothing), each running `steps(i)`. */
async function submit(
  url: string,
  ws: string,
  n: number,
  steps: (i: number) => unknown[],
  image: Record<string, unknown> = {},
  grants: CapabilitySpec[] = [],
): Promise<number[]> {
  const rt = await Runtime.open({ store: url, role: "client" });
  try {
    const pids: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = await rt.launch({
        image: {
          name: "fleet",
          tools: ["put_object", "sleep", "now"],
          budgets: UNBOUNDED,
          ...image,
        },
        workspace: ws,
        grants: [{ resource: "clock:sleep", rights: ["execute"] }, ...grants],
        script: { steps: steps(i) },
      });
      pids.push(p.pid);
    }
    return pids;
  } finally {
    await rt.close();
  }
}

const puts = (n: number, sleepMs = 0) =>
  Array.from({ length: n }, (_, i) => [
    { tool: "put_object", args: { kind: "observation", name: `s${i}`, payload: { i } } },
    ...(sleepMs ? [{ tool: "sleep", args: { ms: sleepMs } }] : []),
  ]).flat();

Deno.test(
  "worker: two workers never run the same process at once, and each step runs once",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const pids = await submit(env.url, env.ws, 12, () => puts(4, 3));
    const a = await Runtime.open({ store: env.url, concurrency: 3 });
    const b = await Runtime.open({ store: env.url, concurrency: 3 });
    // Watch every quantum of both: a process inside one on one worker must not start on the other.
    const inside = new Map<number, string>();
    const overlaps: string[] = [];
    const ran = new Map<string, number>();
    for (const [name, rt] of [["a", a], ["b", b]] as const) {
      const run = rt.scheduler.runQuantum.bind(rt.scheduler);
      rt.scheduler.runQuantum = async (pid: number) => {
        const other = inside.get(pid);
        if (other !== undefined) overlaps.push(`pid ${pid} on ${name} while on ${other}`);
        inside.set(pid, name);
        ran.set(name, (ran.get(name) ?? 0) + 1);
        try {
          await run(pid);
        } finally {
          inside.delete(pid);
        }
      };
    }
    try {
      const [ra, rb] = await Promise.all([a.runUntilIdle(), b.runUntilIdle()]);
      assert.ok(ra.idle && rb.idle);
      assert.deepEqual(overlaps, []);
      // Both took part (12 processes, 3 slots each), and no quantum was counted twice.
      assert.ok((ran.get("a") ?? 0) > 0 && (ran.get("b") ?? 0) > 0, JSON.stringify([...ran]));
      assert.equal(ra.quanta + rb.quanta, pids.length * (2 * 8 + 1));
      for (const pid of pids) {
        const p = await a.process(pid);
        assert.equal(p.status, "exited", `pid ${pid}: ${p.exit_reason}`);
        const steps = await a.steps(pid);
        assert.deepEqual(steps.map((s) => [s.step, s.ok]), steps.map((_, i) => [i, true]));
        assert.equal(steps.length, 8);
      }
      // Every put ran once: a second run of one would have been EEXIST.
      const recs = await a.kernel.store.listAudit({ action: "memory.put" });
      assert.equal(recs.length, pids.length * 4);
      assert.ok(recs.every((r) => r.decision === "allow"));
      assert.equal((await a.kernel.store.verifyAudit()).ok, true);
      // Nothing is left leased.
      const held = await rawRows(
        env.url,
        "SELECT pid FROM process_state WHERE lease_worker IS NOT NULL",
      );
      assert.deepEqual(held, []);
    } finally {
      await a.close();
      await b.close();
    }
  },
);

/** A model whose first decision waits for `open()`: the worker holding it stalls mid-quantum. */
class GatedModel extends ScriptedModel {
  override readonly pure = true;
  entered = Promise.withResolvers<void>();
  #gate = Promise.withResolvers<void>();
  #first = true;
  open(): void {
    this.#gate.resolve();
  }
  override async next(ctx: ModelContext): Promise<ModelDecision> {
    if (this.#first) {
      this.#first = false;
      this.entered.resolve();
      await this.#gate.promise;
    }
    return await super.next(ctx);
  }
}

Deno.test(
  "worker: an external effect starts only while its lease surely holds",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const [pid] = await submit(env.url, env.ws, 1, () => puts(1));
    const store = await PgStore.open(env.url);
    const effect = (id: string) => ({
      effect_id: id,
      pid,
      syscall: "filesystem.write",
      resource: "filesystem:workspace:out.txt",
      args_hash: "h",
      status: "pending" as const,
      outcome: null,
      created_at: new Date().toISOString(),
      finished_at: null,
    });
    const statusOf = async () =>
      Object.fromEntries((await store.listEffects()).map((e) => [e.effect_id, e.status]));
    try {
      // A lease of 3 s, renewed every second by its worker: an effect needs 1 s of it left.
      const [a] = await store.claim("worker-a", 1, 3_000);
      const va = store.fenced({ ...a, leaseMs: 3_000 });
      // Positive control: a fresh lease lets the intent land.
      await va.insertEffect(effect("fx_fresh"));
      // With less than a third of the lease left (renewals stopped: a stalled worker), refused.
      await rawSql(
        env.url,
        "UPDATE process_state SET lease_until = now() + interval '500 milliseconds'",
      );
      await rejectsCode(va.insertEffect(effect("fx_late")), "EFENCED");
      // The lease is fresh again, but the intent's commit is held up past the margin (a
      // statement holding the row for 1.5 s): by the time the effect could start, the lease
      // might have run out, so it does not start and its intent says nothing was done.
      await rawSql(env.url, "UPDATE process_state SET lease_until = now() + interval '60 seconds'");
      const holder = rawRows(
        env.url,
        `SELECT pg_sleep(1.5) FROM (SELECT 1 FROM process_state WHERE pid = ? FOR UPDATE) x`,
        pid,
      );
      for (let i = 0; i < 500; i++) {
        const busy = await rawRows(
          env.url,
          "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(1.5)%'" +
            " AND pid <> pg_backend_pid()",
        );
        if (busy.length) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      await rejectsCode(va.insertEffect(effect("fx_slow")), "EFENCED");
      await holder;
      assert.deepEqual(await statusOf(), { fx_fresh: "pending", fx_slow: "failed" });
      // Without a known lease length (a fence only), the lease check alone applies.
      await va.finishEffect("fx_fresh", "done", null, new Date().toISOString());
      await store.fenced(a).insertEffect(effect("fx_plain"));
      assert.equal((await statusOf()).fx_plain, "pending");
    } finally {
      await store.close();
    }
  },
);

Deno.test(
  "worker: a write fenced by a lease that was lost is refused, and nothing it tried lands",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const [pid] = await submit(env.url, env.ws, 1, () => puts(2));
    const store = await PgStore.open(env.url);
    try {
      const [a] = await store.claim("worker-a", 1, 60_000);
      assert.equal(a.pid, pid);
      const va = store.fenced(a);
      // Positive control: while the lease holds, its writes land.
      assert.ok(await va.updateProcess(pid, { updated_at: "while-held" }));
      // Nobody else can claim it meanwhile.
      assert.deepEqual(await store.claim("worker-b", 1, 60_000), []);
      // The lease runs out (a stalled worker): another worker claims it.
      await rawSql(env.url, "UPDATE process_state SET lease_until = now() - interval '1 second'");
      const [b] = await store.claim("worker-b", 1, 60_000);
      assert.equal(b.pid, pid);
      assert.equal(b.takenOver, true);
      assert.equal(b.token, a.token + 1);
      const auditBefore = (await store.listAudit()).length;
      const eventsBefore = (await store.listEvents()).length;
      // Every kind of write from the stale holder is refused.
      await rejectsCode(va.updateProcess(pid, { status: "exited" }, "runnable"), "EFENCED");
      await rejectsCode(va.insertStep(pid, 0, "obj_forged"), "EFENCED");
      await rejectsCode(
        va.appendAudit({
          timestamp: "t",
          actor: `pid:${pid}`,
          action: "forged",
          target: "x",
          input_refs: null,
          output_refs: null,
          capability_refs: [],
          decision: "allow",
          reason: "stale",
          correlation_id: null,
          parent_record_id: null,
        }),
        "EFENCED",
      );
      await rejectsCode(
        va.appendEvent({
          type: "process.status",
          source: "stale",
          target: `pid:${pid}`,
          payload: {},
          priority: 0,
          created_at: "t",
          correlation_id: null,
        }),
        "EFENCED",
      );
      await rejectsCode(
        va.transaction(async (tx) => {
          await tx.setMeta("stale", "1");
        }),
        "EFENCED",
      );
      await rejectsCode(va.setMeta("stale", "2"), "EFENCED");
      const p = await store.getProcess(pid);
      assert.equal(p?.status, "runnable");
      assert.equal(p?.updated_at, "while-held");
      assert.equal(await store.stepCount(pid), 0);
      assert.equal(await store.getMeta("stale"), null);
      assert.equal((await store.listAudit()).length, auditBefore);
      assert.equal((await store.listEvents()).length, eventsBefore);
      // The new holder writes; its release stamps the last run, and the stale token stays refused.
      const vb = store.fenced(b);
      assert.ok(await vb.updateProcess(pid, { updated_at: "new-holder" }));
      await store.release([b]);
      await rejectsCode(va.setMeta("stale", "3"), "EFENCED");
      await rejectsCode(vb.setMeta("stale", "4"), "EFENCED");
      assert.equal((await store.getProcess(pid))?.updated_at, "new-holder");
    } finally {
      await store.close();
    }
  },
);

Deno.test(
  "worker: a worker stalled past its lease loses the process mid-quantum; what it decides is refused",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const [pid] = await submit(env.url, env.ws, 1, () => puts(3));
    const gated = new GatedModel();
    const a = await Runtime.open({
      store: env.url,
      providers: { models: { scripted: gated } },
      worker: { leaseMs: 60_000 },
    });
    const b = await Runtime.open({ store: env.url });
    try {
      // Worker a claims the process and stalls inside its first model quantum.
      const stalled = a.worker!.run({ maxQuanta: 1 });
      await gated.entered.promise;
      // Its lease runs out; worker b takes the process over and runs it to the end.
      await rawSql(env.url, "UPDATE process_state SET lease_until = now() - interval '1 second'");
      const rb = await b.runUntilIdle();
      assert.equal(rb.idle, true);
      assert.equal(b.worker!.stats.takenOver, 1);
      assert.equal((await b.process(pid)).status, "exited");
      // Worker a wakes up and tries to store its decision: refused, and it gives up the process.
      gated.open();
      await stalled;
      assert.equal(a.worker!.stats.lost, 1);
      const p = await b.process(pid);
      assert.equal(p.status, "exited");
      assert.equal(p.exit_code, 0);
      assert.deepEqual((await b.steps(pid)).map((s) => [s.step, s.ok]), [[0, true], [1, true], [
        2,
        true,
      ]]);
      assert.equal((await b.kernel.store.listAudit({ action: "memory.put" })).length, 3);
    } finally {
      await a.close();
      await b.close();
    }
  },
);

/** Spawn `libos worker` on `url`; returns the child (stdout/stderr piped). */
function spawnWorker(url: string, args: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", "--config", CONFIG, CLI, "worker", "--store", url, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

Deno.test(
  "worker: a SIGKILLed worker's processes finish on another worker, each effect once",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const N = 8;
    const WRITES = 6;
    const write = (n: number, i: number) => ({
      tool: "write_file",
      args: { path: `out/p${n}/f${i}.txt`, content: `process ${n} write ${i}\n` },
    });
    const pids = await submit(
      env.url,
      env.ws,
      N,
      (n) =>
        Array.from({ length: WRITES }, (_, i) => [write(n, i), { tool: "sleep", args: { ms: 20 } }])
          .flat(),
      { tools: ["write_file", "sleep"] },
      [{ resource: "filesystem:workspace:out/*", rights: ["write"] }],
    );
    // A worker with short leases (an effect starts only with a third of one left: 1 s, so a
    // busy machine does not refuse one), killed (SIGKILL) in the middle of the run.
    const doomed = spawnWorker(env.url, ["--lease-ms", "3000", "--concurrency", "4"]);
    let done = 0;
    for (let i = 0; i < 3000 && done < (N * WRITES) / 3; i++) {
      await new Promise((r) => setTimeout(r, 10));
      done = Number((await rawRows(env.url, "SELECT count(*) AS n FROM effects"))[0].n);
    }
    doomed.kill("SIGKILL");
    const killed = await doomed.output();
    assert.equal(killed.signal, "SIGKILL");
    assert.ok(done > 0 && done < N * WRITES, `killed after ${done} effects`);
    const heldByDead = (await rawRows(
      env.url,
      "SELECT count(*) AS n FROM process_state WHERE lease_worker IS NOT NULL",
    ))[0].n;
    // Another worker finishes everything once the dead one's leases run out.
    const next = spawnWorker(env.url, ["--until-idle", "--json"]);
    const out = await next.output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const stats = JSON.parse(text.trim().split("\n").at(-1)!);
    assert.equal(stats.idle, true);
    assert.equal(stats.takenOver, Number(heldByDead));
    const store = await PgStore.open(env.url);
    try {
      const effects = await store.listEffects();
      const byPath = new Map<string, string[]>();
      for (const e of effects) {
        const path = e.resource;
        byPath.set(path, [...(byPath.get(path) ?? []), e.status]);
      }
      // Each write was attempted at most once: its effect is done, or unknown (in flight at
      // the kill, never replayed); the step of an unknown one has EIO as its result.
      for (const [path, statuses] of byPath) {
        assert.equal(statuses.length, 1, `${path}: ${statuses}`);
        assert.ok(["done", "unknown"].includes(statuses[0]), `${path}: ${statuses}`);
      }
      assert.equal(effects.filter((e) => e.status === "pending").length, 0);
      let unknownSteps = 0;
      for (const [n, pid] of pids.entries()) {
        const p = await store.getProcess(pid);
        assert.equal(p?.status, "exited", `pid ${pid}: ${p?.status} ${p?.exit_reason}`);
        const steps = (await store.listSteps(pid)).map((o) =>
          o.payload as { step: number; tool: string; ok: boolean; error?: { code: string } }
        );
        assert.deepEqual(steps.map((s) => s.step), steps.map((_, i) => i), `pid ${pid}`);
        assert.equal(steps.length, 2 * WRITES);
        for (let i = 0; i < WRITES; i++) {
          const s = steps[2 * i];
          const fx = byPath.get(`filesystem:workspace:out/p${n}/f${i}.txt`);
          if (s.ok) {
            assert.deepEqual(fx, ["done"]);
            const file = await Deno.readTextFile(join(env.ws, `out/p${n}/f${i}.txt`));
            assert.equal(file, `process ${n} write ${i}\n`);
          } else {
            // Caught mid-step by the kill: the step's outcome is unknown and it was not run
            // again. Its write never started (no effect), was in flight (unknown), or had
            // landed before the result could be recorded (done): once, in every case.
            assert.equal(s.error?.code, "EIO");
            assert.ok(fx === undefined || fx.length === 1, `${fx}`);
            unknownSteps++;
          }
        }
      }
      // Only the quanta in flight at the kill (at most its 4 slots) lost their outcome.
      assert.ok(unknownSteps <= 4, `${unknownSteps}`);
      assert.equal((await store.verifyAudit()).ok, true);
    } finally {
      await store.close();
    }
  },
);

/** A process running one shell command, `sleep <marker>`, with `timeoutMs`. */
function sleepCommand(marker: string, timeoutMs: number) {
  return [{ tool: "shell", args: { argv: ["sleep", marker], timeout_ms: timeoutMs } }];
}

const SHELL_IMAGE = { tools: ["shell"], policy: { shell: "always_allow" } };
const SLEEP_GRANT: CapabilitySpec[] = [{ resource: "shell:sleep", rights: ["execute"] }];

/** Whether no host process carries `marker` within `ms`. */
async function noneAliveWithin(marker: string, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until;) {
    if (liveWith(marker).length === 0) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/** Wait until a host process runs `sleep <marker>` (a command is under way). */
async function commandStarted(marker: string): Promise<void> {
  for (const until = Date.now() + 30_000; Date.now() < until;) {
    if (liveWith(`sleep\u0000${marker}`).length > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`sleep ${marker} never started`);
}

Deno.test(
  "worker: a stalled worker's shell command has ended before a takeover asks whether it happened",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const marker = `37.${Math.floor(Math.random() * 1e6)}`;
    const [pid] = await submit(
      env.url,
      env.ws,
      1,
      () => sleepCommand(marker, 2000),
      SHELL_IMAGE,
      SLEEP_GRANT,
    );
    const stalled = spawnWorker(env.url, ["--lease-ms", "1500"]);
    const b = await Runtime.open({
      store: env.url,
      providers: { human: new QueueHuman() },
      worker: { leaseMs: 1500 },
    });
    try {
      await commandStarted(marker);
      // The worker stalls mid-command (stopped, not dead: its command runs on, and none
      // of its timers fire). Its lease runs out; worker b takes the process over.
      Deno.kill(stalled.pid, "SIGSTOP");
      let endedAt = Infinity;
      const watching = (async () => {
        for (const until = Date.now() + 60_000; Date.now() < until;) {
          if (liveWith(`sleep\u0000${marker}`).length === 0) return void (endedAt = Date.now());
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const rb = await b.runUntilIdle();
      await watching;
      assert.equal(rb.idle, true);
      const [req] = await b.humanRequests();
      assert.ok(req, "nobody was asked whether the command ran");
      assert.equal(req.kind, "outcome");
      assert.ok(
        Date.parse(req.created_at) >= endedAt,
        `asked at ${req.created_at}; the command ran until ${new Date(endedAt).toISOString()}`,
      );
      assert.ok(b.worker!.stats.deferred >= 1);
      const events = await b.kernel.store.listEvents();
      assert.ok(events.some((e) => e.type === "recovery.deferred"), "no recovery.deferred event");
      assert.equal((await b.process(pid)).status, "waiting_human");
    } finally {
      stalled.kill("SIGKILL");
      await stalled.output();
      await b.close();
    }
  },
);

Deno.test(
  "worker: a worker that finds its lease lost stops the shell command under way at once",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const marker = `39.${Math.floor(Math.random() * 1e6)}`;
    const [pid] = await submit(
      env.url,
      env.ws,
      1,
      () => sleepCommand(marker, 20_000),
      SHELL_IMAGE,
      SLEEP_GRANT,
    );
    const a = await Runtime.open({ store: env.url, worker: { leaseMs: 1500 } });
    try {
      // Its model's decision, then the command.
      const running = a.worker!.run({ maxQuanta: 2 });
      await commandStarted(marker);
      // Another worker holds the process now (its claim after the lease lapsed, say).
      await rawSql(
        env.url,
        `UPDATE process_state SET lease_worker = 'other', lease_token = lease_token + 1
         WHERE pid = ${pid}`,
      );
      const t0 = Date.now();
      assert.equal(await noneAliveWithin(`sleep\u0000${marker}`, 3000), true);
      assert.ok(Date.now() - t0 < 3000);
      await running;
      assert.equal(a.worker!.stats.lost, 1);
      // Nothing was written for the process after: its effect is still pending, for the
      // holder to recover once it has surely ended.
      const [fx] = await a.kernel.store.listEffects();
      assert.equal(fx.status, "pending");
    } finally {
      await a.close();
    }
  },
);

Deno.test(
  "worker: a row another client keeps locked costs a worker none of its other leases",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const marker = `38.${Math.floor(Math.random() * 1e6)}`;
    const [x] = await submit(
      env.url,
      env.ws,
      1,
      () => sleepCommand(marker, 20_000),
      SHELL_IMAGE,
      SLEEP_GRANT,
    );
    const [y] = await submit(env.url, env.ws, 1, () => sleepCommand(`${marker}1`, 20_000), {
      ...SHELL_IMAGE,
    }, SLEEP_GRANT);
    const a = await Runtime.open({ store: env.url, concurrency: 2, worker: { leaseMs: 1500 } });
    const stop = new AbortController();
    const running = a.worker!.run({ signal: stop.signal });
    const sql = pgClient(env.url);
    const unlock = Promise.withResolvers<void>();
    let locking: Promise<unknown> | null = null;
    try {
      await commandStarted(marker);
      await commandStarted(`${marker}1`);
      // Another client locks y's row and keeps it (a console stalled mid-decision, say).
      const locked = Promise.withResolvers<void>();
      locking = sql.begin(async (tx) => {
        await tx`SELECT pid FROM process_state WHERE pid = ${y} FOR UPDATE`;
        locked.resolve();
        await unlock.promise;
      });
      await locked.promise;
      // Three leases' time: x's lease is renewed all along, its command runs on.
      for (let i = 0; i < 15; i++) {
        await new Promise((r) => setTimeout(r, 300));
        const [row] = await rawRows(
          env.url,
          `SELECT lease_worker, lease_until > clock_timestamp() AS held FROM process_state
           WHERE pid = ${x}`,
        );
        assert.equal(row.lease_worker, a.worker!.id);
        assert.equal(row.held, true, `x's lease lapsed after ${(i + 1) * 300} ms`);
      }
      assert.ok(liveWith(`sleep\u0000${marker}`).length > 0, "x's command was stopped");
      assert.equal(a.worker!.stats.lost, 0);
      // y's lease could not be renewed: its command was stopped before it lapsed.
      assert.deepEqual(liveWith(`sleep\u0000${marker}1`), [], "y's command outlived its lease");
    } finally {
      unlock.resolve();
      await locking;
      await sql.end();
      stop.abort();
      // x's command is stopped by closing (its quantum ends with the run).
      for (const p of liveWith(`sleep\u0000${marker}`)) Deno.kill(p, "SIGKILL");
      await running.catch(() => {});
      await a.close();
    }
  },
);

Deno.test(
  "worker: a decision made through serve while workers run resumes the process on a worker",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const [pid] = await submit(
      env.url,
      env.ws,
      1,
      () => [{ tool: "write_file", args: { path: "src/app.py", content: "approved\n" } }],
      { tools: ["write_file"] },
      [{ resource: "filesystem:workspace:src/*", rights: ["write"], effect: "ask" }],
    );
    // A worker that never polls: only a NOTIFY can wake it once it is idle.
    const worker = await Runtime.open({
      store: env.url,
      providers: { human: new QueueHuman() },
      worker: { pollMs: 3_600_000 },
    });
    // The console: a client runtime, which runs nothing itself.
    const console_ = await Runtime.open({ store: env.url, role: "client" });
    const schedulerErrors: unknown[] = [];
    const srv = await serve(console_, {
      port: 0,
      onSchedulerError: (e) => schedulerErrors.push(e),
    });
    const stop = new AbortController();
    const running = worker.worker!.run({ signal: stop.signal });
    try {
      let req: { request_id: string } | undefined;
      for (let i = 0; i < 2000 && !req; i++) {
        await new Promise((r) => setTimeout(r, 10));
        req = (await console_.humanRequests())[0];
      }
      assert.ok(req, "the process asked");
      // Decide once it has parked and its worker is idle (a decision racing the parking is
      // server_test's): from then on only a NOTIFY can bring the process back.
      let parked = "";
      for (let i = 0; i < 2000 && parked !== "waiting_human"; i++) {
        parked = (await console_.process(pid)).status;
        if (parked !== "waiting_human") await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(parked, "waiting_human");
      const res = await fetch(`${srv.url}/api/human/${req.request_id}/decide`, {
        method: "POST",
        headers: { Authorization: `Bearer ${srv.token}`, "Content-Type": "application/json" },
        body: '{"decision":"allow_once"}',
      });
      assert.equal(res.status, 200, await res.clone().text());
      await res.body?.cancel();
      let status = "";
      for (let i = 0; i < 2000 && status !== "exited"; i++) {
        await new Promise((r) => setTimeout(r, 10));
        status = (await console_.process(pid)).status;
      }
      assert.equal(status, "exited");
      assert.equal(await Deno.readTextFile(join(env.ws, "src/app.py")), "approved\n");
      // The worker ran every quantum (the console is a client), the write once.
      assert.equal(worker.worker!.stats.quanta, 4);
      const writes = (await console_.kernel.store.listEffects()).filter((e) =>
        e.syscall === "filesystem.write"
      );
      assert.deepEqual(writes.map((e) => e.status), ["done"]);
      const decided = await console_.kernel.store.listAudit({ action: "human.decide" });
      assert.deepEqual(decided.map((r) => r.actor), ["human:owner via http"]);
      // A console beside workers never tries to schedule.
      assert.deepEqual(schedulerErrors, []);
    } finally {
      stop.abort();
      await running;
      await srv.close();
      await console_.close();
      await worker.close();
    }
  },
);

Deno.test(
  "worker: claims go fleet-wide to the least recently run process (one quantum each per round)",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const pids = await submit(env.url, env.ws, 10, () => puts(3));
    // Two workers' claims, one store: never-run processes first (the newest first: a
    // newcomer is served next), then the one released longest ago; nothing held by another
    // worker is ever handed out.
    const store = await PgStore.open(env.url);
    try {
      const a1 = await store.claim("a", 3, 60_000);
      const b1 = await store.claim("b", 3, 60_000);
      assert.deepEqual(a1.map((c) => c.pid), [10, 9, 8]);
      assert.deepEqual(b1.map((c) => c.pid), [7, 6, 5]);
      for (const pid of [9, 10, 8]) await store.release(a1.filter((c) => c.pid === pid));
      assert.deepEqual((await store.claim("a", 5, 60_000)).map((c) => c.pid), [4, 3, 2, 1, 9]);
      assert.deepEqual((await store.claim("b", 5, 60_000)).map((c) => c.pid), [10, 8]);
      assert.deepEqual(await store.claim("c", 5, 60_000), []);
      await rawSql(env.url, "UPDATE process_state SET lease_worker = NULL, lease_until = NULL");
    } finally {
      await store.close();
    }
    // Through the runtime (one slot, so the order of quanta is the order of claims):
    // every round gives each process exactly one quantum.
    const order: number[] = [];
    const rt = await Runtime.open({
      store: env.url,
      concurrency: 1,
      worker: { onQuantum: (pid) => order.push(pid) },
    });
    try {
      await rt.runUntilIdle();
    } finally {
      await rt.close();
    }
    // 7 quanta a process (3 model, 3 tool, 1 exit); the order of the stamped runs above
    // (2, 1, 3 released last; 4-10 claimed and released at once) starts the rotation.
    assert.equal(order.length, pids.length * 7);
    for (let round = 0; round < 7; round++) {
      const slice = order.slice(round * 10, round * 10 + 10);
      assert.equal(new Set(slice).size, 10, `round ${round}: ${slice}`);
      if (round > 0) assert.deepEqual(slice, order.slice(0, 10), `round ${round}`);
    }
  },
);

Deno.test(
  "worker: the CLI submits processes, runs them with workers and verifies one audit chain",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const script = join(env.root, "script.json");
    await Deno.writeTextFile(script, JSON.stringify({ steps: puts(3) }));
    const image = join(env.root, "image.json");
    await Deno.writeTextFile(image, JSON.stringify({ name: "cli", tools: ["put_object"] }));
    const pids: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await libos([
        "submit",
        image,
        "--workspace",
        env.ws,
        "--script",
        script,
        "--store",
        env.url,
        "--json",
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.status, "runnable");
      pids.push(out.pid);
    }
    assert.deepEqual(pids, [1, 2, 3, 4]);
    // Submitting ran nothing.
    const before = await rawRows(env.url, "SELECT count(*) AS n FROM step_results");
    assert.equal(Number(before[0].n), 0);
    const [w1, w2] = await Promise.all([
      libos(["worker", "--store", env.url, "--until-idle", "--json", "--concurrency", "2"]),
      libos(["worker", "--store", env.url, "--until-idle", "--json", "--concurrency", "2"]),
    ]);
    assert.equal(w1.code, 0, w1.stderr);
    assert.equal(w2.code, 0, w2.stderr);
    const q = JSON.parse(w1.stdout).quanta + JSON.parse(w2.stdout).quanta;
    assert.equal(q, 4 * 7);
    const ps = await libos(["ps", "--store", env.url, "--json"]);
    assert.ok((JSON.parse(ps.stdout) as { status: string }[]).every((p) => p.status === "exited"));
    const verify = await libos(["audit", "--store", env.url, "--verify"]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /audit ok: \d+ records/);
    // Tampering is caught the same way as in a file store.
    await rawSql(env.url, "UPDATE audit SET body = body || ' ' WHERE seq = 3");
    const bad = await libos(["audit", "--store", env.url, "--verify"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /TAMPERED: record 3 /);
    // A SQLite store keeps its one scheduler: no workers there.
    const sqlite = await libos(["worker", "--store", join(env.root, "x.db")]);
    assert.equal(sqlite.code, 2);
    assert.match(sqlite.stderr, /postgres:\/\//);
  },
);

Deno.test(
  "worker: a store URL's password is never printed, stored or put in an error",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    const PW = "pw-" + crypto.randomUUID().slice(0, 12);
    // The test cluster trusts local connections, so any password is accepted (and ignored).
    const withPw = env.url.replace(/^postgres:\/\/([^@/]*)@/, `postgres://$1:${PW}@`);
    assert.ok(withPw.includes(PW));
    assert.ok(!redactUrl(withPw).includes(PW));
    assert.ok(!scrubUrls(`failed: ${withPw} and again ${withPw}`).includes(PW));
    const script = join(env.root, "script.json");
    await Deno.writeTextFile(script, JSON.stringify({ steps: puts(1) }));
    const image = join(env.root, "image.json");
    await Deno.writeTextFile(image, JSON.stringify({ name: "pw", tools: ["put_object"] }));
    const outputs: string[] = [];
    const cli = async (args: string[], env_: Record<string, string> = {}) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-check", "--config", CONFIG, CLI, ...args],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", ...env_ },
      }).output();
      const dec = new TextDecoder();
      outputs.push(dec.decode(out.stdout), dec.decode(out.stderr));
      return out.code;
    };
    assert.equal(
      await cli(["submit", image, "--workspace", env.ws, "--script", script, "--store", withPw]),
      0,
    );
    // From LIBOS_STORE as well.
    assert.equal(await cli(["worker", "--until-idle"], { LIBOS_STORE: withPw }), 0);
    assert.equal(await cli(["ps", "--store", withPw]), 0);
    // A server that refuses the connection: the error names no password.
    const dead = `postgres://someone:${PW}@127.0.0.1:1/nowhere?connect_timeout=2`;
    assert.notEqual(await cli(["ps", "--store", dead]), 0);
    // A malformed URL is refused without echoing it.
    assert.equal(await cli(["ps", "--store", `postgres://u:${PW}@h/db?bogus=1`]), 2);
    assert.ok(outputs.join("").includes(redactUrl(withPw)), "the worker names its store");
    for (const o of outputs) assert.ok(!o.includes(PW), o);
    assert.ok(!(await storeBytes(env.url)).includes(PW));
    const rt = await Runtime.open({ store: withPw, role: "client" });
    try {
      assert.ok(!rt.kernel.store.name.includes(PW));
    } finally {
      await rt.close();
    }
  },
);

Deno.test(
  "worker: URLs name a socket directory, parameters are checked, and a newer schema or another application's is refused",
  NEEDS_PG,
  async () => {
    const c = parsePgUrl("postgres://me@/db1?host=/run/postgresql&port=5433&search_path=s1");
    assert.deepEqual([c.host, c.port, c.path, c.user, c.database], [
      "/run/postgresql",
      5433,
      "/run/postgresql/.s.PGSQL.5433",
      "me",
      "db1",
    ]);
    assert.equal(c.connection.search_path, "s1");
    const t = parsePgUrl("postgresql://u:p%40ss@[::1]:6000/d?sslmode=require");
    assert.deepEqual([t.host, t.port, t.path, t.pass, t.ssl], [
      "::1",
      6000,
      null,
      "p@ss",
      "require",
    ]);
    for (
      const bad of [
        "postgres://h/d?x=1",
        "postgres://h/d?search_path=a;drop",
        "postgres://h:99999/d",
      ]
    ) {
      await rejectsCode(Promise.resolve().then(() => parsePgUrl(bad)), "EINVAL");
    }
    await using env = await fleetEnv();
    const s = await PgStore.open(env.url);
    await s.close();
    // Opening again applies nothing twice.
    const again = await PgStore.open(env.url);
    await again.close();
    const v = await rawRows(env.url, "SELECT count(*) AS n FROM schema_migrations");
    assert.equal(Number(v[0].n), 1);
    await rawSql(env.url, "INSERT INTO schema_migrations (version) VALUES (99)");
    const e = await rejectsCode(PgStore.open(env.url), "ESTATE");
    assert.match(e.message, /schema version 99/);
    // A schema holding another application's tables is not migrated: refused, nothing written.
    await rawSql(env.url, "CREATE SCHEMA app");
    await rawSql(env.url, "CREATE TABLE app.objects (x integer)");
    const other = await rejectsCode(PgStore.open(`${env.url}&search_path=app`), "EINVAL");
    assert.match(other.message, /tables of something else.*nothing was written/);
    const tables = await rawRows(
      env.url,
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app'",
    );
    assert.deepEqual(tables.map((r) => r.table_name), ["objects"]);
  },
);

Deno.test(
  "worker: a quantum that fails for a reason other than a lost lease ends the run with that error, not the worker's process",
  NEEDS_PG,
  async () => {
    await using env = await fleetEnv();
    await submit(env.url, env.ws, 4, () => puts(50, 5));
    const rt = await Runtime.open({ store: env.url, concurrency: 4 });
    // The store goes away under one quantum (as a dropped connection does: ECONNRESET, EIO).
    const run = rt.scheduler.runQuantum.bind(rt.scheduler);
    let quanta = 0;
    rt.scheduler.runQuantum = async (pid: number) => {
      if (++quanta === 10) throw new Error("connect ENOENT /tmp/.s.PGSQL.5432");
      await run(pid);
    };
    try {
      const ended = await rt.runUntilIdle().then(() => null, (e: unknown) => e);
      assert.ok(ended instanceof Error, `the run ended without the error: ${ended}`);
      assert.match((ended as Error).message, /connect ENOENT/);
    } finally {
      await rt.close();
    }
  },
);
