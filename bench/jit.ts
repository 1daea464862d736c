/**
 * JIT tool benchmark: what a call into a just-in-time tool costs next to the
 * raw host mechanism it is built on, measured side by side in one run through
 * the real runtime (Runtime over a SQLite store file, a launched process with
 * `tool:<name>` write, jit.propose -> jit.validate -> jit.register, then
 * `jit.call` syscalls).
 *
 * 1. Start-up: a trivial tool (`run() { return 1; }`) called end to end vs a
 *    bare `deno run --no-config` of an empty file (Deno.execPath(), wait for
 *    exit). Target: ratio <= 1.5.
 * 2. Syscall round trips from inside a tool: N sequential
 *    `libos.syscall("clock.now")` timed inside the tool vs a raw NDJSON echo
 *    over the same kind of pipe (child Deno process, stdin/stdout piped, same
 *    frame sizes each way, driven sequentially by the parent). Target: ratio
 *    < 2. Plus syscalls/s from one tool, sequential and pipelined
 *    (Promise.all over batches). Target: pipelined >= 10,000/s. Every
 *    syscall is authorized and writes its own committed audit record; the
 *    counts and the hash chain are verified at the end. The same syscalls
 *    issued in-process (`rt.syscall`, no sandbox) are shown as the kernel's
 *    own ceiling: what is left between the two is the JIT path's cost.
 * 3. Direct file access through the permission broker: N
 *    `Deno.readTextFileSync` in a tool (each read -> one broker check -> one
 *    audited `sandbox.access` syscall) vs the same loop in a child started
 *    with plain `--allow-read=<path>`. Reported, no target.
 *
 * Variants are interleaved round by round (rotating order) so machine noise
 * hits all of them; each number is the median over samples, and the targets
 * use the ratio of medians (the median of per-round ratios is printed beside
 * it as a check against load drift).
 *
 * Usage: `deno task bench:jit [--json] [--rounds N] [--starts N]
 *   [--syscalls N] [--pipelined N] [--batch N] [--reads N]`
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { intFlag, pairedRatio, r2, rounds, type Stat, stat, variant } from "./_common.ts";

const TARGET_START_RATIO = 1.5;
const TARGET_RT_RATIO = 2;
const TARGET_PIPELINED_PER_SEC = 10_000;
const FILE_BYTES = 4096;
const FILE_NAME = "data.txt";

// ---- options

const JSON_OUT = Deno.args.includes("--json");
/** Interleaved rounds. */
const ROUNDS = intFlag("--rounds", 9);
/** Start-up samples of each start-up variant per round. */
const STARTS = intFlag("--starts", 4);
/** Sequential syscalls per tool call (and echo round trips per sample). */
const SEQ = intFlag("--syscalls", 1000);
/** Pipelined syscalls per tool call. */
const PIPE = intFlag("--pipelined", 4096);
/** Concurrent syscalls per batch when pipelined. */
const BATCH = intFlag("--batch", 64);
/** Direct reads per tool call (and per baseline child). */
const READS = intFlag("--reads", 1000);

// ---- tools under test

const TRIVIAL_SRC = `// deno-lint-ignore require-await
export async function run() { return 1; }
`;

const CLOCK_SRC = `import type { Libos } from "./libos.ts";

export async function run(
  args: { n: number; batch: number },
  libos: Libos,
): Promise<{ ms: number; n: number }> {
  const t0 = performance.now();
  if (args.batch <= 1) {
    for (let i = 0; i < args.n; i++) await libos.syscall("clock.now", {});
  } else {
    for (let done = 0; done < args.n; done += args.batch) {
      const k = Math.min(args.batch, args.n - done);
      await Promise.all(Array.from({ length: k }, () => libos.syscall("clock.now", {})));
    }
  }
  return { ms: performance.now() - t0, n: args.n };
}
`;

const READ_SRC =
  `export function run(args: { path: string; n: number }): { ms: number; bytes: number } {
  const t0 = performance.now();
  let bytes = 0;
  for (let i = 0; i < args.n; i++) bytes += Deno.readTextFileSync(args.path).length;
  return { ms: performance.now() - t0, bytes };
}
`;

