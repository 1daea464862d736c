/**
 * `openai:<model>`: Chat Completions with function tools through the official
 * `openai` SDK. Works against api.openai.com and any OpenAI-compatible server
 * (Ollama, vLLM, llama.cpp server, LM Studio) at a base URL the host chose.
 * @module
 */
import type OpenAI from "openai";
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
  IncrementalJson,
  ReplyBuilder,
  sdkError,
  type SdkErrors,
  streamEnded,
  tokenCount,
} from "./chat.ts";

type _Sdk = typeof import("openai");
let _sdk: Promise<_Sdk> | null = null;
/**
 * The SDK, loaded on first use: a runtime that never talks to this provider
 * (every scripted or tool-only run) never loads it.
 */
function _load(): Promise<_Sdk> {
  return _sdk ??= import("openai");
}

/** OpenAI's own endpoint, named explicitly so no environment variable can move it. */
export const OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1";

type _Msg = OpenAI.Chat.Completions.ChatCompletionMessageParam;

/** One neutral message in the Chat Completions format. */
function _message(m: ChatMessage): _Msg {
  if (m.role === "user") return { role: "user", content: m.content };
  if (m.role === "tool") return { role: "tool", tool_call_id: m.tool_call_id, content: m.content };
  return {
    role: "assistant",
    content: m.content || null,
    ...(m.tool_calls?.length
      ? {
        tool_calls: m.tool_calls.map((c) => ({
          id: c.id,
          type: "function" as const,
          function: { name: c.name, arguments: c.arguments },
        })),
      }
      : {}),
  };
}

// Each message of a growing conversation is encoded once (a turn must not cost more as the
// conversation grows); tools too, per tool list.
const _messagesJson = new IncrementalJson<ChatMessage>((m) => JSON.stringify(_message(m)));
const _toolsJson = new WeakMap<readonly ChatTool[], string>();

/** The request body as JSON text, built from cached pieces. */
export function openaiBody(req: ChatRequest, ownEndpoint: boolean, stream: boolean): string {
  let tools = "";
  if (req.tools.length) {
    tools = _toolsJson.get(req.tools) ?? JSON.stringify(req.tools.map((t) => ({
      type: "function",
      function: { name: t.name, description: t.description, parameters: t.parameters },
    })));
    _toolsJson.set(req.tools, tools);
  }
  const system = req.system ? JSON.stringify({ role: "system", content: req.system }) : "";
  const messages = _messagesJson.json(req.messages);
  const head = [system, messages].filter((x) => x).join(",");
  // OpenAI's own API wants max_completion_tokens; compatible servers know max_tokens.
  const max = ownEndpoint ? "max_completion_tokens" : "max_tokens";
  return `{"model":${JSON.stringify(req.model)},"messages":[${head}]` +
    (tools ? `,"tools":${tools}` : "") + `,"${max}":${req.max_output_tokens}` +
    (stream ? `,"stream":true,"stream_options":{"include_usage":true}` : "") + "}";
}

function _finish(reason: string | null | undefined): string {
  switch (reason) {
    case "stop":
      return "stop";
    case "tool_calls":
    case "function_call":
      return "tool_calls";
    case "length":
      return "length";
    case "content_filter":
      return "refusal";
    default:
      return reason ? "other" : "stop";
  }
}

/** Chat Completions through the `openai` SDK. */
export class OpenAIChat implements ChatProvider {
  /** Provider name. */
  readonly name = "openai";
  #endpoint: ChatEndpoint;
  #client: OpenAI | null = null;
  #clientKey: string | undefined;

