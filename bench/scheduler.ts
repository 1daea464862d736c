/**
 * BenchScheduler: what a quantum costs through the scheduler next to the same
 * syscalls issued directly (the kernel alone), measured side by side in one run.
 *
 * 1. Three shapes with the same total of scripted steps, each calling the
 *    `now` tool (one audited `clock.now` syscall): 10 processes x 10,000
 *    steps, 1,000 x 100 and 10,000 x 10, run to completion through
 *    `runUntilIdle` with the runtime's default concurrency (or `--concurrency`).
 *    A step is two quanta (the model decides, durably; the tool runs), and each
 *    process ends with one more (the model's exit). Each shape has its own
 *    store, fresh at the start.
 * 2. The raw baseline of each shape: the same number of processes, each with
 *    its own `clock:now` grant, issuing `clock.now` through `syscall()` with
 *    no scheduler, round-robin, with as many callers at once as the scheduler
 *    has slots.
 * 3. A tool quantum and a model quantum measured separately, inside
 *    `runUntilIdle`: 1,000 processes at the same point of their scripts, so
 *    a round is all model quanta and the next all tool quanta, against the
 *    same `clock.now` calls through `syscall()`; and against a step's durable
 *    work issued directly, no scheduler: the decision, the running mark
 *    (durable before the call), the call and its recorded result, through the
 *    kernel and store calls the scheduler makes. That separates what the
 *    scheduler's own bookkeeping costs from what keeping a step costs.
 * 4. Fairness: Jain's index over the processes' quanta after each shape's
 *    first round, cut at a whole number of turns (every process still running).
 * 5. Time to first quantum: while the 10,000-process shape has all of them
 *    runnable, a host launches new processes; the time from `launch()` being
 *    called to the new process's first quantum starting (p50, p99).
 *
 * Variants are interleaved round by round (rotating order), each shape
 * advancing by a tenth of its quanta per round, so machine noise hits all of
 * them; numbers are medians over rounds. Afterwards every shape is checked:
 * each process exited 0 with one result per step, and the audit holds exactly
 * one `clock.now` allow record per step (per syscall for the baselines); the
 * processes stepped directly hold one result and one such record per step.
 *
 * Usage: `deno task bench:scheduler [--json] [--rounds N] [--total STEPS] [--concurrency C]`
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { DEFAULT_CONCURRENCY } from "../host/scheduler.ts";
import { syscall } from "../primitives/mod.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { ScriptedModel } from "../runtime/providers/scripted.ts";
import type { ModelContext, ModelDecision, ModelProvider } from "../runtime/providers/types.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import { PROCESS_STATUSES, type Usage } from "../runtime/types.ts";
import { intFlag, median } from "./_common.ts";

const JSON_OUT = Deno.args.includes("--json");
/** Rounds; each shape advances by 1/ROUNDS of its quanta per round. */
const ROUNDS = intFlag("--rounds", 10);
/** Scripted steps per shape (split over 10, 1,000 and 10,000 processes). */
const TOTAL = intFlag("--total", 100_000);
/** Slots of the scheduler (and callers at once of the baseline). */
const CONCURRENCY = intFlag("--concurrency", DEFAULT_CONCURRENCY);
/** Processes launched per round while 10,000 are runnable. */
const NEWCOMERS = intFlag("--newcomers", 25);

const TARGET_QUANTA_PER_SEC = 10_000;
const TARGET_LONG_OVER_SHORT = 1.5;
const TARGET_JAIN = 0.99;
const TARGET_OVER_KERNEL = 2;

const IMAGE = {
  name: "bench",
  tools: ["now"],
  budgets: { max_quanta: null, max_wall_ms: null, max_syscalls: null },
};
const CLOCK = [{ resource: "clock:now", rights: ["read" as const] }];

// ---- the model, watched: when each process got its first model quantum

/** The scripted model, noting when it is first asked about each process. */
class WatchedModel implements ModelProvider {
  /** It only notes a time: like the scripted model it wraps, it reaches nothing outside. */
  readonly pure = true;
  readonly first = new Map<number, number>();
  #inner = new ScriptedModel();
  next(ctx: ModelContext): Promise<ModelDecision> {
    if (!this.first.has(ctx.pid)) this.first.set(ctx.pid, performance.now());
    return this.#inner.next(ctx);
  }
}

