/**
 * The `full` runner (the runtime as shipped) and the ablation runners (the
 * same runtime with one mechanism switched off by the host): a fresh
 * in-memory store per scenario, the scenario's image and grants launched by
 * the host, the model (the scripted one, or for a transcript scenario the
 * real model loop talking to a fake model server started for the run), and a
 * human channel that applies the scenario's fixed rule.
 * @module
 */
import { dirname, relative } from "node:path";
import { ModelLoop } from "../../host/model_loop.ts";
import { type LaunchOptions, Runtime } from "../../host/runtime.ts";
import type { Ablation } from "../../runtime/ablations.ts";
import { LibosError } from "../../runtime/errors.ts";
import { HostClock } from "../../runtime/providers/host.ts";
import type {
  HumanAnswer,
  HumanProvider,
  HumanReply,
  HumanRequest,
} from "../../runtime/providers/types.ts";
import type { FakeModelServer } from "../fake_models.ts";
import type { Fixture } from "../fixture.ts";
import type { RunRecord, SeenObject } from "../evaluate.ts";
import { QuotingModel } from "../model.ts";
import { humanApproves, type HumanSpec } from "../rule.ts";
import type { Scenario } from "../scenario.ts";
import {
  FAKE_MODEL_NAME,
  fakeChat,
  requestStrings,
  startTranscriptServer,
  toolResultContents,
  transcriptBaseUrl,
} from "../transcript.ts";

/** The scenario's human, as the runtime's human channel. */
export class RuleHuman implements HumanProvider {
  /** What the human was shown. */
  readonly shown: string[] = [];
  /** Decisions asked for. */
  asked = 0;
  /** Approvals given. */
  approved = 0;
  readonly #spec: HumanSpec;
  readonly #answers: HumanReply[];

  /** The human a scenario describes. */
  constructor(spec: HumanSpec) {
    this.#spec = spec;
    this.#answers = [...(spec.answers ?? [])];
  }

  /** Record what the human is shown. */
  output(_pid: number, text: string): Promise<void> {
    this.shown.push(text);
    return Promise.resolve();
  }

  /** Scripted answers first, then the fixed rule on what the request shows. */
  decide(r: HumanRequest): Promise<HumanReply> {
    this.asked++;
    this.shown.push(JSON.stringify({ effect: r.effect, args: r.args, summary: r.summary }));
    const answer = this.#answers.shift() ??
      (humanApproves(this.#spec, r.effect, r.args) ? "allow_once" : "deny");
    if (answer === "allow_once" || answer === "always_allow") this.approved++;
    return Promise.resolve(answer);
  }

  /** A decision taken later, through the host (counted like any other). */
  late(answer: HumanAnswer): void {
    if (answer === "allow_once" || answer === "always_allow") this.approved++;
  }
}

/** The real clock, which a scenario can move forward (for expiry). */
export class ShiftedClock extends HostClock {
  /** Milliseconds added to the real time. */
  shift = 0;
  /** Now, shifted. */
  override now(): number {
    return super.now() + this.shift;
  }
}

/** Settings shared by every runtime run of a benchmark. */
export interface RuntimeRunnerOptions {
  /** Shared JIT artifact cache (a source is validated once per benchmark). */
  jitCacheDir: string;
  /** Mechanisms switched off (ablation runners only). */
  ablations: Ablation[];
}

/** Namespaces to collect objects from: every process's, and any a script names. */
function _namespaces(sc: Scenario, procs: { namespace: string }[]): string[] {
  const out = new Set(procs.map((p) => p.namespace));
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        if (k === "namespace" && typeof x === "string") out.add(x);
        else walk(x);
      }
    }
  };
  walk(sc.model.script);
  return [...out];
}

/** How the root process's model is given at launch: its script, or a model at the fake server. */
function _modelOf(sc: Scenario, srv: FakeModelServer | null): Partial<LaunchOptions> {
  const t = sc.model.transcript;
  if (!t || !srv) return { script: sc.model.script };
  return {
    model: {
      provider: t.provider,
      name: FAKE_MODEL_NAME,
      base_url: transcriptBaseUrl(t, srv),
      // A loopback server answers at once: a run that waits this long is broken.
      timeout_ms: 30_000,
      max_attempts: 2,
    },
  };
}

