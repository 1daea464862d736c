/**
 * `libos`: the command line. Subcommands: run, submit, worker, resume, human,
 * audit, ps, caps, events, effects, tool, serve, bench.
 *
 * Exit codes: 0 ok, 1 the agent failed or an audit did not verify, 2 bad usage
 * or bad input (the message names the field).
 * @module
 */
import { parseArgs } from "node:util";
import { basename, dirname, join, resolve } from "node:path";
import { assertStoreOutside, Runtime } from "../host/runtime.ts";
import { parseGrantFlag } from "../runtime/capabilities.ts";
import { invalid, LibosError } from "../runtime/errors.ts";
import { parseBaseUrl, parseImage, parseModelConfig, parseModelFlag } from "../runtime/images.ts";
import {
  ConsoleHuman,
  parseScript,
  QueueHuman,
  ScriptedHuman,
} from "../runtime/providers/scripted.ts";
import type { HumanAnswer, HumanProvider, OutcomeAnswer } from "../runtime/providers/types.ts";
import { isPostgresUrl, openStore } from "../runtime/store/open.ts";
import type { Store } from "../runtime/store/store.ts";
import { scrubUrls } from "../runtime/store/_pg_url.ts";
import { serve } from "../server/serve.ts";
import { BUILTIN_TOOL_NAMES } from "../tools/builtin.ts";
import type { ModelConfig, ProcessRecord } from "../runtime/types.ts";
import { objectMetadata } from "../runtime/labels.ts";
import { type BenchResult, parseRunners, runBench, RUNNERS } from "../safety/bench.ts";
import { renderReport } from "../safety/report.ts";
import { SCENARIO_DIR } from "../safety/scenario.ts";

/**
 * Agent-written text (paths, summaries, reasons, labels) as one field of a
 * printed row: control characters (escapes that move the cursor or hide
 * text, tabs and newlines that forge columns and rows), C1 controls and
 * bidirectional overrides are shown escaped, never sent to the terminal.
 */
