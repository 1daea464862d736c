/**
 * The host-facing runtime: opens a store, recovers after a crash, launches
 * images with the host's grants, and runs the scheduler. This is what the CLI,
 * demos, tests and benchmarks drive.
 * @module
 */
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { syscall } from "../primitives/mod.ts";
import { applyDecision } from "../primitives/authorize.ts";
import {
  type CheckpointDiff,
  type CheckpointSummary,
  commitCheckpoint,
  createCheckpoint,
  diffCheckpoint,
  forkCheckpoint,
  type ForkResult,
  inspectCheckpoint,
  listCheckpoints,
  restoreCheckpoint,
  type RestoreResult,
} from "../primitives/checkpoint.ts";
import { BUILTIN_TOOL_NAMES, BUILTIN_TOOLS } from "../tools/builtin.ts";
import { hostChat } from "../runtime/providers/chat_host.ts";
import type { ToolSpec } from "../runtime/kernel.ts";
import { ModelLoop } from "./model_loop.ts";
import { endpointOf, type LlmInput } from "../primitives/model.ts";
import {
  type Ablation,
  ABLATIONS,
  type AblationSet,
  parseAblations,
} from "../runtime/ablations.ts";
import { parseCapabilitySpec } from "../runtime/capabilities.ts";
import { payloadRef } from "../runtime/canonical.ts";
import { invalid, LibosError, toLibosError } from "../runtime/errors.ts";
import { parseImage, parseModelConfig } from "../runtime/images.ts";
import { Kernel } from "../runtime/kernel.ts";
import {
  ByNameFileSystem,
  HostClock,
  HostFileSystem,
  HostShell,
} from "../runtime/providers/host.ts";
import { DenyingHuman, parseScript, ScriptedModel } from "../runtime/providers/scripted.ts";
import { HostSandbox } from "../runtime/sandbox/provider.ts";
import type { HumanAnswer, OutcomeAnswer, Providers } from "../runtime/providers/types.ts";
import { DEFAULT_CONCURRENCY, type RunReport, Scheduler, type StepResult } from "./scheduler.ts";
import { isPostgresUrl, openStore } from "../runtime/store/open.ts";
import type { Store } from "../runtime/store/store.ts";
import { WorkerLoop, type WorkerOptions } from "./worker.ts";
import { recoverStore } from "./recovery.ts";
import type {
  AgentImage,
  CapabilitySpec,
  CheckpointMeta,
  HumanRequestRecord,
  HumanRequestStatus,
  ProcessRecord,
} from "../runtime/types.ts";

/** How to open a runtime. */
export interface RuntimeOptions {
  /**
   * A store file path (`:memory:` for a throwaway one), a PostgreSQL URL
   * (`postgres://...`: several runtimes may run its processes at once, each
   * as a worker holding leases), or an open store.
   */
  store: string | Store;
  /** Providers to replace (the rest are the host's). */
  providers?: Partial<Providers>;
  /** Where validated JIT tools are cached (default: `<store>.jit`, or a temp dir). */
  jitCacheDir?: string;
  /**
   * `scheduler` (default) runs processes: it holds the store's scheduler lease
   * (one live scheduler per store) and recovers what a crashed one left.
   * `client` only reads and decides (the CLI's `human approve`, say): no lease,
   * no recovery, no scheduling, so it never disturbs a live scheduler.
   */
  role?: "scheduler" | "client";
  /**
   * Processes that may be inside a quantum at once (default {@link DEFAULT_CONCURRENCY}, 4: a
   * slow tool or model call holds one slot while others run). Ask for 1 where the order of
   * quanta across processes must be exactly round-robin.
   */
  concurrency?: number;
  /** Streamed model text as it arrives (the CLI shows it live). */
  onModelText?: (pid: number, text: string) => void;
  /**
   * Safety mechanisms to switch off, for the safety benchmark's ablation
   * runners only (`runtime/ablations.ts`); default none. A host-only option:
   * no image, `libos run` flag or syscall sets it, it is fixed for the
   * runtime's life, and a runtime opened with any ablation records them in
   * the audit trail first.
   */
  ablations?: Ablation[];
  /** Lease options when the store has worker leases (PostgreSQL). */
  worker?: WorkerOptions;
  /**
   * More host directories no agent-facing text may name (shown as `name`),
   * beside the store's directory and the JIT cache, which always are.
   */
  hostPaths?: { path: string; name: string }[];
}

