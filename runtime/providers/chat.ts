/**
 * Chat model providers: a provider-neutral request and reply, and the errors
 * a call can end in. A provider makes exactly one HTTP attempt per call; the
 * model primitive retries, budgets and ledgers around it, so every attempt is
 * recorded. Keys come from the runtime's environment and never leave the
 * provider: not in a request record, an error or an audit text.
 * @module
 */

/** A tool offered to the model, as a JSON-Schema function. */
export interface ChatTool {
  /** Tool name (a builtin tool's name or a registered JIT tool's). */
  name: string;
  /** One line: what it does. */
  description: string;
  /** JSON Schema of its arguments (an object schema). */
  parameters: Record<string, unknown>;
}

/** One tool call the model asked for. */
export interface ChatToolCall {
  /** The provider's call id (tool results refer to it). */
  id: string;
  /** Tool name as the model wrote it (may be unknown: checked by the loop). */
  name: string;
  /** Arguments as the JSON text the model produced (may be malformed). */
  arguments: string;
}

/** A message of the conversation, provider-neutral. */
export type ChatMessage =
  | { role: "user"; content: string }
  | { role: "assistant"; content: string; tool_calls?: ChatToolCall[] }
  | { role: "tool"; tool_call_id: string; name: string; content: string; is_error?: boolean };

/** What the model loop asks a provider for. */
export interface ChatRequest {
  /** Model name at the provider. */
  model: string;
  /** System prompt. */
  system: string;
  /** The conversation, oldest first (the first is the goal). */
  messages: ChatMessage[];
  /** Tools offered. */
  tools: ChatTool[];
  /** Most output tokens. */
  max_output_tokens: number;
}

/** Token use of one call. */
export interface ChatUsage {
  /** Input (prompt) tokens. */
  input_tokens: number;
  /** Output (completion) tokens. */
  output_tokens: number;
}

/** A provider's reply. */
export interface ChatReply {
  /** Text the model wrote (may be empty). */
  text: string;
  /** Tool calls, in the order given. */
  tool_calls: ChatToolCall[];
  /** Token use as the provider counted it (0 when it did not say). */
  usage: ChatUsage;
  /** Why it stopped, normalised: `stop`, `tool_calls`, `length`, `refusal`, `other`. */
  finish_reason: string;
  /** The model that answered, as the provider named it. */
  model: string;
}

/** Options of one attempt. */
export interface ChatCallOptions {
  /** Cancels the attempt (the request timeout). */
  signal: AbortSignal;
  /** Stream the reply and hand text to this as it arrives. */
  onText?: (delta: string) => void;
  /** Ask for a streamed reply (SSE) even without `onText`. */
  stream: boolean;
  /** Inbound bounds: text characters and tool calls (a reply beyond them fails). */
  limits: ChatLimits;
}

/** Bounds on what a reply may bring in. */
export interface ChatLimits {
  /** Most characters of reply text. */
  maxTextChars: number;
  /** Most tool calls in one reply. */
  maxToolCalls: number;
  /** Most characters of one tool call's arguments. */
  maxArgumentChars: number;
}

/** Default inbound bounds. */
export const DEFAULT_CHAT_LIMITS: ChatLimits = {
  maxTextChars: 200_000,
  maxToolCalls: 32,
  maxArgumentChars: 256 * 1024,
};

/**
 * Most bytes of one reply's body, a stream's included. Counted as the bytes
 * arrive, before the SDK buffers or parses them: the bounds above apply only
 * once a reply is parsed, and a server could otherwise send hundreds of MB
 * (measured: a 500 MB body took the runtime to 1.6 GB).
 */
export const MAX_REPLY_BYTES = 32 * 1024 * 1024;

/** `fetch` whose response bodies fail (`too_large`) past `max` bytes. */
export function boundedFetch(
  max: number = MAX_REPLY_BYTES,
): (url: string | URL | Request, init?: RequestInit) => Promise<Response> {
  const tooLarge = () => new ChatError("too_large", `reply body larger than ${max} bytes`);
  return async (url, init) => {
    const res = await fetch(url, init);
    if (!res.body) return res;
    const init2 = { status: res.status, statusText: res.statusText, headers: res.headers };
    // A declared length is all fetch reads: no need to count what arrives.
    const declared = res.headers.get("content-length");
    if (declared !== null && /^\d+$/.test(declared)) {
      if (Number(declared) <= max) return res;
      await res.body.cancel();
      return new Response(new ReadableStream({ start: (c) => c.error(tooLarge()) }), init2);
    }
    let seen = 0;
    const cap = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        seen += chunk.byteLength;
        if (seen > max) ctl.error(tooLarge());
        else ctl.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(cap), init2);
  };
}

