/**
 * Deterministic providers for demos, tests and benchmarks: a model that
 * replays a JSON script of tool calls, and human channels that answer from a
 * fixed list (or always deny, the non-interactive default).
 * @module
 */
import { MAX_JSON_DEPTH, nestsDeeper } from "../canonical.ts";
import { invalid } from "../errors.ts";
import type {
  HumanAnswer,
  HumanProvider,
  HumanReply,
  HumanRequest,
  ModelContext,
  ModelDecision,
  ModelProvider,
} from "./types.ts";

/** One scripted step: a tool call. */
export interface ScriptStep {
  /** Builtin tool name (or `exit`). */
  tool: string;
  /** Tool arguments. */
  args: Record<string, unknown>;
}

/**
 * Most characters of a script's arguments, all steps together. The script is
 * the process's model input, read back as a whole when it is not cached: a
 * 70 MB one made every quantum of its worker parse 70 MB.
 */
export const MAX_SCRIPT_CHARS = 16 * 1024 * 1024;

/** Validate a script document `{"steps":[{"tool":..., "args":{...}}, ...]}`. */
export function parseScript(raw: unknown): ScriptStep[] {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw invalid("script", 'must be an object {"steps": [...]}');
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== "steps") throw invalid(`script.${k}`, "unknown field");
  if (!Array.isArray(o.steps)) throw invalid("script.steps", "must be an array");
  if (o.steps.length > 100_000) throw invalid("script.steps", "more than 100000 steps");
  let chars = 0;
  return o.steps.map((s, i) => {
    const f = `script.steps[${i}]`;
    if (s === null || typeof s !== "object" || Array.isArray(s)) {
      throw invalid(f, "must be an object");
    }
    const step = s as Record<string, unknown>;
    for (const k of Object.keys(step)) {
      if (k !== "tool" && k !== "args") throw invalid(`${f}.${k}`, "unknown field");
    }
    if (typeof step.tool !== "string" || !/^[a-z][a-z0-9_.]{0,63}$/.test(step.tool)) {
      throw invalid(`${f}.tool`, "must be a tool name");
    }
    const args = step.args ?? {};
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw invalid(`${f}.args`, "must be an object");
    }
    if (nestsDeeper(args)) throw invalid(`${f}.args`, `nest deeper than ${MAX_JSON_DEPTH} levels`);
    chars += JSON.stringify(args).length;
    if (chars > MAX_SCRIPT_CHARS) {
      throw invalid(f, `the script's arguments pass ${MAX_SCRIPT_CHARS} characters here`);
    }
    return { tool: step.tool, args: args as Record<string, unknown> };
  });
}

/** The scripted model's immutable input, stored once per process at launch. */
export interface ScriptInput {
  /** The script's steps, validated by {@link parseScript}. */
  steps: ScriptStep[];
}

/**
 * Replays the script stored as the process's model input (`{steps}`), from the
 * cursor's `position`; after the last step it exits 0. Only the position is
 * rewritten per step, so a step costs the same at position 0 and 99,999, and a
 * restarted runtime continues where the last one stopped.
 */
export class ScriptedModel implements ModelProvider {
  /** A script reaches nothing outside the runtime. */
  readonly pure = true;
  /** The step at the cursor's position, and the position after it. */
  async next(ctx: ModelContext): Promise<ModelDecision> {
    const position = Number(ctx.cursor.position ?? 0);
    const input = await ctx.input() as ScriptInput | null;
    const steps = input?.steps ?? [];
    if (position >= steps.length) {
      return { step: { type: "exit", code: 0 }, cursor: { position } };
    }
    const s = steps[position];
    const cursor = { position: position + 1 };
    if (s.tool === "exit") {
      const code = Number.isInteger(s.args.code) ? s.args.code as number : 0;
      const result = typeof s.args.result === "string" ? s.args.result : undefined;
      return { step: { type: "exit", code, result }, cursor };
    }
    return { step: { type: "tool", tool: s.tool, args: s.args }, cursor };
  }
}

/** Non-interactive human: every ASK is answered deny; output goes to a sink. */
export class DenyingHuman implements HumanProvider {
  /** Texts shown so far, in order. */
  readonly shown: { pid: number; text: string }[] = [];
  /** Requests seen, in order. */
  readonly asked: HumanRequest[] = [];
  output(pid: number, text: string): Promise<void> {
    this.shown.push({ pid, text });
    return Promise.resolve();
  }
  decide(request: HumanRequest): Promise<HumanReply> {
    this.asked.push(request);
    return Promise.resolve("deny");
  }
}

/** Non-interactive human for the CLI: output goes to stderr, every ASK is denied. */
export class ConsoleHuman extends DenyingHuman {
  /** Print to stderr (stdout stays machine-readable). */
  override output(pid: number, text: string): Promise<void> {
    console.error(`[pid ${pid} -> human] ${text}`);
    return super.output(pid, text);
  }
}

/** Queueing human: every ASK waits in the durable queue for a decision (CLI, HTTP, a supervisor). */
export class QueueHuman extends ConsoleHuman {
  /** Always defer. */
  override decide(request: HumanRequest): Promise<HumanReply> {
    this.asked.push(request);
    return Promise.resolve("defer");
  }
}

/** Scripted human: answers in order, then deny. */
export class ScriptedHuman extends ConsoleHuman {
  #answers: HumanAnswer[];
  /** Answers to give, in order. */
  constructor(answers: HumanAnswer[]) {
    super();
    this.#answers = [...answers];
  }
  /** The next scripted answer (deny once they run out). */
  override decide(request: HumanRequest): Promise<HumanReply> {
    this.asked.push(request);
    return Promise.resolve(this.#answers.shift() ?? "deny");
  }
}
