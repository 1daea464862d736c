/**
 * What bubblewrap alone adds to a JIT call (calls that may touch workspace
 * files run behind it; see `HostSandbox`). Measures, in one run with
 * interleaved rounds, what running the JIT subprocess under the shell's
 * bubblewrap profile (no network, no capabilities, its own pid namespace,
 * system directories read-only, nothing else but the Deno executable, the
 * runner and the tool's artifact) adds to one call:
 *
 * 1. `jit.call` of a trivial tool end to end (the denominator: what a call costs);
 * 2. the runner started the way the launcher starts it (`prlimit`, the same
 *    `deno run` flags, read access to the tool only), one `run` frame in, the
 *    `result` frame out;
 * 3. the same under bwrap.
 *
 * bwrap's share is (3) - (2), printed against (1). The wall a call really
 * gets also holds the mount check, the seccomp filter and cgroups (see the
 * README for the whole cost).
 *
 * Usage: `deno run -A bench/jit_wall.ts [--json] [--rounds N] [--samples N]`
 * @module
 */
import { dirname, join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { intFlag, pairedRatio, r2, rounds, type Stat, stat, variant } from "./_common.ts";

const JSON_OUT = Deno.args.includes("--json");
const ROUNDS = intFlag("--rounds", 7);
const SAMPLES = intFlag("--samples", 6);

const TRIVIAL = `// deno-lint-ignore require-await
export async function run() { return 1; }
`;
const RUNNER = new URL("../runtime/sandbox/runner.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

/** The launcher's `deno run` arguments for a call without a broker (read: the tool only). */
function denoArgs(toolPath: string): string[] {
  return [
    "run",
    "--no-config",
    "--no-remote",
    "--no-npm",
    "--cached-only",
    "--no-prompt",
    "--no-lock",
    "--v8-flags=--max-old-space-size=128",
    `--allow-read=${toolPath}`,
    RUNNER,
  ];
}

/** The shell sandbox's profile, with the Deno executable, the runner and the artifact bound. */
function wallArgs(artifactDir: string): string[] {
  const args = [
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--as-pid-1",
    "--new-session",
    "--ro-bind",
    "/usr",
    "/usr",
  ];
  for (const d of ["bin", "sbin", "lib", "lib64"]) {
    try {
      const st = Deno.lstatSync(`/${d}`);
      if (st.isSymlink) args.push("--symlink", Deno.readLinkSync(`/${d}`), `/${d}`);
    } catch { /* absent */ }
  }
  args.push(
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    "--ro-bind",
    DENO,
    DENO,
    "--ro-bind",
    dirname(RUNNER),
    dirname(RUNNER),
    "--bind",
    artifactDir,
    artifactDir,
    "--remount-ro",
    "/",
  );
  return args;
}

/** One call of the runner: `run` frame in, wait for the first line (the result), kill. */
async function callRunner(cmd: string, args: string[], artifactDir: string, toolPath: string) {
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: artifactDir,
    clearEnv: true,
    env: {
      HOME: `${artifactDir}/home`,
      DENO_DIR: `${artifactDir}/deno_dir`,
      NO_COLOR: "1",
      DENO_NO_UPDATE_CHECK: "1",
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(
    new TextEncoder().encode(
      JSON.stringify({ type: "run", tool: `file://${toolPath}`, args: {} }) + "\n",
    ),
  );
  const reader = child.stdout.getReader();
  let line = "";
  const dec = new TextDecoder();
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += dec.decode(value, { stream: true });
  }
  const ms = performance.now() - t0;
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
  await reader.cancel().catch(() => {});
  await w.close().catch(() => {});
  const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  await child.status;
  if (!line.startsWith('{"type":"result","value":1}')) {
    throw new Error(`runner said ${JSON.stringify(line)} ${err.slice(0, 300)}`);
  }
  return ms;
}

function row(label: string, s: Stat): string {
  return `  ${label.padEnd(40)} ${s.median.toFixed(2).padStart(7)} ms  (min ${
    s.min.toFixed(2)
  }, max ${s.max.toFixed(2)}, n=${s.samples})`;
}

async function main(): Promise<Record<string, unknown>> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-wall-" }));
  let rt: Runtime | null = null;
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    rt = await Runtime.open({ store: join(root, "store.db") });
    const pid = (await rt.launch({
      image: { name: "bench-wall", tools: [], budgets: { max_syscalls: null } },
      workspace: ws,
      grants: [{ resource: "tool:trivial", rights: ["write"] }],
    })).pid;
    const sys = (name: string, args: Record<string, unknown>) => rt!.syscall(pid, name, args);
    const p = await sys("jit.propose", { name: "trivial", source: TRIVIAL }) as { oid: string };
    const v = await sys("jit.validate", { oid: p.oid }) as { oid: string };
    await sys("jit.register", { oid: v.oid });
    const art = await rt.kernel.providers.sandbox.prepare(TRIVIAL);
    const plain = ["--cpu=6", "--", DENO, ...denoArgs(art.toolPath)];
    const walled = [
      "--cpu=6",
      "--",
      "/usr/bin/bwrap",
      ...wallArgs(art.dir),
      "--",
      DENO,
      ...denoArgs(art.toolPath),
    ];
    const variants = {
      call: variant("jit.call trivial tool (end to end)", SAMPLES, async () => {
        const t0 = performance.now();
        const r = await sys("jit.call", { name: "trivial", args: {} });
        if (r !== 1) throw new Error(`trivial returned ${JSON.stringify(r)}`);
        return performance.now() - t0;
      }),
      plain: variant(
        "runner as the launcher starts it",
        SAMPLES,
        () => callRunner("/usr/bin/prlimit", plain, art.dir, art.toolPath),
      ),
      walled: variant(
        "same runner under bwrap",
        SAMPLES,
        () => callRunner("/usr/bin/prlimit", walled, art.dir, art.toolPath),
      ),
    };
    for (const x of Object.values(variants)) await x.sample();
    await rounds(Object.values(variants), ROUNDS);
    const s = Object.fromEntries(Object.entries(variants).map(([k, x]) => [k, stat(x)]));
    const added = r2(s.walled.median - s.plain.median);
    const share = r2(added / s.call.median);
    const result = {
      ms: s,
      wall_added_ms: added,
      wall_share_of_trivial_call: share,
      paired_walled_over_plain: pairedRatio(variants.walled, variants.plain),
    };
    if (!JSON_OUT) {
      console.log(`JIT second wall: ${ROUNDS} rounds x ${SAMPLES} samples, medians`);
      for (const [k, x] of Object.entries(variants)) console.log(row(x.name, s[k]));
      console.log(`  bwrap adds ${added} ms = ${(share * 100).toFixed(1)}% of a trivial call`);
    }
    return result;
  } finally {
    await rt?.close();
    await Deno.remove(root, { recursive: true });
  }
}

const result = await main();
if (JSON_OUT) console.log(JSON.stringify(result));