const TOOLS: [string, string][] = [
  ["trivial", TRIVIAL_SRC],
  ["clock_loop", CLOCK_SRC],
  ["read_loop", READ_SRC],
];

// ---- baseline scripts (plain Deno, no runtime)

const EMPTY_JS = "";

// Mirrors the runner's I/O: NDJSON on stdin, synchronous NDJSON writes to stdout.
// For each result-sized line from the parent it answers with a syscall-sized
// line carrying the same id (the sizes the tool's pipe carries each way).
const ECHO_JS = `const enc = new TextEncoder();
const dec = new TextDecoder();
function send(frame) {
  const b = enc.encode(JSON.stringify(frame) + "\\n");
  let off = 0;
  while (off < b.length) off += Deno.stdout.writeSync(b.subarray(off));
}
send({ type: "ready" });
let buf = "";
for await (const chunk of Deno.stdin.readable) {
  buf += dec.decode(chunk, { stream: true });
  let nl;
  while ((nl = buf.indexOf("\\n")) >= 0) {
    const frame = JSON.parse(buf.slice(0, nl));
    buf = buf.slice(nl + 1);
    send({ type: "syscall", id: frame.id, name: "clock.now", args: {} });
  }
}
`;

const READ_JS = `const [path, n] = [Deno.args[0], Number(Deno.args[1])];
const t0 = performance.now();
let bytes = 0;
for (let i = 0; i < n; i++) bytes += Deno.readTextFileSync(path).length;
console.log(JSON.stringify({ ms: performance.now() - t0, bytes }));
`;

// ---- fixtures

/** A pipe driver: a child Deno process speaking NDJSON, read the way the launcher reads. */
interface Pipe {
  /** Send one frame and wait for the reply with the same id. */
  call(id: number): Promise<unknown>;
  close(): Promise<void>;
}

async function openEcho(script: string, resultFrame: (id: number) => unknown): Promise<Pipe> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  const waiting = new Map<number, (v: unknown) => void>();
  let ready!: () => void;
  const isReady = new Promise<void>((res) => ready = res);
  const reading = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const frame = JSON.parse(buf.slice(0, nl)) as { type: string; id?: number };
        buf = buf.slice(nl + 1);
        if (frame.type === "ready") ready();
        else {
          const w = waiting.get(frame.id!);
          waiting.delete(frame.id!);
          w?.(frame);
        }
      }
    }
  })();
  await isReady;
  return {
    call(id: number): Promise<unknown> {
      const p = new Promise<unknown>((res) => waiting.set(id, res));
      writer.write(encoder.encode(JSON.stringify(resultFrame(id)) + "\n"));
      return p;
    },
    async close() {
      await writer.close().catch(() => {});
      await reading.catch(() => {});
      await child.status;
    },
  };
}

/** Count audit rows of `actor` by action/decision through a separate read-only connection. */
function auditCounts(storePath: string, actor: string): Record<string, number> {
  const db = new DatabaseSync(storePath, { readOnly: true });
  try {
    const rows = db.prepare(
      "SELECT action, decision, COUNT(*) AS n FROM audit WHERE actor = ? GROUP BY action, decision",
    ).all(actor) as { action: string; decision: string; n: number }[];
    const out: Record<string, number> = { total: 0 };
    for (const r of rows) {
      out[`${r.action}:${r.decision}`] = Number(r.n);
      out.total += Number(r.n);
    }
    return out;
  } finally {
    db.close();
  }
}

// ---- the benchmark