function _clean(value: unknown): string {
  return String(value).replace(
    // deno-lint-ignore no-control-regex -- matching control characters is the point
    /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** One printed row: fields cleaned (see {@link _clean}), joined by tabs. */
function _row(...fields: unknown[]): string {
  return fields.map(_clean).join("\t");
}

const USAGE = `usage:
  libos run IMAGE.json --workspace DIR (--script SCRIPT.json | --goal TEXT [--model openai:MODEL|anthropic:MODEL] [--base-url URL]) [--store FILE|URL] [--grant RESOURCE=RIGHT,RIGHT]... [--human deny|queue|script:FILE] [--json]
  libos submit IMAGE.json --workspace DIR (--script SCRIPT.json | --goal TEXT --model openai:MODEL|anthropic:MODEL [--base-url URL]) [--store FILE|URL] [--grant RESOURCE=RIGHT,RIGHT]... [--json]
  libos worker [--store URL] [--concurrency N] [--until-idle] [--lease-ms N] [--json]
  libos resume PID [--store FILE|URL] [--human queue|deny|script:FILE] [--json]
  libos human list [--store FILE|URL] [--all] [--json]
  libos human approve ID --once|--always [--store FILE|URL]
  libos human deny ID [--always] [--store FILE|URL]
  libos human done ID [--store FILE|URL]
  libos human failed ID [--store FILE|URL]
  libos human release PID SHA256 [--store FILE|URL]
  libos calls [--store FILE|URL] [--pid N] [--json]
  libos audit --store FILE|URL [--verify] [--pid N] [--json]
  libos ps --store FILE|URL [--json]
  libos caps --store FILE|URL --pid N [--json]
  libos events --store FILE|URL [--json]
  libos effects --store FILE|URL [--json]
  libos objects --store FILE|URL [--pid N | --namespace NS] [--json]
  libos checkpoint create PID [--label TEXT] --store FILE|URL [--json]
  libos checkpoint list PID --store FILE|URL [--json]
  libos checkpoint inspect CKPT --store FILE|URL [--json]
  libos checkpoint diff CKPT [CKPT2] --store FILE|URL [--json]
  libos checkpoint restore CKPT --store FILE|URL [--json]
  libos checkpoint fork CKPT --store FILE|URL [--json]
  libos checkpoint commit CKPT IMAGE --store FILE|URL [--json]
  libos tool run TOOL.ts --workspace DIR [--grant RESOURCE=RIGHT,RIGHT]... [--args JSON] [--timeout-ms N] [--store FILE|URL] [--json]
  libos serve [--store FILE|URL] [--port N] [--hostname 127.0.0.1|::1|localhost] [--token-file FILE] [--no-scheduler]
  libos bench safety [--tasks DIR] [--runner NAME]... [--out DIR] [--json]`;

/** What each command does, for `libos --help` and `libos COMMAND --help`. */
const _ABOUT: Record<string, string> = {
  run: "launch an image as a new root process and run it until it ends or waits for a human",
  submit: "create a runnable root process without running it and print its pid (workers run it)",
  worker:
    "run processes from a PostgreSQL store with leases, beside other workers (until stopped or idle)",
  resume: "run a stored process again (after a human decision or a restart)",
  human:
    "list pending human requests, approve or deny one, say whether an unknown effect happened (done, failed), or release held-back content to a model",
  calls: "print the LLM call ledger (one line per model call)",
  audit: "print the audit trail, or verify its hash chain (--verify)",
  ps: "print the process tree",
  caps: "print a process's capabilities",
  events: "print the event log",
  effects: "print the effect ledger",
  objects: "list objects (metadata; a payload preview only up to normal)",
  checkpoint:
    "checkpoint a process subtree, list, inspect and diff checkpoints, restore one in place, fork or commit one",
  tool: "validate and run one JIT tool in a fresh process holding exactly the given grants",
  serve: "serve the HTTP API and the web console on loopback",
  bench:
    "run the runtime-safety benchmark: every scenario under every runner (full, baselines, ablations)",
};

function _help(cmd?: string): string {
  if (cmd === undefined) {
    const about = Object.entries(_ABOUT).map(([c, a]) => `  ${c.padEnd(10)} ${a}`).join("\n");
    return `libos: the Agent libOS command line\n\n${USAGE}\n\ncommands:\n${about}\n\n` +
      `the store defaults to $LIBOS_STORE, else ${DEFAULT_STORE}; --store takes a file or a ` +
      `postgres:// URL; libos COMMAND --help for one command; libos --version`;
  }
  const lines = USAGE.split("\n").filter((l) =>
    l.startsWith(`  libos ${cmd} `) || l === `  libos ${cmd}`
  );
  return `libos ${cmd}: ${_ABOUT[cmd]}\n\nusage:\n${lines.join("\n")}`;
}

async function _version(): Promise<string> {
  const meta = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  return `libos ${meta.version} (deno ${Deno.version.deno}, v8 ${Deno.version.v8}, typescript ${Deno.version.typescript})`;
}

/** Processes the CLI lets run at once (a slow tool step does not stall the others). */
export const CLI_CONCURRENCY = 4;

/** Default store location, relative to the current directory. */
export const DEFAULT_STORE = ".libos/libos.db";

class _Usage extends Error {}

async function _readJson(path: string, field: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    throw invalid(field, `cannot read '${path}'`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalid(field, `'${path}' is not valid JSON (${(e as Error).message})`);
  }
}

function _humanAnswers(raw: unknown): HumanAnswer[] {
  const map: Record<string, HumanAnswer> = {
    once: "allow_once",
    always: "always_allow",
    deny: "deny",
    always_deny: "always_deny",
  };
  const o = raw as { answers?: unknown };
  if (!o || typeof o !== "object" || !Array.isArray(o.answers)) {
    throw invalid("--human", 'script must be {"answers": [...]}');
  }
  return o.answers.map((a, i) => {
    if (typeof a !== "string" || !map[a]) {
      throw invalid(`--human.answers[${i}]`, "must be once, always, deny or always_deny");
    }
    return map[a];
  });
}

/** What `run` and `submit` read from their command line: an image and how it is driven. */
interface _LaunchArgs {
  image: ReturnType<typeof parseImage>;
  model: ModelConfig | null;
  script: ReturnType<typeof parseScript> | null;
  grants: ReturnType<typeof parseGrantFlag>[];
  goal: string | undefined;
  workspace: string;
}

const _LAUNCH_OPTIONS = {
  workspace: { type: "string" },
  script: { type: "string" },
  store: { type: "string" },
  grant: { type: "string", multiple: true },
  goal: { type: "string" },
  json: { type: "boolean" },
  model: { type: "string" },
  "base-url": { type: "string" },
} as const;

// Validate everything before the store is touched: bad input leaves no state.
async function _launchArgs(
  cmd: string,
  values: {
    workspace?: string;
    script?: string;
    grant?: string[];
    goal?: string;
    model?: string;
    "base-url"?: string;
  },
  positionals: string[],
): Promise<_LaunchArgs> {
  if (positionals.length !== 1) throw new _Usage(`${cmd}: give exactly one IMAGE.json`);
  if (!values.workspace) throw new _Usage(`${cmd}: --workspace DIR is required`);
  const image = parseImage(await _readJson(positionals[0], "image"), BUILTIN_TOOL_NAMES);
  const model = _modelChoice(image, values.model, values["base-url"]);
  if (values.script && model) {
    throw new _Usage(`${cmd}: give --script or a model (--model, or the image's), not both`);
  }
  if (!values.script && !model) {
    throw new _Usage(
      `${cmd}: give --script SCRIPT.json, or --goal TEXT with --model PROVIDER:MODEL`,
    );
  }
  if (model && !values.goal) throw new _Usage(`${cmd}: a model-driven run needs --goal TEXT`);
  const script = values.script ? parseScript(await _readJson(values.script, "script")) : null;
  const grants = (values.grant ?? []).map(parseGrantFlag);
  return { image, model, script, grants, goal: values.goal, workspace: values.workspace };
}

async function _launch(rt: Runtime, a: _LaunchArgs): Promise<ProcessRecord> {
  return await rt.launch({
    image: a.image,
    workspace: a.workspace,
    grants: a.grants,
    ...(a.script ? { script: { steps: a.script } } : { model: a.model }),
    goal: a.goal,
  });
}

async function _run(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ..._LAUNCH_OPTIONS, human: { type: "string" } },
  });
  const launch = await _launchArgs("run", values, positionals);
  const human = await _humanMode(values.human ?? "deny");
  const storePath = await _newStore(values.store, launch.workspace);
  const json = values.json ?? false;
  const rt = await Runtime.open({
    store: storePath,
    providers: { human },
    concurrency: CLI_CONCURRENCY,
    // The model's text as it streams in goes to stderr; stdout stays the report.
    onModelText: json ? undefined : (pid, t) => _showText(pid, t),
  });
  try {
    const proc = await _launch(rt, launch);
    await rt.runUntilIdle();
    return await _report(rt, proc.pid, values.json ?? false);
  } finally {
    await rt.close();
  }
}

/**
 * `submit`: create a runnable root process and leave it to the store's
 * workers (or the next `resume`/`serve` on a file store). Prints its pid.
 */
async function _submit(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: _LAUNCH_OPTIONS,
  });
  const launch = await _launchArgs("submit", values, positionals);
  const storePath = await _newStore(values.store, launch.workspace);
  // A client: it neither schedules nor recovers, so it never disturbs running workers.
  const rt = await Runtime.open({ store: storePath, role: "client" });
  try {
    const proc = await _launch(rt, launch);
    if (values.json) console.log(JSON.stringify({ pid: proc.pid, status: proc.status }));
    else console.log(String(proc.pid));
    return 0;
  } finally {
    await rt.close();
  }
}

/**
 * `worker`: run processes from a PostgreSQL store beside other workers. Each
 * process is claimed with a lease, given one quantum and released (least
 * recently run first, fleet-wide); ASKs wait in the durable queue for the
 * console or `libos human`. Stops on SIGINT/SIGTERM (after the quanta in
 * flight) or, with `--until-idle`, when nothing is runnable or running.
 */
