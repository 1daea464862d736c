/**
 * Fake model servers for tests and the safety benchmark's transcript
 * scenarios: a loopback HTTP server that speaks the real wire formats (OpenAI
 * Chat Completions at `/v1/chat/completions`, Anthropic Messages at
 * `/v1/messages`), as JSON or as SSE streams with text and tool call arguments
 * split across chunks. Replies come from a script (or, once it is used up, a
 * responder); every request is recorded (headers and body) so callers can
 * check what left the runtime. Never a mock of an SDK: the official SDKs talk
 * to it over HTTP. Test tooling: nothing in the runtime imports it.
 * @module
 */

/** One tool call a fake reply makes. */
export interface FakeToolCall {
  /** Tool name. */
  name: string;
  /** Arguments: an object (sent as JSON) or raw text (may be malformed on purpose). */
  arguments: Record<string, unknown> | string;
  /** Call id (generated when absent). */
  id?: string;
}

/** What the server does for one request. */
export type FakeTurn =
  | {
    /** Reply text. */
    text?: string;
    /** Tool calls. */
    tool_calls?: FakeToolCall[];
    /** Finish reason in the provider's own words (default: stop / tool calls). */
    finish?: string;
    /** Reported usage. */
    usage?: { input_tokens: number; output_tokens: number };
    /** Pieces each text and argument string is cut into when streaming (default 3). */
    pieces?: number;
    /** OpenAI only: a refusal instead of content. */
    refusal?: string;
  }
  | { status: number; retryAfter?: string; message?: string }
  | { hangMs: number }
  /** A body of the server's own making, for replies no honest server sends. */
  | { json: unknown }
  /** SSE events as given (`data: ...\n\n` each), then the stream stays open `stallMs` before it closes. */
  | { sse: string[]; stallMs?: number };

/** A request the server received. */
export interface FakeRequest {
  /** `openai` or `anthropic`. */
  api: "openai" | "anthropic";
  /** What came before `/v1/...` in the path (`""` at the root; tells agents apart). */
  prefix: string;
  /** Request headers (lower-cased names). */
  headers: Record<string, string>;
  /** Parsed JSON body. */
  body: Record<string, unknown>;
  /** The raw body text. */
  raw: string;
  /** When it arrived (performance.now()). */
  at: number;
}

/** A running fake server. */
export interface FakeModelServer {
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** Base URL for the openai SDK. */
  openaiBaseUrl: string;
  /** Base URL for the anthropic SDK. */
  anthropicBaseUrl: string;
  /** Requests so far, in order. */
  requests: FakeRequest[];
  /** Add turns to the script. */
  push(...turns: (FakeTurn | ((req: FakeRequest) => FakeTurn))[]): void;
  /** Turns not used yet. */
  remaining(): number;
  /** Stop it. */
  close(): Promise<void>;
  /** Close on `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** What to answer when the script is used up and there is no responder. */
const _EMPTY: FakeTurn = { text: "(script exhausted)" };

/** Options of {@link startFakeModelServer}. */
export interface FakeServerOptions {
  /** Answers every request that finds the script used up (default: a fixed text reply). */
  respond?: (req: FakeRequest) => FakeTurn;
}

function _pieces(s: string, n: number): string[] {
  if (s.length === 0) return [];
  const size = Math.max(1, Math.ceil(s.length / n));
  const out: string[] = [];
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}

function _args(c: FakeToolCall): string {
  return typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments);
}

function _sse(events: string[]): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      for (const e of events) ctl.enqueue(enc.encode(e));
      ctl.close();
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
}

type _Reply = Extract<FakeTurn, { text?: string }>;

