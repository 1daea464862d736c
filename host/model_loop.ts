/**
 * The agent loop of a model-driven process (`openai`, `anthropic`): the
 * runtime owns it, so every model turn is a durable quantum and every tool
 * call a syscall.
 *
 * A model step looks at the conversation's tail. If the last reply still has
 * tool calls without a result, the next one becomes the process's next action
 * (several calls in one reply run in order, one tool step each, with no model
 * call in between). Otherwise the finished step's result goes into the
 * conversation, marked as data, and `model.call` asks the model for the next
 * turn. A reply without tool calls ends the process: exit 0 with its text.
 *
 * Nothing lives only in memory: the conversation is the process's model log,
 * the cursor names the call whose result is awaited, and a reply is recorded
 * (with the turn it answers) before any of its calls run, so a process that
 * resumes after a decision, a restart or a crash continues from the recorded
 * reply and never repeats a model call.
 * @module
 */
import { syscall } from "../primitives/mod.ts";
import { type ModelCallResult, toolResultContent } from "../primitives/model.ts";
import type { LlmInput } from "../primitives/model.ts";
import { type ConvDraft, tokenCounter } from "../runtime/conversation.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type { ChatToolCall } from "../runtime/providers/chat.ts";
import type {
  ModelContext,
  ModelDecision,
  ModelProvider,
  ModelStep,
} from "../runtime/providers/types.ts";

/** The call whose result the loop waits for: its id and the step number it runs as. */
interface _Awaited {
  call_id: string;
  name: string;
  step: number;
}

/** Drives model-driven processes through `model.call` and the scheduler's tool steps. */
export class ModelLoop implements ModelProvider {
  /** Reaches outside (a model API): the scheduler commits what is deferred first. */
  readonly pure = false;
  #k: Kernel | null = null;

  /** Bind to the kernel whose syscall table it dispatches through. */
  attach(kernel: Kernel): void {
    this.#k = kernel;
  }

  async next(ctx: ModelContext): Promise<ModelDecision> {
    if (!this.#k) throw new Error("model loop: not attached to a kernel");
    // Through the kernel that acts for this process (fenced by a worker's lease, if any).
    const k = this.#k.forPid(ctx.pid);
    const input = await ctx.input() as LlmInput | null;
    if (!input?.config) {
      return { step: { type: "exit", code: 1, result: "no model configured" }, cursor: {} };
    }
    const proc = await k.process(ctx.pid);
    const count = await tokenCounter();
    const conv = await k.conversation(ctx.pid);
    const drafts: ConvDraft[] = [];
    if (conv.entries.length === 0) {
      // The goal is the first user message, labelled like the process it was given to.
      drafts.push({ kind: "goal", text: ctx.goal || "(no goal given)", label: proc.taint });
    }
    // The awaited call's result goes into the conversation, as data.
    const awaited = ctx.cursor.awaited as _Awaited | undefined;
    const open = conv.lastReply()?.open ?? [];
    if (awaited && open.some((c) => c.id === awaited.call_id)) {
      const obj = await k.store.getStep(ctx.pid, awaited.step);
      if (obj) {
        const r = obj.payload as { ok: boolean; value?: unknown; error?: unknown };
        drafts.push({
          kind: "tool",
          call_id: awaited.call_id,
          name: awaited.name,
          content: toolResultContent(
            r.ok ? r.value : r.error,
            r.ok,
            awaited.name,
            input.config.max_tool_result_chars,
          ),
          is_error: !r.ok,
          step: awaited.step,
          label: obj.label,
        });
      }
    }
    // In the log before the model sees them (model.call builds its request from it). The
    // commit is deferred: it lands with the call's ledger record, before the request leaves,
    // and a crash before that rebuilds the same entries from the same durable step result.
    if (drafts.length) {
      await k.store.transaction((tx) => conv.append(tx, drafts, count), { defer: true });
    }
    const pending = conv.lastReply()?.open ?? [];
    if (pending.length) return await this.#callStep(ctx, pending[0]);
    const reply = await syscall(k, ctx.pid, "model.call", {
      turn: conv.turns() + 1,
    }) as ModelCallResult;
    if (reply.tool_calls.length) return await this.#callStep(ctx, reply.tool_calls[0]);
    return { step: _finish(reply), cursor: {} };
  }

  /** A tool call as the next action: its arguments must be a JSON object. */
  async #callStep(ctx: ModelContext, c: ChatToolCall): Promise<ModelDecision> {
    const awaited: _Awaited = { call_id: c.id, name: c.name, step: await ctx.stepCount() };
    let args: unknown;
    let error: { code: string; message: string } | undefined;
    try {
      args = c.arguments.trim() === "" ? {} : JSON.parse(c.arguments);
    } catch (e) {
      error = {
        code: "EINVAL",
        message: `${c.name}: arguments are not valid JSON (${(e as Error).message})`,
      };
    }
    if (!error && (args === null || typeof args !== "object" || Array.isArray(args))) {
      error = { code: "EINVAL", message: `${c.name}: arguments must be a JSON object` };
    }
    const step: ModelStep = {
      type: "tool",
      tool: c.name,
      args: error ? {} : args as Record<string, unknown>,
      ...(error ? { error } : {}),
    };
    return { step, cursor: { awaited } };
  }
}

/** A reply with no tool call ends the process: its text is the result. */
function _finish(reply: ModelCallResult): ModelStep {
  if (reply.finish_reason === "refusal") {
    return { type: "exit", code: 1, result: `model refused: ${reply.text}`.slice(0, 10_000) };
  }
  if (reply.finish_reason === "length") {
    return {
      type: "exit",
      code: 1,
      result: `reply cut at max_output_tokens: ${reply.text}`.slice(0, 10_000),
    };
  }
  if (!reply.text.trim()) return { type: "exit", code: 1, result: "model returned an empty reply" };
  return { type: "exit", code: 0, result: reply.text.slice(0, 100_000) };
}