async function _worker(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      store: { type: "string" },
      concurrency: { type: "string" },
      "until-idle": { type: "boolean" },
      "lease-ms": { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (positionals.length) throw new _Usage("worker: takes no positional arguments");
  const concurrency = _intFlag(values.concurrency, "--concurrency", 1, 256) ?? CLI_CONCURRENCY;
  const leaseMs = _intFlag(values["lease-ms"], "--lease-ms", 100, 3_600_000);
  const spec = _storeSpec(values.store);
  if (spec === undefined || !isPostgresUrl(spec)) {
    throw invalid(
      "--store",
      "workers need a postgres:// URL (a SQLite store has one scheduler: use libos resume or serve)",
    );
  }
  const rt = await Runtime.open({
    store: spec,
    providers: { human: new QueueHuman() },
    concurrency,
    worker: leaseMs === undefined ? {} : { leaseMs },
  });
  const stop = new AbortController();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const onSignal = () => stop.abort();
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const worker = rt.worker!;
  try {
    if (!values.json) console.error(`libos worker ${worker.id} on ${rt.kernel.store.name}`);
    const report = await worker.run({ untilIdle: values["until-idle"], signal: stop.signal });
    const out = { worker: worker.id, idle: report.idle, ...worker.stats };
    if (values.json) console.log(JSON.stringify(out));
    else {
      console.log(
        `worker ${worker.id}: ${out.quanta} quanta, ${out.takenOver} taken over, ${out.lost} lost leases`,
      );
    }
    return 0;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    await rt.close();
  }
}

function _intFlag(v: string | undefined, field: string, min: number, max: number) {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw invalid(field, `must be an integer from ${min} to ${max}`);
  }
  return Number(v);
}

/**
 * The model of a run: `--model` (with `--base-url`) overrides the image's
 * `model`; `--base-url` alone moves the image's model. Null: a scripted run.
 */
function _modelChoice(
  image: ReturnType<typeof parseImage>,
  flag: string | undefined,
  baseUrl: string | undefined,
): ModelConfig | null {
  if (flag === undefined) {
    if (!image.model) {
      if (baseUrl !== undefined) throw new _Usage("run: --base-url needs a model (--model)");
      return null;
    }
    return baseUrl === undefined
      ? image.model
      : { ...image.model, base_url: parseBaseUrl(baseUrl, "--base-url") };
  }
  const { provider, name } = parseModelFlag(flag);
  const base = image.model?.provider === provider ? image.model : {};
  return parseModelConfig({
    ...base,
    provider,
    name,
    base_url: baseUrl !== undefined ? parseBaseUrl(baseUrl, "--base-url") : null,
  }, "--model");
}

let _lastTextPid = 0;
/** Streamed model text, live on stderr, prefixed by its pid when it switches. */
function _showText(pid: number, text: string): void {
  const head = pid !== _lastTextPid ? `\n[pid ${pid} model] ` : "";
  _lastTextPid = pid;
  Deno.stderr.writeSync(new TextEncoder().encode(head + text));
}

/** `--human deny` (default), `queue` (wait in the durable queue) or `script:FILE`. */
async function _humanMode(mode: string): Promise<HumanProvider> {
  if (mode === "deny") return new ConsoleHuman();
  if (mode === "queue") return new QueueHuman();
  if (mode.startsWith("script:")) {
    return new ScriptedHuman(_humanAnswers(await _readJson(mode.slice(7), "--human")));
  }
  throw invalid("--human", "must be deny, queue or script:FILE");
}

/** Print a process's outcome (the `run`/`resume` shape); exit 0 exited, 3 waiting for a human, 1 otherwise. */
async function _report(rt: Runtime, pid: number, json: boolean): Promise<number> {
  const done = await rt.process(pid);
  const steps = (await rt.steps(pid)).map(({ step: _s, ...rest }) => rest);
  // This process's requests and its descendants' (a waiting child keeps the tree waiting).
  const tree = new Set(
    (await rt.kernel.store.listProcesses())
      .filter((p) => p.pid === pid || p.lineage.includes(pid)).map((p) => p.pid),
  );
  const pending = (await rt.humanRequests("pending"))
    .filter((r) => tree.has(r.pid)).map((r) => r.request_id);
  const out: Record<string, unknown> = {
    pid: done.pid,
    status: done.status,
    exit_code: done.exit_code,
    exit_reason: done.exit_reason,
    steps,
  };
  if (done.status === "waiting_human" || pending.length) out.pending_requests = pending;
  if (json) console.log(JSON.stringify(out));
  else {
    console.log(`pid ${done.pid} ${done.status} (exit ${done.exit_code ?? "-"})`);
    steps.forEach((s, i) => {
      const detail = s.ok ? _short(JSON.stringify(s.value)) : `${s.error.code} ${s.error.message}`;
      console.log(`  ${i} ${s.tool} ${s.ok ? "ok" : "FAILED"} ${detail}`);
    });
    for (const id of pending) console.log(`  waiting for human: ${id}`);
  }
  return done.status === "exited" ? 0 : done.status === "waiting_human" ? 3 : 1;
}

async function _resume(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { store: { type: "string" }, human: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1 || !/^[1-9][0-9]*$/.test(positionals[0])) {
    throw new _Usage("resume: give exactly one PID");
  }
  const human = await _humanMode(values.human ?? "queue");
  const file = await _existingStore(values.store);
  const rt = await Runtime.open({
    store: file,
    providers: { human },
    concurrency: CLI_CONCURRENCY,
    onModelText: values.json ? undefined : (pid, t) => _showText(pid, t),
  });
  try {
    const pid = Number(positionals[0]);
    await rt.process(pid);
    await rt.runUntilIdle();
    return await _report(rt, pid, values.json ?? false);
  } finally {
    await rt.close();
  }
}