function _openai(turn: _Reply, body: Record<string, unknown>, n: number): Response {
  const model = String(body.model ?? "fake");
  const calls = (turn.tool_calls ?? []).map((c, i) => ({ ...c, id: c.id ?? `call_${n}_${i}` }));
  const finish = turn.finish ?? (calls.length ? "tool_calls" : "stop");
  const usage = turn.usage ?? { input_tokens: 10, output_tokens: 5 };
  if (body.stream !== true) {
    return Response.json({
      id: `chatcmpl-${n}`,
      object: "chat.completion",
      created: 1,
      model,
      choices: [{
        index: 0,
        finish_reason: finish,
        message: {
          role: "assistant",
          content: turn.refusal ? null : (turn.text ?? null),
          refusal: turn.refusal ?? null,
          ...(calls.length
            ? {
              tool_calls: calls.map((c) => ({
                id: c.id,
                type: "function",
                function: { name: c.name, arguments: _args(c) },
              })),
            }
            : {}),
        },
      }],
      usage: {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: usage.input_tokens + usage.output_tokens,
      },
    });
  }
  const pieces = turn.pieces ?? 3;
  const chunk = (delta: unknown, finish_reason: string | null = null) =>
    `data: ${
      JSON.stringify({
        id: `chatcmpl-${n}`,
        object: "chat.completion.chunk",
        created: 1,
        model,
        choices: [{ index: 0, delta, finish_reason }],
      })
    }\n\n`;
  const events = [chunk({ role: "assistant", content: "" })];
  if (turn.refusal) events.push(chunk({ refusal: turn.refusal }));
  for (const p of _pieces(turn.text ?? "", pieces)) events.push(chunk({ content: p }));
  calls.forEach((c, i) => {
    events.push(chunk({
      tool_calls: [{
        index: i,
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: "" },
      }],
    }));
    for (const p of _pieces(_args(c), pieces)) {
      events.push(chunk({ tool_calls: [{ index: i, function: { arguments: p } }] }));
    }
  });
  events.push(chunk({}, finish));
  events.push(
    `data: ${
      JSON.stringify({
        id: `chatcmpl-${n}`,
        object: "chat.completion.chunk",
        created: 1,
        model,
        choices: [],
        usage: {
          prompt_tokens: usage.input_tokens,
          completion_tokens: usage.output_tokens,
          total_tokens: usage.input_tokens + usage.output_tokens,
        },
      })
    }\n\n`,
  );
  events.push("data: [DONE]\n\n");
  return _sse(events);
}