/** How a call failed, for retry decisions. */
export type ChatErrorKind =
  | "rate_limit" // 429
  | "server" // 5xx
  | "connection" // refused, reset, DNS
  | "timeout" // our request timeout
  | "client" // other 4xx (bad request, auth): never retried
  | "too_large" // the reply broke an inbound bound
  | "protocol" // the reply could not be understood
  | "budget" // the process's wall-clock budget ran out: never retried
  | "stopped"; // the caller stopped the call (its lease was lost): never retried

/** A failed attempt. The message never contains a key. */
export class ChatError extends Error {
  /** Why. */
  readonly kind: ChatErrorKind;
  /** HTTP status, when there was one. */
  readonly status: number | null;
  /** Wait asked for by the server (Retry-After), in ms. */
  readonly retryAfterMs: number | null;
  /** Build one. */
  constructor(
    kind: ChatErrorKind,
    message: string,
    status: number | null = null,
    retryAfterMs: number | null = null,
  ) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
  /** Worth another attempt (after a backoff). */
  get retryable(): boolean {
    return ["rate_limit", "server", "connection", "timeout"].includes(this.kind);
  }
}

/** A chat model provider: one attempt per call. */
export interface ChatProvider {
  /** Provider name (`openai`, `anthropic`). */
  readonly name: string;
  /** Make one attempt. Throws {@link ChatError}. */
  complete(request: ChatRequest, options: ChatCallOptions): Promise<ChatReply>;
}

/** Where a provider connects and with which key variable. */
export interface ChatEndpoint {
  /** Base URL (the host's choice; the provider's default when null). */
  baseUrl: string | null;
  /** Environment variable holding the key. */
  keyVar: string;
}

/** Parse a Retry-After header (seconds or an HTTP date), or `retry-after-ms`. */
export function retryAfterMs(
  headers: Headers | undefined | null,
  now: number = Date.now(),
): number | null {
  if (!headers) return null;
  const ms = headers.get("retry-after-ms");
  if (ms && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const raw = headers.get("retry-after");
  if (!raw) return null;
  if (/^\d+(\.\d+)?$/.test(raw.trim())) return Math.max(0, Number(raw) * 1000);
  const at = Date.parse(raw);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** Replace every occurrence of `secret` (a key) in `text`. */
export function withoutSecret(text: string, secret: string | undefined): string {
  return secret && secret.length >= 4 ? text.replaceAll(secret, "[key]") : text;
}

/** Accumulates a reply while enforcing the inbound bounds. */
export class ReplyBuilder {
  #limits: ChatLimits;
  /** Text so far. */
  text = "";
  /** Tool calls by position. */
  readonly calls: { id: string; name: string; arguments: string }[] = [];

  /** Bound by `limits`. */
  constructor(limits: ChatLimits) {
    this.#limits = limits;
  }

  /** Append text. */
  addText(delta: unknown): void {
    this.text += _str(delta, "reply text");
    if (this.text.length > this.#limits.maxTextChars) {
      throw new ChatError(
        "too_large",
        `reply text longer than ${this.#limits.maxTextChars} characters`,
      );
    }
  }

  /** The tool call at position `i` (created when first seen). */
  call(i: number): { id: string; name: string; arguments: string } {
    if (!Number.isSafeInteger(i) || i < 0) {
      throw new ChatError("protocol", `tool call index ${JSON.stringify(i)} is not a position`);
    }
    if (i >= this.#limits.maxToolCalls) {
      throw new ChatError("too_large", `more than ${this.#limits.maxToolCalls} tool calls`);
    }
    while (this.calls.length <= i) this.calls.push({ id: "", name: "", arguments: "" });
    return this.calls[i];
  }

  /** Set call `i`'s id (a server's id must be a non-empty string). */
  setId(i: number, id: unknown): void {
    if (typeof id !== "string" || id === "") {
      throw new ChatError("protocol", `tool call ${i}: id is not a non-empty string`);
    }
    this.call(i).id = id;
  }

  /** Append to call `i`'s name. */
  addName(i: number, name: unknown): void {
    this.call(i).name += _str(name, `tool call ${i}: name`);
  }

  /** Append argument text to call `i`. */
  addArguments(i: number, delta: unknown): void {
    const c = this.call(i);
    c.arguments += _str(delta, `tool call ${i}: arguments`);
    if (c.arguments.length > this.#limits.maxArgumentChars) {
      throw new ChatError(
        "too_large",
        `tool call arguments longer than ${this.#limits.maxArgumentChars} characters`,
      );
    }
  }

  /**
   * The finished tool calls (missing ids get positional ones). Ids must be
   * unique: a result goes back to the call by its id.
   */
  toolCalls(): ChatToolCall[] {
    const calls = this.calls.map((c, i) => ({
      id: c.id || `call_${i}`,
      name: c.name,
      arguments: c.arguments,
    }));
    const seen = new Set<string>();
    for (const c of calls) {
      if (seen.has(c.id)) {
        throw new ChatError("protocol", `two tool calls share the id ${JSON.stringify(c.id)}`);
      }
      seen.add(c.id);
    }
    return calls;
  }
}

function _str(v: unknown, what: string): string {
  if (typeof v !== "string") throw new ChatError("protocol", `${what} is not a string`);
  return v;
}

/**
 * A token count a server reported: absent is 0; anything but a non-negative
 * integer is a reply that cannot be understood (budgets are summed from these).
 */
export function tokenCount(v: unknown, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new ChatError("protocol", `usage.${field} is not a count of tokens`);
  }
  return v;
}

/**
 * The end of a streamed reply. A stream the attempt's timeout cut off ends
 * quietly in the SDKs (a timeout, not a reply), and one that closed before its
 * final event is incomplete (a protocol error): neither is a reply to act on.
 */
export function streamEnded(signal: AbortSignal, sawFinal: boolean, final: string): void {
  if (signal.aborted) throw new ChatError("timeout", "the reply stream stalled past the timeout");
  if (!sawFinal) throw new ChatError("protocol", `the reply stream ended before its ${final}`);
}

/** How a model call is retried. */
export interface RetryPolicy {
  /** Most attempts in all (1: no retry). */
  attempts: number;
  /** First backoff, ms (doubles each retry, full jitter). */
  baseMs: number;
  /** Longest single wait, ms (a longer Retry-After fails the call instead of stalling). */
  maxWaitMs: number;
  /** Timeout of one attempt, ms. */
  timeoutMs: number;
}

/** Defaults: 4 attempts, 500 ms doubling, waits up to 30 s, 120 s per attempt. */
export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 4,
  baseMs: 500,
  maxWaitMs: 30_000,
  timeoutMs: 120_000,
};

