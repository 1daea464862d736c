/**
 * The model API a provider gets (ModelContext): the immutable input stored
 * once, the process's append-only model log read by position, step results
 * read by number, and a small cursor. A provider that keeps a conversation
 * rebuilds it from these after a restart; a cursor that grows is refused.
 * @module
 */
import assert from "node:assert/strict";
import { Runtime } from "../host/runtime.ts";
import { parseImage } from "../runtime/images.ts";
import type { ModelContext, ModelDecision, ModelProvider } from "../runtime/providers/types.ts";
import { BUILTIN_TOOL_NAMES } from "../tools/builtin.ts";
import { makeEnv } from "./_helpers.ts";

/**
 * A conversation model: each turn it appends what it said (and what it saw of
 * the last tool result) to its log, and asks for one more object, until its
 * input's number of turns; then it exits with the conversation as its result.
 * It keeps nothing in memory between steps: all comes from the context.
 */
class ConversationModel implements ModelProvider {
  readonly pure = true;
  calls = 0;
  async next(ctx: ModelContext): Promise<ModelDecision> {
    this.calls++;
    const input = await ctx.input() as { turns: number };
    const turns = await ctx.logLength();
    assert.equal(ctx.cursor.turns ?? 0, turns);
    const conversation = await ctx.log(0);
    const steps = await ctx.stepCount();
    const last = steps > 0 ? await ctx.result(steps - 1) : null;
    if (turns >= input.turns) {
      return {
        step: { type: "exit", code: 0, result: JSON.stringify(conversation) },
        cursor: { turns },
      };
    }
    return {
      step: {
        type: "tool",
        tool: "put_object",
        args: { kind: "observation", name: `t${turns}`, payload: { turns } },
      },
      cursor: { turns: turns + 1 },
      log: [{ said: `t${turns}`, saw: last === null ? null : [last.step, last.ok] }],
    };
  }
}

async function launchModel(
  rt: Runtime,
  ws: string,
  kind: string,
  input: unknown,
): Promise<number> {
  const image = parseImage({ name: kind, tools: ["put_object"] }, BUILTIN_TOOL_NAMES);
  const proc = await rt.kernel.atomically((k) =>
    k.createProcess({
      ppid: null,
      image,
      workspace: ws,
      cwd: ".",
      goal: "talk",
      taint: "public",
      model: { kind, state: {} },
      modelInput: input,
      origin: "root",
    })
  );
  return proc.pid;
}

Deno.test("model: a model keeping its turns in the model log reads back the same conversation after a restart", async () => {
  const model = new ConversationModel();
  await using env = await makeEnv({ providers: { models: { convo: model } } });
  const pid = await launchModel(env.rt, env.ws, "convo", { turns: 3 });
  // Two turns and one tool step, then the runtime goes away.
  assert.deepEqual(await env.rt.runUntilIdle(3), { quanta: 3, idle: false });
  await env.rt.close();

  const fresh = new ConversationModel();
  const rt = await Runtime.open({ store: env.storePath, providers: { models: { convo: fresh } } });
  try {
    await rt.runUntilIdle();
    const rec = await rt.process(pid);
    assert.equal(rec.status, "exited");
    const conversation = [
      { said: "t0", saw: null },
      { said: "t1", saw: [0, true] },
      { said: "t2", saw: [1, true] },
    ];
    assert.deepEqual(JSON.parse(rec.exit_reason ?? "null"), conversation);
    assert.deepEqual(await rt.kernel.store.readModelLog(pid, 0), conversation);
    assert.deepEqual(rec.model, { kind: "convo", state: { turns: 3 } });
    // The first runtime asked twice, the second once per remaining turn and for the exit.
    assert.equal(model.calls, 2);
    assert.equal(fresh.calls, 2);
    assert.deepEqual((await rt.steps(pid)).map((s) => [s.step, s.ok]), [[0, true], [1, true], [
      2,
      true,
    ]]);
  } finally {
    await rt.close();
  }
});

Deno.test("model: a cursor over 64 KiB fails the process and stores no decision", async () => {
  const bloated: ModelProvider = {
    next: () =>
      Promise.resolve({
        step: { type: "tool", tool: "put_object", args: { kind: "observation", payload: 1 } },
        cursor: { history: "x".repeat(70 * 1024) },
      }),
  };
  await using env = await makeEnv({ providers: { models: { bloated } } });
  const pid = await launchModel(env.rt, env.ws, "bloated", null);
  await env.rt.runUntilIdle();
  const rec = await env.rt.process(pid);
  assert.equal(rec.status, "failed");
  assert.match(rec.exit_reason ?? "", /EINVAL: model: cursor of \d+ characters is over 65536/);
  assert.equal(rec.pending, null);
  assert.deepEqual(rec.model, { kind: "bloated", state: {} });
  assert.deepEqual(await env.rt.steps(pid), []);
});