/** A scheduler lease not renewed for this long belongs to a runtime that died. */
export const LEASE_MS = 15_000;

/** How to launch a root process. */
export interface LaunchOptions {
  /** Image document (validated here) or an already parsed image. */
  image: unknown;
  /** Workspace directory (must exist). */
  workspace: string;
  /** Goal text. */
  goal?: string;
  /** Extra host grants on top of the image's capabilities. */
  grants?: CapabilitySpec[];
  /** Script for the scripted model (`{"steps": [...]}`). */
  script?: unknown;
  /**
   * The model that drives the process (`{"provider", "name", "base_url"?, ...}`),
   * the host's choice: it overrides the image's `model`. Not with `script`.
   */
  model?: unknown;
}

/** The default host providers; JIT artifacts are cached under `jitCacheDir`. */
export function hostProviders(jitCacheDir: string): Providers {
  // One loop drives both chat providers; Runtime.open attaches it to the kernel.
  const loop = new ModelLoop();
  return {
    fs: new HostFileSystem(),
    shell: new HostShell(),
    clock: new HostClock(),
    human: new DenyingHuman(),
    models: { scripted: new ScriptedModel(), openai: loop, anthropic: loop },
    sandbox: new HostSandbox(jitCacheDir),
    chat: hostChat,
  };
}

/** A runtime over one store. */
export class Runtime {
  /** Kernel services. */
  readonly kernel: Kernel;
  /** The scheduler. */
  readonly scheduler: Scheduler;

  #tempCache: string | null;

  private constructor(kernel: Kernel, tempCache: string | null, concurrency: number) {
    this.kernel = kernel;
    this.scheduler = new Scheduler(kernel, { concurrency });
    this.#tempCache = tempCache;
    // Nested syscalls (a JIT tool's) act through the kernel that acts for their process.
    kernel.setDispatch((pid, name, args, opts) =>
      syscall(kernel.forPid(pid), pid, name, args, opts)
    );
  }

