/**
 * One runtime of `bench/scale.ts`, in a process of its own: a worker on a
 * PostgreSQL store, or the single scheduler of a SQLite store. It opens the
 * store, prints `ready`, waits for `go` on stdin, runs until the store is
 * idle, and writes what it did (quanta, when it started and ended, and when
 * each model quantum began, by pid) to the file named in its argument.
 * @module
 */
import { Runtime } from "../host/runtime.ts";
import { ScriptedModel } from "../runtime/providers/scripted.ts";
import type { ModelContext, ModelDecision } from "../runtime/providers/types.ts";

interface _Args {
  store: string;
  concurrency: number;
  out: string;
}

/** Epoch milliseconds with a fraction (one clock for every process on the machine). */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The scripted model, noting when each of its quanta starts. */
class RecordingModel extends ScriptedModel {
  /** pid, start time, pid, start time, ... */
  readonly starts: number[] = [];
  override next(ctx: ModelContext): Promise<ModelDecision> {
    this.starts.push(ctx.pid, now());
    return super.next(ctx);
  }
}

const args = JSON.parse(Deno.args[0]) as _Args;
const model = new RecordingModel();
const rt = await Runtime.open({
  store: args.store,
  concurrency: args.concurrency,
  providers: { models: { scripted: model } },
});
console.log("ready");
// `go` starts the run; `end` says nothing more will be submitted (stdin closes).
const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
for (let line = ""; !line.includes("go");) {
  const { value, done } = await reader.read();
  if (done) Deno.exit(3);
  line += value;
}
let ended = false;
(async () => {
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
  }
  ended = true;
})();
const start = now();
let quanta = 0;
// Until the store is idle after the host said it submits nothing more.
for (;;) {
  const seenEnd = ended;
  const r = rt.worker ? await rt.worker.run({ untilIdle: true }) : await rt.runUntilIdle();
  quanta += r.quanta;
  if (seenEnd) break;
  await new Promise((r) => setTimeout(r, 5));
}
const end = now();
const report = { quanta };
const stats = rt.worker?.stats ?? null;
await rt.close();
await Deno.writeTextFile(
  args.out,
  JSON.stringify({ quanta: report.quanta, start, end, starts: model.starts, stats }),
);