// ---- fixtures

interface Fixture {
  rt: Runtime;
  storePath: string;
  pids: number[];
  model: WatchedModel;
}

async function open(root: string, name: string): Promise<Fixture> {
  const storePath = join(root, `${name}.db`);
  const model = new WatchedModel();
  const rt = await Runtime.open({
    store: storePath,
    concurrency: CONCURRENCY,
    jitCacheDir: join(root, `${name}.jit`),
    providers: { models: { scripted: model } },
  });
  return { rt, storePath, pids: [], model };
}

function script(steps: number): { steps: { tool: string; args: Record<string, never> }[] } {
  return { steps: Array.from({ length: steps }, () => ({ tool: "now", args: {} })) };
}

async function launchAll(f: Fixture, ws: string, n: number, steps: number | null): Promise<number> {
  const t0 = performance.now();
  const s = steps === null ? undefined : script(steps);
  for (let i = 0; i < n; i++) {
    f.pids.push((await f.rt.launch({ image: IMAGE, workspace: ws, grants: CLOCK, script: s })).pid);
  }
  return n / ((performance.now() - t0) / 1000);
}

// ---- measurement

/** One shape: its scheduled runtime and its kernel-alone baseline. */
interface Shape {
  name: string;
  procs: number;
  steps: number;
  sched: Fixture;
  kernel: Fixture;
  /** Quanta the whole shape takes: two per step and the exit. */
  quanta: number;
  /** Quanta run so far (newcomers' included). */
  done: number;
  /** Nothing left to run. */
  idle: boolean;
  /** Scheduler quanta/s per round, baseline syscalls/s per round. */
  qps: number[];
  sps: number[];
  /** Syscalls issued by each baseline process. */
  kernelCalls: Map<number, number>;
  jain: number | null;
  launchPerSec: number;
}

