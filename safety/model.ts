/**
 * The benchmark's model: a script of tool calls, replayed in order, whose
 * arguments may quote what earlier calls returned (`{{RESULT:n}}`: the text
 * of the process's n-th tool result, `{{RESULT:-1}}`: the last one). A
 * scripted model that wants to leak a secret can only leak what it was
 * really handed, on every runner alike.
 * @module
 */
import { ScriptedModel } from "../runtime/providers/scripted.ts";
import type { ModelContext, ModelDecision } from "../runtime/providers/types.ts";

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
 * like ScriptedModel, plus quoting earlier results, read by step number from
 * the process's recorded results when a step refers to them.
 */
export class QuotingModel extends ScriptedModel {
  override async next(ctx: ModelContext): Promise<ModelDecision> {
    const d = await super.next(ctx);
    if (d.step.type !== "tool") return d;
    const results = await _quoted(ctx, d.step.args);
    return { ...d, step: { ...d.step, args: quoteResults(d.step.args, results) } };
  }
}

/** The results `args` quotes, as texts by step number (the rest left empty). */
async function _quoted(ctx: ModelContext, args: unknown): Promise<string[]> {
  const refs = [...JSON.stringify(args).matchAll(/\{\{RESULT:(-?\d+)\}\}/g)].map((m) =>
    Number(m[1])
  );
  if (refs.length === 0) return [];
  const count = await ctx.stepCount();
  const results: string[] = new Array(count).fill("");
  for (const n of refs) {
    const i = n < 0 ? count + n : n;
    if (i < 0 || i >= count) continue;
    const r = await ctx.result(i);
    if (r) results[i] = resultText(r as SeenResult);
  }
  return results;
}