/** One attempt as recorded in the call ledger. */
export interface AttemptRecord {
  /** 1-based attempt number. */
  attempt: number;
  /** `ok` or the error kind. */
  outcome: "ok" | ChatErrorKind;
  /** HTTP status, if any. */
  status: number | null;
  /** Milliseconds the attempt took. */
  latency_ms: number;
  /** Wait before the next attempt (ms), if one follows. */
  wait_ms: number | null;
  /** Error message (never a key). */
  error?: string;
}

/**
 * Call `provider` until it answers or the policy gives up: retries on 429
 * (waiting at least Retry-After), 5xx, connection errors and timeouts with
 * exponential backoff and full jitter. `onAttempt` sees every attempt as it
 * ends (the ledger records it). Throws the last {@link ChatError}. With a
 * `deadline` (`performance.now()` ms: the end of the caller's wall-clock
 * budget), no attempt runs or waits past it: the call ends there, a timeout
 * that is not retried. `signal` ends it at once (the attempt under way too).
 */
export async function completeWithRetries(
  provider: ChatProvider,
  request: ChatRequest,
  options: Omit<ChatCallOptions, "signal">,
  policy: RetryPolicy,
  env: {
    sleep(ms: number): Promise<void>;
    random(): number;
    onAttempt(a: AttemptRecord): Promise<void> | void;
    deadline?: number;
    signal?: AbortSignal;
  },
): Promise<{ reply: ChatReply; attempts: number; latency_ms: number }> {
  const deadline = env.deadline ?? Infinity;
  for (let attempt = 1;; attempt++) {
    const t0 = performance.now();
    const left = deadline - t0;
    if (left <= 0) throw _outOfTime();
    if (env.signal?.aborted) throw _stopped(env.signal);
    const timeout = AbortSignal.timeout(Math.min(policy.timeoutMs, Math.ceil(left)));
    try {
      const reply = await provider.complete(request, {
        ...options,
        signal: env.signal ? AbortSignal.any([timeout, env.signal]) : timeout,
      });
      const latency = Math.round(performance.now() - t0);
      await env.onAttempt({
        attempt,
        outcome: "ok",
        status: 200,
        latency_ms: latency,
        wait_ms: null,
      });
      return { reply, attempts: attempt, latency_ms: latency };
    } catch (e) {
      let err = e instanceof ChatError ? e : new ChatError("protocol", String(e));
      if (env.signal?.aborted) err = _stopped(env.signal);
      else if (performance.now() >= deadline) err = _outOfTime(err.message);
      const backoff = Math.round(
        env.random() * Math.min(policy.maxWaitMs, policy.baseMs * 2 ** (attempt - 1)),
      );
      const wait = Math.max(backoff, err.retryAfterMs ?? 0);
      const again = err.retryable && attempt < policy.attempts && wait <= policy.maxWaitMs &&
        !env.signal?.aborted && performance.now() + wait < deadline;
      await env.onAttempt({
        attempt,
        outcome: err.kind,
        status: err.status,
        latency_ms: Math.round(performance.now() - t0),
        wait_ms: again ? wait : null,
        error: err.message,
      });
      if (!again) throw err;
      await env.sleep(wait);
    }
  }
}

