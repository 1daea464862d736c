/**
 * Shell sandbox benchmark: what running a command under the OS wall costs,
 * side by side in one run, rounds interleaved (rotating order) so machine
 * noise hits every variant alike:
 *
 * 1. a bare spawn of `true` (Deno.Command, both streams piped, wait for exit);
 * 2. the sandbox alone: `prlimit ... bwrap <seccomp> <mounts> /bin/sh <mount check> true`,
 *    rendered from the same view `shell.run` derives, no runtime around it;
 * 3. `shell.run ["true"]` with the unsafe policy `shell_sandbox: "none"`
 *    (authorization, audit, effect ledger, no sandbox);
 * 4. `shell.run ["true"]` sandboxed (3 plus deriving the view, the mounts, the
 *    in-sandbox mount check and the write audit's snapshots).
 *
 * The workspace is a small project (`src/` read, `out/` read+write with a few
 * files the write audit walks, a DENY'd `.env` masked). Target: the sandboxed
 * `shell.run` adds at most 10 ms per command over the bare spawn (medians).
 *
 * Usage: `deno task bench:shell [--json] [--rounds N] [--samples N]`
 * @module
 */
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { checkedCommand, planSandbox } from "../runtime/sandbox/bwrap.ts";
import { deriveGrants } from "../runtime/sandbox/flags.ts";
import { noSetIdFilter } from "../runtime/sandbox/seccomp.ts";
import { intFlag, pairedRatio, r2, rounds, type Stat, stat, variant } from "./_common.ts";

const TARGET_ADDED_MS = 10;
const JSON_OUT = Deno.args.includes("--json");
/** Interleaved rounds. */
const ROUNDS = intFlag("--rounds", 9);
/** Samples of each variant per round. */
const SAMPLES = intFlag("--samples", 20);

const PRLIMIT = "/usr/bin/prlimit";
const BWRAP = "/usr/bin/bwrap";

