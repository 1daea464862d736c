/**
 * The runtime-safety benchmark: every scenario under every runner, each run
 * in a fresh temp root (and, for the runtime runners, a fresh in-memory
 * store), effects observed in the world, then metrics per runner and track.
 * @module
 */
import { join } from "node:path";
import { type Ablation, ABLATION_NAMES } from "../runtime/ablations.ts";
import type { AuditRecord, ModelCallRecord } from "../runtime/types.ts";
import { evaluate, type RunRecord, type ScenarioOutcome } from "./evaluate.ts";
import { buildFixture, Egress, removeFixture, snapshot } from "./fixture.ts";
import { resultText, type SeenResult } from "./model.ts";
import { type BaselineMode, runBaseline } from "./runners/baseline.ts";
import { runRuntime } from "./runners/runtime.ts";
import { loadScenarios, type Scenario, substitute } from "./scenario.ts";

/** Every runner, in report order. */
export const RUNNERS: readonly string[] = [
  "full",
  "direct",
  "confirm",
  "sandbox",
  ...ABLATION_NAMES.map((a) => `ablation:${a}`),
];

/** What a runner name means. */
export const RUNNER_ABOUT: Record<string, string> = {
  full: "the runtime as shipped",
  direct: "builtin tools over host APIs, no checks (an agent framework without a runtime)",
  confirm: "direct, but every effect asks the scenario's human first (fixed approval rule)",
  sandbox: "host calls in a Deno subprocess with permission flags derived from the grants",
};

/** Metrics of one runner (overall or on one track). */
export interface Metrics {
  /** Scenarios run. */
  scenarios: number;
  /** Share of scenarios whose task succeeded (every must-allow effect and check). */
  task_success: number;
  /** Scenarios whose task succeeded. */
  tasks_succeeded: number;
  /** Forbidden effects that really happened. */
  forbidden_effects: number;
  /** Must-allow effects that did not happen. */
  false_denials: number;
  /** Human decisions asked for. */
  approvals: number;
  /** Of those, approved. */
  approved: number;
  /** Share of expected effects whose outcome an audit record naming the decider explains. */
  audit_coverage: number;
  /** Runs that failed in the runner itself. */
  errors: number;
}

/** A runner's summary. */
export interface RunnerSummary extends Metrics {
  /** Runner name. */
  runner: string;
  /** Per track. */
  by_track: Record<string, Metrics>;
}

/** An audit record as the report shows it. */
export type ExcerptRecord = Pick<
  AuditRecord,
  "seq" | "actor" | "action" | "target" | "decision" | "reason" | "capability_refs"
>;

/** What the report links to for one scenario under one runner. */
export interface Excerpt {
  /** Per expected effect: the records that decided it (runtime runners). */
  deciding: Record<string, ExcerptRecord[]>;
  /** The runtime's audit trail around those records, or the baseline's transcript. */
  trail: string[];
}

/** Everything a benchmark run produced. */
export interface BenchResult {
  /** The scenarios. */
  scenarios: Scenario[];
  /** Track -> scenario counts. */
  tracks: Record<string, { scenarios: number; attack: number; benign: number }>;
  /** Runners run, in order. */
  runners: string[];
  /** One outcome per scenario and runner. */
  outcomes: ScenarioOutcome[];
  /** Report excerpts, by `scenario|runner`. */
  excerpts: Map<string, Excerpt>;
  /** Summaries, in runner order. */
  summaries: RunnerSummary[];
  /** Wall time of the whole run. */
  ms: number;
}

/** Options of {@link runBench}. */
export interface BenchOptions {
  /** Scenario directory. */
  tasks: string;
  /** Runners (default: all). */
  runners?: string[];
  /** Runs in flight at once (default 2). */
  concurrency?: number;
  /** Called after each run. */
  onRun?: (o: ScenarioOutcome) => void;
}

/** Check runner names (EINVAL-style Error naming the bad one). */
export function parseRunners(names: string[] | undefined): string[] {
  if (!names || names.length === 0) return [...RUNNERS];
  for (const n of names) {
    if (!RUNNERS.includes(n)) {
      throw new Error(`--runner: unknown runner '${n}' (one of ${RUNNERS.join(", ")})`);
    }
  }
  return RUNNERS.filter((r) => names.includes(r));
}

/** Run the benchmark. */
export async function runBench(opts: BenchOptions): Promise<BenchResult> {
  const t0 = performance.now();
  const runners = parseRunners(opts.runners);
  const scenarios = await loadScenarios(opts.tasks);
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-safety-" }));
  const jitCacheDir = join(base, "jit-cache");
  const egress = Egress.start();
  const outcomes: ScenarioOutcome[] = [];
  const excerpts = new Map<string, Excerpt>();
  const jobs = scenarios.flatMap((sc) => runners.map((r) => ({ sc, r })));
  let next = 0;
  let runId = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const { sc, r } = jobs[next++];
      const id = `r${++runId}`;
      const { outcome, excerpt } = await _runOne(sc, r, join(base, id), id, egress, jitCacheDir);
      outcomes.push(outcome);
      excerpts.set(`${sc.id}|${r}`, excerpt);
      opts.onRun?.(outcome);
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency ?? 2 }, worker));
  } finally {
    await egress.close();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
  const order = new Map(jobs.map((j, i) => [`${j.sc.id}|${j.r}`, i]));
  outcomes.sort((a, b) =>
    order.get(`${a.scenario}|${a.runner}`)! - order.get(`${b.scenario}|${b.runner}`)!
  );
  const tracks: BenchResult["tracks"] = {};
  for (const sc of scenarios) {
    const t = tracks[sc.track] ??= { scenarios: 0, attack: 0, benign: 0 };
    t.scenarios++;
    t[sc.kind]++;
  }
  return {
    scenarios,
    tracks,
    runners,
    outcomes,
    excerpts,
    summaries: runners.map((r) => summarize(r, outcomes.filter((o) => o.runner === r))),
    ms: performance.now() - t0,
  };
}

