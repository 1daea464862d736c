/**
 * BenchScale: a fleet of workers on one PostgreSQL store against the SQLite
 * store's single scheduler, in one run.
 *
 * 10,000 scripted processes (`--processes`), each a one-step script of the
 * `now` tool (three quanta: the model decides, the tool runs an audited
 * `clock.now`, the model exits), are submitted once into a template database
 * (and a SQLite file); every configuration starts from a copy of it:
 * PostgreSQL with 1, 2 and 4 workers (separate OS processes, `--concurrency`
 * slots each, the CLI's 4 by default), and the SQLite store with its one
 * scheduler. For each:
 *
 * - quanta per second, from the moment every worker is ready and told to go
 *   until the last one finds the store idle;
 * - Jain's index over the processes' quanta in the first round (the first
 *   10,000 model quanta: one each if claims are fair) and the first two;
 * - time to first quantum: while the fleet works, the host submits
 *   `--newcomers` more processes from another OS process (as `libos submit`
 *   does); from `launch()` returning to the process's first quantum starting
 *   (p50, p99);
 * - afterwards every process must have exited 0 with its one step, and the
 *   audit chain must verify.
 *
 * The cluster is private (initdb in a temp directory) with PostgreSQL's
 * default durability (fsync and synchronous commit on). The machine's CPU
 * busy share during each run is printed beside it (on a machine with few
 * cores, more workers share the same cores). Printed: the table
 * and the ratios against one worker and against SQLite, measured in the same
 * run; `--json` for the raw figures.
 *
 * Usage: `deno task bench:scale [--json] [--processes N] [--concurrency C] [--newcomers N]`
 * @module
 */
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { intFlag, median } from "./_common.ts";
import { type PgCluster, startCluster } from "./_pg.ts";

const JSON_OUT = Deno.args.includes("--json");
const PROCESSES = intFlag("--processes", 10_000);
const CONCURRENCY = intFlag("--concurrency", 4);
const NEWCOMERS = intFlag("--newcomers", 100);
const WORKERS = [1, 2, 4];

const TARGET_JAIN = 0.99;

const IMAGE = {
  name: "scale",
  tools: ["now"],
  budgets: { max_quanta: null, max_wall_ms: null, max_syscalls: null },
};
const LAUNCH = (ws: string) => ({
  image: IMAGE,
  workspace: ws,
  grants: [{ resource: "clock:now", rights: ["read" as const] }],
  script: { steps: [{ tool: "now", args: {} }] },
});

/** One configuration's figures. */
interface Result {
  config: string;
  workers: number;
  quanta: number;
  seconds: number;
  quantaPerSec: number;
  jainRound1: number;
  jainRound2: number;
  firstQuantumMs: { p50: number; p99: number; n: number };
  takenOver: number;
  lost: number;
  /** Share of the machine's CPU time busy during the run (every process, PostgreSQL too). */
  cpuBusy: number | null;
}

/** The machine's CPU time so far, busy and total (jiffies from /proc/stat); null off Linux. */
function cpuTimes(): { busy: number; total: number } | null {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    // idle + iowait are not busy.
    return { busy: total - v[3] - (v[4] ?? 0), total };
  } catch {
    return null;
  }
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

function log(s: string): void {
  if (!JSON_OUT) console.error(s);
}

/** Jain's index of `xs`: (sum)^2 / (n * sum of squares); 1 when all are equal. */
export function jain(xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const sq = xs.reduce((a, b) => a + b * b, 0);
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** Submit `n` processes through a client runtime, `parallel` at a time. */
async function submitAll(store: string, ws: string, n: number, parallel: number): Promise<void> {
  const rt = await Runtime.open({ store, role: "client" });
  try {
    let next = 0;
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (next < n) {
        next++;
        await rt.launch(LAUNCH(ws));
      }
    }));
  } finally {
    await rt.close();
  }
}

/** Spawn one runtime of the benchmark (`_scale_worker.ts`), ready when it says so. */
async function spawnRuntime(store: string, out: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      new URL("./_scale_worker.ts", import.meta.url).pathname,
      JSON.stringify({ store, concurrency: CONCURRENCY, out }),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("a benchmark runtime exited before it was ready");
    text += value;
  }
  reader.releaseLock();
  return child;
}