  /** Connect to `endpoint` (key from `endpoint.keyVar` in this process's environment). */
  constructor(endpoint: Partial<ChatEndpoint> = {}) {
    this.#endpoint = {
      baseUrl: endpoint.baseUrl ?? null,
      keyVar: endpoint.keyVar ?? "OPENAI_API_KEY",
    };
  }

  async complete(req: ChatRequest, opts: ChatCallOptions): Promise<ChatReply> {
    const key = Deno.env.get(this.#endpoint.keyVar) || undefined;
    if (!key && this.#endpoint.baseUrl === null) {
      throw new ChatError(
        "client",
        `${this.#endpoint.keyVar} is not set in the runtime's environment`,
      );
    }
    const sdk = (await _load()).default;
    // One client per key: building one reads the environment and sets up headers.
    if (!this.#client || this.#clientKey !== key) {
      this.#client = new sdk({
        // A local server needs no key; the SDK insists on one, so it gets a placeholder.
        apiKey: key ?? "no-key",
        baseURL: this.#endpoint.baseUrl ?? OPENAI_DEFAULT_BASE_URL,
        maxRetries: 0,
        // The SDK would print what it cannot parse of a server's reply to the runtime's
        // stderr (and its *_LOG variable could turn on more): the ledger records failures.
        logLevel: "off",
        // The global fetch, its bodies bounded as they arrive. (Measured here: the SDK's
        // default fetch path costs ~0.3 ms more per call than handing it one directly.)
        fetch: boundedFetch(),
        organization: null,
        project: null,
      });
      this.#clientKey = key;
    }
    const client = this.#client;
    const stream = opts.stream || opts.onText !== undefined;
    // The body goes as JSON text the SDK sends verbatim: serialised incrementally
    // here instead of the whole conversation again on every call.
    const body = openaiBody(req, this.#endpoint.baseUrl === null, stream);
    const post = { body, headers: { "content-type": "application/json" }, signal: opts.signal };
    try {
      if (stream) {
        const chunks = await client.post("/chat/completions", { ...post, stream: true });
        return await this.#streamed(
          chunks as unknown as AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>,
          req.model,
          opts,
        );
      }
      const res = await client.post(
        "/chat/completions",
        post,
      ) as OpenAI.Chat.Completions.ChatCompletion;
      const choice = res.choices?.[0];
      if (!choice) throw new ChatError("protocol", "reply has no choices");
      const b = new ReplyBuilder(opts.limits);
      const m = choice.message;
      b.addText(m.content ?? m.refusal ?? "");
      (m.tool_calls ?? []).forEach((c, i) => {
        b.setId(i, c.id);
        if (c.type === "function") {
          b.addName(i, c.function.name);
          b.addArguments(i, c.function.arguments ?? "");
        }
      });
      return {
        text: b.text,
        tool_calls: b.toolCalls(),
        usage: {
          input_tokens: tokenCount(res.usage?.prompt_tokens, "prompt_tokens"),
          output_tokens: tokenCount(res.usage?.completion_tokens, "completion_tokens"),
        },
        finish_reason: m.refusal ? "refusal" : _finish(choice.finish_reason),
        model: res.model ?? req.model,
      };
    } catch (e) {
      throw sdkError(sdk as unknown as SdkErrors, e, key, opts.signal.aborted);
    }
  }

  async #streamed(
    stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>,
    requested: string,
    opts: ChatCallOptions,
  ): Promise<ChatReply> {
    const b = new ReplyBuilder(opts.limits);
    let finish: string | null = null;
    let refusal = false;
    let model = requested;
    const usage = { input_tokens: 0, output_tokens: 0 };
    for await (const chunk of stream) {
      if (chunk.model) model = chunk.model;
      if (chunk.usage) {
        usage.input_tokens = tokenCount(chunk.usage.prompt_tokens, "prompt_tokens");
        usage.output_tokens = tokenCount(chunk.usage.completion_tokens, "completion_tokens");
      }
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const d = choice.delta ?? {};
      const text = d.content ?? d.refusal ?? "";
      if (d.refusal) refusal = true;
      if (text) {
        b.addText(text);
        opts.onText?.(text);
      }
      for (const tc of d.tool_calls ?? []) {
        b.call(tc.index);
        if (tc.id !== undefined && tc.id !== null) b.setId(tc.index, tc.id);
        if (tc.function?.name) b.addName(tc.index, tc.function.name);
        if (tc.function?.arguments) b.addArguments(tc.index, tc.function.arguments);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    streamEnded(opts.signal, finish !== null, "finish_reason");
    return {
      text: b.text,
      tool_calls: b.toolCalls(),
      usage,
      finish_reason: refusal ? "refusal" : _finish(finish),
      model,
    };
  }
}
