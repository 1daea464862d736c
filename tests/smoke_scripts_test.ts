/**
 * The real-model smoke scripts: without a key they say so and exit 0; with
 * an endpoint they run the demo agent end to end (here against the fake
 * server, speaking the real wire format, with a transcript of what a model
 * would do).
 */
import assert from "node:assert/strict";
import { startFakeModelServer } from "./fake_models.ts";

const SMOKE = new URL("../demos/smoke.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

async function smoke(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, SMOKE, ...args],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("smoke: without a key each smoke script says it skipped and exits 0", async () => {
  for (
    const [provider, key] of [["openai", "OPENAI_API_KEY"], ["anthropic", "ANTHROPIC_API_KEY"]]
  ) {
    const r = await smoke([provider], {});
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `skipped: no ${key}`);
  }
});

Deno.test("smoke: the demo agent finds the failures, asks before fixing src/, and writes its report", async () => {
  await using srv = startFakeModelServer();
  const fixed = "def add(a, b):\n    return a + b\n";
  srv.push(
    {
      text: "Reading the log.",
      tool_calls: [{ name: "read_file", arguments: { path: "logs/pytest.log" } }],
    },
    { tool_calls: [{ name: "read_file", arguments: { path: "src/app.py" } }] },
    { tool_calls: [{ name: "write_file", arguments: { path: "src/app.py", content: fixed } }] },
    {
      tool_calls: [{
        name: "write_file",
        arguments: {
          path: "reports/triage.md",
          content: "# Triage\n\ntest_sub and test_div fail.\n",
        },
      }],
    },
    { text: "test_sub and test_div failed; I fixed src/app.py and wrote reports/triage.md." },
  );
  const r = await smoke(["openai", "--base-url", srv.openaiBaseUrl, "--model", "fake"], {});
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /process exited \(exit 0\)/);
  assert.match(r.stdout, /model calls: 5/);
  assert.match(r.stdout, /test_sub and test_div fail/);
  assert.match(r.stdout, /audit: verified/);
  assert.match(r.stderr, /Reading the log\./, "streamed text shows live");
  assert.equal(srv.requests.length, 5);
  assert.equal(srv.requests[0].body.stream, true);
});