/** The caller's wall-clock budget ran out: a timeout no retry may follow. */
function _outOfTime(during?: string): ChatError {
  return new ChatError(
    "budget",
    `the process's wall-clock budget ran out${during ? ` during the call (${during})` : ""}`,
  );
}

/** The caller stopped the call (its lease was lost, say): its reason's message. */
function _stopped(signal: AbortSignal): ChatError {
  const why = signal.reason;
  return new ChatError("stopped", why instanceof Error ? why.message : "the call was stopped");
}

/**
 * JSON text of a message list that only grows between calls (a conversation
 * view's messages): each message is encoded once, and a list seen before is
 * extended by what was appended since. Keyed by the list's identity; a list
 * that shrank or a new list is encoded afresh.
 */
export class IncrementalJson<T> {
  #cache = new WeakMap<readonly T[], { n: number; json: string }>();
  #encode: (m: T) => string;

  /** Encode each message with `encode`. */
  constructor(encode: (m: T) => string) {
    this.#encode = encode;
  }

  /** The comma-separated JSON of `list`'s messages (no brackets). */
  json(list: readonly T[]): string {
    let c = this.#cache.get(list);
    if (!c || c.n > list.length) c = { n: 0, json: "" };
    for (let i = c.n; i < list.length; i++) {
      const m = this.#encode(list[i]);
      c.json = c.json ? `${c.json},${m}` : m;
    }
    c.n = list.length;
    this.#cache.set(list, c);
    return c.json;
  }
}

/** The error classes both official SDKs export (they are generated by the same tool). */
export interface SdkErrors {
  /** The caller aborted (our timeout signal). */
  APIUserAbortError: new (...a: never[]) => Error;
  /** The SDK's own timeout. */
  APIConnectionTimeoutError: new (...a: never[]) => Error;
  /** No connection (refused, reset, DNS). */
  APIConnectionError: new (...a: never[]) => Error;
  /** An HTTP error response. */
  APIError: new (...a: never[]) => Error & { status?: number; headers?: Headers };
}

/**
 * Map an SDK error to a {@link ChatError}: 429 is `rate_limit` (with its
 * Retry-After), 5xx (and Anthropic's 529 "overloaded") `server`, other HTTP
 * errors `client`, timeouts and connection failures their own kinds. The
 * message never echoes the key.
 */
export function sdkError(
  sdk: SdkErrors,
  e: unknown,
  key: string | undefined,
  aborted: boolean,
): ChatError {
  const msg = (m: string) => withoutSecret(m, key).slice(0, 500);
  if (aborted || e instanceof sdk.APIUserAbortError) {
    return new ChatError("timeout", "request timed out");
  }
  if (e instanceof sdk.APIConnectionTimeoutError) {
    return new ChatError("timeout", "request timed out");
  }
  if (e instanceof sdk.APIConnectionError) {
    return new ChatError("connection", msg(`connection failed: ${e.message}`));
  }
  if (e instanceof sdk.APIError) {
    const status = e.status ?? null;
    // No status: the server reported the error inside a 200 reply (an SSE `error`
    // event, an `error` field in a chunk), as it would a 5xx: worth another attempt.
    const kind = status === 429
      ? "rate_limit"
      : status === null || status >= 500
      ? "server"
      : "client";
    return new ChatError(
      kind,
      msg(status === null ? `error in the reply: ${e.message}` : `HTTP ${status}: ${e.message}`),
      status,
      retryAfterMs(e.headers),
    );
  }
  if (e instanceof ChatError) return e;
  return new ChatError("protocol", msg(`unreadable reply: ${String((e as Error)?.message ?? e)}`));
}
