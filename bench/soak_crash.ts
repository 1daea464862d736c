/**
 * `deno task soak:crash [--runs N] [--seed N] [--json]`: crash safety under a
 * mixed workload, proven by SIGKILL.
 *
 * Each run builds a fresh store and workspace and launches seven agents:
 * scripted writers of files, a shell user (`touch`, sandboxed), a JIT tool
 * caller, an agent whose writes ask a human, two model-driven agents (OpenAI
 * and Anthropic wire formats, against a fake model server on loopback) that
 * write files and show text to the human, and an agent that checkpoints
 * itself. A child Deno runs the runtime over the store (`_soak_child.ts`);
 * this harness SIGKILLs it at random moments (1 to 3 times a run), starts
 * another, and lets the last one run until every process has ended. Meanwhile
 * it is the human: it allows every ASK once and answers every "did this
 * happen?" from the world itself (the file on disk, what the human channel
 * showed).
 *
 * What it checks, per run:
 * - lost_audit_records: every audit record durable when the runtime died (in
 *   the audit table, or a whole line of the audit log: the runtime
 *   acknowledges an append only once its line is written) is in the audit
 *   table once the next runtime has opened the store;
 * - duplicate_effects: no token was written, touched or shown twice (each
 *   effect's token is logged by the child's providers before it is
 *   performed), no model turn got two replies, and the model server never
 *   saw more requests for a turn than the call ledger recorded;
 * - unfinished: every process ends in a terminal state (or waits for a human);
 * - audit_verified: the hash chain verifies.
 *
 * Prints `{"runs", "kills", "lost_audit_records", "duplicate_effects",
 * "unfinished", "audit_verified", ...}`; exits 1 when any check failed.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import { QueueHuman } from "../runtime/providers/scripted.ts";
import { auditLogPath } from "../runtime/store/_audit_log.ts";
import { SqliteStore } from "../runtime/store/sqlite.ts";
import type { HumanRequestRecord } from "../runtime/types.ts";
import {
  type FakeModelServer,
  type FakeRequest,
  type FakeTurn,
  startFakeModelServer,
} from "../tests/fake_models.ts";
import { TOKEN } from "./_soak_tokens.ts";

/** Options of {@link soakCrash}. */
export interface SoakOptions {
  /** Runs (default 100). */
  runs?: number;
  /** PRNG seed (default: random; printed so a run can be repeated). */
  seed?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** What the soak found. */
export interface SoakResult {
  /** Runs done. */
  runs: number;
  /** SIGKILLs sent. */
  kills: number;
  /** Audit records durable at a kill and missing after the restart. */
  lost_audit_records: number;
  /** Effects performed twice (tokens seen twice, model turns answered twice or sent unledgered). */
  duplicate_effects: number;
  /** Processes that ended neither in a terminal state nor waiting for a human. */
  unfinished: number;
  /** Every run's audit chain verified. */
  audit_verified: boolean;
  /** Processes left waiting for a human (allowed, counted). */
  waiting_for_human: number;
  /** External effects performed (tokens observed). */
  effects: number;
  /** Model requests the fake server answered. */
  model_requests: number;
  /** "Did this happen?" requests answered (effects a kill left unknown). */
  outcome_requests: number;
  /** Permission requests answered. */
  permission_requests: number;
  /** Processes that ran. */
  processes: number;
  /** The seed. */
  seed: number;
  /** Wall-clock seconds. */
  seconds: number;
  /** What went wrong, in words (empty when every check passed). */
  problems: string[];
}

const ROOT = new URL("..", import.meta.url).pathname;
const CHILD = new URL("./_soak_child.ts", import.meta.url).pathname;
const CONFIG = join(ROOT, "deno.json");
const TURNS = 5;

/** A small deterministic PRNG (mulberry32). */
function _prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const _STAMP = `import type { Libos } from "./libos.ts";

export async function run(args: { path: string; token: string }, libos: Libos): Promise<unknown> {
  return await libos.syscall("filesystem.write", { path: args.path, content: "token " + args.token + "\\n" });
}
`;

/** What the model says at `turn` of agent `agent` in run `run`. */
function _modelTurn(run: number, agent: string, turn: number): FakeTurn {
  if (turn > TURNS) return { text: `agent ${agent} finished` };
  const token = `T${run}-${agent}-${turn}`;
  if (agent === "e" && turn === 3) {
    return { tool_calls: [{ name: "output", arguments: { text: `progress: token ${token}` } }] };
  }
  return {
    tool_calls: [{
      name: "write_file",
      arguments: { path: `out/${agent}-${turn}.txt`, content: `token ${token}\n` },
    }],
  };
}

/** The turn a request asks for: one more than the replies it carries. */
function _turnOf(req: FakeRequest): number {
  const msgs = (req.body.messages ?? []) as { role: string }[];
  return msgs.filter((m) => m.role === "assistant").length + 1;
}

/** The fake model answers by the agent (its URL prefix `/r<run>-<agent>`) and the turn. */
function _respond(req: FakeRequest): FakeTurn {
  const m = /^\/r(\d+)-([a-z])$/.exec(req.prefix);
  if (!m) return { status: 404, message: `no agent at ${req.prefix}` };
  return _modelTurn(Number(m[1]), m[2], _turnOf(req));
}

interface _Run {
  dir: string;
  ws: string;
  store: string;
  observations: string;
  pids: Record<string, number>;
}

const SLEEP = { tool: "sleep", args: { ms: 40 } };

/** Build run `n`'s store and launch its agents (the host, in this process). */
async function _setup(n: number, jitCache: string, srv: FakeModelServer): Promise<_Run> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-soak-" }));
  const ws = join(dir, "ws");
  for (const d of ["out", "ask"]) await Deno.mkdir(join(ws, d), { recursive: true });
  const store = join(dir, "store.db");
  const rt = await Runtime.open({ store, jitCacheDir: jitCache });
  const pids: Record<string, number> = {};
  const sleep = { resource: "clock:sleep", rights: ["execute"] };
  const out = { resource: "filesystem:workspace:out/*", rights: ["read", "write"] };
  const tok = (a: string, i: number) => `T${n}-${a}-${i}`;
  const launch = async (agent: string, o: Record<string, unknown>) => {
    const p = await rt.launch({ workspace: ws, ...o } as Parameters<typeof rt.launch>[0]);
    pids[agent] = p.pid;
  };
  try {
    await launch("a", {
      image: { name: "writer", tools: ["write_file", "sleep"] },
      grants: [out, sleep],
      script: {
        steps: Array.from({ length: 10 }, (_, i) => [
          {
            tool: "write_file",
            args: { path: `out/a-${i}.txt`, content: `token ${tok("a", i)}\n` },
          },
          SLEEP,
        ]).flat(),
      },
    });
    await launch("b", {
      image: {
        name: "toucher",
        tools: ["shell", "sleep"],
        policy: { shell: "allowlist_auto_else_ask", shell_allowlist: ["touch"] },
      },
      grants: [out, sleep, { resource: "shell:touch", rights: ["execute"] }],
      script: {
        steps: Array.from({ length: 5 }, (_, i) => [
          { tool: "shell", args: { argv: ["touch", `out/${tok("b", i)}`] } },
          SLEEP,
        ]).flat(),
      },
    });
    await launch("c", {
      image: { name: "jitter", tools: ["sleep"] },
      grants: [out, sleep, { resource: "tool:stamp", rights: ["write"] }],
      script: {
        steps: Array.from({ length: 5 }, (_, i) => [
          { tool: "stamp", args: { path: `out/c-${i}.txt`, token: tok("c", i) } },
          SLEEP,
        ]).flat(),
      },
    });
    const cand = await rt.syscall(pids.c, "jit.propose", { name: "stamp", source: _STAMP }) as {
      oid: string;
    };
    const art = await rt.syscall(pids.c, "jit.validate", { oid: cand.oid }) as { oid: string };
    await rt.syscall(pids.c, "jit.register", { oid: art.oid });
    await launch("d", {
      image: { name: "asker", tools: ["write_file", "sleep"] },
      grants: [sleep, { resource: "filesystem:workspace:ask/*", rights: ["write"], effect: "ask" }],
      script: {
        steps: Array.from({ length: 3 }, (_, i) => [
          {
            tool: "write_file",
            args: { path: `ask/d-${i}.txt`, content: `token ${tok("d", i)}\n` },
          },
          SLEEP,
        ]).flat(),
      },
    });
    for (const [agent, provider] of [["e", "openai"], ["f", "anthropic"]] as const) {
      const base = `${srv.origin}/r${n}-${agent}`;
      await launch(agent, {
        image: { name: `model-${agent}`, tools: ["write_file", "output"] },
        grants: [out, { resource: "human:owner", rights: ["write"] }],
        goal: "Write the files you are asked to, then stop.",
        model: {
          provider,
          name: `soak-${provider}`,
          base_url: provider === "openai" ? `${base}/v1` : base,
          stream: agent === "f",
        },
      });
    }
    await launch("g", {
      image: { name: "checkpointer", tools: ["write_file", "checkpoint_create", "sleep"] },
      grants: [out, sleep, { resource: "checkpoint:process:self", rights: ["write", "read"] }],
      script: {
        steps: Array.from({ length: 4 }, (_, i) => [
          {
            tool: "write_file",
            args: { path: `out/g-${i}.txt`, content: `token ${tok("g", i)}\n` },
          },
          { tool: "checkpoint_create", args: { label: `g${i}` } },
          SLEEP,
        ]).flat(),
      },
    });
  } finally {
    await rt.close();
  }
  return { dir, ws, store, observations: join(dir, "observations.log"), pids };
}