  /** Open a runtime and recover what a crashed one left behind. */
  static async open(options: RuntimeOptions): Promise<Runtime> {
    // Checked before the store is touched: a bad option leaves no state.
    const ablations = parseAblations(options.ablations, "ablations");
    // Absolute once, here: the JIT cache, the audit log and every module
    // specifier derived from them must not depend on the current directory.
    const spec = typeof options.store === "string" ? options.store : null;
    const url = spec !== null && isPostgresUrl(spec);
    const storePath = spec !== null && !url && spec !== ":memory:" ? resolve(spec) : null;
    const store = spec === null ? options.store as Store : await openStore(storePath ?? spec);
    const tempCache = options.jitCacheDir || storePath
      ? null
      : await Deno.makeTempDir({ prefix: "libos-jit-" });
    const cacheDir = resolve(options.jitCacheDir ?? tempCache ?? `${storePath}.jit`);
    const providers = { ...hostProviders(cacheDir), ...options.providers };
    // Without real paths the file system acts by name too (the ablation's whole mechanism).
    if (ablations.has("no-realpath") && !options.providers?.fs) {
      providers.fs = new ByNameFileSystem();
    }
    const kernel = new Kernel(store, providers, BUILTIN_TOOL_NAMES, { ablations });
    kernel.setToolSpecs(_toolSpecs());
    for (const m of Object.values(providers.models)) if (m instanceof ModelLoop) m.attach(kernel);
    if (options.onModelText) kernel.setModelText(options.onModelText);
    kernel.setHostRoots([
      ...(storePath ? [{ path: dirname(storePath), name: "<store>" }] : []),
      { path: cacheDir, name: "<jit-cache>" },
      ...(options.hostPaths ?? []).map((h) => ({ path: resolve(h.path), name: h.name })),
    ]);
    if (ablations.size > 0) await _recordAblations(kernel, ablations);
    const rt = new Runtime(kernel, tempCache, options.concurrency ?? DEFAULT_CONCURRENCY);
    rt.#role = options.role ?? "scheduler";
    if (rt.#role === "scheduler" && store.leases) {
      // Several runtimes share this store: each runs processes as a worker,
      // claiming them with leases; what a dead one left is recovered by
      // whoever claims it next, never by resetting anyone's live work.
      try {
        rt.#worker = new WorkerLoop(kernel, rt.scheduler, options.worker);
      } catch (e) {
        await rt.close();
        throw e;
      }
      rt.scheduler.useDriver(rt.#worker);
      // What dead runtimes left (never a live worker's) is recovered now, as at a
      // SQLite store's open; whatever is missed is recovered by the next claim.
      try {
        await rt.#worker.recoverAbandoned();
      } catch (e) {
        await rt.close();
        throw e;
      }
    } else if (rt.#role === "scheduler") {
      let stalled: boolean;
      try {
        stalled = await rt.#takeLease();
      } catch (e) {
        await rt.close();
        throw e;
      }
      await rt.#recover(stalled);
    }
    return rt;
  }

  #role: "scheduler" | "client" = "scheduler";
  #worker: WorkerLoop | null = null;

  /** `scheduler` (runs processes) or `client` (reads and decides only). */
  get role(): "scheduler" | "client" {
    return this.#role;
  }

  /** The worker loop, when this runtime runs processes from a shared store (PostgreSQL). */
  get worker(): WorkerLoop | null {
    return this.#worker;
  }
  #leaseId = crypto.randomUUID();
  #heartbeat: number | null = null;
  #recoverTimer: number | null = null;

  // One live scheduler per store: recovery resets `running` processes, which is
  // only right when no other runtime is in the middle of running them. Says
  // whether the runtime whose stale lease this took may still be alive (it
  // stalled rather than died): its commands may then still run.
  async #takeLease(): Promise<boolean> {
    const k = this.kernel;
    const mayLive = await k.store.transaction(async (tx) => {
      const raw = await tx.getMeta("scheduler_lease");
      const held = raw
        ? JSON.parse(raw) as { id: string; os_pid: number; heartbeat: number }
        : null;
      if (held && held.id !== this.#leaseId && Date.now() - held.heartbeat < LEASE_MS) {
        throw new LibosError(
          "ESTATE",
          `store: another runtime (os pid ${held.os_pid}) is scheduling this store; stop it first (decisions do not need it: libos human approve works alongside)`,
        );
      }
      await tx.setMeta(
        "scheduler_lease",
        JSON.stringify({ id: this.#leaseId, os_pid: Deno.pid, heartbeat: Date.now() }),
      );
      return held !== null && typeof held.os_pid === "number" && _mayLive(held.os_pid);
    });
    this.#beat();
    return mayLive;
  }

  // Keep the lease: a heartbeat, and every write checked against it.
  #beat(): void {
    const k = this.kernel;
    // From now on the store commits nothing once another runtime holds the lease.
    k.store.writeUnderLease?.(this.#leaseId);
    const beat = setInterval(() => {
      k.store.setMeta(
        "scheduler_lease",
        JSON.stringify({ id: this.#leaseId, os_pid: Deno.pid, heartbeat: Date.now() }),
      ).catch(() => {});
    }, LEASE_MS / 3) as unknown as number;
    Deno.unrefTimer(beat);
    this.#heartbeat = beat;
  }

  // Effects whose outcome was never recorded become `unknown` (never replayed)
  // and a human is asked whether each happened; a process caught mid-step
  // waits for those answers, which become its step's result (or, when its step
  // had no external effect under way, gets "outcome unknown" as that result).
  // After a runtime that may still live, a process with an effect that may
  // still be under way is recovered once that effect has surely ended.
  async #recover(underWayMayRun: boolean): Promise<void> {
    const wait = await recoverStore(this.kernel, this.scheduler, { underWayMayRun });
    if (wait <= 0) return;
    const timer = setTimeout(() => {
      this.#recoverTimer = null;
      this.#recover(true).catch(() => {/* a closed or stopped store: the next open recovers */});
    }, wait) as unknown as number;
    // A runtime that ends first leaves it to the next one to open the store.
    Deno.unrefTimer(timer);
    this.#recoverTimer = timer;
  }

  /**
   * Launch a root process: the host (not the image, not the agent) grants the
   * image's capabilities plus `grants`.
   */
  async launch(options: LaunchOptions): Promise<ProcessRecord> {
    const image: AgentImage = parseImage(options.image, BUILTIN_TOOL_NAMES);
    const grants = (options.grants ?? []).map((g, i) => parseCapabilitySpec(g, `grants[${i}]`));
    const script = options.script === undefined ? undefined : parseScript(options.script);
    if (script && options.model !== undefined) {
      throw invalid("model", "give a script or a model, not both");
    }
    const model = options.model !== undefined ? parseModelConfig(options.model) : image.model;
    const llm = script ? null : model ?? null;
    const workspace = _realDir(options.workspace);
    return await this.kernel.atomically(async (k) => {
      await k.store.putImage(image, "host");
      const proc = await k.createProcess({
        ppid: null,
        image,
        workspace,
        cwd: ".",
        goal: options.goal ?? "",
        taint: "public",
        // The script is stored once as the model's input; the cursor is only its position.
        model: script
          ? { kind: "scripted", state: { position: 0 } }
          : llm
          ? { kind: llm.provider, state: {} }
          : null,
        // The model and its limits are the host's: stored once, never changeable by an agent.
        modelInput: script ? { steps: script } : llm ? { config: llm } : undefined,
        origin: "root",
      });
      for (const spec of [...image.capabilities, ...grants]) {
        await k.grant(proc.pid, _selfResource(spec, proc.pid), "host");
      }
      return proc;
    });
  }

  /** Human requests, oldest first (pending ones by default). */
  async humanRequests(
    status: HumanRequestStatus | "all" = "pending",
  ): Promise<HumanRequestRecord[]> {
    return await this.kernel.store.listHumanRequests(status === "all" ? {} : { status });
  }

  /**
   * Decide a pending human request as the host's human (CLI, HTTP console).
   * `decidedBy` names who, for the audit. The waiting process becomes runnable;
   * run the scheduler to let it retry its action.
   */
  async decide(
    requestId: string,
    answer: HumanAnswer | OutcomeAnswer,
    decidedBy = "human:owner",
  ): Promise<HumanRequestRecord> {
    return await applyDecision(this.kernel, requestId, answer, decidedBy);
  }

  // ---- checkpoints, for the host: no capability needed, every call audited as `by`

  /** Checkpoint the subtree rooted at `pid` (at a quiescent point; EBUSY otherwise). */
  async createCheckpoint(
    pid: number,
    opts: { label?: string | null; by?: string } = {},
  ): Promise<CheckpointSummary> {
    const by = opts.by ?? "host";
    const label = opts.label ?? null;
    if (label !== null && (typeof label !== "string" || label.length > 200)) {
      throw invalid("label", "must be a string of at most 200 characters");
    }
    return await this.#hostOp(by, "checkpoint.create", `checkpoint:process:${pid}`, {
      pid,
      label,
    }, () => createCheckpoint(this.kernel, pid, { label, by }));
  }

  /** Checkpoints of the subtree rooted at `pid` (all of them when omitted). */
  async listCheckpoints(pid?: number, by: string | null = "host"): Promise<CheckpointMeta[]> {
    return await this.#hostOp(
      by,
      "checkpoint.list",
      pid === undefined ? "checkpoint:process:*" : `checkpoint:process:${pid}`,
      { pid: pid ?? null },
      () =>
        pid === undefined ? this.kernel.store.listCheckpoints() : listCheckpoints(this.kernel, pid),
      (v) => ({ count: v.length }),
    );
  }