async function _human(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      store: { type: "string" },
      json: { type: "boolean" },
      once: { type: "boolean" },
      always: { type: "boolean" },
      all: { type: "boolean" },
    },
  });
  const file = await _existingStore(values.store);
  if (sub === "list") {
    const store = await _openStoreOnly(file);
    try {
      const reqs = await store.listHumanRequests(values.all ? {} : { status: "pending" });
      if (values.json) console.log(JSON.stringify(reqs));
      else {
        for (const r of reqs) {
          console.log(
            _row(
              r.request_id,
              r.status,
              r.kind ?? "permission",
              `pid ${r.pid}`,
              r.effect,
              r.resource,
              r.summary,
            ),
          );
        }
      }
      return 0;
    } finally {
      await store.close();
    }
  }
  if (sub === "release") {
    if (positionals.length !== 2 || !/^[1-9][0-9]*$/.test(positionals[0])) {
      throw new _Usage("human release: give a PID and the SHA256 of the held-back content");
    }
    const rt = await Runtime.open({ store: file, role: "client" });
    try {
      await rt.releaseToModel(Number(positionals[0]), positionals[1], "human:owner via cli");
      console.log(`released ${positionals[1].slice(0, 12)}… to process ${positionals[0]}'s model`);
      return 0;
    } finally {
      await rt.close();
    }
  }
  if (sub !== "approve" && sub !== "deny" && sub !== "done" && sub !== "failed") {
    throw new _Usage(
      `human: unknown subcommand '${
        sub ?? ""
      }' (expected list, approve, deny, done, failed or release)`,
    );
  }
  if (positionals.length !== 1) throw new _Usage(`human ${sub}: give exactly one request ID`);
  if (sub === "done" || sub === "failed") {
    return await _answerOutcome(file, positionals[0], sub, values.json);
  }
  let answer: HumanAnswer;
  if (sub === "approve") {
    if (values.once === values.always) {
      throw new _Usage("human approve: give exactly one of --once, --always");
    }
    answer = values.once ? "allow_once" : "always_allow";
  } else {
    if (values.once) throw new _Usage("human deny: --once is the default; use --always for always");
    answer = values.always ? "always_deny" : "deny";
  }
  // A client runtime: deciding works while `libos serve` (the scheduler) runs.
  const rt = await Runtime.open({ store: file, role: "client" });
  try {
    const r = await rt.decide(positionals[0], answer, "human:owner via cli");
    if (values.json) console.log(JSON.stringify(r));
    else {
      console.log(
        `${r.request_id} ${r.status}; ${_resumeHint(rt, r.pid)}`,
      );
    }
    return 0;
  } finally {
    await rt.close();
  }
}

/** Who runs a decided process next: the store's workers (PostgreSQL), or `resume`/`serve`. */
function _resumeHint(rt: Runtime, pid: number): string {
  return rt.kernel.store.leases
    ? "a worker on the store resumes it"
    : `resume with: libos resume ${pid} (a running libos serve resumes it by itself)`;
}

/** `human done|failed ID`: say whether an effect a crash left unknown happened. */
async function _answerOutcome(
  file: string,
  id: string,
  answer: OutcomeAnswer,
  json: boolean | undefined,
): Promise<number> {
  const rt = await Runtime.open({ store: file, role: "client" });
  try {
    const r = await rt.decide(id, answer, "human:owner via cli");
    if (json) console.log(JSON.stringify(r));
    else {
      console.log(
        `${r.request_id} ${r.status}: recorded; ${_resumeHint(rt, r.pid)}`,
      );
    }
    return 0;
  } finally {
    await rt.close();
  }
}

/**
 * A store a command only reads or acts on (`ps`, `audit`, `resume`, `human`):
 * it must exist. Returned absolute.
 */
async function _existingStore(path: string | undefined): Promise<string> {
  const spec = _storeSpec(path);
  if (spec !== undefined && isPostgresUrl(spec)) return spec;
  const file = resolve(spec ?? DEFAULT_STORE);
  try {
    await Deno.stat(file);
  } catch {
    throw invalid("--store", `'${spec ?? DEFAULT_STORE}' does not exist`);
  }
  return file;
}

/** `--store`, else `$LIBOS_STORE` (a file or a `postgres://` URL), else undefined. */
function _storeSpec(path: string | undefined): string | undefined {
  return path ?? (Deno.env.get("LIBOS_STORE") || undefined);
}

/**
 * A store a command may create (`run`, `tool run`, `serve`), returned
 * absolute. The default store's directory is created (mode 0700) on first
 * use; an explicit `--store` must name an existing directory. Checked to be
 * outside `workspace` before anything is created.
 */
async function _newStore(path: string | undefined, workspace?: string): Promise<string> {
  path = _storeSpec(path);
  if (path !== undefined && isPostgresUrl(path)) return path;
  const file = resolve(path ?? DEFAULT_STORE);
  if (workspace !== undefined) await assertStoreOutside(file, workspace);
  if (path === undefined) {
    await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    return file;
  }
  try {
    if (!(await Deno.stat(dirname(file))).isDirectory) throw new Error();
  } catch {
    throw invalid("--store", `directory of '${path}' does not exist`);
  }
  return file;
}

function _short(s: string | undefined): string {
  if (s === undefined) return "";
  return s.length > 100 ? s.slice(0, 100) + "…" : s;
}

async function _audit(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      store: { type: "string" },
      verify: { type: "boolean" },
      pid: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const store = await _openStoreOnly(values.store);
  try {
    if (values.verify) {
      const v = await store.verifyAudit();
      if (values.json) console.log(JSON.stringify(v));
      else if (v.ok) console.log(`audit ok: ${v.count} records, head ${v.head}`);
      else {
        console.log(
          `audit TAMPERED: record ${v.firstBad!.seq} (${v.firstBad!.record_id}): ${
            v.firstBad!.problem
          }`,
        );
      }
      return v.ok ? 0 : 1;
    }
    const recs = await store.listAudit(values.pid ? { actor: `pid:${values.pid}` } : {});
    if (values.json) console.log(JSON.stringify(recs));
    else {
      for (const r of recs) {
        console.log(_row(r.seq, r.timestamp, r.actor, r.action, r.target, r.decision, r.reason));
      }
    }
    return 0;
  } finally {
    await store.close();
  }
}

async function _openStoreOnly(path: string | undefined): Promise<Store> {
  return await openStore(await _existingStore(path));
}

/** How a process's shell commands are confined (records older than the policy field: bwrap). */
function _shellSandbox(p: ProcessRecord): string {
  return p.policy.shell_sandbox ?? "bwrap";
}