function _anthropic(turn: _Reply, body: Record<string, unknown>, n: number): Response {
  const model = String(body.model ?? "fake");
  const calls = (turn.tool_calls ?? []).map((c, i) => ({ ...c, id: c.id ?? `toolu_${n}_${i}` }));
  const stop = turn.finish ?? (calls.length ? "tool_use" : "end_turn");
  const usage = turn.usage ?? { input_tokens: 10, output_tokens: 5 };
  const content: Record<string, unknown>[] = [];
  if (turn.text) content.push({ type: "text", text: turn.text });
  for (const c of calls) {
    content.push({
      type: "tool_use",
      id: c.id,
      name: c.name,
      input: typeof c.arguments === "string" ? JSON.parse(c.arguments) : c.arguments,
    });
  }
  if (body.stream !== true) {
    return Response.json({
      id: `msg_${n}`,
      type: "message",
      role: "assistant",
      model,
      content,
      stop_reason: stop,
      stop_sequence: null,
      usage,
    });
  }
  const pieces = turn.pieces ?? 3;
  const ev = (type: string, data: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  const events = [
    ev("message_start", {
      message: {
        id: `msg_${n}`,
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: usage.input_tokens, output_tokens: 1 },
      },
    }),
    ev("ping", {}),
  ];
  let index = 0;
  if (turn.text) {
    events.push(ev("content_block_start", { index, content_block: { type: "text", text: "" } }));
    for (const p of _pieces(turn.text, pieces)) {
      events.push(ev("content_block_delta", { index, delta: { type: "text_delta", text: p } }));
    }
    events.push(ev("content_block_stop", { index }));
    index++;
  }
  for (const c of calls) {
    events.push(ev("content_block_start", {
      index,
      content_block: { type: "tool_use", id: c.id, name: c.name, input: {} },
    }));
    for (const p of _pieces(_args(c), pieces)) {
      events.push(
        ev("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: p } }),
      );
    }
    events.push(ev("content_block_stop", { index }));
    index++;
  }
  events.push(ev("message_delta", {
    delta: { stop_reason: stop, stop_sequence: null },
    usage: { output_tokens: usage.output_tokens },
  }));
  events.push(ev("message_stop", {}));
  return _sse(events);
}

/** An SSE stream of `events` that stays open `stallMs` (or until the server closes) before ending. */
function _stalling(events: string[], stallMs: number, hanging: Set<AbortController>): Response {
  const enc = new TextEncoder();
  const ctl = new AbortController();
  const body = new ReadableStream<Uint8Array>({
    async start(out) {
      for (const e of events) out.enqueue(enc.encode(e));
      hanging.add(ctl);
      await new Promise((r) => {
        const t = setTimeout(r, stallMs);
        ctl.signal.addEventListener("abort", () => (clearTimeout(t), r(null)));
      });
      hanging.delete(ctl);
      try {
        out.close();
      } catch { /* the client went away */ }
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
}

function _error(
  api: "openai" | "anthropic",
  turn: { status: number; retryAfter?: string; message?: string },
) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (turn.retryAfter !== undefined) headers["retry-after"] = turn.retryAfter;
  const message = turn.message ?? `fake error ${turn.status}`;
  const body = api === "openai"
    ? { error: { message, type: "server_error", code: null } }
    : { type: "error", error: { type: "api_error", message } };
  return new Response(JSON.stringify(body), { status: turn.status, headers });
}

/** Start a fake server on a random loopback port. */
export function startFakeModelServer(opts: FakeServerOptions = {}): FakeModelServer {
  const script: (FakeTurn | ((req: FakeRequest) => FakeTurn))[] = [];
  const requests: FakeRequest[] = [];
  const hanging = new Set<AbortController>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    // Any prefix before /v1/...: several agents can share one server, told apart by it.
    const m = /^(.*)\/v1\/(chat\/completions|messages)$/.exec(url.pathname);
    const api = m?.[2] === "chat/completions" ? "openai" : m ? "anthropic" : null;
    if (!api || req.method !== "POST") return new Response("not found", { status: 404 });
    const raw = await req.text();
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    const rec: FakeRequest = {
      api,
      prefix: m![1],
      headers,
      body: JSON.parse(raw),
      raw,
      at: performance.now(),
    };
    requests.push(rec);
    const next = script.shift() ?? opts.respond ?? _EMPTY;
    const turn = typeof next === "function" ? next(rec) : next;
    if ("hangMs" in turn) {
      const ctl = new AbortController();
      hanging.add(ctl);
      await new Promise((r) => {
        const t = setTimeout(r, turn.hangMs);
        ctl.signal.addEventListener("abort", () => (clearTimeout(t), r(null)));
      });
      hanging.delete(ctl);
      return new Response("too late", { status: 504 });
    }
    if ("status" in turn) return _error(api, turn);
    if ("json" in turn) {
      return new Response(JSON.stringify(turn.json), {
        headers: { "content-type": "application/json" },
      });
    }
    if ("sse" in turn) return _stalling(turn.sse, turn.stallMs ?? 0, hanging);
    return api === "openai"
      ? _openai(turn, rec.body, requests.length)
      : _anthropic(turn, rec.body, requests.length);
  });
  const origin = `http://127.0.0.1:${server.addr.port}`;
  const close = async () => {
    for (const c of hanging) c.abort();
    await server.shutdown();
  };
  return {
    origin,
    openaiBaseUrl: `${origin}/v1`,
    anthropicBaseUrl: origin,
    requests,
    push: (...turns) => void script.push(...turns),
    remaining: () => script.length,
    close,
    [Symbol.asyncDispose]: close,
  };
}