/** A read-only look at the store from this process (the child may be writing). */
function _read<T>(store: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(store, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    return fn(db);
  } finally {
    db.close();
  }
}

/** Everything durable in the audit trail at a kill: table rows and the log's whole lines. */
interface _Acknowledged {
  rows: Map<number, string>;
  lines: string[];
}

function _acknowledged(store: string): _Acknowledged {
  const { rows, offset } = _read(store, (db) => ({
    rows: new Map(
      (db.prepare("SELECT seq, hash FROM audit").all() as { seq: number; hash: string }[])
        .map((r) => [r.seq, r.hash]),
    ),
    offset: Number(
      (db.prepare("SELECT value FROM meta WHERE key = 'audit_log_offset'").get() as
        | { value: string }
        | undefined)?.value ?? 0,
    ),
  }));
  let bytes = new Uint8Array();
  try {
    bytes = Deno.readFileSync(auditLogPath(store));
  } catch { /* no log yet */ }
  const end = bytes.lastIndexOf(0x0a) + 1;
  const text = new TextDecoder().decode(bytes.subarray(Math.min(offset, end), end));
  return { rows, lines: text ? text.slice(0, -1).split("\n") : [] };
}

/** How many acknowledged records the audit table lacks now. */
function _lost(store: string, ack: _Acknowledged): number {
  const now = _read(
    store,
    (db) =>
      db.prepare("SELECT seq, hash, body FROM audit ORDER BY seq").all() as {
        seq: number;
        hash: string;
        body: string;
      }[],
  );
  let lost = 0;
  const bySeq = new Map(now.map((r) => [r.seq, r.hash]));
  for (const [seq, hash] of ack.rows) if (bySeq.get(seq) !== hash) lost++;
  // A log line is indexed as its draft after `{"seq":N,"record_id":"aN",`.
  const top = Math.max(0, ...ack.rows.keys());
  const later = new Map<string, number>();
  for (const r of now) {
    if (r.seq <= top) continue;
    const draft = "{" + r.body.replace(/^\{"seq":\d+,"record_id":"a\d+",?/, "");
    later.set(draft, (later.get(draft) ?? 0) + 1);
  }
  for (const line of ack.lines) {
    const n = later.get(line) ?? 0;
    if (n > 0) later.set(line, n - 1);
    else lost++;
  }
  return lost;
}

/** What the world says about an effect a kill left unknown: did it happen? */
function _truth(r: HumanRequestRecord, ws: string, observations: string): "done" | "failed" {
  const a = r.args as { action: { args: Record<string, unknown> } | null };
  const tokens = JSON.stringify(a.action?.args ?? {}).match(TOKEN) ?? [];
  if (r.effect === "human.output") {
    return tokens.some((t) => observations.includes(`H ${t}\n`)) ? "done" : "failed";
  }
  const path = r.effect === "shell.run"
    ? String((a.action?.args.argv as string[] | undefined)?.[1] ?? "")
    : r.resource.replace(/^filesystem:workspace:/, "");
  let content: string;
  try {
    content = Deno.readTextFileSync(join(ws, path));
  } catch {
    return "failed";
  }
  return tokens.every((t) => r.effect === "shell.run" || content.includes(t)) ? "done" : "failed";
}

/** Answer every pending request as the soak's human; returns [permission, outcome] answered. */
async function _decide(run: _Run, jitCache: string): Promise<[number, number]> {
  const pending = _read(
    run.store,
    (db) =>
      (db.prepare("SELECT body FROM human_requests WHERE status = 'pending'").all() as {
        body: string;
      }[]).map((r) => JSON.parse(r.body) as HumanRequestRecord),
  );
  if (pending.length === 0) return [0, 0];
  let observed = "";
  try {
    observed = Deno.readTextFileSync(run.observations);
  } catch { /* nothing observed yet */ }
  // A client beside the child's scheduler, committing its own audit records.
  const rt = await Runtime.open({
    store: SqliteStore.open(run.store, { auditLog: false }),
    role: "client",
    jitCacheDir: jitCache,
    providers: { human: new QueueHuman() },
  });
  const counts: [number, number] = [0, 0];
  try {
    for (const r of pending) {
      const outcome = r.kind === "outcome";
      const answer = outcome ? _truth(r, run.ws, observed) : "allow_once";
      try {
        await rt.decide(r.request_id, answer, "human:soak");
        counts[outcome ? 1 : 0]++;
      } catch (e) {
        // Decided meanwhile (a process ended and closed it): nothing to do.
        if ((e as { code?: string }).code !== "ESTATE") throw e;
      }
    }
  } finally {
    await rt.close();
  }
  return counts;
}

/** A running child runtime. */
interface _Child {
  proc: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
  stderr: string[];
  ready: Promise<void>;
}

function _spawn(run: _Run, jitCache: string): _Child {
  const cfg = { store: run.store, jitCache, observations: run.observations };
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", "--config", CONFIG, CHILD, JSON.stringify(cfg)],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr: string[] = [];
  const { promise: ready, resolve, reject } = Promise.withResolvers<void>();
  (async () => {
    for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
      if (chunk.includes("ready")) resolve();
    }
    reject(new Error("the child runtime ended before it was ready"));
  })().catch(() => {});
  (async () => {
    for await (const chunk of proc.stderr.pipeThrough(new TextDecoderStream())) {
      stderr.push(chunk);
      if (stderr.length > 200) stderr.shift();
    }
  })().catch(() => {});
  ready.catch(() => {});
  return { proc, exited: proc.status, stderr, ready };
}