async function spawn(cmd: string, args: string[], input?: Uint8Array): Promise<number> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    clearEnv: true,
    stdin: input ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input) {
    const w = child.stdin.getWriter();
    await w.write(input);
    await w.close();
  }
  const out = await child.output();
  if (!out.success) {
    throw new Error(`${cmd} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
  return performance.now() - t0;
}

/** A small project: sources to read, an output directory to write, a secret to mask. */
async function workspace(root: string): Promise<string> {
  const ws = join(root, "ws");
  await Deno.mkdir(join(ws, "src"), { recursive: true });
  await Deno.mkdir(join(ws, "out"));
  for (let i = 0; i < 20; i++) await Deno.writeTextFile(join(ws, `src/m${i}.ts`), `// ${i}\n`);
  for (let i = 0; i < 10; i++) await Deno.writeTextFile(join(ws, `out/r${i}.txt`), `${i}\n`);
  await Deno.writeTextFile(join(ws, ".env"), "TOKEN=x\n");
  return ws;
}

const GRANTS = [
  { resource: "filesystem:workspace:*", rights: ["read" as const] },
  { resource: "filesystem:workspace:out/*", rights: ["read" as const, "write" as const] },
  { resource: "filesystem:workspace:.env", rights: ["read" as const], effect: "deny" as const },
  { resource: "shell:true", rights: ["execute" as const] },
];

function row(label: string, s: Stat): string {
  return `  ${label.padEnd(44)} ${s.median.toFixed(2).padStart(7)} ms  (min ${
    s.min.toFixed(2)
  }, max ${s.max.toFixed(2)}, n=${s.samples})`;
}

async function main(): Promise<Record<string, unknown>> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-shell-" }));
  let rt: Runtime | null = null;
  try {
    const ws = await workspace(root);
    rt = await Runtime.open({ store: join(root, "store.db") });
    const launch = async (policy: Record<string, unknown>) =>
      (await rt!.launch({
        image: { name: "bench-shell", tools: [], budgets: { max_syscalls: null }, policy },
        workspace: ws,
        grants: GRANTS,
      })).pid;
    const boxed = await launch({ shell: "always_allow" });
    const bare = await launch({ shell: "always_allow", shell_sandbox: "none" });
    const call = (pid: number) => async () => {
      const t0 = performance.now();
      const r = await rt!.syscall(pid, "shell.run", { argv: ["true"] }) as { code: number };
      if (r.code !== 0) throw new Error(`shell.run true exited ${r.code}`);
      return performance.now() - t0;
    };
    // The sandbox alone, rendered from the view shell.run derives for the same process.
    const now = Date.now();
    const grants = deriveGrants(
      await rt.kernel.store.capabilitiesOf(boxed),
      ws,
      now,
      now + 30_000,
    );
    const filter = noSetIdFilter()!;
    const plan = planSandbox({ workspace: ws, grants, hide: [], readOnly: [], callRead: [] }, ws);
    const sandboxArgs = [
      "--cpu=31",
      `--as=${4 * 1024 ** 3}`,
      `--fsize=${1024 ** 3}`,
      "--",
      BWRAP,
      "--seccomp",
      "0",
      ...plan.args,
      "--",
      ...checkedCommand(plan, ["true"]),
    ];
    const variants = {
      spawn: variant("bare spawn of true", SAMPLES, () => spawn("/usr/bin/true", [])),
      bwrap: variant(
        "prlimit + bwrap + mount check, no runtime",
        SAMPLES,
        () => spawn(PRLIMIT, sandboxArgs, filter),
      ),
      none: variant('shell.run true, shell_sandbox "none"', SAMPLES, call(bare)),
      boxed: variant("shell.run true, sandboxed", SAMPLES, call(boxed)),
    };
    // Warm-up: the first spawn of each kind pays for page cache and the runtime's caches.
    for (const v of Object.values(variants)) await v.sample();
    await rounds(Object.values(variants), ROUNDS);
    const s = Object.fromEntries(Object.entries(variants).map(([k, v]) => [k, stat(v)]));
    const added = r2(s.boxed.median - s.spawn.median);
    const result = {
      rounds: ROUNDS,
      samples_per_round: SAMPLES,
      mounts: plan.mounts.length,
      ms: s,
      ratio_sandboxed_to_bare_spawn: r2(s.boxed.median / s.spawn.median),
      ratio_paired: pairedRatio(variants.boxed, variants.spawn),
      added_ms_per_command: added,
      sandbox_ms_inside_shell_run: r2(s.boxed.median - s.none.median),
      bwrap_alone_over_spawn_ms: r2(s.bwrap.median - s.spawn.median),
      target_added_ms: TARGET_ADDED_MS,
      target_met: added <= TARGET_ADDED_MS,
    };
    if (!JSON_OUT) {
      console.log(`shell sandbox benchmark: ${ROUNDS} rounds x ${SAMPLES} samples, medians`);
      for (const [k, v] of Object.entries(variants)) console.log(row(v.name, s[k]));
      console.log(
        `  sandboxed shell.run / bare spawn: ${result.ratio_sandboxed_to_bare_spawn}x ` +
          `(paired ${result.ratio_paired}x); adds ${added} ms per command ` +
          `(target <= ${TARGET_ADDED_MS} ms: ${result.target_met ? "met" : "NOT met"})`,
      );
      console.log(
        `  of which the sandbox inside shell.run: ${result.sandbox_ms_inside_shell_run} ms; ` +
          `bwrap alone over a spawn: ${result.bwrap_alone_over_spawn_ms} ms ` +
          `(${plan.mounts.length} workspace mounts)`,
      );
    }
    return result;
  } finally {
    await rt?.close();
    await Deno.remove(root, { recursive: true });
  }
}

const result = await main();
if (JSON_OUT) console.log(JSON.stringify(result));