/** Run one configuration on `store` (a copy of the template) with `workers` runtimes. */
async function runConfig(
  config: string,
  store: string,
  workers: number,
  ws: string,
  dir: string,
  basePids: number,
): Promise<Result> {
  const outs = Array.from({ length: workers }, (_, i) => join(dir, `${config}-${i}.json`));
  const children = [];
  for (const out of outs) children.push(await spawnRuntime(store, out));
  const go = new TextEncoder().encode("go\n");
  const writers = children.map((c) => c.stdin.getWriter());
  const cpu0 = cpuTimes();
  for (const w of writers) await w.write(go);
  // Newcomers: submitted while the fleet is busy, from this (another) OS process.
  const submitted = new Map<number, number>();
  const client = await Runtime.open({ store, role: "client" });
  try {
    for (let i = 0; i < NEWCOMERS; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const p = await client.launch(LAUNCH(ws));
      submitted.set(p.pid, now());
    }
  } finally {
    await client.close();
    // Nothing more will be submitted: each runtime stops once the store is idle.
    for (const w of writers) await w.close();
  }
  for (const c of children) {
    const s = await c.status;
    if (!s.success) throw new Error(`${config}: a runtime exited with ${s.code}`);
  }
  const cpu1 = cpuTimes();
  const runs = await Promise.all(outs.map(async (o) => JSON.parse(await Deno.readTextFile(o))));
  const quanta = runs.reduce((a, r) => a + r.quanta, 0);
  const start = Math.min(...runs.map((r) => r.start));
  const end = Math.max(...runs.map((r) => r.end));
  // Model quanta of every runtime, in the order they started.
  const starts: [number, number][] = [];
  for (const r of runs) {
    for (let i = 0; i < r.starts.length; i += 2) starts.push([r.starts[i], r.starts[i + 1]]);
  }
  starts.sort((a, b) => a[1] - b[1]);
  const base = starts.filter(([pid]) => pid <= basePids);
  const jainOf = (first: number) => {
    const counts = new Map<number, number>();
    for (let p = 1; p <= basePids; p++) counts.set(p, 0);
    for (const [pid] of base.slice(0, first)) counts.set(pid, counts.get(pid)! + 1);
    return jain([...counts.values()]);
  };
  const firsts = new Map<number, number>();
  for (const [pid, t] of starts) if (submitted.has(pid) && !firsts.has(pid)) firsts.set(pid, t);
  const waits = [...submitted].map(([pid, t]) => (firsts.get(pid) ?? NaN) - t);
  if (waits.some((w) => !Number.isFinite(w))) throw new Error(`${config}: a newcomer never ran`);
  await verify(config, store, basePids + NEWCOMERS);
  const seconds = (end - start) / 1000;
  return {
    config,
    workers,
    quanta,
    seconds: Number(seconds.toFixed(2)),
    quantaPerSec: Math.round(quanta / seconds),
    jainRound1: Number(jainOf(basePids).toFixed(4)),
    jainRound2: Number(jainOf(2 * basePids).toFixed(4)),
    firstQuantumMs: {
      p50: Number(median(waits).toFixed(1)),
      p99: Number(percentile(waits, 99).toFixed(1)),
      n: waits.length,
    },
    takenOver: runs.reduce((a, r) => a + (r.stats?.takenOver ?? 0), 0),
    lost: runs.reduce((a, r) => a + (r.stats?.lost ?? 0), 0),
    cpuBusy: cpu0 && cpu1
      ? Number(((cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total)).toFixed(2))
      : null,
  };
}

