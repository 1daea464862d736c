/**
 * `deno task bench:model`: the runtime's own cost per model turn against the
 * fake model server's raw round trip, measured in the same run, at
 * conversation lengths of 10, 100 and 1,000 turns.
 *
 * A turn is a model quantum (the finished tool step's result goes into the
 * conversation, the request is built, ledgered and sent, the reply recorded
 * and parsed) plus the tool quantum it asked for (`now`: an authorized,
 * audited `clock.now`). The raw baseline replays the very request bodies the
 * runtime sent, with `fetch`, to the same server: what any client pays to talk
 * to the model. The difference is the runtime's cost per turn.
 *
 * Targets: under 2 ms added per turn, and the 1,000-turn figure within 1.5x
 * of the 10-turn one (the stored conversation grows; the per-turn cost must not).
 *
 *   deno task bench:model [--turns N] [--rounds N]
 * @module
 */
import { Runtime } from "../host/runtime.ts";
import { type ConvDraft, tokenCounter } from "../runtime/conversation.ts";
import { startFakeModelServer } from "../safety/fake_models.ts";
import { intFlag, median } from "./_common.ts";

const TURNS = intFlag("--turns", 40);
const ROUNDS = intFlag("--rounds", 5);
const LENGTHS = [10, 100, 1000];

Deno.env.set("OPENAI_API_KEY", "sk-bench-not-a-key");
const srv = startFakeModelServer();
const dir = await Deno.makeTempDir({ prefix: "libos-bench-model-" });
await Deno.mkdir(`${dir}/ws`);

/** A process whose conversation already holds `length` turns (a reply and its result each). */
async function seeded(rt: Runtime, length: number): Promise<number> {
  const proc = await rt.launch({
    image: { name: "bench", tools: ["now"], system_prompt: "You keep time." },
    workspace: `${dir}/ws`,
    grants: [{ resource: "clock:now", rights: ["read"] }],
    goal: "Read the clock until told to stop.",
    model: {
      provider: "openai",
      name: "bench",
      base_url: srv.openaiBaseUrl,
      stream: false,
      context_window: 10_000_000,
    },
  });
  const k = rt.kernel;
  const count = await tokenCounter();
  const conv = await k.conversation(proc.pid);
  const drafts: ConvDraft[] = [{
    kind: "goal",
    text: "Read the clock until told to stop.",
    label: "public",
  }];
  for (let t = 1; t <= length; t++) {
    const id = `call_seed_${t}`;
    drafts.push({
      kind: "assistant",
      turn: t,
      text: `Turn ${t}: reading the clock.`,
      tool_calls: [{ id, name: "now", arguments: "{}" }],
      label: "public",
    }, {
      kind: "tool",
      call_id: id,
      name: "now",
      content: `<tool_result tool="now" status="ok">\n{"epoch_ms":${1e12 + t}}\n</tool_result>`,
      is_error: false,
      step: t - 1,
      label: "public",
    });
  }
  await conv.append(k.store, drafts, count);
  return proc.pid;
}

/** Run `turns` turns of a process seeded with `length`; returns ms per turn and the bodies sent. */
async function runtimeTurns(
  length: number,
  turns: number,
): Promise<{ ms: number; bodies: string[] }> {
  const rt = await Runtime.open({
    store: `${dir}/s-${length}-${crypto.randomUUID()}.db`,
    concurrency: 1,
  });
  try {
    const pid = await seeded(rt, length);
    for (let i = 0; i < turns; i++) srv.push({ tool_calls: [{ name: "now", arguments: {} }] });
    srv.push({ text: "stop" });
    // Warm: the first turn loads the SDK and the tokenizer.
    await rt.runUntilIdle(2);
    const first = srv.requests.length;
    const t0 = performance.now();
    await rt.runUntilIdle(2 * (turns - 1));
    const ms = (performance.now() - t0) / (turns - 1);
    const bodies = srv.requests.slice(first).map((r) => r.raw);
    await rt.runUntilIdle();
    if ((await rt.process(pid)).status !== "exited") throw new Error("bench process did not exit");
    return { ms, bodies };
  } finally {
    await rt.close();
  }
}

/**
 * The same requests straight to the server: what any client pays to talk to
 * the model with a conversation of this size already in memory (serialize
 * it, one fetch, parse the reply).
 */
async function rawTurns(bodies: string[]): Promise<number> {
  const requests = bodies.map((b) => JSON.parse(b));
  for (let i = 0; i < bodies.length; i++) {
    srv.push({ tool_calls: [{ name: "now", arguments: {} }] });
  }
  const t0 = performance.now();
  for (const request of requests) {
    const res = await fetch(`${srv.openaiBaseUrl}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer x" },
      body: JSON.stringify(request),
    });
    await res.json();
  }
  return (performance.now() - t0) / bodies.length;
}

const results = new Map<number, { rt: number[]; raw: number[]; chars: number }>();
for (const l of LENGTHS) results.set(l, { rt: [], raw: [], chars: 0 });
for (let r = 0; r < ROUNDS; r++) {
  for (const l of r % 2 ? [...LENGTHS].reverse() : LENGTHS) {
    const { ms, bodies } = await runtimeTurns(l, TURNS);
    const raw = await rawTurns(bodies);
    const row = results.get(l)!;
    row.rt.push(ms);
    row.raw.push(raw);
    row.chars = bodies[0].length;
  }
}

console.log(
  `model turn benchmark: ${ROUNDS} rounds x ${TURNS} turns, medians (fake OpenAI server, JSON)`,
);
const added = new Map<number, number>();
for (const l of LENGTHS) {
  const row = results.get(l)!;
  const rt = median(row.rt);
  const raw = median(row.raw);
  const add = median(row.rt.map((x, i) => x - row.raw[i]));
  added.set(l, add);
  console.log(
    `  ${String(l).padStart(5)} turns (request ${(row.chars / 1024).toFixed(0).padStart(4)} KB): ` +
      `runtime ${rt.toFixed(2)} ms/turn, raw round trip ${raw.toFixed(2)} ms; ` +
      `added ${add.toFixed(2)} ms/turn`,
  );
}
const worst = Math.max(...added.values());
const growth = added.get(1000)! / added.get(10)!;
console.log(
  `  added per turn at most ${worst.toFixed(2)} ms (target < 2 ms: ${
    worst < 2 ? "met" : "NOT met"
  })`,
);
console.log(
  `  1,000-turn / 10-turn added cost: ${growth.toFixed(2)}x (target <= 1.5x: ${
    growth <= 1.5 ? "met" : "NOT met"
  })`,
);
await srv.close();
await Deno.remove(dir, { recursive: true });
console.log(worst < 2 && growth <= 1.5 ? "overall: PASS" : "overall: FAIL");