function _tree(procs: ProcessRecord[]): string[] {
  const lines: string[] = [];
  const walk = (p: ProcessRecord, depth: number) => {
    lines.push(
      `${"  ".repeat(depth)}${
        _row(p.pid, p.status, p.image, p.origin, `cwd=${p.cwd}`, `taint=${p.taint}`)
      }\t${_shellSandbox(p) === "none" ? "shell=none(UNSAFE)" : "shell=bwrap"}${
        p.usage.model_calls
          ? `\tmodel=${p.usage.model_calls} calls, ${p.usage.input_tokens ?? 0} in/${
            p.usage.output_tokens ?? 0
          } out tokens`
          : ""
      }`,
    );
    for (const c of procs.filter((c) => c.ppid === p.pid)) walk(c, depth + 1);
  };
  for (const root of procs.filter((p) => p.ppid === null)) walk(root, 0);
  return lines;
}

async function _ps(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { store: { type: "string" }, json: { type: "boolean" } },
  });
  const store = await _openStoreOnly(values.store);
  try {
    const procs = await store.listProcesses();
    if (values.json) {
      console.log(JSON.stringify(procs.map((p) => ({
        pid: p.pid,
        ppid: p.ppid,
        lineage: p.lineage,
        status: p.status,
        image: p.image,
        origin: p.origin,
        cwd: p.cwd,
        usage: p.usage,
        shell_sandbox: _shellSandbox(p),
      }))));
    } else {
      console.log("PID\tSTATUS\tIMAGE\tORIGIN\tCWD\tTAINT\tSHELL");
      for (const l of _tree(procs)) console.log(l);
    }
    return 0;
  } finally {
    await store.close();
  }
}

async function _caps(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { store: { type: "string" }, pid: { type: "string" }, json: { type: "boolean" } },
  });
  if (!values.pid || !/^\d+$/.test(values.pid)) throw invalid("--pid", "must be a process id");
  const store = await _openStoreOnly(values.store);
  try {
    const caps = await store.capabilitiesOf(Number(values.pid));
    if (values.json) console.log(JSON.stringify(caps));
    else {
      for (const c of caps) {
        console.log(
          _row(
            c.cap_id,
            c.status,
            c.effect,
            c.resource,
            c.rights.join(","),
            `uses=${c.uses_remaining ?? "∞"}`,
            `by=${c.issued_by}`,
          ),
        );
      }
    }
    return 0;
  } finally {
    await store.close();
  }
}

async function _list(args: string[], what: "events" | "effects"): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { store: { type: "string" }, json: { type: "boolean" } },
  });
  const store = await _openStoreOnly(values.store);
  try {
    const rows = what === "events" ? await store.listEvents() : await store.listEffects();
    if (values.json) console.log(JSON.stringify(rows));
    else for (const r of rows) console.log(JSON.stringify(r));
    return 0;
  } finally {
    await store.close();
  }
}

function _toolName(path: string): string {
  const base = basename(path).replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_]/g, "_");
  const name = /^[a-z]/.test(base) ? base : `jit_${base}`;
  return (BUILTIN_TOOL_NAMES.includes(name) ? `jit_${name}` : name).slice(0, 64);
}

/** `tool run`: validate and run one JIT tool in a fresh process holding exactly the grants. */
async function _tool(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "run") throw new _Usage(`tool: unknown subcommand '${sub ?? ""}' (expected run)`);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      workspace: { type: "string" },
      grant: { type: "string", multiple: true },
      args: { type: "string" },
      "timeout-ms": { type: "string" },
      store: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (positionals.length !== 1) throw new _Usage("tool run: give exactly one TOOL.ts");
  if (!values.workspace) throw new _Usage("tool run: --workspace DIR is required");
  let source: string;
  try {
    source = await Deno.readTextFile(positionals[0]);
  } catch {
    throw invalid("TOOL.ts", `cannot read '${positionals[0]}'`);
  }
  let toolArgs: unknown = {};
  if (values.args !== undefined) {
    try {
      toolArgs = JSON.parse(values.args);
    } catch {
      throw invalid("--args", "is not valid JSON");
    }
    if (toolArgs === null || typeof toolArgs !== "object" || Array.isArray(toolArgs)) {
      throw invalid("--args", "must be a JSON object");
    }
  }
  const timeout = values["timeout-ms"];
  if (timeout !== undefined && (!/^[1-9][0-9]{0,4}$/.test(timeout) || Number(timeout) > 60_000)) {
    throw invalid("--timeout-ms", "must be an integer from 1 to 60000");
  }
  const grants = (values.grant ?? []).map(parseGrantFlag);
  const name = _toolName(positionals[0]);
  const storePath = await _newStore(values.store, values.workspace);
  const rt = await Runtime.open({ store: storePath, providers: { human: new ConsoleHuman() } });
  let result: { ok: true; value: unknown } | {
    ok: false;
    error: { code: string; message: string };
  };
  try {
    const proc = await rt.launch({
      image: { name: "tool-runner", tools: [] },
      workspace: values.workspace,
      // The host lets this process register exactly this tool, and nothing else beyond the grants.
      grants: [...grants, { resource: `tool:${name}`, rights: ["write"] }],
      goal: `run JIT tool ${name}`,
    });
    try {
      const cand = await rt.syscall(proc.pid, "jit.propose", { name, source }) as { oid: string };
      const art = await rt.syscall(proc.pid, "jit.validate", { oid: cand.oid }) as { oid: string };
      await rt.syscall(proc.pid, "jit.register", { oid: art.oid });
      const callArgs: Record<string, unknown> = { name, args: toolArgs };
      if (timeout !== undefined) callArgs.timeout_ms = Number(timeout);
      result = { ok: true, value: await rt.syscall(proc.pid, "jit.call", callArgs) };
    } catch (e) {
      if (!(e instanceof LibosError)) throw e;
      result = { ok: false, error: e.toJSON() };
    }
    const status = await rt.process(proc.pid);
    if (status.status === "runnable") {
      await rt.syscall(proc.pid, "process.exit", { code: result.ok ? 0 : 1 });
    }
  } finally {
    await rt.close();
  }
  if (values.json) console.log(JSON.stringify(result));
  else if (result.ok) console.log(JSON.stringify(result.value));
  else console.error(`libos: ${result.error.code} ${result.error.message}`);
  return result.ok ? 0 : 1;
}

