/**
 * The runtime the crash soak kills (`bench/soak_crash.ts`): it opens the
 * store (recovering what the last one left), prints `ready`, and runs the
 * scheduler until every process has ended; the harness SIGKILLs it at random
 * moments and starts another.
 *
 * Every external effect is observed where it leaves the runtime: the file
 * system, the shell and the human channel are the host's providers, wrapped so
 * that each token an effect carries is appended to an observation log before
 * the effect is performed (a line written before the process dies survives
 * it: the kernel has it). A token seen twice is an effect performed twice.
 *
 *   deno run -A bench/_soak_child.ts '{"store": ..., "jitCache": ..., "observations": ...}'
 * @module
 */
import { Runtime } from "../host/runtime.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import { HostFileSystem, HostShell } from "../runtime/providers/host.ts";
import { QueueHuman } from "../runtime/providers/scripted.ts";
import type { ShellResult, ShellRunOptions } from "../runtime/providers/types.ts";
import { TOKEN } from "./_soak_tokens.ts";

const cfg = JSON.parse(Deno.args[0]) as { store: string; jitCache: string; observations: string };
const log = Deno.openSync(cfg.observations, { append: true, create: true });
const enc = new TextEncoder();

/** Append `kind token` for every token in `text` (before the effect happens). */
function observe(kind: string, text: string): void {
  const lines = [...text.matchAll(TOKEN)].map((m) => `${kind} ${m[0]}\n`).join("");
  if (lines) log.writeSync(enc.encode(lines));
}

class ObservedFs extends HostFileSystem {
  override async writeText(path: string, content: string): Promise<void> {
    observe("W", content);
    await super.writeText(path, content);
  }
}

class ObservedShell extends HostShell {
  override async run(argv: string[], options: ShellRunOptions): Promise<ShellResult> {
    observe("S", argv.join(" "));
    return await super.run(argv, options);
  }
}

/** Every ASK waits in the durable queue (the harness decides); output is observed. */
class ObservedHuman extends QueueHuman {
  override output(_pid: number, text: string): Promise<void> {
    observe("H", text);
    return Promise.resolve();
  }
}

const rt = await Runtime.open({
  store: cfg.store,
  jitCacheDir: cfg.jitCache,
  providers: { fs: new ObservedFs(), shell: new ObservedShell(), human: new ObservedHuman() },
});
console.log("ready");
for (;;) {
  await rt.runUntilIdle();
  const procs = await rt.kernel.store.listProcesses();
  if (procs.every((p) => isTerminal(p.status))) break;
  // Waiting for the harness's decisions (another connection): look again shortly.
  await new Promise((r) => setTimeout(r, 20));
}
await rt.close();
console.log("finished");