/** The killed runtime's lease is stale only after 15 s: the harness saw it die. */
function _clearLease(store: string): void {
  const db = new DatabaseSync(store);
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare("UPDATE meta SET value = ? WHERE key = 'scheduler_lease'").run(
      JSON.stringify({ released: true, heartbeat: 0 }),
    );
  } finally {
    db.close();
  }
}

/**
 * The harness's own writers take turns: a decision's transaction awaits with
 * SQLite's write lock held, and a synchronous write on another connection of
 * this thread would wait in the busy handler with that thread blocked.
 */
class _Turns {
  #last: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const next = this.#last.then(fn);
    this.#last = next.catch(() => {});
    return next;
  }
}

function _sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Counts of one run. */
interface _RunResult {
  kills: number;
  lost: number;
  duplicates: number;
  unfinished: number;
  waiting: number;
  verified: boolean;
  effects: number;
  permission: number;
  outcome: number;
  processes: number;
  problems: string[];
}

/** One run: setup, kills and restarts, the last runtime to the end, the checks. */
async function _run(
  n: number,
  rand: () => number,
  jitCache: string,
  srv: FakeModelServer,
): Promise<_RunResult> {
  const run = await _setup(n, jitCache, srv);
  const res: _RunResult = {
    kills: 0,
    lost: 0,
    duplicates: 0,
    unfinished: 0,
    waiting: 0,
    verified: false,
    effects: 0,
    permission: 0,
    outcome: 0,
    processes: Object.keys(run.pids).length,
    problems: [],
  };
  const planned = 1 + Math.floor(rand() * 3);
  const turns = new _Turns();
  let deciding = true;
  const decider = (async () => {
    while (deciding) {
      const [p, o] = await turns.run(() => _decide(run, jitCache));
      res.permission += p;
      res.outcome += o;
      await _sleep(30);
    }
  })();
  try {
    let ack: _Acknowledged | null = null;
    for (let k = 0;; k++) {
      const child = _spawn(run, jitCache);
      await Promise.race([
        child.ready,
        _sleep(60_000).then(() => {
          throw new Error(`run ${n}: the runtime was not ready in 60 s: ${child.stderr.join("")}`);
        }),
      ]);
      if (ack) {
        const lost = _lost(run.store, ack);
        if (lost) res.problems.push(`run ${n}, kill ${k}: ${lost} acknowledged audit records lost`);
        res.lost += lost;
      }
      if (k >= planned) {
        const status = await Promise.race([child.exited, _sleep(120_000).then(() => null)]);
        if (status === null) {
          child.proc.kill("SIGKILL");
          await child.exited;
          res.problems.push(`run ${n}: the last runtime did not finish in 120 s`);
        } else if (status.code !== 0) {
          res.problems.push(
            `run ${n}: the last runtime exited ${status.code}: ${child.stderr.join("")}`,
          );
        }
        break;
      }
      // The first kill lands early (the workload takes a few seconds); later ones anywhere.
      const delay = k === 0 ? 20 + rand() * 600 : rand() * 1500;
      const early = await Promise.race([child.exited, _sleep(delay).then(() => null)]);
      if (early !== null) {
        if (early.code !== 0) res.problems.push(`run ${n}: runtime exited ${early.code}`);
        break;
      }
      try {
        child.proc.kill("SIGKILL");
      } catch {
        // It finished just now: the run is over, without this kill.
        const status = await child.exited;
        if (status.code !== 0) res.problems.push(`run ${n}: runtime exited ${status.code}`);
        break;
      }
      const killed = await child.exited;
      if (killed.signal !== "SIGKILL") {
        if (killed.code !== 0) res.problems.push(`run ${n}: runtime exited ${killed.code}`);
        break;
      }
      res.kills++;
      ack = _acknowledged(run.store);
      await turns.run(() => _clearLease(run.store));
    }
  } finally {
    deciding = false;
    await decider;
  }
  await _check(n, run, srv, res);
  await Deno.remove(run.dir, { recursive: true }).catch(() => {});
  return res;
}

