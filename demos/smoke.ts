/**
 * Smoke test of a real model: `deno task smoke:openai` / `smoke:anthropic`.
 *
 * Runs one agent (images/coding.json) over a copy of demos/workspace with a
 * real model: find the failing tests in the log, propose a fix in src/ (the
 * write asks the human, answered "allow once" here), and write a report to
 * reports/triage.md. Without the provider's key in the environment it says
 * "skipped: no <KEY>" and exits 0.
 *
 *   deno task smoke:openai [--model NAME] [--base-url URL]
 *   deno task smoke:anthropic [--model NAME]
 *
 * Models default to `OPENAI_MODEL` / `ANTHROPIC_MODEL`, else gpt-5.5 and
 * claude-opus-5-5 (the SDKs' own examples). An OpenAI-compatible local server
 * (Ollama, vLLM, llama.cpp, LM Studio) needs `--base-url` and no key.
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { model: { type: "string" }, "base-url": { type: "string" } },
});
const provider = positionals[0];
if (provider !== "openai" && provider !== "anthropic") {
  console.error("usage: smoke.ts openai|anthropic [--model NAME] [--base-url URL]");
  Deno.exit(2);
}
const keyVar = provider === "openai" ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY";
const baseUrl = values["base-url"] ?? null;
if (!Deno.env.get(keyVar) && !(provider === "openai" && baseUrl)) {
  console.log(`skipped: no ${keyVar}`);
  Deno.exit(0);
}
const model = values.model ??
  Deno.env.get(provider === "openai" ? "OPENAI_MODEL" : "ANTHROPIC_MODEL") ??
  (provider === "openai" ? "gpt-5.5" : "claude-opus-5-5");

const root = await Deno.makeTempDir({ prefix: `libos-smoke-${provider}-` });
const ws = join(root, "ws");
const demo = new URL("./workspace", import.meta.url).pathname;
await new Deno.Command("cp", { args: ["-r", demo, ws] }).output();
await Deno.mkdir(join(ws, "reports"), { recursive: true });
const image = JSON.parse(
  await Deno.readTextFile(new URL("../images/coding.json", import.meta.url)),
);
image.budgets = { ...image.budgets, max_model_calls: 30, max_output_tokens: 60_000 };

const rt = await Runtime.open({
  store: join(root, "libos.db"),
  providers: { human: new ScriptedHuman(["allow_once", "allow_once"]) },
  onModelText: (_pid, t) => void Deno.stderr.writeSync(new TextEncoder().encode(t)),
});
let ok = false;
try {
  const proc = await rt.launch({
    image,
    workspace: ws,
    goal: "The test log is logs/pytest.log. Find which tests fail and why (read src/app.py). " +
      "Propose a fix by writing the corrected src/app.py (this write asks the human for " +
      "approval). Then write a short report to reports/triage.md: the failing tests, the " +
      "cause, and what you changed. Finish with a one-paragraph summary.",
    model: { provider, name: model, base_url: baseUrl, max_output_tokens: 4096 },
  });
  await rt.runUntilIdle();
  const p = await rt.process(proc.pid);
  const calls = await rt.kernel.store.listModelCalls({ pid: proc.pid });
  const report = await Deno.readTextFile(join(ws, "reports/triage.md")).catch(() => null);
  console.log(`\n\n${provider}:${model}: process ${p.status} (exit ${p.exit_code})`);
  console.log(
    `model calls: ${calls.length}, tokens in ${p.usage.input_tokens} out ${p.usage.output_tokens}`,
  );
  for (const s of await rt.steps(proc.pid)) {
    console.log(`  ${s.tool} ${s.ok ? "ok" : `FAILED ${s.error.code}`}`);
  }
  console.log(report ? `reports/triage.md:\n${report}` : "no report was written");
  ok = p.status === "exited" && p.exit_code === 0 && report !== null;
  const audit = await rt.kernel.store.verifyAudit();
  console.log(`audit: ${audit.ok ? "verified" : "TAMPERED"} (${audit.count} records)`);
} finally {
  await rt.close();
  await Deno.remove(root, { recursive: true });
}
Deno.exit(ok ? 0 : 1);