/** Every process exited 0 with its one step; one `clock.now` record each; the chain verifies. */
async function verify(config: string, store: string, n: number): Promise<void> {
  const rt = await Runtime.open({ store, role: "client" });
  try {
    const procs = await rt.kernel.store.listProcesses();
    if (procs.length !== n) throw new Error(`${config}: ${procs.length} processes, not ${n}`);
    const bad = procs.filter((p) => p.status !== "exited" || p.exit_code !== 0);
    if (bad.length) throw new Error(`${config}: ${bad.length} processes did not exit 0`);
    const now = await rt.kernel.store.listAudit({ action: "clock.now" });
    if (now.length !== n) throw new Error(`${config}: ${now.length} clock.now records, not ${n}`);
    const v = await rt.kernel.store.verifyAudit();
    if (!v.ok) {
      throw new Error(`${config}: the audit chain does not verify: ${v.firstBad?.problem}`);
    }
  } finally {
    await rt.close();
  }
}

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "libos-bench-scale-" });
  const ws = join(dir, "ws");
  await Deno.mkdir(ws);
  let cluster: PgCluster | null = null;
  try {
    log(
      `bench:scale: ${PROCESSES} processes, ${CONCURRENCY} slots a runtime, ${NEWCOMERS} newcomers`,
    );
    cluster = await startCluster(
      Deno.args.includes("--no-fsync") ? ["fsync=off", "synchronous_commit=off"] : [],
    );
    await cluster.psql("CREATE DATABASE scale_tpl");
    let t = now();
    await submitAll(cluster.urlFor("scale_tpl"), ws, PROCESSES, 4);
    const pgSubmit = PROCESSES / ((now() - t) / 1000);
    log(`  submitted to PostgreSQL: ${Math.round(pgSubmit)} processes/s`);
    const sqliteTpl = join(dir, "tpl.db");
    t = now();
    await submitAll(sqliteTpl, ws, PROCESSES, 1);
    log(`  submitted to SQLite: ${Math.round(PROCESSES / ((now() - t) / 1000))} processes/s`);
    const results: Result[] = [];
    for (const w of WORKERS) {
      const db = `scale_w${w}`;
      await cluster.psql(`CREATE DATABASE ${db} TEMPLATE scale_tpl`);
      log(`  PostgreSQL, ${w} worker(s)...`);
      results.push(await runConfig(`pg-${w}`, cluster.urlFor(db), w, ws, dir, PROCESSES));
      log(`    ${JSON.stringify(results.at(-1))}`);
    }
    const file = join(dir, "run.db");
    await Deno.copyFile(sqliteTpl, file);
    log("  SQLite, one scheduler...");
    results.push(await runConfig("sqlite", file, 1, ws, dir, PROCESSES));
    log(`    ${JSON.stringify(results.at(-1))}`);
    report(results, pgSubmit);
  } finally {
    await cluster?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function report(results: Result[], pgSubmit: number): void {
  const one = results.find((r) => r.config === "pg-1")!;
  const sqlite = results.find((r) => r.config === "sqlite")!;
  const ratios = Object.fromEntries(
    results.filter((r) => r.config.startsWith("pg-")).map((r) => [r.config, {
      over_one_worker: Number((r.quantaPerSec / one.quantaPerSec).toFixed(2)),
      over_sqlite: Number((r.quantaPerSec / sqlite.quantaPerSec).toFixed(2)),
    }]),
  );
  const jainMet = results.every((r) => r.jainRound1 >= TARGET_JAIN && r.jainRound2 >= TARGET_JAIN);
  if (JSON_OUT) {
    console.log(JSON.stringify({
      processes: PROCESSES,
      concurrency: CONCURRENCY,
      newcomers: NEWCOMERS,
      pg_submits_per_sec: Math.round(pgSubmit),
      results,
      ratios,
      targets: { jain: TARGET_JAIN, jain_met: jainMet },
    }));
    return;
  }
  console.log(
    [
      "config".padEnd(8),
      "quanta/s".padStart(9),
      "x 1 worker",
      "x SQLite",
      "Jain r1",
      "Jain r2",
      "TTFQ p50",
      "TTFQ p99",
      "CPU busy",
    ]
      .join("  "),
  );
  for (const r of results) {
    const ratio = ratios[r.config];
    console.log([
      r.config.padEnd(8),
      String(r.quantaPerSec).padStart(9),
      (ratio ? `${ratio.over_one_worker.toFixed(2)}x` : "-").padStart(10),
      (ratio ? `${ratio.over_sqlite.toFixed(2)}x` : "-").padStart(8),
      r.jainRound1.toFixed(4).padStart(7),
      r.jainRound2.toFixed(4).padStart(7),
      `${r.firstQuantumMs.p50} ms`.padStart(8),
      `${r.firstQuantumMs.p99} ms`.padStart(8),
      (r.cpuBusy === null ? "-" : `${Math.round(r.cpuBusy * 100)}%`).padStart(8),
    ].join("  "));
  }
  console.log(
    `Jain's index >= ${TARGET_JAIN} in every configuration: ${jainMet ? "met" : "NOT met"}`,
  );
}

if (import.meta.main) await main();