/** After the last runtime: duplicates, unfinished processes, the audit chain. */
async function _check(n: number, run: _Run, srv: FakeModelServer, res: _RunResult): Promise<void> {
  let observed = "";
  try {
    observed = await Deno.readTextFile(run.observations);
  } catch { /* nothing observed */ }
  const seen = new Map<string, number>();
  for (const line of observed.split("\n").filter(Boolean)) {
    seen.set(line, (seen.get(line) ?? 0) + 1);
  }
  res.effects = seen.size;
  for (const [line, count] of seen) {
    if (count > 1) {
      res.duplicates += count - 1;
      res.problems.push(`run ${n}: effect '${line}' performed ${count} times`);
    }
  }
  const rt = await Runtime.open({ store: SqliteStore.open(run.store), role: "client" });
  try {
    for (const p of await rt.kernel.store.listProcesses()) {
      if (isTerminal(p.status)) continue;
      if (p.status === "waiting_human") res.waiting++;
      else {
        res.unfinished++;
        res.problems.push(`run ${n}: process ${p.pid} (${p.image}) ended ${p.status}`);
      }
    }
    // Model calls: one reply per turn at most, and no request the ledger did not record first.
    for (const agent of ["e", "f"]) {
      const pid = run.pids[agent];
      const ledger = await rt.kernel.store.listModelCalls({ pid });
      const sent = srv.requests.filter((r) => r.prefix === `/r${n}-${agent}`);
      for (let turn = 1; turn <= TURNS + 1; turn++) {
        const calls = ledger.filter((c) => c.turn === turn && c.purpose === "turn");
        const done = calls.filter((c) => c.status === "done").length;
        const requests = sent.filter((r) => _turnOf(r) === turn).length;
        if (done > 1 || requests > calls.length) {
          const extra = Math.max(done - 1, requests - calls.length);
          res.duplicates += extra;
          res.problems.push(
            `run ${n}: agent ${agent} turn ${turn}: ${requests} requests, ${calls.length} ledgered, ${done} answered`,
          );
        }
      }
    }
    const v = await rt.kernel.store.verifyAudit();
    res.verified = v.ok;
    if (!v.ok) res.problems.push(`run ${n}: audit chain: ${JSON.stringify(v.firstBad)}`);
  } finally {
    await rt.close();
  }
}

