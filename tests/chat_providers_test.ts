/**
 * The OpenAI and Anthropic providers through their official SDKs against a
 * fake server on loopback that speaks each wire format (JSON and SSE, text
 * and tool call arguments split across chunks).
 */
import assert from "node:assert/strict";
import { AnthropicChat } from "../runtime/providers/anthropic.ts";
import { ChatError, type ChatProvider, DEFAULT_CHAT_LIMITS } from "../runtime/providers/chat.ts";
import { OpenAIChat } from "../runtime/providers/openai.ts";
import { startFakeModelServer } from "./fake_models.ts";

const KEY = "sk-test-" + "k".repeat(24);

function providers(base: { openaiBaseUrl: string; anthropicBaseUrl: string }): ChatProvider[] {
  return [
    new OpenAIChat({ baseUrl: base.openaiBaseUrl, keyVar: "LIBOS_TEST_OPENAI_KEY" }),
    new AnthropicChat({ baseUrl: base.anthropicBaseUrl, keyVar: "LIBOS_TEST_ANTHROPIC_KEY" }),
  ];
}

const REQ = {
  model: "m1",
  system: "be brief",
  messages: [{ role: "user" as const, content: "count the failures" }],
  tools: [{
    name: "read_file",
    description: "Read a file",
    parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  }],
  max_output_tokens: 100,
};

Deno.test("chat providers: text and tool calls, streamed and not, through both SDKs", async () => {
  Deno.env.set("LIBOS_TEST_OPENAI_KEY", KEY);
  Deno.env.set("LIBOS_TEST_ANTHROPIC_KEY", KEY);
  await using srv = startFakeModelServer();
  for (const p of providers(srv)) {
    for (const stream of [false, true]) {
      srv.push({
        text: "Reading the log now.",
        tool_calls: [
          { name: "read_file", arguments: { path: "logs/pytest.log" } },
          { name: "read_file", arguments: { path: "README.md" } },
        ],
        usage: { input_tokens: 42, output_tokens: 7 },
        pieces: 4,
      });
      const seen: string[] = [];
      const r = await p.complete(REQ, {
        signal: AbortSignal.timeout(5000),
        stream,
        onText: stream ? (t) => seen.push(t) : undefined,
        limits: DEFAULT_CHAT_LIMITS,
      });
      const what = `${p.name} stream=${stream}`;
      assert.equal(r.text, "Reading the log now.", what);
      assert.deepEqual(r.tool_calls.map((c) => [c.name, JSON.parse(c.arguments)]), [
        ["read_file", { path: "logs/pytest.log" }],
        ["read_file", { path: "README.md" }],
      ], what);
      assert.equal(r.finish_reason, "tool_calls", what);
      assert.deepEqual(r.usage, { input_tokens: 42, output_tokens: 7 }, what);
      if (stream) assert.ok(seen.length > 1, `${what}: text arrived in pieces`);
      const sent = srv.requests.at(-1)!;
      assert.equal(sent.body.stream === true, stream, what);
      assert.equal(sent.raw.includes("count the failures"), true);
    }
  }
  const o = srv.requests.find((r) => r.api === "openai")!;
  const a = srv.requests.find((r) => r.api === "anthropic")!;
  assert.equal(srv.requests.length, 4);
  assert.equal(o.headers.authorization, `Bearer ${KEY}`);
  // The key travels only in the request headers the SDK sets (x-api-key or a bearer token).
  assert.ok([a.headers["x-api-key"], a.headers.authorization].some((h) => h?.includes(KEY)));
});

Deno.test("chat providers: HTTP errors are classified with Retry-After and never echo the key", async () => {
  Deno.env.set("LIBOS_TEST_OPENAI_KEY", KEY);
  Deno.env.set("LIBOS_TEST_ANTHROPIC_KEY", KEY);
  await using srv = startFakeModelServer();
  for (const p of providers(srv)) {
    srv.push(
      { status: 429, retryAfter: "2", message: `slow down ${KEY}` },
      { status: 503 },
      { status: 400, message: "bad request" },
      { hangMs: 5000 },
    );
    const attempt = async () => {
      try {
        await p.complete(REQ, {
          signal: AbortSignal.timeout(300),
          stream: false,
          limits: DEFAULT_CHAT_LIMITS,
        });
      } catch (e) {
        assert.ok(e instanceof ChatError, String(e));
        return e;
      }
      throw new Error("expected a failure");
    };
    const limited = await attempt();
    assert.equal(limited.kind, "rate_limit");
    assert.equal(limited.retryAfterMs, 2000);
    assert.ok(!limited.message.includes(KEY), limited.message);
    assert.equal((await attempt()).kind, "server");
    const bad = await attempt();
    assert.equal(bad.kind, "client");
    assert.equal(bad.retryable, false);
    assert.equal((await attempt()).kind, "timeout");
  }
});
