/**
 * `anthropic:<model>`: the Messages API with `tool_use` / `tool_result`
 * blocks through the official `@anthropic-ai/sdk`.
 * @module
 */
import type Anthropic from "@anthropic-ai/sdk";
import {
  boundedFetch,
  type ChatCallOptions,
  type ChatEndpoint,
  ChatError,
  type ChatMessage,
  type ChatProvider,
  type ChatReply,
  type ChatRequest,
  type ChatTool,
  ReplyBuilder,
  sdkError,
  type SdkErrors,
  streamEnded,
  tokenCount,
} from "./chat.ts";

type _Sdk = typeof import("@anthropic-ai/sdk");
let _sdk: Promise<_Sdk> | null = null;
/**
 * The SDK, loaded on first use: a runtime that never talks to this provider
 * (every scripted or tool-only run) never loads it.
 */
function _load(): Promise<_Sdk> {
  return _sdk ??= import("@anthropic-ai/sdk");
}

/** Anthropic's own endpoint, named explicitly so no environment variable can move it. */
export const ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com";

type _Block = Record<string, unknown>;
type _Msg = { role: "user" | "assistant"; content: _Block[] };

/** A tool call's arguments as the object the API wants (malformed JSON becomes `{}`). */
function _input(args: string): Record<string, unknown> {
  try {
    const v = JSON.parse(args);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** One neutral message as a role and Messages API content blocks. */
function _blocks(m: ChatMessage): { role: _Msg["role"]; blocks: _Block[] } {
  if (m.role === "user") return { role: "user", blocks: [{ type: "text", text: m.content }] };
  if (m.role === "tool") {
    return {
      role: "user",
      blocks: [{
        type: "tool_result",
        tool_use_id: m.tool_call_id,
        content: m.content,
        ...(m.is_error ? { is_error: true } : {}),
      }],
    };
  }
  const blocks: _Block[] = m.content ? [{ type: "text", text: m.content }] : [];
  for (const c of m.tool_calls ?? []) {
    blocks.push({ type: "tool_use", id: c.id, name: c.name, input: _input(c.arguments) });
  }
  return { role: "assistant", blocks: blocks.length ? blocks : [{ type: "text", text: "" }] };
}

/**
 * Neutral messages as Messages API turns (consecutive same-role content
 * merges into one turn, as the API requires), as JSON text. A growing list is
 * extended: finished turns are encoded once; only the last, still open, again.
 */
class _Turns {
  #cache = new WeakMap<readonly ChatMessage[], { n: number; done: string; last: _Msg | null }>();

  json(list: readonly ChatMessage[]): string {
    let c = this.#cache.get(list);
    if (!c || c.n > list.length) c = { n: 0, done: "", last: null };
    for (let i = c.n; i < list.length; i++) {
      const { role, blocks } = _blocks(list[i]);
      if (c.last && c.last.role === role) {
        c.last.content.push(...blocks);
        continue;
      }
      if (c.last) c.done = c.done ? `${c.done},${JSON.stringify(c.last)}` : JSON.stringify(c.last);
      c.last = { role, content: blocks };
    }
    c.n = list.length;
    this.#cache.set(list, c);
    return [c.done, c.last ? JSON.stringify(c.last) : ""].filter((x) => x).join(",");
  }
}

const _turns = new _Turns();
const _toolsJson = new WeakMap<readonly ChatTool[], string>();

/** The Messages API request body as JSON text, built from cached pieces. */
export function anthropicBody(req: ChatRequest, stream: boolean): string {
  let tools = "";
  if (req.tools.length) {
    tools = _toolsJson.get(req.tools) ?? JSON.stringify(req.tools.map((t) => ({
      name: t.name,
      description: t.description,
      input_schema: t.parameters,
    })));
    _toolsJson.set(req.tools, tools);
  }
  return `{"model":${JSON.stringify(req.model)},"max_tokens":${req.max_output_tokens}` +
    (req.system ? `,"system":${JSON.stringify(req.system)}` : "") +
    `,"messages":[${_turns.json(req.messages)}]` + (tools ? `,"tools":${tools}` : "") +
    (stream ? `,"stream":true` : "") + "}";
}

function _finish(reason: string | null | undefined): string {
  switch (reason) {
    case "end_turn":
    case "stop_sequence":
      return "stop";
    case "tool_use":
      return "tool_calls";
    case "max_tokens":
      return "length";
    case "refusal":
      return "refusal";
    default:
      return reason ? "other" : "stop";
  }
}

/** The Messages API through `@anthropic-ai/sdk`. */
export class AnthropicChat implements ChatProvider {
  /** Provider name. */
  readonly name = "anthropic";
  #endpoint: ChatEndpoint;
  #client: Anthropic | null = null;
  #clientKey: string | undefined;

  /** Connect to `endpoint` (key from `endpoint.keyVar` in this process's environment). */
  constructor(endpoint: Partial<ChatEndpoint> = {}) {
    this.#endpoint = {
      baseUrl: endpoint.baseUrl ?? null,
      keyVar: endpoint.keyVar ?? "ANTHROPIC_API_KEY",
    };
  }

  async complete(req: ChatRequest, opts: ChatCallOptions): Promise<ChatReply> {
    const key = Deno.env.get(this.#endpoint.keyVar) || undefined;
    if (!key) {
      throw new ChatError(
        "client",
        `${this.#endpoint.keyVar} is not set in the runtime's environment`,
      );
    }
    const sdk = (await _load()).default;
    // One client per key: building one reads the environment and sets up headers.
    if (!this.#client || this.#clientKey !== key) {
      this.#client = new sdk({
        apiKey: key,
        authToken: null,
        baseURL: this.#endpoint.baseUrl ?? ANTHROPIC_DEFAULT_BASE_URL,
        maxRetries: 0,
        // The SDK would print what it cannot parse of a server's reply to the runtime's
        // stderr (and its *_LOG variable could turn on more): the ledger records failures.
        logLevel: "off",
        // The global fetch, its bodies bounded as they arrive. (Measured here: the SDK's
        // default fetch path costs ~0.3 ms more per call than handing it one directly.)
        fetch: boundedFetch(),
      });
      this.#clientKey = key;
    }
    const client = this.#client;
    const stream = opts.stream || opts.onText !== undefined;
    // The body goes as JSON text the SDK sends verbatim: serialised incrementally
    // here instead of the whole conversation again on every call.
    const body = anthropicBody(req, stream);
    const post = { body, headers: { "content-type": "application/json" }, signal: opts.signal };
    try {
      if (stream) {
        const events = await client.post("/v1/messages", { ...post, stream: true });
        return await this.#streamed(
          events as unknown as AsyncIterable<Record<string, unknown>>,
          req.model,
          opts,
        );
      }
      const res = await client.post("/v1/messages", post) as unknown as {
        content: _Block[];
        stop_reason: string | null;
        usage?: { input_tokens?: number; output_tokens?: number };
        model?: string;
      };
      if (res === null || typeof res !== "object" || !Array.isArray(res.content)) {
        throw new ChatError("protocol", "reply has no content blocks");
      }
      const b = new ReplyBuilder(opts.limits);
      let n = 0;
      for (const block of res.content) {
        if (block?.type === "text") b.addText(block.text ?? "");
        else if (block?.type === "tool_use") {
          b.call(n);
          if (block.id !== undefined) b.setId(n, block.id);
          b.addName(n, block.name ?? "");
          b.addArguments(n++, JSON.stringify(block.input ?? {}));
        }
      }
      return {
        text: b.text,
        tool_calls: b.toolCalls(),
        usage: {
          input_tokens: tokenCount(res.usage?.input_tokens, "input_tokens"),
          output_tokens: tokenCount(res.usage?.output_tokens, "output_tokens"),
        },
        finish_reason: _finish(res.stop_reason),
        model: res.model ?? req.model,
      };
    } catch (e) {
      throw sdkError(sdk as unknown as SdkErrors, e, key, opts.signal.aborted);
    }
  }

  async #streamed(
    stream: AsyncIterable<Record<string, unknown>>,
    requested: string,
    opts: ChatCallOptions,
  ): Promise<ChatReply> {
    const b = new ReplyBuilder(opts.limits);
    // Content block index -> tool call position.
    const toolAt = new Map<number, number>();
    let finish: string | null = null;
    let stopped = false;
    let model = requested;
    const usage = { input_tokens: 0, output_tokens: 0 };
    for await (const ev of stream) {
      switch (ev.type) {
        case "message_start": {
          const m = ev.message as { model?: string; usage?: Record<string, unknown> };
          if (m?.model) model = m.model;
          usage.input_tokens = tokenCount(m?.usage?.input_tokens, "input_tokens");
          usage.output_tokens = tokenCount(m?.usage?.output_tokens, "output_tokens");
          break;
        }
        case "content_block_start": {
          const block = ev.content_block as _Block;
          if (block?.type === "tool_use") {
            const pos = toolAt.size;
            toolAt.set(ev.index as number, pos);
            b.call(pos);
            if (block.id !== undefined) b.setId(pos, block.id);
            b.addName(pos, block.name ?? "");
          } else if (block?.type === "text" && block.text) {
            b.addText(block.text);
            opts.onText?.(String(block.text));
          }
          break;
        }
        case "content_block_delta": {
          const d = ev.delta as { type?: string; text?: string; partial_json?: string };
          if (d?.type === "text_delta" && d.text) {
            b.addText(d.text);
            opts.onText?.(d.text);
          } else if (d?.type === "input_json_delta" && d.partial_json) {
            const pos = toolAt.get(ev.index as number);
            if (pos === undefined) throw new ChatError("protocol", "input delta for no tool call");
            b.addArguments(pos, d.partial_json);
          }
          break;
        }
        case "message_delta": {
          const d = ev.delta as { stop_reason?: string };
          if (d?.stop_reason) finish = d.stop_reason;
          const u = ev.usage as { output_tokens?: unknown; input_tokens?: unknown } | undefined;
          if (u?.output_tokens !== undefined) {
            usage.output_tokens = tokenCount(u.output_tokens, "output_tokens");
          }
          if (u?.input_tokens) usage.input_tokens = tokenCount(u.input_tokens, "input_tokens");
          break;
        }
        case "message_stop":
          stopped = true;
          break;
        case "error": {
          const err = ev.error as { type?: string; message?: string };
          const kind = err?.type === "overloaded_error" ? "server" : "protocol";
          throw new ChatError(kind, `stream error: ${err?.message ?? "unknown"}`.slice(0, 500));
        }
      }
    }
    streamEnded(opts.signal, stopped, "message_stop");
    // A tool call whose input streamed as nothing has `{}` as its arguments.
    for (const c of b.calls) if (c.arguments === "") c.arguments = "{}";
    return {
      text: b.text,
      tool_calls: b.toolCalls(),
      usage,
      finish_reason: _finish(finish),
      model,
    };
  }
}