/** Run the soak. */
export async function soakCrash(options: SoakOptions = {}): Promise<SoakResult> {
  const runs = options.runs ?? 100;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rand = _prng(seed);
  const t0 = performance.now();
  Deno.env.set("OPENAI_API_KEY", Deno.env.get("OPENAI_API_KEY") ?? "sk-soak-not-a-key");
  Deno.env.set("ANTHROPIC_API_KEY", Deno.env.get("ANTHROPIC_API_KEY") ?? "sk-soak-not-a-key");
  const srv = startFakeModelServer({ respond: _respond });
  // One JIT cache for every run: the tool type-checks once.
  const jitCache = await Deno.makeTempDir({ prefix: "libos-soak-jit-" });
  const out: SoakResult = {
    runs: 0,
    kills: 0,
    lost_audit_records: 0,
    duplicate_effects: 0,
    unfinished: 0,
    audit_verified: true,
    waiting_for_human: 0,
    effects: 0,
    model_requests: 0,
    outcome_requests: 0,
    permission_requests: 0,
    processes: 0,
    seed,
    seconds: 0,
    problems: [],
  };
  try {
    for (let n = 1; n <= runs; n++) {
      const r = await _run(n, rand, jitCache, srv);
      out.runs++;
      out.kills += r.kills;
      out.lost_audit_records += r.lost;
      out.duplicate_effects += r.duplicates;
      out.unfinished += r.unfinished;
      out.audit_verified &&= r.verified;
      out.waiting_for_human += r.waiting;
      out.effects += r.effects;
      out.outcome_requests += r.outcome;
      out.permission_requests += r.permission;
      out.processes += r.processes;
      out.problems.push(...r.problems);
      options.log?.(
        `run ${n}/${runs}: ${r.kills} kills, ${r.effects} effects, ${r.outcome} outcomes asked, ` +
          `${r.problems.length ? r.problems.join("; ") : "ok"}`,
      );
    }
  } finally {
    out.model_requests = srv.requests.length;
    await srv.close();
    await Deno.remove(jitCache, { recursive: true }).catch(() => {});
  }
  out.seconds = Number(((performance.now() - t0) / 1000).toFixed(1));
  return out;
}

