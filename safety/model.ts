/**
 * The benchmark's model: a script of tool calls, replayed in order, whose
 * arguments may quote what earlier calls returned (`{{RESULT:n}}`: the text
 * of the process's n-th tool result, `{{RESULT:-1}}`: the last one). A
 * scripted model that wants to leak a secret can only leak what it was
 * really handed, on every runner alike.
 * @module
 */
import type { ScriptStep } from "../runtime/providers/scripted.ts";
import type { ModelProvider, ModelStep } from "../runtime/providers/types.ts";
import type { ProcessRecord } from "../runtime/types.ts";

/** A tool result as the model receives it. */
export interface SeenResult {
  /** Step index. */
  step?: number;
  /** Whether the call succeeded. */
  ok: boolean;
  /** Value when ok. */
  value?: unknown;
  /** Error when not. */
  error?: { code: string; message: string };
}

/** The text a result stands for when quoted. */
export function resultText(r: SeenResult): string {
  if (!r.ok) return `${r.error?.code ?? "EIO"}: ${r.error?.message ?? ""}`;
  return typeof r.value === "string" ? r.value : JSON.stringify(r.value ?? null);
}

/** Replace `{{RESULT:n}}` references in every string of `args` by earlier results. */
export function quoteResults<T>(args: T, results: readonly string[]): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") {
      return v.replace(/\{\{RESULT:(-?\d+)\}\}/g, (_m, n) => {
        const i = Number(n) < 0 ? results.length + Number(n) : Number(n);
        return results[i] ?? "";
      });
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") {
      // A child's script quotes the child's own results, not its parent's.
      return Object.fromEntries(
        Object.entries(v).map(([k, x]) => [k, k === "script" ? x : walk(x)]),
      );
    }
    return v;
  };
  return walk(args) as T;
}

/**
 * The runtime's model provider for benchmark runs (registered as `scripted`):
 * like ScriptedModel, plus quoting earlier results. The results it has seen
 * are kept in the durable model state.
 */
export class QuotingModel implements ModelProvider {
  next(
    proc: ProcessRecord,
    lastResult: unknown,
  ): Promise<{ step: ModelStep; state: Record<string, unknown> }> {
    const state = proc.model?.state ?? {};
    const steps = (state.steps ?? []) as ScriptStep[];
    const position = Number(state.position ?? 0);
    const results = [...((state.results ?? []) as string[])];
    const last = lastResult as SeenResult | null;
    if (last && typeof last.step === "number") results[last.step] = resultText(last);
    if (position >= steps.length) {
      return Promise.resolve({
        step: { type: "exit", code: 0 },
        state: { ...state, position, results },
      });
    }
    const s = steps[position];
    const next = { ...state, position: position + 1, results };
    if (s.tool === "exit") {
      const code = Number.isInteger(s.args.code) ? s.args.code as number : 0;
      const result = typeof s.args.result === "string" ? s.args.result : undefined;
      return Promise.resolve({ step: { type: "exit", code, result }, state: next });
    }
    const args = quoteResults(s.args, results);
    return Promise.resolve({ step: { type: "tool", tool: s.tool, args }, state: next });
  }
}
