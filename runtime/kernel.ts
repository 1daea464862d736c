/**
 * Kernel services shared by every primitive: the store, the providers, ids,
 * time, events, audit, process creation and lifecycle transitions. The kernel
 * decides nothing about authority itself; primitives/ does, using these.
 * @module
 */
import { type Ablation, type AblationSet, parseAblations } from "./ablations.ts";
import { parseCapabilitySpec } from "./capabilities.ts";
import { LibosError } from "./errors.ts";
import { CODE_ROOT, hideHostPaths, type HostRoot, hostRoots } from "./host_paths.ts";
import { Conversation } from "./conversation.ts";
import { assertTransition, isTerminal } from "./lifecycle.ts";
import { StoreModelContext } from "./model_context.ts";
import type { ModelContext, Providers } from "./providers/types.ts";
import type { AuditDraft, Fence, Store, TransactionOptions } from "./store/store.ts";
import { newOid } from "./oids.ts";
import type {
  AgentImage,
  Budgets,
  Capability,
  CapabilitySpec,
  EventType,
  JitToolRef,
  JournalEntry,
  Label,
  LibosEvent,
  MemoryObject,
  ModelState,
  ProcessRecord,
  ProcessStatus,
  Usage,
} from "./types.ts";

/** What a new process is made of. */
export interface ProcessSpec {
  /** Parent pid, or null for a host-launched root. */
  ppid: number | null;
  /** Image it runs. */
  image: AgentImage;
  /** Real path of the workspace. */
  workspace: string;
  /** Working directory relative to the workspace. */
  cwd: string;
  /** Goal text. */
  goal: string;
  /** Starting taint (a child inherits its parent's). */
  taint: Label;
  /** Tool table (defaults to the image's tools). */
  tools?: string[];
  /** JIT tools delegated by the parent (none by default). */
  jit_tools?: Record<string, JitToolRef>;
  /** Model cursor (small; rewritten every model step). */
  model: ModelState | null;
  /** The model's immutable input (a script; later a prompt and tool schemas), stored once. */
  modelInput?: unknown;
  /** root, spawn, fork:copy, ... */
  origin: string;
}

/** How primitives issue nested syscalls (a JIT tool's) without importing the table. */
export type Dispatch = (
  pid: number,
  name: string,
  args: unknown,
  options?: { correlationId?: string },
) => Promise<unknown>;

/** The syscall journal of an action in progress (see {@link Kernel.beginJournal}). */
export interface ActiveJournal {
  /** Completed syscalls, by issue order (`null`: issued, not completed). */
  entries: (JournalEntry | null)[];
  /** Index the next syscall gets. */
  cursor: number;
  /** Still replaying recorded results (false after the first divergence). */
  replaying: boolean;
}

interface _Shared {
  journals: Map<number, ActiveJournal>;
  rootsConfirmed: Map<string, number>;
  pendingWakes: Set<number>;
  becameRunnable: Set<number>;
  nowText: { ms: number; text: string };
  dispatch: Dispatch | null;
  usage: Map<number, Usage>;
  budgets: Map<number, Budgets>;
  budgetsReturned: Set<number>;
  budgetLocks: Map<number, Promise<void>>;
  idCounter: number;
  idPrefix: string;
  hostRoots: HostRoot[];
  ablations: AblationSet;
  toolSpecs: Readonly<Record<string, ToolSpec>>;
  conversations: Map<number, Conversation>;
  modelText: ((pid: number, text: string) => void) | null;
  fenced: Map<number, Kernel>;
  effectAborts: Map<number, AbortController>;
  waitTargets: Map<number, number>;
  inQuantum: Set<number>;
  quantumStart: Map<number, number>;
  frozen: Map<number, number>;
  quantumEnded: PromiseWithResolvers<void>;
}

/** Longest a checkpoint waits for the quanta of its subtree to end (ms). */
export const QUIESCE_TIMEOUT_MS = 5000;