  /** A checkpoint's contents without payloads (EINTEGRITY if it was altered). */
  async inspectCheckpoint(
    id: string,
    by: string | null = "host",
  ): Promise<Record<string, unknown>> {
    return await this.#hostOp(
      by,
      "checkpoint.inspect",
      id,
      { checkpoint_id: id },
      () => inspectCheckpoint(this.kernel, id),
    );
  }

  /** How a checkpoint differs from another of its subtree, or from now. */
  async diffCheckpoint(
    id: string,
    other: string | null = null,
    by: string | null = "host",
  ): Promise<CheckpointDiff> {
    return await this.#hostOp(
      by,
      "checkpoint.diff",
      id,
      { checkpoint_id: id, other },
      () => diffCheckpoint(this.kernel, id, other),
    );
  }

  /**
   * Put a checkpoint's subtree back in place. Needs the scheduler's role (a
   * restore must not race a scheduler of another runtime on the same store).
   */
  async restoreCheckpoint(id: string, by = "host"): Promise<RestoreResult> {
    return await this.#hostOp(by, "checkpoint.restore", id, { checkpoint_id: id }, () => {
      if (this.#role !== "scheduler") {
        throw new LibosError(
          "ESTATE",
          "runtime: a restore needs the store's scheduler (stop libos serve, or restore from it)",
        );
      }
      return restoreCheckpoint(this.kernel, id, { by, caller: null });
    }, (v) => ({
      restored: v.restored,
      killed: v.killed,
      revoked: v.revoked.length,
      effects_since: v.effects_since.effects_total,
      model_calls_since: v.effects_since.model_calls_total,
    }));
  }

  /** Copy a checkpoint's subtree as a new root process tree. */
  async forkCheckpoint(id: string, by = "host"): Promise<ForkResult> {
    return await this.#hostOp(
      by,
      "checkpoint.fork",
      id,
      { checkpoint_id: id },
      () => forkCheckpoint(this.kernel, id, { by, parent: null }),
      (v) => ({
        pid: v.pid,
        pids: v.pids,
        copied: v.capabilities.copied,
        dropped: v.capabilities.dropped.length,
      }),
    );
  }

  /** Turn a checkpoint into a registered image (it grants nothing). */
  async commitCheckpoint(
    id: string,
    image: string,
    by = "host",
  ): Promise<{ checkpoint_id: string; image: string; tools: string[]; granted: [] }> {
    return await this.#hostOp(
      by,
      "checkpoint.commit",
      id,
      { checkpoint_id: id, image },
      () => commitCheckpoint(this.kernel, id, image, by),
    );
  }

  /**
   * Run a host operation and audit it, allowed or failed, as `by` (a read the
   * console makes passes null: its reads, as all its reads, are not audited).
   */
  async #hostOp<T>(
    by: string | null,
    action: string,
    target: string,
    input: Record<string, unknown>,
    fn: () => Promise<T>,
    output: (v: T) => unknown = (v) => payloadRef(v),
  ): Promise<T> {
    const k = this.kernel;
    const record = (decision: "allow" | "error", out: unknown, reason: string) =>
      k.audit({
        actor: by!,
        action,
        target,
        input_refs: input,
        output_refs: out,
        capability_refs: [],
        decision,
        reason,
        correlation_id: null,
        parent_record_id: null,
      });
    if (by === null) return await fn();
    let value: T;
    try {
      value = await fn();
    } catch (e) {
      const err = toLibosError(e);
      await record("error", { error: err.code }, `${err.code}: ${err.message}`);
      throw err;
    }
    await record("allow", output(value), "the host needs no capability");
    return value;
  }

  /**
   * Release exactly one piece of content that was held back from `pid`'s model
   * (by its sha256, as the ledger and the console show it) to that model's
   * endpoint, as the host's human. Later requests carry it; nothing else
   * changes. Audited.
   */
  async releaseToModel(pid: number, sha256: string, decidedBy = "human:owner"): Promise<void> {
    const k = this.kernel;
    const input = await k.store.getModelInput(pid) as LlmInput | null;
    if (!input?.config) throw invalid("pid", `process ${pid} is not driven by a model`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalid("sha256", "must be 64 hex digits");
    const held = (await k.store.listModelCalls({ pid }))
      .some((c) => c.request.redactions.some((r) => r.sha256 === sha256));
    if (!held) throw invalid("sha256", `was not held back from process ${pid}'s model`);
    const endpoint = endpointOf(input.config);
    await k.store.insertModelRelease({ pid, sha256, endpoint, decided_by: decidedBy, at: k.now() });
    await k.audit({
      actor: decidedBy,
      action: "model.release",
      target: `model:${endpoint}`,
      input_refs: { pid, sha256 },
      output_refs: null,
      capability_refs: [],
      decision: "allow",
      reason: `content ${sha256.slice(0, 12)}… released to ${endpoint} for process ${pid}`,
      correlation_id: null,
      parent_record_id: null,
    });
    await k.emit("model.released", decidedBy, `pid:${pid}`, { sha256, endpoint });
  }

  /** Issue a syscall as `pid` (for hosts and tests; agents go through tools). */
  async syscall(pid: number, name: string, args: Record<string, unknown> = {}): Promise<unknown> {
    return await syscall(this.kernel, pid, name, args);
  }

  /** Run until nothing is runnable or `maxQuanta` quanta were used. */
  async runUntilIdle(maxQuanta?: number): Promise<RunReport> {
    if (this.#role !== "scheduler") {
      throw new LibosError("ESTATE", "runtime: a client runtime does not schedule processes");
    }
    return await this.scheduler.runUntilIdle(maxQuanta);
  }

  /** A process record. */
  async process(pid: number): Promise<ProcessRecord> {
    return await this.kernel.process(pid);
  }

  /** Tool-step results of a process. */
  async steps(pid: number): Promise<StepResult[]> {
    return await this.scheduler.steps(pid);
  }

  /**
   * Close the runtime: the scheduler starts no more quanta and the ones in
   * flight end (a run in progress returns, not idle), then the store and the
   * sandbox broker close.
   */
  async close(): Promise<void> {
    // Every part is released even when one fails (a stopped store refuses the
    // lease and usage writes); the first failure is reported after.
    let failure: unknown = null;
    const part = async (release: () => Promise<void>) => {
      try {
        await release();
      } catch (e) {
        failure ??= e;
      }
    };
    if (this.#recoverTimer !== null) clearTimeout(this.#recoverTimer);
    // Quanta in flight end before the store they write closes; none starts after.
    await part(() => this.scheduler.close());
    await part(async () => await this.#worker?.close());
    await part(() => this.kernel.providers.sandbox.close());
    // Usage is written while the lease is still held (a runtime that lost it writes nothing).
    await part(() => this.kernel.flushUsage());
    if (this.#heartbeat !== null) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = null;
      await part(async () => {
        const store = this.kernel.store;
        await store.transaction(async (tx) => {
          const raw = await tx.getMeta("scheduler_lease");
          if (raw && JSON.parse(raw).id === this.#leaseId) {
            await tx.setMeta("scheduler_lease", JSON.stringify({ released: true, heartbeat: 0 }));
          }
        });
        store.writeUnderLease?.(null);
      });
    }
    await part(() => this.kernel.store.close());
    if (this.#tempCache) await Deno.remove(this.#tempCache, { recursive: true }).catch(() => {});
    if (failure) throw failure;
  }
}

/** A runtime running without some safety mechanism says so in its audit trail. */
async function _recordAblations(k: Kernel, ablations: AblationSet): Promise<void> {
  const names = [...ablations];
  await k.audit({
    actor: "host",
    action: "runtime.ablations",
    target: "runtime",
    input_refs: { ablations: names },
    output_refs: null,
    capability_refs: [],
    decision: "info",
    reason: `benchmark ablations on: ${names.map((a) => `${a} (${ABLATIONS[a]})`).join("; ")}`,
    correlation_id: null,
    parent_record_id: null,
  });
}

/**
 * `checkpoint:process:self` in an image or a host grant names the launched
 * process: a right over it covers its descendants too.
 */
function _selfResource(spec: CapabilitySpec, pid: number): CapabilitySpec {
  return spec.resource === "checkpoint:process:self"
    ? { ...spec, resource: `checkpoint:process:${pid}` }
    : spec;
}

function _realDir(path: string): string {
  let real: string;
  // Synchronous on purpose: each async fs call waits for an event-loop turn,
  // which a busy scheduler gives every YIELD_EVERY_MS; two of them were most of
  // a launch's time to first quantum. Resolving one local path is microseconds.
  try {
    real = Deno.realPathSync(path);
  } catch {
    throw invalid("workspace", `'${path}' does not exist`);
  }
  const info = Deno.statSync(real);
  if (!info.isDirectory) throw invalid("workspace", `'${path}' is not a directory`);
  return real;
}

/** Refuse a store file inside the workspace: agents could read or rewrite their own audit. */
export async function assertStoreOutside(storePath: string, workspace: string): Promise<void> {
  if (storePath === ":memory:" || isPostgresUrl(storePath)) return;
  const ws = _realDir(workspace);
  const abs = resolve(storePath);
  // The store's directory may not exist yet (the default one is created on
  // first use): resolve its deepest existing ancestor and append the rest.
  let dir = dirname(abs);
  const missing: string[] = [];
  for (;;) {
    try {
      dir = join(await Deno.realPath(dir), ...missing);
      break;
    } catch {
      missing.unshift(basename(dir));
      dir = dirname(dir);
    }
  }
  const rel = relative(ws, join(dir, basename(abs)));
  if (!(rel === ".." || rel.startsWith(".." + sep) || isAbsolute(rel))) {
    throw new LibosError(
      "EINVAL",
      `--store: '${storePath}' is inside the workspace; keep it outside`,
    );
  }
}

/** The builtin tools as a model is told about them. */
function _toolSpecs(): Record<string, ToolSpec> {
  return Object.fromEntries(
    Object.entries(BUILTIN_TOOLS).map((
      [name, t],
    ) => [name, { description: t.description, parameters: { ...t.parameters } }]),
  );
}

/**
 * Whether OS process `pid` may be alive (this one counts: another runtime in
 * it may have stalled; a zombie does not). Unknowable (no read permission on
 * /proc): it may.
 */
function _mayLive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}
