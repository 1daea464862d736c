/**
 * The view a model provider gets of its process ({@link ModelContext}): the
 * cursor and a few fields of the record it already has, and, read on demand
 * and by key, the immutable input, step results by number and its own log by
 * position. Nothing here lists or parses a process's whole history.
 * @module
 */
import type { ModelContext } from "./providers/types.ts";
import type { Store } from "./store/store.ts";
import type { ProcessRecord, StepResult } from "./types.ts";

/** Largest model cursor (JSON characters): it is rewritten every model step. */
export const MAX_CURSOR_CHARS = 64 * 1024;

/** A {@link ModelContext} over the store, for one model step of `proc`. */
export class StoreModelContext implements ModelContext {
  /** The process. */
  readonly pid: number;
  /** Provider kind. */
  readonly kind: string;
  /** The cursor the last step returned. */
  readonly cursor: Readonly<Record<string, unknown>>;
  /** Goal. */
  readonly goal: string;
  /** System prompt. */
  readonly systemPrompt: string;
  /** Builtin tool names. */
  readonly tools: readonly string[];
  #store: Store;

  /** A view of `proc` (which must have a model) over `store`. */
  constructor(store: Store, proc: ProcessRecord) {
    this.#store = store;
    this.pid = proc.pid;
    this.kind = proc.model?.kind ?? "";
    this.cursor = proc.model?.state ?? {};
    this.goal = proc.goal;
    this.systemPrompt = proc.system_prompt;
    this.tools = proc.tools;
  }

  /** The immutable input stored at launch, or null. */
  async input(): Promise<unknown> {
    return await this.#store.getModelInput(this.pid);
  }

  /** How many tool steps have a recorded result. */
  async stepCount(): Promise<number> {
    return await this.#store.stepCount(this.pid);
  }

  /** The result of tool step `n`, or null. */
  async result(n: number): Promise<StepResult | null> {
    return ((await this.#store.getStep(this.pid, n))?.payload ?? null) as StepResult | null;
  }

  /** How many entries the model log holds. */
  async logLength(): Promise<number> {
    return await this.#store.modelLogLength(this.pid);
  }

  /** Model log entries from `from` up to `to`. */
  async log(from: number, to?: number): Promise<unknown[]> {
    return await this.#store.readModelLog(this.pid, from, to);
  }
}