/** Jain's fairness index over `xs`: 1 when all are equal. */
function jain(xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const sq = xs.reduce((a, b) => a + b * b, 0);
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

/** Time to first quantum of newcomers launched during one slice. */
interface Newcomers {
  launched: Map<number, number>;
  samples: number[];
  late: number;
}

async function schedSlice(
  s: Shape,
  last: boolean,
  newcomers: Newcomers | null,
  ws: string,
): Promise<void> {
  // Whole rounds (a multiple of the process count), so every process has had
  // the same number of turns when fairness is read after the first slice.
  const budget = last ? Number.MAX_SAFE_INTEGER : Math.ceil(s.quanta / ROUNDS / s.procs) * s.procs;
  if (s.idle) return;
  let running = true;
  // Expected length of the slice from the last round's rate: launch only in its first 80%.
  const expectMs = s.qps.length ? (budget / median(s.qps)) * 1000 : 0;
  const launcher = newcomers && expectMs > 0
    ? (async () => {
      const gap = (expectMs * 0.8) / (NEWCOMERS + 1);
      const start = performance.now();
      for (let i = 1; i <= NEWCOMERS && running; i++) {
        const wait = start + gap * i - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (!running) break;
        const t0 = performance.now();
        const p = await s.sched.rt.launch({
          image: IMAGE,
          workspace: ws,
          grants: CLOCK,
          script: script(1),
        });
        newcomers.launched.set(p.pid, t0);
      }
    })()
    : null;
  const t0 = performance.now();
  const r = await s.sched.rt.runUntilIdle(budget);
  const ms = performance.now() - t0;
  running = false;
  await launcher;
  s.done += r.quanta;
  s.idle = r.idle;
  if (r.quanta > 0) s.qps.push(r.quanta / (ms / 1000));
  if (newcomers) {
    for (const [pid, at] of newcomers.launched) {
      const first = s.sched.model.first.get(pid);
      if (first === undefined) newcomers.late++;
      else newcomers.samples.push(first - at);
    }
    newcomers.launched.clear();
  }
  if (s.jain === null) {
    const procs = await s.sched.rt.kernel.store.listProcesses();
    const mine = new Set(s.sched.pids);
    s.jain = jain(procs.filter((p) => mine.has(p.pid)).map((p) => p.usage.quanta));
  }
}

/** The same syscalls as the slice's steps, issued directly, `CONCURRENCY` callers at once. */
async function kernelSlice(s: Shape): Promise<void> {
  const calls = Math.ceil(s.procs * s.steps / ROUNDS);
  const k = s.kernel.rt.kernel;
  const pids = s.kernel.pids;
  let next = 0;
  const args = {};
  const caller = async () => {
    for (let i = next++; i < calls; i = next++) {
      const pid = pids[i % pids.length];
      await syscall(k, pid, "clock.now", args);
      s.kernelCalls.set(pid, (s.kernelCalls.get(pid) ?? 0) + 1);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, caller));
  await k.store.auditIndexed();
  s.sps.push(calls / ((performance.now() - t0) / 1000));
}

/**
 * Model and tool quanta apart, inside runUntilIdle: 1,000 processes standing
 * at the same point of their scripts, so one round (runUntilIdle of 1,000
 * quanta) is 1,000 model quanta and the next 1,000 tool quanta; against the
 * same 1,000 clock.now calls through syscall(), as many callers at once.
 */
interface Separate {
  sched: Fixture;
  kernel: Fixture;
  /** Processes whose steps are issued directly (see {@link directStep}). */
  direct: Fixture;
  /** Quanta/s of each model round, of each tool round; syscalls/s of each baseline run. */
  model: number[];
  tool: number[];
  syscall: number[];
  /** Direct steps/s of each round. */
  directSteps: number[];
  kernelCalls: Map<number, number>;
}

const SEPARATE_PROCS = 1000;

async function separateSlice(x: Separate): Promise<void> {
  for (const rates of [x.model, x.tool]) {
    const t0 = performance.now();
    const r = await x.sched.rt.runUntilIdle(SEPARATE_PROCS);
    rates.push(r.quanta / ((performance.now() - t0) / 1000));
  }
  const k = x.kernel.rt.kernel;
  const args = {};
  let next = 0;
  const caller = async () => {
    for (let i = next++; i < SEPARATE_PROCS; i = next++) {
      const pid = x.kernel.pids[i];
      await syscall(k, pid, "clock.now", args);
      x.kernelCalls.set(pid, (x.kernelCalls.get(pid) ?? 0) + 1);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, caller));
  await k.store.auditIndexed();
  x.syscall.push(SEPARATE_PROCS / ((performance.now() - t0) / 1000));
  await directSlice(x);
}

/** Statuses a decision may land in (the scheduler's guard: not an ended process). */
const LIVE = PROCESS_STATUSES.filter((s) => !isTerminal(s));

/**
 * One step's durable work as the scheduler does it, minus the scheduler: the
 * decision and the next action (deferred), the running mark (durable before
 * the call), the call, and its result recorded with the cleared action and
 * the status back to runnable (deferred). No round, budget check, process
 * record, model or tool dispatch: what is left is what keeping a step costs.
 */
async function directStep(k: Kernel, pid: number, step: number, usage: Usage): Promise<void> {
  usage.quanta++;
  const decided = {
    model: { kind: "scripted", state: { next: step + 1 } },
    pending: { tool: "now", args: {} },
    usage: { ...usage },
    updated_at: k.now(),
  };
  await k.store.transaction((tx) => tx.updateProcess(pid, decided, LIVE), { defer: true });
  usage.quanta++;
  if (!(await k.markRunning(pid))) throw new Error(`direct step: pid ${pid} was not runnable`);
  const value = await syscall(k, pid, "clock.now", {}, { correlationId: k.newId("step") });
  const proc = await k.process(pid);
  await k.atomically(async (tx) => {
    const obj = await tx.insertObject({
      namespace: proc.namespace,
      kind: "tool_result",
      name: `step-${step}`,
      label: proc.taint,
      payload: { step, tool: "now", ok: true, value },
      created_by: pid,
    });
    await tx.store.insertStep(pid, step, obj.oid);
    const done = { pending: null, usage: { ...usage }, updated_at: tx.now() };
    await tx.store.updateProcess(pid, { ...done, status: "runnable" }, "running");
  }, { defer: true });
}

/** One direct step for each process, as many at once as the scheduler has slots. */
async function directSlice(x: Separate): Promise<void> {
  const k = x.direct.rt.kernel;
  const step = x.directSteps.length;
  const usage = new Map<number, Usage>();
  let next = 0;
  const caller = async () => {
    for (let i = next++; i < SEPARATE_PROCS; i = next++) {
      const pid = x.direct.pids[i];
      let u = usage.get(pid);
      if (!u) usage.set(pid, u = { quanta: 2 * step, wall_ms: 0, syscalls: step });
      await directStep(k, pid, step, u);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, caller));
  // Committed and indexed, as the scheduler's rounds end.
  await k.store.flush();
  await k.store.auditIndexed();
  x.directSteps.push(SEPARATE_PROCS / ((performance.now() - t0) / 1000));
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

// ---- verification (a separate read-only connection, not the code under test)

function verifyStore(
  storePath: string,
  pids: number[],
  steps: number | null,
  calls: Map<number, number> | null,
  ended = true,
): { ok: boolean; problems: string[] } {
  const db = new DatabaseSync(storePath, { readOnly: true });
  const problems: string[] = [];
  try {
    const audited = new Map(
      (db.prepare(
        `SELECT actor, COUNT(*) AS n FROM audit WHERE action = 'clock.now' AND decision = 'allow'
         GROUP BY actor`,
      ).all() as { actor: string; n: number }[]).map((r) => [r.actor, Number(r.n)]),
    );
    const results = new Map(
      (db.prepare("SELECT pid, COUNT(*) AS n FROM step_results GROUP BY pid").all() as {
        pid: number;
        n: number;
      }[]).map((r) => [r.pid, Number(r.n)]),
    );
    const state = db.prepare("SELECT status FROM process_state WHERE pid = ?");
    const body = db.prepare("SELECT body FROM processes WHERE pid = ?");
    for (const pid of pids) {
      const want = steps ?? calls?.get(pid) ?? 0;
      const got = audited.get(`pid:${pid}`) ?? 0;
      if (got !== want) problems.push(`pid ${pid}: ${got} clock.now records, expected ${want}`);
      if (steps === null) continue;
      const st = (state.get(pid) as { status: string }).status;
      const code = JSON.parse((body.get(pid) as { body: string }).body).exit_code;
      if (ended && (st !== "exited" || code !== 0)) {
        problems.push(`pid ${pid}: ${st} (exit ${code})`);
      }
      if ((results.get(pid) ?? 0) !== steps) {
        problems.push(`pid ${pid}: ${results.get(pid) ?? 0} step results, expected ${steps}`);
      }
    }
  } finally {
    db.close();
  }
  return { ok: problems.length === 0, problems: problems.slice(0, 5) };
}

// ---- the benchmark

async function main(): Promise<Record<string, unknown>> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-sched-" }));
  const fixtures: Fixture[] = [];
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const shapes: Shape[] = [];
    for (const procs of [10, 1000, 10000]) {
      const steps = Math.max(1, Math.floor(TOTAL / procs));
      const sched = await open(root, `sched-${procs}`);
      const kernel = await open(root, `kernel-${procs}`);
      fixtures.push(sched, kernel);
      const launchPerSec = await launchAll(sched, ws, procs, steps);
      await launchAll(kernel, ws, procs, null);
      shapes.push({
        name: `${procs.toLocaleString("en-US")} x ${steps.toLocaleString("en-US")}`,
        procs,
        steps,
        sched,
        kernel,
        quanta: procs * (2 * steps + 1),
        done: 0,
        idle: false,
        qps: [],
        sps: [],
        kernelCalls: new Map(),
        jain: null,
        launchPerSec,
      });
    }
    const sep: Separate = {
      sched: await open(root, "separate-sched"),
      kernel: await open(root, "separate-kernel"),
      direct: await open(root, "separate-direct"),
      model: [],
      tool: [],
      syscall: [],
      directSteps: [],
      kernelCalls: new Map(),
    };
    fixtures.push(sep.sched, sep.kernel, sep.direct);
    // One step per round and two to spare: no process reaches its exit.
    await launchAll(sep.sched, ws, SEPARATE_PROCS, ROUNDS + 2);
    await launchAll(sep.kernel, ws, SEPARATE_PROCS, null);
    await launchAll(sep.direct, ws, SEPARATE_PROCS, null);

    const newcomers: Newcomers = { launched: new Map(), samples: [], late: 0 };
    const big = shapes[2];
    const started = performance.now();
    for (let r = 0; r < ROUNDS; r++) {
      const last = r === ROUNDS - 1;
      const variants: (() => Promise<void>)[] = [
        ...shapes.map((s) => () =>
          // Newcomers only while every one of the 10,000 is still runnable.
          schedSlice(s, last, s === big && r < ROUNDS / 2 ? newcomers : null, ws)
        ),
        ...shapes.map((s) => () => kernelSlice(s)),
        () => separateSlice(sep),
      ];
      for (let j = 0; j < variants.length; j++) await variants[(r + j) % variants.length]();
    }
    const measureMs = performance.now() - started;

    const verify = shapes.map((s) => ({
      shape: s.name,
      scheduled: verifyStore(s.sched.storePath, s.sched.pids, s.steps, null),
      kernel: verifyStore(s.kernel.storePath, s.kernel.pids, null, s.kernelCalls),
    }));
    verify.push({
      shape: "apart",
      // One tool quantum per round each, none ended.
      scheduled: verifyStore(sep.sched.storePath, sep.sched.pids, ROUNDS, null, false),
      kernel: verifyStore(sep.kernel.storePath, sep.kernel.pids, null, sep.kernelCalls),
    });
    verify.push({
      shape: "direct",
      // One step per round each, recorded as the scheduler records it; never ended.
      scheduled: verifyStore(sep.direct.storePath, sep.direct.pids, ROUNDS, null, false),
      kernel: { ok: true, problems: [] },
    });
    return report(shapes, sep, newcomers, verify, measureMs);
  } finally {
    for (const f of fixtures) await f.rt.close().catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
}

function round2(n: number): number {
  return Number(n.toFixed(2));
}

function report(
  shapes: Shape[],
  sep: Separate,
  newcomers: Newcomers,
  verify: { shape: string; scheduled: { ok: boolean }; kernel: { ok: boolean } }[],
  measureMs: number,
): Record<string, unknown> {
  const rows = shapes.map((s) => {
    const qps = median(s.qps);
    const sps = median(s.sps);
    // Steps/s: each step is two quanta (plus one exit quantum per process).
    const stepsPerSec = qps * (s.steps / (2 * s.steps + 1));
    return {
      shape: s.name,
      processes: s.procs,
      steps: s.steps,
      quanta: s.done,
      quanta_per_sec: Math.round(qps),
      min_quanta_per_sec: Math.round(Math.min(...s.qps)),
      max_quanta_per_sec: Math.round(Math.max(...s.qps)),
      kernel_syscalls_per_sec: Math.round(sps),
      /** Kernel-alone syscalls/s over scheduler quanta/s: what a quantum costs in syscalls. */
      kernel_over_quantum: round2(sps / qps),
      /** Kernel-alone syscalls/s over scheduled steps/s: the same work, both ways. */
      kernel_over_step: round2(sps / stepsPerSec),
      jain: s.jain === null ? null : Number(s.jain.toFixed(4)),
      launches_per_sec: Math.round(s.launchPerSec),
    };
  });
  const short = rows[2];
  const long = rows[0];
  const modelQps = median(sep.model);
  const toolQps = median(sep.tool);
  const sysPs = median(sep.syscall);
  const directPs = median(sep.directSteps);
  const stepUs = 1e6 / modelQps + 1e6 / toolQps;
  const ttfq = newcomers.samples.length
    ? {
      n: newcomers.samples.length,
      late: newcomers.late,
      p50_ms: round2(quantile(newcomers.samples, 0.5)),
      p99_ms: round2(quantile(newcomers.samples, 0.99)),
      max_ms: round2(Math.max(...newcomers.samples)),
    }
    : null;
  const minQps = Math.min(...rows.map((r) => r.quanta_per_sec));
  const longOverShort = round2(short.quanta_per_sec / long.quanta_per_sec);
  const minJain = Math.min(...rows.map((r) => r.jain ?? 0));
  const worstOverKernel = Math.max(...rows.map((r) => r.kernel_over_quantum));
  const verified = verify.every((v) => v.scheduled.ok && v.kernel.ok);
  return {
    machine: {
      cores: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      os: Deno.build.os,
    },
    config: {
      rounds: ROUNDS,
      total_steps_per_shape: TOTAL,
      concurrency: CONCURRENCY,
      separate_processes: SEPARATE_PROCS,
      newcomers_per_round: NEWCOMERS,
    },
    shapes: rows,
    separate: {
      processes: SEPARATE_PROCS,
      model_quanta_per_sec: Math.round(modelQps),
      model_quantum_us: round2(1e6 / modelQps),
      tool_quanta_per_sec: Math.round(toolQps),
      tool_quantum_us: round2(1e6 / toolQps),
      syscalls_per_sec: Math.round(sysPs),
      syscall_us: round2(1e6 / sysPs),
      /** A tool quantum (mark running, the syscall, record the result) over the bare syscall. */
      tool_over_syscall: round2(sysPs / toolQps),
      /** A whole step (model quantum + tool quantum) over the bare syscall. */
      step_over_syscall: round2(stepUs / (1e6 / sysPs)),
      direct_steps_per_sec: Math.round(directPs),
      direct_step_us: round2(1e6 / directPs),
      /** A step through the scheduler over the same durable work issued directly. */
      step_over_direct: round2(stepUs / (1e6 / directPs)),
      /** The durable work of a step issued directly over the bare syscall. */
      direct_over_syscall: round2(sysPs / directPs),
    },
    time_to_first_quantum: ttfq,
    verify,
    target: {
      quanta_per_sec: { target: TARGET_QUANTA_PER_SEC, measured: minQps, pass: minQps >= 10_000 },
      long_over_short: {
        target: TARGET_LONG_OVER_SHORT,
        measured: longOverShort,
        pass: longOverShort <= TARGET_LONG_OVER_SHORT,
      },
      jain: { target: TARGET_JAIN, measured: minJain, pass: minJain >= TARGET_JAIN },
      over_kernel: {
        target: TARGET_OVER_KERNEL,
        judged_on: "kernel-alone syscalls/s over scheduler quanta/s (worst shape)",
        measured: worstOverKernel,
        pass: worstOverKernel <= TARGET_OVER_KERNEL,
      },
    },
    verified,
    elapsed_ms: Math.round(measureMs),
  };
}

// ---- output

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

// deno-lint-ignore no-explicit-any
function printText(r: any): void {
  const c = r.config;
  const out: string[] = [];
  out.push(
    `Agent libOS scheduler benchmark  (deno ${r.machine.deno}, ${r.machine.cores} cores, ${c.rounds} interleaved rounds, medians; concurrency ${c.concurrency})`,
  );
  out.push("");
  out.push(
    `1. ${
      fmtInt(c.total_steps_per_shape)
    } scripted steps per shape (tool 'now' = one audited clock.now), run to completion`,
  );
  out.push(
    `   ${"shape".padEnd(16)}${"quanta/s".padStart(10)}   ${
      "[slowest .. fastest round]".padEnd(24)
    }${"kernel alone".padStart(14)}${"per quantum".padStart(13)}${"per step".padStart(10)}${
      "Jain".padStart(9)
    }`,
  );
  for (const s of r.shapes) {
    out.push(
      `   ${s.shape.padEnd(16)}${fmtInt(s.quanta_per_sec).padStart(10)}   ${
        `[${fmtInt(s.min_quanta_per_sec)} .. ${fmtInt(s.max_quanta_per_sec)}]`.padEnd(24)
      }${(fmtInt(s.kernel_syscalls_per_sec) + "/s").padStart(14)}${
        (s.kernel_over_quantum + "x").padStart(13)
      }${(s.kernel_over_step + "x").padStart(10)}${String(s.jain).padStart(9)}`,
    );
  }
  out.push(
    `   kernel alone: the same clock.now calls through syscall(), ${c.concurrency} caller(s) at once, no scheduler.`,
  );
  out.push(
    `   per quantum: kernel-alone syscalls/s over quanta/s; per step: over steps/s (two quanta each).`,
  );
  out.push(
    `   launches/s: ${
      r.shapes.map((s: { launches_per_sec: number }) => fmtInt(s.launches_per_sec)).join(", ")
    }`,
  );
  out.push("");
  const sp = r.separate;
  out.push(
    `2. model and tool quanta apart, in runUntilIdle: ${
      fmtInt(sp.processes)
    } processes at the same point, a round of each`,
  );
  out.push(
    `   model quanta   ${
      fmtInt(sp.model_quanta_per_sec).padStart(8)
    }/s  (${sp.model_quantum_us} us each)`,
  );
  out.push(
    `   tool quanta    ${
      fmtInt(sp.tool_quanta_per_sec).padStart(8)
    }/s  (${sp.tool_quantum_us} us each)`,
  );
  out.push(
    `   kernel alone   ${
      fmtInt(sp.syscalls_per_sec).padStart(8)
    }/s  (${sp.syscall_us} us each, the same clock.now calls)`,
  );
  out.push(
    `   issued directly ${
      fmtInt(sp.direct_steps_per_sec).padStart(8)
    }/s  (${sp.direct_step_us} us each: a step's decision, durable running mark, clock.now and recorded result, no scheduler)`,
  );
  out.push(
    `   a tool quantum costs ${sp.tool_over_syscall}x the syscall alone; a whole step ${sp.step_over_syscall}x`,
  );
  out.push(
    `   the same step's durable work issued directly costs ${sp.direct_over_syscall}x the syscall; the scheduler adds ${sp.step_over_direct}x to it`,
  );
  out.push("");
  const t = r.time_to_first_quantum;
  out.push(
    t
      ? `3. time to first quantum, launched while 10,000 are runnable: p50 ${t.p50_ms} ms, p99 ${t.p99_ms} ms, max ${t.max_ms} ms (${t.n} launches; ${t.late} not served within their round)`
      : `3. time to first quantum: not measured (needs --rounds >= 2)`,
  );
  out.push("");
  out.push(`verification`);
  const verdictOf = (c: { ok: boolean; problems: string[] }) =>
    c.ok ? "ok" : "FAILED " + JSON.stringify(c.problems);
  for (const v of r.verify) {
    out.push(
      v.shape === "direct"
        ? `   ${v.shape.padEnd(16)} issued directly: ${verdictOf(v.scheduled)}`
        : `   ${v.shape.padEnd(16)} scheduled: ${verdictOf(v.scheduled)}; kernel alone: ${
          verdictOf(v.kernel)
        }`,
    );
  }
  out.push("");
  const tg = r.target;
  const verdict = (p: boolean) => (p ? "PASS" : "FAIL");
  out.push(`targets`);
  out.push(
    `   >= ${fmtInt(tg.quanta_per_sec.target)} quanta/s in every shape: ${
      fmtInt(tg.quanta_per_sec.measured)
    } (slowest shape)  ${verdict(tg.quanta_per_sec.pass)}`,
  );
  out.push(
    `   long-history shape within ${tg.long_over_short.target}x of the short one: ${tg.long_over_short.measured}x  ${
      verdict(tg.long_over_short.pass)
    }`,
  );
  out.push(
    `   Jain's index >= ${tg.jain.target}: ${tg.jain.measured}  ${verdict(tg.jain.pass)}`,
  );
  out.push(
    `   scheduler at most ${tg.over_kernel.target}x over the kernel alone (${tg.over_kernel.judged_on}): ${tg.over_kernel.measured}x  ${
      verdict(tg.over_kernel.pass)
    }; per step (the same work both ways) see the table`,
  );
  out.push(`(${(r.elapsed_ms / 1000).toFixed(1)} s measuring)`);
  console.log(out.join("\n"));
}

if (import.meta.main) {
  const result = await main();
  if (JSON_OUT) console.log(JSON.stringify(result));
  else printText(result);
  if (!result.verified) {
    console.error("verification failed: a process did not finish as scripted or the audit is off");
    Deno.exit(1);
  }
}