async function main(): Promise<Record<string, unknown>> {
  const started = performance.now();
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-jit-" }));
  let rt: Runtime | null = null;
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const filePath = join(ws, FILE_NAME);
    const content = "0123456789abcdef".repeat(FILE_BYTES / 16).slice(0, FILE_BYTES - 1) + "\n";
    await Deno.writeTextFile(filePath, content);
    const scripts = join(root, "scripts");
    await Deno.mkdir(scripts);
    const emptyJs = join(scripts, "empty.js");
    const echoJs = join(scripts, "echo.js");
    const readJs = join(scripts, "read.js");
    await Deno.writeTextFile(emptyJs, EMPTY_JS);
    await Deno.writeTextFile(echoJs, ECHO_JS);
    await Deno.writeTextFile(readJs, READ_JS);

    // The store lives outside the workspace; JIT artifacts go to `<store>.jit`.
    const storePath = join(root, "store.db");
    rt = await Runtime.open({ store: storePath });
    const proc = await rt.launch({
      image: { name: "bench-jit", tools: [], budgets: { max_syscalls: null } },
      workspace: ws,
      grants: [
        ...TOOLS.map(([name]) => ({ resource: `tool:${name}`, rights: ["write" as const] })),
        { resource: "clock:now", rights: ["read"] },
        { resource: `filesystem:workspace:${FILE_NAME}`, rights: ["read"] },
      ],
    });
    const pid = proc.pid;
    const actor = `pid:${pid}`;
    const sys = (name: string, args: Record<string, unknown>) => rt!.syscall(pid, name, args);

    // propose -> validate -> register, timed (validation runs deno info/doc/check/lint).
    const setupStarted = performance.now();
    const validateMs: Record<string, number> = {};
    for (const [name, source] of TOOLS) {
      const p = await sys("jit.propose", { name, source }) as { oid: string };
      const t0 = performance.now();
      const v = await sys("jit.validate", { oid: p.oid }) as { oid: string };
      validateMs[name] = Math.round(performance.now() - t0);
      await sys("jit.register", { oid: v.oid });
    }
    const setupMs = performance.now() - setupStarted;

    await rt.kernel.store.auditIndexed();
    const auditBefore = auditCounts(storePath, actor);
    let jitCalls = 0;
    let clockSyscalls = 0;
    let directReads = 0;
    const jitCall = async (name: string, args: Record<string, unknown>, maxSyscalls: number) => {
      jitCalls++;
      return await sys("jit.call", { name, args, max_syscalls: maxSyscalls, timeout_ms: 60_000 });
    };

    // 1. start-up
    const trivial = variant("jit.call trivial tool", STARTS, async () => {
      const t0 = performance.now();
      const v = await jitCall("trivial", {}, 1);
      const ms = performance.now() - t0;
      if (v !== 1) throw new Error(`trivial tool returned ${JSON.stringify(v)}`);
      return ms;
    });
    const bare = variant("deno run --no-config empty.js", STARTS, async () => {
      const t0 = performance.now();
      const st = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-config", emptyJs],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn().status;
      const ms = performance.now() - t0;
      if (!st.success) throw new Error(`bare deno run exited ${st.code}`);
      return ms;
    });

    // 2. syscall round trips (us per round trip) and throughput (per second)
    const clockTool = async (n: number, batch: number) => {
      const v = await jitCall("clock_loop", { n, batch }, n) as { ms: number; n: number };
      if (v?.n !== n) throw new Error(`clock_loop returned ${JSON.stringify(v)}`);
      clockSyscalls += n;
      return v.ms;
    };
    const seqTool = variant(
      "tool: sequential clock.now",
      1,
      async () => (await clockTool(SEQ, 1)) * 1000 / SEQ,
    );
    const pipeTool = variant(
      "tool: pipelined clock.now",
      1,
      async () => PIPE / ((await clockTool(PIPE, BATCH)) / 1000),
    );
    // The frames a clock.now round trip carries, for the echo to copy.
    const sampleNow = await sys("clock.now", {});
    clockSyscalls++;
    const resultFrame = (id: number) => ({
      type: "syscall_result",
      id,
      ok: true,
      payload: sampleNow,
    });
    const frameBytes = {
      to_tool: JSON.stringify(resultFrame(SEQ)).length + 1,
      from_tool: JSON.stringify({ type: "syscall", id: SEQ, name: "clock.now", args: {} }).length +
        1,
    };
    const echoRun = async (n: number, batch: number) => {
      const pipe = await openEcho(echoJs, resultFrame);
      try {
        let id = 1;
        const t0 = performance.now();
        if (batch <= 1) {
          for (let i = 0; i < n; i++) await pipe.call(id++);
        } else {
          for (let done = 0; done < n; done += batch) {
            const k = Math.min(batch, n - done);
            await Promise.all(Array.from({ length: k }, () => pipe.call(id++)));
          }
        }
        return performance.now() - t0;
      } finally {
        await pipe.close();
      }
    };
    const seqEcho = variant(
      "raw NDJSON echo: sequential",
      1,
      async () => (await echoRun(SEQ, 1)) * 1000 / SEQ,
    );
    const pipeEcho = variant(
      "raw NDJSON echo: pipelined",
      1,
      async () => PIPE / ((await echoRun(PIPE, BATCH)) / 1000),
    );
    // Reference: the same syscalls issued in-process (rt.syscall, no sandbox): the kernel's ceiling.
    const hostRun = async (n: number, batch: number) => {
      const t0 = performance.now();
      if (batch <= 1) {
        for (let i = 0; i < n; i++) await sys("clock.now", {});
      } else {
        for (let done = 0; done < n; done += batch) {
          const k = Math.min(batch, n - done);
          await Promise.all(Array.from({ length: k }, () => sys("clock.now", {})));
        }
      }
      clockSyscalls += n;
      return performance.now() - t0;
    };
    const seqHost = variant(
      "in-process rt.syscall: sequential",
      1,
      async () => (await hostRun(SEQ, 1)) * 1000 / SEQ,
    );
    const pipeHost = variant(
      "in-process rt.syscall: pipelined",
      1,
      async () => PIPE / ((await hostRun(PIPE, BATCH)) / 1000),
    );

    // 3. direct reads: broker + audited sandbox.access vs plain --allow-read
    const readTool = variant("tool: readTextFileSync (broker)", 1, async () => {
      const v = await jitCall("read_loop", { path: filePath, n: READS }, 1) as {
        ms: number;
        bytes: number;
      };
      if (v?.bytes !== READS * FILE_BYTES) {
        throw new Error(`read_loop returned ${JSON.stringify(v)}`);
      }
      directReads += READS;
      return v.ms * 1000 / READS;
    });
    const readBase = variant("child: readTextFileSync (--allow-read)", 1, async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-config", `--allow-read=${filePath}`, readJs, filePath, String(READS)],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).output();
      const v = JSON.parse(new TextDecoder().decode(out.stdout)) as { ms: number; bytes: number };
      if (v.bytes !== READS * FILE_BYTES) {
        throw new Error(`baseline read returned ${JSON.stringify(v)}`);
      }
      return v.ms * 1000 / READS;
    });

    const all = [
      trivial,
      bare,
      seqTool,
      seqEcho,
      seqHost,
      pipeTool,
      pipeEcho,
      pipeHost,
      readTool,
      readBase,
    ];
    // Warm-up (caches, JIT, first broker connection); not recorded.
    for (const v of all) await v.sample();
    const measureStarted = performance.now();
    await rounds(all, ROUNDS);
    const measureMs = performance.now() - measureStarted;

    // Proof: one committed audit record per syscall, and the chain holds.
    const verifyStarted = performance.now();
    await rt.kernel.store.auditIndexed();
    const auditAfter = auditCounts(storePath, actor);
    const grew = (key: string) => (auditAfter[key] ?? 0) - (auditBefore[key] ?? 0);
    // clockSyscalls includes the sample clock.now issued by the host after auditBefore.
    const syscallsMade = clockSyscalls + directReads + jitCalls;
    const chain = await rt.kernel.store.verifyAudit();
    const audit = {
      jit_calls: jitCalls,
      clock_syscalls: clockSyscalls,
      direct_reads: directReads,
      syscalls_made: syscallsMade,
      records_added: grew("total"),
      clock_now_allow_added: grew("clock.now:allow"),
      sandbox_access_allow_added: grew("sandbox.access:allow"),
      jit_call_allow_added: grew("jit.call:allow"),
      not_allowed_added: grew("total") - grew("clock.now:allow") - grew("sandbox.access:allow") -
        grew("jit.call:allow"),
      chain_ok: chain.ok,
      chain_records: chain.count,
      ok: false,
      ms: 0,
    };
    audit.ok = chain.ok && audit.records_added >= syscallsMade &&
      audit.clock_now_allow_added >= clockSyscalls &&
      audit.sandbox_access_allow_added >= directReads &&
      audit.jit_call_allow_added === jitCalls;
    audit.ms = Math.round(performance.now() - verifyStarted);

    const s = {
      trivial: stat(trivial),
      bare: stat(bare),
      seqTool: stat(seqTool),
      seqEcho: stat(seqEcho),
      seqHost: stat(seqHost),
      pipeHost: stat(pipeHost, 0),
      pipeTool: stat(pipeTool, 0),
      pipeEcho: stat(pipeEcho, 0),
      readTool: stat(readTool),
      readBase: stat(readBase),
    };
    const startRatio = r2(s.trivial.median / s.bare.median);
    const rtRatio = r2(s.seqTool.median / s.seqEcho.median);
    const readRatio = r2(s.readTool.median / s.readBase.median);
    const seqPerSec = Math.round(1e6 / s.seqTool.median);
    return {
      machine: {
        cores: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        v8: Deno.version.v8,
        os: Deno.build.os,
      },
      config: {
        rounds: ROUNDS,
        starts_per_round: STARTS,
        sequential_syscalls: SEQ,
        pipelined_syscalls: PIPE,
        batch: BATCH,
        reads: READS,
        file_bytes: FILE_BYTES,
        frame_bytes: frameBytes,
      },
      setup: { validate_ms: validateMs, total_ms: Math.round(setupMs) },
      startup: {
        jit_call_ms: s.trivial,
        bare_deno_run_ms: s.bare,
        ratio: startRatio,
        paired_ratio: pairedRatio(trivial, bare),
        overhead_ms: r2(s.trivial.median - s.bare.median),
        target: TARGET_START_RATIO,
        pass: startRatio <= TARGET_START_RATIO,
      },
      syscalls: {
        sequential_us: s.seqTool,
        echo_sequential_us: s.seqEcho,
        ratio: rtRatio,
        paired_ratio: pairedRatio(seqTool, seqEcho),
        overhead_us: r2(s.seqTool.median - s.seqEcho.median),
        target_ratio: TARGET_RT_RATIO,
        ratio_pass: rtRatio < TARGET_RT_RATIO,
        sequential_per_sec: seqPerSec,
        pipelined_per_sec: s.pipeTool,
        echo_pipelined_per_sec: s.pipeEcho,
        in_process_sequential_us: s.seqHost,
        in_process_pipelined_per_sec: s.pipeHost,
        target_per_sec: TARGET_PIPELINED_PER_SEC,
        per_sec_pass: s.pipeTool.median >= TARGET_PIPELINED_PER_SEC,
      },
      reads: {
        broker_us: s.readTool,
        allow_read_us: s.readBase,
        ratio: readRatio,
        paired_ratio: pairedRatio(readTool, readBase),
        overhead_us: r2(s.readTool.median - s.readBase.median),
      },
      audit,
      elapsed_ms: {
        measure: Math.round(measureMs),
        total: Math.round(performance.now() - started),
      },
    };
  } finally {
    try {
      await rt?.close();
    } catch { /* already closed */ }
    await Deno.remove(root, { recursive: true });
  }
}