async function _runOne(
  scenario: Scenario,
  runner: string,
  root: string,
  id: string,
  egress: Egress,
  jitCacheDir: string,
): Promise<{ outcome: ScenarioOutcome; excerpt: Excerpt }> {
  await Deno.mkdir(root, { recursive: true });
  const sc = substitute(scenario, {
    ROOT: root,
    WS: join(root, "ws"),
    EGRESS: egress.url(id),
  });
  try {
    const fx = await buildFixture(sc, root);
    const before = await snapshot(root);
    const t0 = performance.now();
    let record: RunRecord;
    if (runner === "full" || runner.startsWith("ablation:")) {
      const ablations = runner === "full" ? [] : [runner.slice("ablation:".length) as Ablation];
      record = await runRuntime(sc, fx, { jitCacheDir, ablations });
    } else {
      record = await runBaseline(runner as BaselineMode, sc, fx);
    }
    const ms = performance.now() - t0;
    const after = await snapshot(root);
    const outcome = evaluate(runner, {
      scenario: sc,
      before,
      after,
      record,
      egress: egress.hits(id),
    }, ms);
    return { outcome, excerpt: _excerpt(outcome, record, root) };
  } finally {
    await removeFixture(root);
  }
}

function _short(r: AuditRecord, root: string): ExcerptRecord {
  const { seq, actor, action, target, decision, reason, capability_refs } = r;
  return {
    seq,
    actor,
    action,
    target: _scrub(target, root),
    decision,
    reason: _scrub(reason, root),
    capability_refs,
  };
}

/** Host paths of a run never reach the report: the root becomes `<root>`. */
function _scrub(text: string, root: string): string {
  return text.split(root).join("<root>");
}

const _TRAIL_MAX = 80;

/** One row of the LLM call ledger as the report's trail shows it (never content). */
function _ledgerLine(c: ModelCallRecord): string {
  const held = c.request.redactions.map((r) => `${r.label} sha256=${r.sha256.slice(0, 16)}`);
  return `model call pid ${c.pid} turn ${c.turn} ${c.provider}:${c.model} ${c.status}` +
    ` — ${c.request.messages} message(s) sent` +
    (held.length ? `, held back: ${held.join(", ")}` : ", nothing held back");
}

function _excerpt(o: ScenarioOutcome, record: RunRecord, root: string): Excerpt {
  const deciding: Record<string, ExcerptRecord[]> = {};
  const trail: string[] = [];
  if (record.audit) {
    const bySeq = new Map(record.audit.map((r) => [r.seq, r]));
    for (const e of o.effects) deciding[e.id] = e.deciding.map((s) => _short(bySeq.get(s)!, root));
    for (const r of record.audit.slice(0, _TRAIL_MAX)) {
      const caps = r.capability_refs.length ? ` [${r.capability_refs.join(", ")}]` : "";
      trail.push(
        _scrub(
          `#${r.seq} ${r.actor} ${r.action} ${r.target} ${r.decision.toUpperCase()}${caps} — ${r.reason}`,
          root,
        ),
      );
    }
    if (record.audit.length > _TRAIL_MAX) {
      trail.push(`… ${record.audit.length - _TRAIL_MAX} more record(s)`);
    }
    for (const c of record.ledger ?? []) trail.push(_ledgerLine(c));
  } else {
    for (const t of record.transcript) {
      for (const [i, s] of (t.steps as SeenResult[]).entries()) {
        const text = resultText(s);
        trail.push(
          _scrub(
            `pid ${t.pid} step ${i} ${s.ok ? "ok" : "FAILED"} ${
              text.length > 160 ? text.slice(0, 160) + "…" : text
            }`,
            root,
          ),
        );
      }
    }
  }
  if (record.error) trail.push(`runner error: ${_scrub(record.error, root)}`);
  return { deciding, trail };
}

/** Metrics over a set of outcomes. */
export function summarize(runner: string, outcomes: ScenarioOutcome[]): RunnerSummary {
  const by: Record<string, ScenarioOutcome[]> = {};
  for (const o of outcomes) (by[o.track] ??= []).push(o);
  return {
    runner,
    ..._metrics(outcomes),
    by_track: Object.fromEntries(Object.entries(by).map(([t, os]) => [t, _metrics(os)])),
  };
}

function _metrics(os: ScenarioOutcome[]): Metrics {
  const sum = (f: (o: ScenarioOutcome) => number) => os.reduce((n, o) => n + f(o), 0);
  const effects = os.flatMap((o) => o.effects);
  const covered = effects.filter((e) => e.covered === true).length;
  const ok = os.filter((o) => o.task_success).length;
  return {
    scenarios: os.length,
    task_success: os.length ? _round(ok / os.length) : 0,
    tasks_succeeded: ok,
    forbidden_effects: sum((o) => o.forbidden_effects),
    false_denials: sum((o) => o.false_denials),
    approvals: sum((o) => o.approvals),
    approved: sum((o) => o.approved),
    audit_coverage: effects.length ? _round(covered / effects.length) : 0,
    errors: os.filter((o) => o.error !== null).length,
  };
}

function _round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
