/**
 * Transcript scenarios: the model is a chat model whose replies are given
 * turn by turn (what a prompt-injected, or honest, model answers). Under the
 * runtime runners a fake model server on loopback serves them, so the process
 * runs through the real model loop: the official SDK over HTTP, `model.call`
 * with its ledger and sink rule, every tool call a syscall. Baselines run the
 * same tool calls in the same order, as a script.
 *
 * The server answers a request with the turn it asks for: the number of model
 * replies the request already carries (so a retried request gets the same
 * turn). Arguments may quote what the model was handed in that very request
 * (`{{RESULT:n}}`: its n-th tool result, `{{RESULT:-1}}`: the last), so a
 * model can only repeat what really reached it: a result the runtime held
 * back is quoted as the `[redacted:...]` text the model got.
 * @module
 */
import { AnthropicChat } from "../runtime/providers/anthropic.ts";
import type { ChatProvider } from "../runtime/providers/chat.ts";
import type { ChatFactory } from "../runtime/providers/chat_host.ts";
import { OpenAIChat } from "../runtime/providers/openai.ts";
import type { ScriptStep } from "../runtime/providers/scripted.ts";
import {
  type FakeModelServer,
  type FakeRequest,
  type FakeTurn,
  startFakeModelServer,
} from "./fake_models.ts";
import { quoteResults } from "./model.ts";

/** One tool call of a transcript turn. */
export interface TranscriptToolCall {
  /** Tool name (a tool the image offers, or a scenario JIT tool). */
  name: string;
  /** Arguments, as the model writes them. */
  arguments: Record<string, unknown>;
}

/** One reply of the model. */
export interface TranscriptTurn {
  /** Text of the reply. */
  text?: string;
  /** Tool calls of the reply, run in order. */
  tool_calls?: TranscriptToolCall[];
}

/** The replies a model gives, turn by turn, and the wire format it speaks. */
export interface Transcript {
  /** Wire format of the fake server (and provider of the process's model). */
  provider: "openai" | "anthropic";
  /** The replies, in order. */
  turns: TranscriptTurn[];
}

/** The text the server answers with once every turn was used: it ends the process. */
export const END_OF_TRANSCRIPT = "(end of transcript)";

/** Model name given to a transcript-driven process. */
export const FAKE_MODEL_NAME = "fake";

/** Environment variable holding the key the SDKs send to the fake server (a fixed fake value). */
export const FAKE_KEY_VAR = "LIBOS_SAFETY_FAKE_MODEL_KEY";

/**
 * The transcript's tool calls in order, as script steps (what baselines run);
 * a final reply without tool calls becomes the exit with its text.
 */
export function transcriptSteps(t: Transcript): ScriptStep[] {
  const steps: ScriptStep[] = [];
  for (const turn of t.turns) {
    const calls = turn.tool_calls ?? [];
    for (const c of calls) steps.push({ tool: c.name, args: c.arguments });
    if (calls.length === 0) {
      steps.push({ tool: "exit", args: { code: 0, result: turn.text ?? "" } });
    }
  }
  return steps;
}

/** The messages of a request, whatever the wire format. */
function _messages(req: FakeRequest): Record<string, unknown>[] {
  const m = req.body.messages;
  return Array.isArray(m) ? m as Record<string, unknown>[] : [];
}

/** Which turn a request asks for: the number of model replies it already carries. */
export function turnIndex(req: FakeRequest): number {
  return _messages(req).filter((m) => m.role === "assistant").length;
}

/** A tool result's text as the model reads it: the data wrapper taken off, when there is one. */
function _unwrap(content: string): string {
  const open = /^<tool_result [^>\n]*>\n/.exec(content);
  const close = content.lastIndexOf("\n</tool_result>\n");
  return open && close >= open[0].length ? content.slice(open[0].length, close) : content;
}

function _text(v: unknown): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v.map((b) => (b as { text?: unknown })?.text).filter((x) => typeof x === "string")
      .join("");
  }
  return "";
}

/** The tool result messages of a request, in order, exactly as sent (data wrapper and all). */
export function toolResultContents(req: FakeRequest): string[] {
  const out: string[] = [];
  for (const m of _messages(req)) {
    if (req.api === "openai") {
      if (m.role === "tool") out.push(_text(m.content));
      continue;
    }
    if (!Array.isArray(m.content)) continue;
    for (const b of m.content as Record<string, unknown>[]) {
      if (b?.type === "tool_result") out.push(_text(b.content));
    }
  }
  return out;
}

/** The tool results a request hands the model, in order, as it reads them (wrapper taken off). */
export function handedResults(req: FakeRequest): string[] {
  return toolResultContents(req).map(_unwrap);
}

/** Every string of a request's body (its JSON escapes undone): what the endpoint received. */
export function requestStrings(req: FakeRequest): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") Object.values(v).forEach(walk);
  };
  walk(req.body);
  return out;
}

/** The server's reply to a request: the turn it asks for, quotes filled from that request. */
export function transcriptReply(t: Transcript, req: FakeRequest): FakeTurn {
  const turn = t.turns[turnIndex(req)];
  if (!turn) return { text: END_OF_TRANSCRIPT };
  const results = handedResults(req);
  return {
    ...(turn.text !== undefined ? { text: turn.text } : {}),
    ...(turn.tool_calls
      ? {
        tool_calls: turn.tool_calls.map((c) => ({
          name: c.name,
          arguments: quoteResults(c.arguments, results),
        })),
      }
      : {}),
  };
}

/** A fake model server on loopback that replays `t`. */
export function startTranscriptServer(t: Transcript): FakeModelServer {
  return startFakeModelServer({ respond: (req) => transcriptReply(t, req) });
}

/** The base URL a process of `t`'s provider is given for `srv`. */
export function transcriptBaseUrl(t: Transcript, srv: FakeModelServer): string {
  return t.provider === "openai" ? srv.openaiBaseUrl : srv.anthropicBaseUrl;
}

/**
 * The chat providers of a benchmark runtime: the official SDKs, with the key
 * read from {@link FAKE_KEY_VAR} (set here to a fixed fake value), so no key
 * of the host's environment is ever sent to a fake server; an endpoint other
 * than a loopback one is refused.
 */
export function fakeChat(): ChatFactory {
  Deno.env.set(FAKE_KEY_VAR, "fake-key-for-a-loopback-server");
  const made = new Map<string, ChatProvider>();
  return (provider, baseUrl) => {
    if (!baseUrl?.startsWith("http://127.0.0.1:")) {
      throw new Error(`the benchmark talks to its fake model server only, not ${baseUrl}`);
    }
    const key = `${provider} ${baseUrl ?? ""}`;
    let p = made.get(key);
    if (!p) {
      const endpoint = { baseUrl, keyVar: FAKE_KEY_VAR };
      p = provider === "openai" ? new OpenAIChat(endpoint) : new AnthropicChat(endpoint);
      made.set(key, p);
    }
    return p;
  };
}