// ---- output

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function row(label: string, s: Stat, unit: string, digits = 2): string {
  const f = (n: number) => (digits ? n.toFixed(digits) : fmtInt(n));
  return `  ${label.padEnd(40)}${f(s.median).padStart(10)} ${unit.padEnd(5)}  [${f(s.min)} .. ${
    f(s.max)
  }]  n=${s.samples}`;
}

// deno-lint-ignore no-explicit-any
function printText(r: any): void {
  const c = r.config;
  const out: string[] = [];
  out.push(
    `Agent libOS JIT benchmark  (deno ${r.machine.deno}, ${r.machine.cores} cores, ${c.rounds} interleaved rounds, medians)`,
  );
  out.push(
    `setup: propose+validate+register of 3 tools ${fmtInt(r.setup.total_ms)} ms (validate: ${
      Object.entries(r.setup.validate_ms).map(([k, v]) => `${k} ${v} ms`).join(", ")
    })`,
  );
  out.push("");
  const su = r.startup;
  out.push(`1. start-up, end to end${" ".repeat(25)}median        [min .. max]`);
  out.push(row("jit.call trivial tool", su.jit_call_ms, "ms"));
  out.push(row("deno run --no-config empty.js", su.bare_deno_run_ms, "ms"));
  out.push(
    `  ratio ${su.ratio}x (overhead ${su.overhead_ms} ms per call; median of per-round ratios ${su.paired_ratio}x)`,
  );
  out.push("");
  const sc = r.syscalls;
  out.push(
    `2. syscall round trips (${
      fmtInt(c.sequential_syscalls)
    } sequential; frames ${c.frame_bytes.from_tool} B out, ${c.frame_bytes.to_tool} B back)`,
  );
  out.push(row("tool: clock.now (authz+audit), per RT", sc.sequential_us, "us"));
  out.push(row("raw NDJSON echo over stdio, per RT", sc.echo_sequential_us, "us"));
  out.push(row("reference: in-process rt.syscall", sc.in_process_sequential_us, "us"));
  out.push(
    `  ratio ${sc.ratio}x (overhead ${sc.overhead_us} us per syscall; median of per-round ratios ${sc.paired_ratio}x)`,
  );
  out.push(
    `   throughput from one tool (${
      fmtInt(c.pipelined_syscalls)
    } syscalls, Promise.all batches of ${c.batch})`,
  );
  out.push(`  ${"tool: sequential".padEnd(40)}${fmtInt(sc.sequential_per_sec).padStart(10)} /s`);
  out.push(row("tool: pipelined", sc.pipelined_per_sec, "/s", 0));
  out.push(row("raw NDJSON echo: pipelined", sc.echo_pipelined_per_sec, "/s", 0));
  out.push(row("reference: in-process rt.syscall", sc.in_process_pipelined_per_sec, "/s", 0));
  out.push("");
  const rd = r.reads;
  out.push(
    `3. direct reads of a ${c.file_bytes} B file (${fmtInt(c.reads)} readTextFileSync per sample)`,
  );
  out.push(row("tool: broker check + sandbox.access", rd.broker_us, "us"));
  out.push(row("child: plain --allow-read", rd.allow_read_us, "us"));
  out.push(
    `  ratio ${rd.ratio}x (overhead ${rd.overhead_us} us per audited check; median of per-round ratios ${rd.paired_ratio}x)`,
  );
  out.push("");
  const a = r.audit;
  out.push(`audit verification (${a.ms} ms)`);
  out.push(
    `  chain ${a.chain_ok ? "ok" : "BROKEN"} (${fmtInt(a.chain_records)} records); +${
      fmtInt(a.records_added)
    } records for pid >= ${fmtInt(a.syscalls_made)} syscalls made: ${a.ok ? "ok" : "MISMATCH"}`,
  );
  out.push(
    `  clock.now allow +${fmtInt(a.clock_now_allow_added)} (made ${
      fmtInt(a.clock_syscalls)
    }), sandbox.access allow +${fmtInt(a.sandbox_access_allow_added)} (reads ${
      fmtInt(a.direct_reads)
    }), jit.call allow +${fmtInt(a.jit_call_allow_added)} (made ${fmtInt(a.jit_calls)}), other +${
      fmtInt(a.not_allowed_added)
    }`,
  );
  out.push("");
  const pf = (b: boolean) => (b ? "PASS" : "FAIL");
  out.push(`start-up ratio ${su.ratio}x -- target <= ${su.target}x: ${pf(su.pass)}`);
  out.push(
    `syscall round trip ratio ${sc.ratio}x -- target < ${sc.target_ratio}x: ${pf(sc.ratio_pass)}`,
  );
  out.push(
    `pipelined syscalls ${fmtInt(sc.pipelined_per_sec.median)}/s -- target >= ${
      fmtInt(sc.target_per_sec)
    }/s: ${pf(sc.per_sec_pass)}`,
  );
  out.push(`audit: one committed record per syscall, chain verified: ${pf(a.ok)}`);
  out.push(
    `(direct-read broker ratio ${rd.ratio}x: reported, no target; total ${
      fmtInt(r.elapsed_ms.total)
    } ms)`,
  );
  console.log(out.join("\n"));
}

if (import.meta.main) {
  const result = await main();
  if (JSON_OUT) console.log(JSON.stringify(result));
  else printText(result);
  // deno-lint-ignore no-explicit-any
  if (!(result as any).audit.ok) {
    console.error("audit verification failed: not every syscall was recorded");
    Deno.exit(1);
  }
}