/**
 * `serve`: the HTTP control plane and web console on loopback. Every ASK waits
 * in the durable queue (QueueHuman) until someone decides it in the console;
 * runs until SIGINT/SIGTERM.
 */
async function _serve(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      store: { type: "string" },
      port: { type: "string" },
      hostname: { type: "string" },
      "token-file": { type: "string" },
      "no-scheduler": { type: "boolean" },
    },
  });
  if (positionals.length) throw new _Usage("serve: takes no positional arguments");
  const port = values.port ?? String(DEFAULT_PORT);
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
    throw invalid("--port", "must be an integer from 0 to 65535");
  }
  const hostname = values.hostname ?? "127.0.0.1";
  if (!["127.0.0.1", "::1", "localhost"].includes(hostname)) {
    throw invalid("--hostname", "must be a loopback address (127.0.0.1, ::1 or localhost)");
  }
  const file = await _newStore(values.store);
  const url = isPostgresUrl(file);
  // A file store's token lives beside it; a PostgreSQL store has no such place:
  // its token is kept in memory unless --token-file names one.
  const tokenFile = values["token-file"] !== undefined
    ? resolve(values["token-file"])
    : url
    ? undefined
    : `${file}.token`;
  const rt = await Runtime.open({
    store: file,
    providers: { human: new QueueHuman() },
    concurrency: CLI_CONCURRENCY,
    // A console only: workers run the processes (it decides and watches).
    role: values["no-scheduler"] ? "client" : "scheduler",
  });
  const { promise: stopped, resolve: stop } = Promise.withResolvers<void>();
  // A store that stopped (a commit failed after writes were acknowledged) refuses
  // everything from then on: exit, so that a restart replays its journal.
  const onSchedulerError = (e: unknown) => {
    console.error("libos serve: scheduler:", e);
    if (rt.kernel.store.stopped) stop();
  };
  let served;
  try {
    served = await serve(rt, { port: Number(port), hostname, tokenFile, onSchedulerError });
  } catch (e) {
    await rt.close();
    throw e;
  }
  console.log(`libos console: ${served.url}/#token=${served.token}`);
  if (served.tokenFile) {
    console.log(`token file: ${served.tokenFile} (mode 0600; API: Authorization: Bearer <token>)`);
  } else console.log("token: in memory only (API: Authorization: Bearer <token>)");
  if (rt.role === "client") console.log("console only: workers run the processes");
  console.log("every ASK now waits for a decision in the console; Ctrl-C stops");
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  try {
    await stopped;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    await served.close();
    // A stopped store's close reports the stop too: it is reported once, below.
    await rt.close().catch((e) => {
      if (!rt.kernel.store.stopped) throw e;
    });
  }
  if (rt.kernel.store.stopped) throw rt.kernel.store.stopped;
  return 0;
}

/** `calls`: the LLM call ledger, one line (or JSON object) per model call. */
async function _calls(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { store: { type: "string" }, pid: { type: "string" }, json: { type: "boolean" } },
  });
  if (values.pid !== undefined && !/^[1-9][0-9]*$/.test(values.pid)) {
    throw invalid("--pid", "must be a process id");
  }
  const store = await _openStoreOnly(values.store);
  try {
    const rows = (await store.listModelCalls(
      values.pid !== undefined ? { pid: Number(values.pid) } : {},
    )).map((c) => ({
      call_id: c.call_id,
      pid: c.pid,
      provider: c.provider,
      model: c.model,
      status: c.status,
      input_tokens: c.input_tokens,
      output_tokens: c.output_tokens,
      latency_ms: c.latency_ms,
      attempts: c.attempts.length,
      finish_reason: c.finish_reason,
      created_at: c.created_at,
      purpose: c.purpose,
      turn: c.turn,
      redactions: c.request.redactions.length,
    }));
    if (values.json) console.log(JSON.stringify(rows));
    else {
      console.log("CALL\tPID\tTURN\tPROVIDER\tMODEL\tSTATUS\tIN\tOUT\tMS\tTRIES\tFINISH\tCREATED");
      for (const r of rows) {
        console.log(
          [
            r.call_id,
            r.pid,
            r.purpose === "summary" ? `${r.turn}s` : r.turn,
            r.provider,
            r.model,
            r.status,
            r.input_tokens ?? "-",
            r.output_tokens ?? "-",
            r.latency_ms ?? "-",
            r.attempts,
            r.finish_reason ?? "-",
            r.created_at,
          ].map(_clean).join("\t"),
        );
      }
    }
    return 0;
  } finally {
    await store.close();
  }
}

/**
 * `bench safety`: every scenario under every runner. Prints the result table
 * (or `--json`), writes the HTML report and the raw results to `--out`, and
 * exits 1 when the full runtime committed a forbidden effect or denied a
 * must-allow one (a runtime bug, or a scenario to read again).
 */
async function _bench(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "safety") {
    throw new _Usage(`bench: unknown benchmark '${sub ?? ""}' (expected safety)`);
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      tasks: { type: "string" },
      runner: { type: "string", multiple: true },
      out: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (positionals.length) throw new _Usage("bench safety: takes no positional arguments");
  let runners: string[];
  try {
    runners = parseRunners(values.runner);
  } catch {
    throw invalid("--runner", `must be one of ${RUNNERS.join(", ")}`);
  }
  const tasks = resolve(values.tasks ?? SCENARIO_DIR);
  const out = values.out === undefined ? null : resolve(values.out);
  let done = 0;
  const result = await runBench({
    tasks,
    runners,
    onRun: () => {
      done++;
      if (!values.json && done % 100 === 0) console.error(`bench safety: ${done} runs`);
    },
  });
  const report = out
    ? await _writeReport(result, out, values.tasks ?? "bench/safety/scenarios")
    : null;
  const json = {
    scenarios: result.scenarios.length,
    tracks: result.tracks,
    runners: result.summaries,
    report,
  };
  if (values.json) console.log(JSON.stringify(json));
  else _printBench(result, report);
  const full = result.summaries.find((s) => s.runner === "full");
  return full && (full.forbidden_effects > 0 || full.false_denials > 0) ? 1 : 0;
}