/** Run one scenario in a fresh runtime over the fixture's workspace. */
export async function runRuntime(
  sc: Scenario,
  fx: Fixture,
  opts: RuntimeRunnerOptions,
): Promise<RunRecord> {
  const human = new RuleHuman(sc.human);
  const clock = new ShiftedClock();
  const loop = new ModelLoop();
  const srv = sc.model.transcript ? startTranscriptServer(sc.model.transcript) : null;
  const rt = await Runtime.open({
    store: ":memory:",
    jitCacheDir: opts.jitCacheDir,
    providers: {
      human,
      clock,
      // A scripted child of a transcript-driven process runs the quoting scripted model.
      models: { scripted: new QuotingModel(), openai: loop, anthropic: loop },
      ...(srv ? { chat: fakeChat() } : {}),
    },
    ablations: opts.ablations,
  }).catch(async (e) => {
    await srv?.close();
    throw e;
  });
  const record: RunRecord = {
    transcript: [],
    shown: human.shown,
    asked: 0,
    approved: 0,
    objects: [],
    fileLabels: {},
    modelRequests: null,
    audit: null,
    ledger: null,
    error: null,
  };
  const pre: unknown[] = [];
  let root = 0;
  try {
    for (const { real, label } of fx.labels) await rt.kernel.store.setFileLabel(real, label);
    const proc = await rt.launch({
      image: sc.imageDoc,
      workspace: fx.ws,
      grants: sc.grants,
      goal: sc.goal,
      ..._modelOf(sc, srv),
    });
    root = proc.pid;
    for (const t of sc.model.jit_tools) pre.push(await _installTool(rt, proc.pid, t));
    await rt.runUntilIdle(sc.max_quanta);
    if (sc.human.late) {
      clock.shift += sc.human.late.advance_ms;
      for (const r of await rt.humanRequests("pending")) {
        try {
          await rt.decide(r.request_id, sc.human.late.answer, "human:owner");
          human.late(sc.human.late.answer);
        } catch (e) {
          if (!(e instanceof LibosError)) throw e;
        }
      }
      await rt.runUntilIdle(sc.max_quanta);
    }
    await _collect(rt, sc, record, pre, root, fx.ws);
  } catch (e) {
    record.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    await _collect(rt, sc, record, pre, root, fx.ws).catch(() => {});
  } finally {
    record.asked = human.asked;
    record.approved = human.approved;
    await rt.close();
    if (srv) {
      await srv.close();
      // Only the root is driven by the transcript (its children run scripts).
      const requests = srv.requests.map((r) => ({
        strings: requestStrings(r),
        results: toolResultContents(r),
      }));
      record.modelRequests = [{ pid: root || 1, requests }];
    }
  }
  return record;
}

/** Propose, validate and register a JIT tool as the process itself (each step audited). */
async function _installTool(
  rt: Runtime,
  pid: number,
  t: Scenario["model"]["jit_tools"][number],
): Promise<unknown> {
  try {
    const args: Record<string, unknown> = { name: t.name, source: t.source };
    if (t.description !== undefined) args.description = t.description;
    if (t.tests !== undefined) args.tests = t.tests;
    const cand = await rt.syscall(pid, "jit.propose", args) as { oid: string };
    const art = await rt.syscall(pid, "jit.validate", { oid: cand.oid }) as { oid: string };
    const value = await rt.syscall(pid, "jit.register", { oid: art.oid });
    return { tool: `install ${t.name}`, ok: true, value };
  } catch (e) {
    if (!(e instanceof LibosError)) throw e;
    return { tool: `install ${t.name}`, ok: false, error: e.toJSON() };
  }
}

async function _collect(
  rt: Runtime,
  sc: Scenario,
  record: RunRecord,
  pre: unknown[],
  root: number,
  ws: string,
): Promise<void> {
  const store = rt.kernel.store;
  const procs = await store.listProcesses();
  record.transcript = [];
  for (const p of procs) {
    const steps: unknown[] = await rt.steps(p.pid);
    record.transcript.push({ pid: p.pid, steps: p.pid === root ? [...pre, ...steps] : steps });
  }
  const objects: SeenObject[] = [];
  for (const ns of _namespaces(sc, procs)) {
    for (const o of await store.listObjects(ns)) {
      objects.push({
        namespace: o.namespace,
        kind: o.kind,
        name: o.name,
        label: o.label,
        payload: o.payload,
      });
    }
  }
  record.objects = objects;
  for (const { path, label } of await store.fileLabelsUnder(ws)) {
    record.fileLabels[relative(dirname(ws), path)] = label;
  }
  await store.auditIndexed();
  record.audit = await store.listAudit();
  record.ledger = await store.listModelCalls();
}