/** What a model is told about a builtin tool (its schema comes from the tool table, above). */
export interface ToolSpec {
  /** One line. */
  description: string;
  /** JSON Schema of its arguments. */
  parameters: Record<string, unknown>;
}

/** Options fixed when a kernel is built. */
export interface KernelOptions {
  /**
   * Safety mechanisms switched off, for the safety benchmark only (see
   * `runtime/ablations.ts`). Set by the host at open, never by an agent.
   */
  ablations?: AblationSet;
}

/** The kernel: state and services, no policy. */
export class Kernel {
  /** Durable state. */
  readonly store: Store;
  /** Effects. */
  readonly providers: Providers;
  /** Names of the builtin tools images may list. */
  readonly toolNames: readonly string[];
  #shared: _Shared;

  /** Build a kernel over a store and providers. */
  constructor(
    store: Store,
    providers: Providers,
    toolNames: readonly string[],
    options: KernelOptions = {},
    shared?: _Shared,
  ) {
    this.store = store;
    this.providers = providers;
    this.toolNames = toolNames;
    this.#shared = shared ??
      {
        journals: new Map(),
        rootsConfirmed: new Map(),
        pendingWakes: new Set(),
        becameRunnable: new Set(),
        nowText: { ms: NaN, text: "" },
        dispatch: null,
        usage: new Map(),
        budgets: new Map(),
        budgetsReturned: new Set(),
        budgetLocks: new Map(),
        idCounter: 0,
        idPrefix: crypto.randomUUID().slice(0, 8),
        hostRoots: hostRoots([{ path: CODE_ROOT, name: "<libos>" }]),
        toolSpecs: {},
        conversations: new Map(),
        modelText: null,
        ablations: options.ablations ?? parseAblations(undefined),
        fenced: new Map(),
        effectAborts: new Map(),
        waitTargets: new Map(),
        inQuantum: new Set(),
        quantumStart: new Map(),
        frozen: new Map(),
        quantumEnded: Promise.withResolvers<void>(),
      };
  }

  /**
   * The kernel to act for `pid` with: while this runtime holds a worker's
   * lease on `pid`, one whose store is fenced by that lease (every write it
   * makes commits only while the lease holds), else this kernel. The
   * scheduler, the model loop and nested syscalls all go through it, so
   * primitives never need to know about leases.
   */
  forPid(pid: number): Kernel {
    return this.#shared.fenced.get(pid) ?? this;
  }