async function _writeReport(result: BenchResult, out: string, tasks: string): Promise<string> {
  await Deno.mkdir(out, { recursive: true });
  const html = join(out, "safety-report.html");
  await Deno.writeTextFile(
    html,
    renderReport(result, { tasks, date: new Date().toISOString().slice(0, 10) }),
  );
  await Deno.writeTextFile(
    join(out, "safety-results.json"),
    JSON.stringify({ summaries: result.summaries, outcomes: result.outcomes }, null, 1) + "\n",
  );
  return html;
}

function _printBench(r: BenchResult, report: string | null): void {
  const tracks = Object.entries(r.tracks).map(([t, c]) => `${t} ${c.scenarios}`).join(", ");
  console.log(`${r.scenarios.length} scenarios (${tracks}), ${(r.ms / 1000).toFixed(1)} s`);
  console.log(
    ["runner".padEnd(36), "task success", "forbidden", "false denials", "approvals", "audit"]
      .join("  "),
  );
  for (const s of r.summaries) {
    console.log([
      s.runner.padEnd(36),
      `${(s.task_success * 100).toFixed(1)}%`.padStart(12),
      String(s.forbidden_effects).padStart(9),
      String(s.false_denials).padStart(13),
      String(s.approvals).padStart(9),
      `${(s.audit_coverage * 100).toFixed(1)}%`.padStart(5),
    ].join("  "));
  }
  if (report) console.log(`report: ${report}`);
}

/** A pid given on the command line. */
function _pid(raw: string | undefined, field: string): number {
  if (raw === undefined || !/^[1-9][0-9]{0,15}$/.test(raw)) {
    throw invalid(field, "must be a process id");
  }
  return Number(raw);
}

/** A checkpoint id given on the command line. */
function _ckpt(raw: string | undefined, field: string): string {
  if (raw === undefined || !/^ckpt_[A-Za-z0-9-]{1,64}$/.test(raw)) {
    throw invalid(field, "must be a checkpoint id (ckpt_...)");
  }
  return raw;
}

/**
 * `checkpoint`: the host's checkpoint operations (no capability needed, each
 * audited as `host via cli`). `restore` holds the store's scheduler lease
 * (refused while another runtime schedules the store); the rest read or add.
 */
async function _checkpoint(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { store: { type: "string" }, json: { type: "boolean" }, label: { type: "string" } },
  });
  const want = { create: 1, list: 1, inspect: 1, diff: 2, restore: 1, fork: 1, commit: 2 };
  if (!sub || !Object.hasOwn(want, sub)) {
    throw new _Usage(
      `checkpoint: unknown subcommand '${
        sub ?? ""
      }' (expected create, list, inspect, diff, restore, fork or commit)`,
    );
  }
  const most = want[sub as keyof typeof want];
  const least = sub === "diff" ? 1 : most;
  if (positionals.length < least || positionals.length > most) {
    throw new _Usage(`checkpoint ${sub}: ${_CKPT_USAGE[sub]}`);
  }
  if (values.label !== undefined && sub !== "create") {
    throw new _Usage(`checkpoint ${sub}: --label is for create`);
  }
  // Checked before the store is opened: bad input leaves no state.
  const [a, b] = positionals;
  const pid = sub === "create" || sub === "list" ? _pid(a, "PID") : 0;
  const id = pid ? "" : _ckpt(a, "CKPT");
  const other = sub === "diff" && b !== undefined ? _ckpt(b, "CKPT2") : null;
  if (sub === "commit" && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(b ?? "")) {
    throw invalid("IMAGE", "must be letters, digits, '.', '_' or '-'");
  }
  if (values.label !== undefined && values.label.length > 200) {
    throw invalid("--label", "longer than 200 characters");
  }
  const file = await _existingStore(values.store);
  const by = "host via cli";
  const rt = await Runtime.open({ store: file, role: sub === "restore" ? "scheduler" : "client" });
  try {
    const out: unknown = sub === "create"
      ? await rt.createCheckpoint(pid, { label: values.label ?? null, by })
      : sub === "list"
      ? await rt.listCheckpoints(pid, by)
      : sub === "inspect"
      ? await rt.inspectCheckpoint(id, by)
      : sub === "diff"
      ? await rt.diffCheckpoint(id, other, by)
      : sub === "restore"
      ? await rt.restoreCheckpoint(id, by)
      : sub === "fork"
      ? await rt.forkCheckpoint(id, by)
      : await rt.commitCheckpoint(id, b!, by);
    if (values.json) console.log(JSON.stringify(out));
    else _printCheckpoint(sub, out);
    return 0;
  } finally {
    await rt.close();
  }
}

const _CKPT_USAGE: Record<string, string> = {
  create: "give exactly one PID",
  list: "give exactly one PID",
  inspect: "give exactly one CKPT",
  diff: "give CKPT and optionally CKPT2",
  restore: "give exactly one CKPT",
  fork: "give exactly one CKPT",
  commit: "give CKPT and IMAGE",
};

/** Human-readable output of a checkpoint command. */
function _printCheckpoint(sub: string, out: unknown): void {
  const o = out as Record<string, unknown>;
  switch (sub) {
    case "create":
      console.log(
        `${o.checkpoint_id}\tpid ${o.pid}\t${o.processes} processes\t${o.objects} objects\tsha256 ${o.sha256}`,
      );
      return;
    case "list":
      for (const c of out as Record<string, unknown>[]) {
        console.log(
          _row(
            c.checkpoint_id,
            c.created_at,
            `pid ${c.root_pid}`,
            `${c.processes} processes`,
            `${c.objects} objects`,
            c.label ?? "",
          ),
        );
      }
      return;
    case "fork":
      // The new root pid, alone on its line: what scripts read.
      console.log(String(o.pid));
      return;
    case "diff":
      return _printDiff(o);
    case "restore":
      return _printRestore(o);
    default:
      console.log(JSON.stringify(out, null, 2));
  }
}