/** Did every check pass? */
export function soakPassed(r: SoakResult): boolean {
  return r.lost_audit_records === 0 && r.duplicate_effects === 0 && r.unfinished === 0 &&
    r.audit_verified && r.kills >= r.runs && r.problems.length === 0;
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i < 0 ? undefined : Deno.args[i + 1];
  };
  const json = Deno.args.includes("--json");
  const runs = Number(arg("--runs") ?? 100);
  const seedArg = arg("--seed");
  if (!Number.isInteger(runs) || runs < 1) {
    console.error("soak:crash: --runs must be a positive integer");
    Deno.exit(2);
  }
  if (seedArg !== undefined && !/^\d{1,10}$/.test(seedArg)) {
    console.error("soak:crash: --seed must be a non-negative integer");
    Deno.exit(2);
  }
  const r = await soakCrash({
    runs,
    seed: seedArg === undefined ? undefined : Number(seedArg),
    log: json ? undefined : (l) => console.error(l),
  });
  if (json) console.log(JSON.stringify(r));
  else {
    const { problems, ...figures } = r;
    console.log(JSON.stringify(figures, null, 1));
    for (const p of problems) console.log(`problem: ${p}`);
    console.log(soakPassed(r) ? "soak:crash: every check passed" : "soak:crash: FAILED");
  }
  Deno.exit(soakPassed(r) ? 0 : 1);
}