  /** Act for `pid` through `store` (a view fenced by the lease held on it) until {@link unbindStore}. */
  bindStore(pid: number, store: Store): Kernel {
    const k = new Kernel(store, this.providers, this.toolNames, {}, this.#shared);
    this.#shared.fenced.set(pid, k);
    this.#shared.effectAborts.set(pid, new AbortController());
    return k;
  }

  /** Stop acting for `pid` through a fenced store. */
  unbindStore(pid: number): void {
    this.#shared.fenced.delete(pid);
    this.#shared.effectAborts.delete(pid);
  }

  /**
   * Aborts when the effects under way for `pid` must stop now: the lease this
   * runtime acts under for it is lost, or may be (see {@link abortEffects}).
   * Providers that run something long (a shell command, a JIT tool) end it
   * then. Undefined when `pid` is not acted for under a lease.
   */
  effectSignal(pid: number): AbortSignal | undefined {
    return this.#shared.effectAborts.get(pid)?.signal;
  }

  /**
   * End `pid`'s effects under way, with `reason` as their error: another
   * runtime may run the process now, and asks a human about an effect only
   * once it has surely ended. No-op when nothing is acted for under a lease.
   */
  abortEffects(pid: number, reason: LibosError): void {
    this.#shared.effectAborts.get(pid)?.abort(reason);
  }

  /**
   * Forget what is kept in memory about `pid` (usage counters, conversation,
   * journal, wake notes): another runtime may run it next, and this one must
   * read it afresh from the store if it gets it back.
   */
  forget(pid: number): void {
    this.#shared.usage.delete(pid);
    this.#shared.budgets.delete(pid);
    this.#shared.conversations.delete(pid);
    this.#shared.journals.delete(pid);
    this.#shared.pendingWakes.delete(pid);
    this.#shared.waitTargets.delete(pid);
  }

  /**
   * Note that `pid` is about to park waiting for child `child` to end. The
   * scheduler checks the child again once the parent is parked: a child that
   * ended on another runtime in between found its parent not parked yet and
   * could not wake it.
   */
  noteWaitTarget(pid: number, child: number): void {
    this.#shared.waitTargets.set(pid, child);
  }

  /** The child `pid` parked waiting for (and forget it), if any. */
  takeWaitTarget(pid: number): number | undefined {
    const child = this.#shared.waitTargets.get(pid);
    this.#shared.waitTargets.delete(pid);
    return child;
  }

  /** The safety mechanisms this kernel runs without (benchmark ablations; empty by default). */
  get ablations(): AblationSet {
    return this.#shared.ablations;
  }

  /** Is `mechanism` switched off? Only ever true in a benchmark's ablated runtime. */
  ablated(mechanism: Ablation): boolean {
    return this.#shared.ablations.has(mechanism);
  }

  /** The syscall table's entry point, installed by the runtime. */
  get dispatch(): Dispatch {
    if (!this.#shared.dispatch) {
      throw new LibosError("EIO", "kernel: no syscall dispatcher installed");
    }
    return this.#shared.dispatch;
  }

  /**
   * When (performance.now()) each workspace root was last seen to be its own
   * real path; primitives/filesystem.ts keeps it to skip resolving the root
   * on every call.
   */
  get rootsConfirmed(): Map<string, number> {
    return this.#shared.rootsConfirmed;
  }

  /**
   * Host directories no agent-facing text may name (the store's directory,
   * the JIT cache), besides the runtime's own code, which is always hidden.
   */
  setHostRoots(paths: { path: string; name: string }[]): void {
    this.#shared.hostRoots = hostRoots([{ path: CODE_ROOT, name: "<libos>" }, ...paths]);
  }

  /** `text` with host paths hidden: `workspace` paths made relative, other roots named. */
  hidePaths(text: string, workspace?: string): string {
    return hideHostPaths(text, this.#shared.hostRoots, workspace);
  }

  /** The builtin tools' descriptions and schemas, for model requests (installed by the runtime). */
  get toolSpecs(): Readonly<Record<string, ToolSpec>> {
    return this.#shared.toolSpecs;
  }

  /** Install the builtin tools' specs (done once by the runtime). */
  setToolSpecs(specs: Readonly<Record<string, ToolSpec>>): void {
    this.#shared.toolSpecs = specs;
  }

  /**
   * The conversation of `pid`, in step with its durable model log (kept in
   * memory between turns; one index seek checks it is current).
   */
  async conversation(pid: number): Promise<Conversation> {
    let c = this.#shared.conversations.get(pid);
    if (!c) this.#shared.conversations.set(pid, c = new Conversation(pid));
    return await c.sync(this.store);
  }

  /** Forget a conversation kept in memory (its process ended). */
  dropConversation(pid: number): void {
    this.#shared.conversations.delete(pid);
  }

  /** Where streamed model text goes as it arrives (the CLI prints it), or null. */
  get modelText(): ((pid: number, text: string) => void) | null {
    return this.#shared.modelText;
  }

  /** Show streamed model text through `fn`. */
  setModelText(fn: ((pid: number, text: string) => void) | null): void {
    this.#shared.modelText = fn;
  }

  /** The scheduler starts a quantum of `pid` (see {@link quiesce}). */
  enterQuantum(pid: number): void {
    this.#shared.inQuantum.add(pid);
    this.#shared.quantumStart.set(pid, performance.now());
  }

  /** When (`performance.now()`) the quantum `pid` is inside began; undefined outside one. */
  quantumStartedAt(pid: number): number | undefined {
    return this.#shared.quantumStart.get(pid);
  }

  /** The scheduler ended a quantum of `pid`. */
  leaveQuantum(pid: number): void {
    this.#shared.quantumStart.delete(pid);
    if (!this.#shared.inQuantum.delete(pid)) return;
    const ended = this.#shared.quantumEnded;
    this.#shared.quantumEnded = Promise.withResolvers<void>();
    ended.resolve();
  }

  /** Is `pid` inside a quantum of this runtime's scheduler? */
  inQuantum(pid: number): boolean {
    return this.#shared.inQuantum.has(pid);
  }

  /** Is `pid` held between quanta (the scheduler starts none of its quanta)? */
  isFrozen(pid: number): boolean {
    return this.#shared.frozen.has(pid);
  }

  /**
   * Bring `pids` (all but `except`, the caller running this) to a quiescent
   * point: the scheduler starts no quantum of theirs from now on, and this
   * waits until none of them is inside one. On a store several workers share
   * (PostgreSQL), each is also held by a lease of this runtime's, so no worker
   * anywhere runs it until the release, and a worker that was inside a
   * quantum of one (or stalled in it) can commit nothing more for it.
   * Returns the release (each held process may be scheduled again, in the
   * round under way). `EBUSY` when a quantum outlasts `timeoutMs` (a long
   * command, a slow model call).
   */
  async quiesce(
    pids: readonly number[],
    except: number | null,
    timeoutMs = QUIESCE_TIMEOUT_MS,
  ): Promise<() => Promise<void>> {
    const held = pids.filter((p) => p !== except);
    const frozen = this.#shared.frozen;
    for (const p of held) frozen.set(p, (frozen.get(p) ?? 0) + 1);
    const leases: Fence[] = [];
    const release = async () => {
      for (const p of held) {
        const n = (frozen.get(p) ?? 1) - 1;
        if (n > 0) frozen.set(p, n);
        else frozen.delete(p);
        this.#shared.becameRunnable.add(p);
      }
      await this.store.leases?.release(leases, false);
    };
    const deadline = performance.now() + timeoutMs;
    const busy = (pid: number) => {
      throw new LibosError(
        "EBUSY",
        `checkpoint: process ${pid} is still inside a quantum after ${timeoutMs} ms; try again`,
      );
    };
    try {
      for (;;) {
        const inside = held.find((p) => this.#shared.inQuantum.has(p));
        if (inside === undefined) break;
        const left = deadline - performance.now();
        if (left <= 0) busy(inside);
        let timer: number | undefined;
        await Promise.race([
          this.#shared.quantumEnded.promise,
          new Promise((r) => (timer = setTimeout(r, left) as unknown as number)),
        ]);
        clearTimeout(timer);
      }
      await this.#holdLeases(held, leases, deadline, busy);
      return release;
    } catch (e) {
      await release();
      throw e;
    }
  }

  // On a shared store: lease every held process to this runtime (waiting for
  // the workers inside a quantum of one to give it back).
  async #holdLeases(
    pids: number[],
    leases: Fence[],
    deadline: number,
    busy: (pid: number) => never,
  ): Promise<void> {
    const store = this.store.leases;
    if (!store || pids.length === 0) return;
    const who = `hold:${this.#shared.idPrefix}`;
    const lease = QUIESCE_TIMEOUT_MS * 12;
    let left = pids;
    for (;;) {
      for (const c of await store.hold(who, left, lease)) {
        // A dead worker's mid-step process is recovered by the worker that claims it next.
        if (c.takenOver && c.status === "running") await store.release([c], false);
        else leases.push(c);
      }
      const got = new Set(leases.map((f) => f.pid));
      left = pids.filter((p) => !got.has(p));
      if (left.length === 0) return;
      if (performance.now() >= deadline) busy(left[0]);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Install the syscall table's entry point (done once by the runtime). */
  setDispatch(d: Dispatch): void {
    this.#shared.dispatch = d;
  }

  get #usage(): Map<number, Usage> {
    return this.#shared.usage;
  }

  /**
   * Run `fn` against a kernel whose store is one transaction: every write it
   * makes lands, or none does (no half-created process on bad input).
   */
  async atomically<T>(fn: (k: Kernel) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return await this.store.transaction(
      (tx) => fn(new Kernel(tx, this.providers, this.toolNames, {}, this.#shared)),
      options,
    );
  }

  /** Now, from the clock provider, as ISO-8601. */
  now(): string {
    // Every audit record and event asks; within one millisecond the text is the same.
    const ms = this.providers.clock.now();
    const memo = this.#shared.nowText;
    if (memo.ms !== ms) {
      memo.ms = ms;
      memo.text = new Date(ms).toISOString();
    }
    return memo.text;
  }

  /** A fresh id with a readable prefix, unique across runtimes on one store. */
  newId(prefix: string): string {
    return `${prefix}_${this.#shared.idPrefix}${(++this.#shared.idCounter).toString(36)}`;
  }

  /** Append an event. */
  async emit(
    type: EventType,
    source: string,
    target: string,
    payload: unknown,
    correlation_id: string | null = null,
    priority = 0,
  ): Promise<LibosEvent> {
    return await this.store.appendEvent({
      type,
      source,
      target,
      payload,
      priority,
      created_at: this.now(),
      correlation_id,
    });
  }

  /** Append an audit record (timestamped now). */
  async audit(draft: Omit<AuditDraft, "timestamp">): Promise<void> {
    return await this.store.appendAudit({ timestamp: this.now(), ...draft });
  }

  /** Load a process or throw ENOENT. */
  async process(pid: number): Promise<ProcessRecord> {
    const p = await this.store.getProcess(pid);
    if (!p) throw new LibosError("ENOENT", `pid: no process ${pid}`);
    return p;
  }

  /**
   * Start journaling `pid`'s syscalls for one action. Entries from an earlier
   * attempt of the same action are replayed in order instead of re-executed,
   * so a resumed action never performs an effect twice.
   */
  beginJournal(pid: number, entries: (JournalEntry | null)[]): void {
    this.#shared.journals.set(pid, { entries: [...entries], cursor: 0, replaying: true });
  }

  /** The active journal of `pid`, if an action is in progress. */
  journal(pid: number): ActiveJournal | undefined {
    return this.#shared.journals.get(pid);
  }

  /**
   * Stop journaling `pid` and return the entries. A slot whose call had not
   * completed (an outer `jit.call`) stays as `null`, so the nested entries after
   * it keep their positions and replay on the retry.
   */
  endJournal(pid: number): (JournalEntry | null)[] {
    const j = this.#shared.journals.get(pid);
    this.#shared.journals.delete(pid);
    return j ? Array.from(j.entries, (e) => e ?? null) : [];
  }

  /** Persist every in-memory usage counter (on close: a restart must not reset budgets). */
  async flushUsage(): Promise<void> {
    if (this.#usage.size === 0) return;
    // One commit for all of them: a runtime may hold thousands.
    await this.store.transaction(async (tx) => {
      for (const [pid, usage] of this.#usage) await tx.updateProcess(pid, { usage: { ...usage } });
    });
  }

  /**
   * The process's budget limits as they stand now, one object per process in
   * this runtime: what a child is given comes out of them, and what a child
   * gives back goes into them, synchronously, so syscalls of one process in
   * flight together (a JIT tool's) each see what the others did. Change them
   * with {@link setBudgets}.
   */
  budgets(proc: ProcessRecord): Budgets {
    let b = this.#shared.budgets.get(proc.pid);
    if (!b) {
      b = { ...proc.budgets };
      this.#shared.budgets.set(proc.pid, b);
    }
    return b;
  }

  /** Set `pid`'s budget limits now (in memory, at once) and in the store. */
  async setBudgets(proc: ProcessRecord, next: Budgets): Promise<void> {
    Object.assign(this.budgets(proc), next);
    await this.saveBudgets(proc);
  }

  /**
   * Run `fn` (a transaction that changes `pid`'s budget limits: a spawn, a
   * fork, a wait that gives some back) after every such one of `pid` before
   * it has ended, in this runtime: their writes of the limits then land in the
   * order the limits changed (concurrent transactions on PostgreSQL could
   * otherwise commit an older value last).
   */
  async withBudgets<T>(pid: number, fn: () => Promise<T>): Promise<T> {
    const locks = this.#shared.budgetLocks;
    const prev = locks.get(pid) ?? Promise.resolve();
    let release!: () => void;
    const mine = prev.then(() => new Promise<void>((r) => (release = r)));
    locks.set(pid, mine);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (locks.get(pid) === mine) locks.delete(pid);
    }
  }

  /** Store `proc`'s budget limits as they stand in memory now. */
  async saveBudgets(proc: ProcessRecord): Promise<void> {
    await this.saveProcess(proc.pid, { budgets: { ...this.budgets(proc) } });
  }

  /**
   * Claim the return of ended child `pid`'s unused budgets for its parent:
   * true once per child in this runtime (the store's `budgets_returned`
   * says so across runtimes).
   */
  claimBudgetReturn(pid: number): boolean {
    const set = this.#shared.budgetsReturned;
    if (set.has(pid)) return false;
    set.add(pid);
    return true;
  }

  /** Forget the limits held in memory for `pid` (the store's record changed them). */
  dropBudgets(pid: number): void {
    this.#shared.budgets.delete(pid);
  }

  /** Usage counters, kept in memory between flushes. */
  usage(proc: ProcessRecord): Usage {
    let u = this.#usage.get(proc.pid);
    if (!u) {
      u = { ...proc.usage };
      this.#usage.set(proc.pid, u);
    }
    return u;
  }

  /**
   * Move a process to `to`, checking the transition is legal against the
   * stored status (compare-and-swap, so a concurrent change is not overwritten).
   */
  async transition(
    pid: number,
    to: ProcessStatus,
    patch: Partial<ProcessRecord> = {},
    source = "kernel",
  ): Promise<ProcessRecord> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const cur = await this.process(pid);
      assertTransition(pid, cur.status, to);
      const usage = this.#usage.get(pid) ?? cur.usage;
      const next = { ...patch, status: to, usage: { ...usage }, updated_at: this.now() };
      if (await this.store.updateProcess(pid, next, cur.status)) {
        if (to === "runnable") this.#shared.becameRunnable.add(pid);
        await this.emit("process.status", source, `pid:${pid}`, { from: cur.status, to });
        if (isTerminal(to)) {
          this.#usage.delete(pid);
          this.#shared.budgets.delete(pid);
          this.#shared.conversations.delete(pid);
          await this.#closeRequests(pid);
          await this.#wakeParent(cur.ppid);
        }
        return { ...cur, ...next };
      }
    }
    throw new LibosError("ESTATE", `process ${pid}: status kept changing`);
  }

  // An ended process's open human requests can no longer be approved into authority.
  // (A question about what happened stays open: its answer is about the ledger.)
  async #closeRequests(pid: number): Promise<void> {
    for (const r of await this.store.listHumanRequests({ pid, status: "pending" })) {
      if (r.kind === "outcome") continue;
      await this.store.updateHumanRequest(
        r.request_id,
        { status: "expired", decided_by: "kernel: process ended", decided_at: this.now() },
        "pending",
      );
    }
  }

  /**
   * Make `pid` runnable only if it is still in `from` (compare-and-swap, no
   * retry): when two wakers race (a human decision and the scheduler parking
   * the process it was about), the process wakes once and neither fails.
   * Returns whether this call woke it.
   */
  async wake(pid: number, from: ProcessStatus, source = "kernel"): Promise<boolean> {
    const cur = await this.store.getProcess(pid);
    if (!cur || cur.status !== from) return false;
    assertTransition(pid, from, "runnable");
    const usage = this.#usage.get(pid) ?? cur.usage;
    const next = { status: "runnable" as const, usage: { ...usage }, updated_at: this.now() };
    if (!(await this.store.updateProcess(pid, next, from))) return false;
    this.#shared.becameRunnable.add(pid);
    await this.emit("process.status", source, `pid:${pid}`, { from, to: "runnable" });
    return true;
  }

  /**
   * `pid` was made runnable other than by a transition (a checkpoint's fork
   * or restore): the scheduler gives it its turn in the round under way.
   */
  admit(pid: number): void {
    this.#shared.becameRunnable.add(pid);
  }

  /**
   * Pids that became runnable through this runtime (launched, woken, resumed)
   * since the last call, and forget them: the scheduler gives such a process
   * its turn in the round under way instead of the next one.
   */
  takeRunnable(): number[] {
    const pids = [...this.#shared.becameRunnable];
    this.#shared.becameRunnable.clear();
    return pids;
  }

  /**
   * Mark `pid` running for a tool step: durable (a crash from here on records
   * the step as unknown instead of running it again), compare-and-swap from
   * `runnable`, with its usage. No event: it is the inside of one quantum,
   * two events a quantum would say nothing the step's audit records do not.
   * Returns false if the process was no longer runnable; true once the mark
   * is durable. On a store that can share a commit (SQLite), the mark is
   * written deferred with whatever was deferred before it, and made durable by
   * a line of the store's step journal when all of that is journaled (the
   * next commit then covers many steps), or else by a commit; either one is
   * shared with the marks of the other quanta that get here before the event
   * loop's next task.
   */
  async markRunning(pid: number): Promise<boolean> {
    const usage = this.#usage.get(pid);
    const base = { status: "running" as const, updated_at: this.now() };
    const patch = usage ? { ...base, usage: { ...usage } } : base;
    const store = this.store;
    if (!store.commitSoon) return await store.updateProcess(pid, patch, "runnable");
    const marked = await store.transaction(
      (tx) => tx.updateProcess(pid, patch, "runnable"),
      { defer: true },
    );
    if (!marked) return false;
    await (store.makeDurable ? store.makeDurable() : store.commitSoon());
    // Durable, unless a failure rolled back the writes deferred with it
    // (then the store reads `runnable` again, and the step does not run): the
    // mark is read back as stored. A status moved on since (a kill) stops it too.
    return (await this.process(pid)).status === "running";
  }

  /** The narrow view a model provider gets of `proc` for one model step. */
  modelContext(proc: ProcessRecord): ModelContext {
    return new StoreModelContext(this.store, proc);
  }

  // A parent blocked in wait() becomes runnable when a child ends; it re-runs its wait.
  // A parent that is still running (its wait just found the child alive and it
  // is about to park) is told through pendingWakes, or the wakeup would be lost.
  async #wakeParent(ppid: number | null): Promise<void> {
    if (ppid === null) return;
    const parent = await this.store.getProcess(ppid);
    if (parent?.status === "waiting_event") {
      await this.wake(ppid, "waiting_event");
    } else if (parent && !isTerminal(parent.status)) {
      this.#shared.pendingWakes.add(ppid);
    }
  }

  /**
   * Whether a child of `pid` ended while `pid` was not parked (and forget it):
   * the scheduler asks right after parking a process in `waiting_event`.
   */
  takePendingWake(pid: number): boolean {
    return this.#shared.pendingWakes.delete(pid);
  }

  /** Persist fields of a process (not its status) along with its usage counters. */
  async saveProcess(pid: number, patch: Partial<ProcessRecord>): Promise<void> {
    const usage = this.#usage.get(pid);
    const next = usage ? { ...patch, usage: { ...usage } } : patch;
    await this.store.updateProcess(pid, { ...next, updated_at: this.now() });
  }

  /** Create a process in `runnable` (via `created`), owning a fresh namespace. */
  async createProcess(spec: ProcessSpec): Promise<ProcessRecord> {
    const parent = spec.ppid === null ? null : await this.process(spec.ppid);
    const at = this.now();
    const rec = await this.store.insertProcess({
      ppid: spec.ppid,
      lineage: parent ? [...parent.lineage, parent.pid] : [],
      image: spec.image.name,
      status: "created",
      workspace: spec.workspace,
      cwd: spec.cwd,
      namespace: "",
      tools: spec.tools ?? [...spec.image.tools],
      jit_tools: spec.jit_tools ?? {},
      system_prompt: spec.image.system_prompt,
      goal: spec.goal,
      policy: structuredClone(spec.image.policy),
      taint: spec.taint,
      budgets: { ...spec.image.budgets },
      usage: { quanta: 0, wall_ms: 0, syscalls: 0 },
      model: spec.model,
      pending: null,
      exit_code: null,
      exit_reason: null,
      origin: spec.origin,
      cancel_requested: false,
      created_at: at,
      updated_at: at,
    });
    const namespace = `proc:${rec.pid}`;
    await this.store.updateProcess(rec.pid, { namespace });
    if (spec.modelInput !== undefined) await this.store.putModelInput(rec.pid, spec.modelInput);
    // A process owns its namespace; it may delegate access to its children.
    await this.grant(rec.pid, {
      resource: `object_namespace:${namespace}`,
      rights: ["read", "write", "link", "delete"],
      delegable: true,
    }, "kernel");
    await this.emit("process.created", "kernel", `pid:${rec.pid}`, {
      ppid: spec.ppid,
      image: spec.image.name,
      origin: spec.origin,
    });
    return await this.transition(rec.pid, "runnable", { namespace });
  }

  /**
   * Store a new (version 1) object. Oids are UUIDv7s with 74 random bits
   * (`oids.ts`): an oid is a name, not a capability, and must not be
   * guessable or probed.
   */
  async insertObject(
    o:
      & Omit<
        MemoryObject,
        "oid" | "version" | "created_at" | "updated_at" | "name" | "derived_from"
      >
      & Partial<Pick<MemoryObject, "name" | "derived_from">>,
  ): Promise<MemoryObject> {
    const at = this.now();
    const obj: MemoryObject = {
      name: null,
      derived_from: [],
      ...o,
      oid: newOid(),
      version: 1,
      created_at: at,
      updated_at: at,
    };
    await this.store.insertObject(obj);
    return obj;
  }

  /** Insert a capability for `subject` from a spec. */
  async grant(
    subject: number,
    spec: CapabilitySpec,
    issuedBy: string,
    extra: Partial<Capability> = {},
  ): Promise<Capability> {
    const s = parseCapabilitySpec(spec);
    const cap: Capability = {
      cap_id: this.newId("cap"),
      subject,
      resource: s.resource,
      rights: s.rights,
      constraints: {},
      issued_by: issuedBy,
      expires_at: s.expires_at ?? null,
      delegable: s.delegable ?? true,
      revocable: true,
      effect: s.effect ?? "allow",
      parent_cap_id: null,
      delegation_depth: 0,
      uses_remaining: s.uses_remaining ?? null,
      status: "active",
      created_at: this.now(),
      ...extra,
    };
    await this.store.insertCapability(cap);
    await this.emit("capability.granted", issuedBy, `pid:${subject}`, {
      cap_id: cap.cap_id,
      resource: cap.resource,
      rights: cap.rights,
      effect: cap.effect,
      parent_cap_id: cap.parent_cap_id,
    });
    return cap;
  }
}