function _printDiff(d: Record<string, unknown>): void {
  const procs = d.processes as {
    pid: number;
    change: string;
    fields: Record<string, [unknown, unknown]>;
    objects: { added: unknown[]; removed: unknown[]; changed: unknown[] };
    capabilities: { added: unknown[]; removed: unknown[]; changed: unknown[] };
    counts: Record<string, [number, number]>;
  }[];
  console.log(`${d.checkpoint_id} -> ${d.other ?? "now"}`);
  for (const p of procs) {
    const o = p.objects;
    const c = p.capabilities;
    const counts = Object.entries(p.counts).filter(([, [x, y]]) => x !== y)
      .map(([k, [x, y]]) => `${k} ${x}->${y}`).join(", ");
    console.log(
      `  pid ${p.pid}\t${p.change}\t${
        Object.keys(p.fields).map((f) =>
          `${f} ${_short(JSON.stringify(p.fields[f][0]))}->${
            _short(JSON.stringify(p.fields[f][1]))
          }`
        ).join(", ")
      }\tobjects +${o.added.length} -${o.removed.length} ~${o.changed.length}\tcaps +${c.added.length} -${c.removed.length} ~${c.changed.length}${
        counts ? `\t${counts}` : ""
      }`,
    );
  }
  _printEffects(d.effects_since as Record<string, unknown>);
}

function _printRestore(r: Record<string, unknown>): void {
  console.log(
    `restored ${(r.restored as number[]).join(", ")}; killed ${
      (r.killed as number[]).join(", ") || "none"
    }; revoked ${(r.revoked as string[]).length} capabilities`,
  );
  _printEffects(r.effects_since as Record<string, unknown>);
}

function _printEffects(e: Record<string, unknown>): void {
  const fx = e.effects as { pid: number; syscall: string; resource: string; status: string }[];
  const calls = e.model_calls as { pid: number; turn: number; status: string }[];
  console.log(
    `effects since (not undone): ${e.effects_total} effects, ${e.model_calls_total} model calls`,
  );
  for (const f of fx) console.log(`  ${_row(`pid ${f.pid}`, f.syscall, f.resource, f.status)}`);
  for (const c of calls) console.log(`  pid ${c.pid}\tmodel call turn ${c.turn}\t${c.status}`);
}

/** `objects`: Object Memory as metadata (of one process, one namespace, or every process's). */
async function _objects(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      store: { type: "string" },
      pid: { type: "string" },
      namespace: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (positionals.length) throw new _Usage("objects: takes no positional arguments");
  if (values.pid !== undefined && values.namespace !== undefined) {
    throw new _Usage("objects: give --pid or --namespace, not both");
  }
  const pid = values.pid === undefined ? null : _pid(values.pid, "--pid");
  if (values.namespace !== undefined && !/^[A-Za-z0-9_.:-]{1,256}$/.test(values.namespace)) {
    throw invalid("--namespace", "malformed");
  }
  const store = await _openStoreOnly(values.store);
  try {
    let namespaces: string[];
    if (values.namespace !== undefined) namespaces = [values.namespace];
    else if (pid !== null) {
      const p = await store.getProcess(pid);
      if (!p) throw invalid("--pid", `no process ${pid}`);
      namespaces = [p.namespace];
    } else namespaces = (await store.listProcesses()).map((p) => p.namespace);
    const rows: Record<string, unknown>[] = [];
    for (const ns of namespaces) {
      for (const o of await store.listObjects(ns)) rows.push(objectMetadata(o, true));
    }
    if (values.json) console.log(JSON.stringify(rows));
    else {
      console.log("OID\tNAMESPACE\tKIND\tNAME\tVERSION\tLABEL\tSIZE\tPREVIEW");
      for (const r of rows) {
        console.log(
          _row(r.oid, r.namespace, r.kind, r.name ?? "-", r.version, r.label, r.size, r.preview),
        );
      }
    }
    return 0;
  } finally {
    await store.close();
  }
}

/** Default port of `libos serve`. */
export const DEFAULT_PORT = 8471;

/** Run the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  if (cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(_help(cmd === "help" && rest[0] && _ABOUT[rest[0]] ? rest[0] : undefined));
    return 0;
  }
  if (cmd === "--version" || cmd === "-V") {
    console.log(await _version());
    return 0;
  }
  if (cmd && Object.hasOwn(_ABOUT, cmd) && (rest.includes("--help") || rest.includes("-h"))) {
    console.log(_help(cmd));
    return 0;
  }
  try {
    switch (cmd) {
      case "run":
        return await _run(rest);
      case "submit":
        return await _submit(rest);
      case "worker":
        return await _worker(rest);
      case "audit":
        return await _audit(rest);
      case "ps":
        return await _ps(rest);
      case "caps":
        return await _caps(rest);
      case "events":
        return await _list(rest, "events");
      case "effects":
        return await _list(rest, "effects");
      case "objects":
        return await _objects(rest);
      case "checkpoint":
        return await _checkpoint(rest);
      case "tool":
        return await _tool(rest);
      case "human":
        return await _human(rest);
      case "resume":
        return await _resume(rest);
      case "serve":
        return await _serve(rest);
      case "calls":
        return await _calls(rest);
      case "bench":
        return await _bench(rest);
      default:
        throw new _Usage(cmd ? `unknown command '${cmd}'` : "no command given");
    }
  } catch (e) {
    if (e instanceof _Usage) {
      console.error(`libos: ${scrubUrls(e.message)}\n${USAGE}`);
      return 2;
    }
    if (e instanceof LibosError) {
      // A store URL may carry a password: never print it.
      console.error(`libos: ${e.code} ${scrubUrls(e.message)}`);
      return e.code === "EINVAL" ? 2 : 1;
    }
    if (e instanceof TypeError && (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`libos: ${e.message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof Error) e.message = scrubUrls(e.message);
    throw e;
  }
}

if (import.meta.main) {
  // `deno task libos` runs in the project's directory; the task passes the
  // directory the user typed the command in, so relative paths (and the
  // default store) mean what they meant there.
  const cwd = Deno.env.get("LIBOS_CWD");
  if (cwd) Deno.chdir(cwd);
  Deno.exit(await main(Deno.args));
}
