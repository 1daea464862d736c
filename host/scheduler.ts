/**
 * The scheduler: async round-robin over runnable processes. A quantum is one
 * model step (decide the next action, durably) or one tool step (run that
 * action through the builtin tool and the syscall table). Per-process budgets
 * (quanta, wall time, syscalls) stop one busy process from starving others.
 *
 * What a quantum reads and writes does not depend on how long its process has
 * run: the process comes from the store's read cache, the model reads its input
 * and results by key, a model step writes the process's small per-step row
 * (next action, cursor, usage), and a tool step marks it running before the
 * tool's first effect, then writes the result, its step index and the row
 * back to runnable together. The decision and the result are deferred: they
 * commit with the next write that may precede an effect (at the latest the
 * next tool step's running mark), so a step costs one commit; on SQLite the
 * running marks of the tool steps in flight share one commit (see
 * `Kernel.markRunning`), and no tool runs before the commit that holds its mark.
 * @module
 */
import { syscall } from "../primitives/mod.ts";
import { BUILTIN_TOOLS, runBuiltin } from "../tools/builtin.ts";
import { MAX_JSON_DEPTH, nestsDeeper, payloadRef } from "../runtime/canonical.ts";
import { LibosError, toLibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import { MAX_CURSOR_CHARS } from "../runtime/model_context.ts";
import type { ModelDecision } from "../runtime/providers/types.ts";
import { storeBytes } from "../runtime/budgets.ts";
import {
  type Budgets,
  type ModelState,
  type PendingAction,
  PROCESS_STATUSES,
  type ProcessRecord,
  type ProcessStatus,
  type StepResult,
  type Usage,
} from "../runtime/types.ts";

export type { StepResult };

/** Outcome of {@link Scheduler.runUntilIdle}. */
export interface RunReport {
  /** Quanta used. */
  quanta: number;
  /** True when nothing was left to run (false when `maxQuanta` stopped it). */
  idle: boolean;
}

/**
 * Processes inside a quantum at once unless a runtime asks otherwise. Measured
 * on CPU-bound steps, 1 and 4 run as many quanta per second (within this VM's
 * noise); with 4, a step that waits (a command, a JIT call, a model API) holds
 * one slot while the others keep running. Ask for 1 where the order of quanta
 * across processes must be exactly round-robin.
 */
export const DEFAULT_CONCURRENCY = 4;

/** Options of a {@link Scheduler}. */
export interface SchedulerOptions {
  /**
   * How many processes may be inside a quantum at once (default
   * {@link DEFAULT_CONCURRENCY}). Above 1, a process stuck in a long tool step
   * (a slow command, a JIT call) holds one slot while the others keep running;
   * each process still runs one quantum at a time, in round-robin order.
   */
  concurrency?: number;
}

/**
 * Longest the scheduler runs quanta without letting the event loop take its
 * turn (ms). Store calls settle as microtasks, so without this a long run
 * would hold off timers, HTTP requests and a host's `launch` until it ends.
 */
export const YIELD_EVERY_MS = 5;

/** Statuses a decision may still land in: an ended process keeps its end. */
const _LIVE: readonly ProcessStatus[] = PROCESS_STATUSES.filter((s) => !isTerminal(s));

/**
 * One round: every process runnable when it began, in round-robin order, and
 * those that became runnable during it (launched, woken), served first. Each
 * process gets at most one quantum per round.
 */
class _Round {
  #order: number[] = [];
  #at = 0;
  #front: number[] = [];
  #members = new Set<number>();

  /** Start a round over `order`. */
  reset(order: number[]): void {
    this.#order = order;
    this.#at = 0;
    this.#front = [];
    this.#members = new Set(order);
  }

  /** Nothing left to serve in this round. */
  get empty(): boolean {
    return this.#front.length === 0 && this.#at >= this.#order.length;
  }

  /** Serve `pid` next, unless it already has its turn in this round. */
  admit(pid: number): void {
    if (this.#members.has(pid)) return;
    this.#members.add(pid);
    this.#front.push(pid);
  }

  /** The next pid to serve, if any, and whether it came in during the round. */
  next(): { pid: number; admitted: boolean } | undefined {
    if (this.#front.length > 0) return { pid: this.#front.shift()!, admitted: true };
    return this.#at < this.#order.length
      ? { pid: this.#order[this.#at++], admitted: false }
      : undefined;
  }
}

/** Lets the event loop take a turn at most every {@link YIELD_EVERY_MS}. */
class _EventLoopTurns {
  #last = performance.now();
  #channel: MessageChannel | null = null;
  #flush: () => Promise<void>;

  /** `flush` commits deferred writes before the loop hands over. */
  constructor(flush: () => Promise<void>) {
    this.#flush = flush;
  }

  /** Yield if the last turn was long enough ago; true if it did. */
  async maybe(): Promise<boolean> {
    if (performance.now() - this.#last < YIELD_EVERY_MS) return false;
    // Hosts, other connections and the audit indexer see everything decided so far.
    await this.#flush();
    // A message is a task: timers and I/O that are due run before it arrives.
    // (setTimeout(0) costs about 2 ms here; a message round trip about 12 us.)
    const ch = this.#channel ??= new MessageChannel();
    await new Promise((resolve) => {
      ch.port1.onmessage = resolve;
      ch.port2.postMessage(null);
    });
    this.#last = performance.now();
    return true;
  }

  /** Release the channel (an open port keeps the process alive). */
  close(): void {
    this.#channel?.port1.close();
    this.#channel?.port2.close();
  }
}

/** Time spent inside one quantum, added to the usage once, before its last write. */
class _Quantum {
  readonly usage: Usage;
  #t0 = performance.now();
  #stamped = false;

  constructor(usage: Usage) {
    this.usage = usage;
  }

  /** Add the quantum's wall time to its usage (once). */
  stamp(): void {
    if (this.#stamped) return;
    this.#stamped = true;
    this.usage.wall_ms += Math.round(performance.now() - this.#t0);
  }
}

/**
 * What runs quanta in place of the scheduler's own rounds when processes are
 * claimed with leases (a store several workers share: see `host/worker.ts`).
 */
export interface QuantumDriver {
  /** Run until nothing is runnable in the store, or `maxQuanta` quanta were started. */
  runUntilIdle(maxQuanta?: number): Promise<RunReport>;
  /** Claim `pid` and give it one quantum if it is runnable and free. */
  quantum(pid: number): Promise<void>;
}

/** Round-robin scheduler over one kernel. */
export class Scheduler {
  #k: Kernel;
  #lastPid = 0;
  // The highest runnable pid any listing has seen: newer ones are newcomers.
  #listedUpTo = 0;
  #concurrency: number;
  #driver: QuantumDriver | null = null;
  /** Runs and single quanta in progress ({@link close} waits for them). */
  #inFlight = new Set<Promise<unknown>>();
  #closed = false;

  /** Schedule processes of `kernel`. */
  constructor(kernel: Kernel, options: SchedulerOptions = {}) {
    this.#k = kernel;
    const c = options.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isInteger(c) || c < 1 || c > 256) {
      throw new LibosError("EINVAL", "concurrency: must be an integer from 1 to 256");
    }
    this.#concurrency = c;
  }

  /**
   * Run quanta round-robin until no process is runnable or `maxQuanta` were
   * started. Each round lists the runnable processes once and gives each one
   * quantum, up to `concurrency` at a time; a process still inside a quantum
   * sits the next round out instead of holding it up. A process that becomes
   * runnable during a round (launched, woken) gets its turn in that round,
   * ahead of those still waiting in it, unless it already had one.
   */
  async runUntilIdle(maxQuanta = Number.MAX_SAFE_INTEGER): Promise<RunReport> {
    if (this.#driver) return await this.#driver.runUntilIdle(maxQuanta);
    if (this.#closed) return { quanta: 0, idle: false };
    return await this.#track(this.#runAndFlush(maxQuanta));
  }

  /**
   * Stop: no quantum starts from now on. Resolves once the runs and quanta in
   * progress have ended (a run returns, not idle, when its quanta in flight
   * end), so that the store they write can be closed after. Later runs return
   * at once.
   */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  async #track<T>(work: Promise<T>): Promise<T> {
    this.#inFlight.add(work);
    try {
      return await work;
    } finally {
      this.#inFlight.delete(work);
    }
  }

  async #runAndFlush(maxQuanta: number): Promise<RunReport> {
    const turns = new _EventLoopTurns(() => this.#k.store.flush());
    try {
      return await this.#run(maxQuanta, turns);
    } finally {
      turns.close();
      // What the run decided and recorded is durable before the host hears it ended.
      await this.#k.store.flush();
    }
  }

  async #run(maxQuanta: number, turns: _EventLoopTurns): Promise<RunReport> {
    const active = new Map<number, Promise<void>>();
    try {
      return await this.#serve(maxQuanta, turns, active);
    } catch (e) {
      // What is in flight ends before the failure is reported (it fails the same way).
      await Promise.all(active.values());
      throw e;
    }
  }

  async #serve(
    maxQuanta: number,
    turns: _EventLoopTurns,
    active: Map<number, Promise<void>>,
  ): Promise<RunReport> {
    let quanta = 0;
    // A quantum that failed the whole run (the store stopped), reported by the loop.
    // (Set by the quanta's handlers: declared so that TypeScript does not take it as null.)
    let fatal = null as { error: unknown } | null;
    const round = new _Round();
    // Settles when a quantum ends (one signal instead of racing every active quantum).
    let freed!: Promise<void>;
    let free!: () => void;
    const rearm = () => (freed = new Promise<void>((r) => (free = r)));
    rearm();
    for (;;) {
      // Processes created by another runtime on the store (libos submit) since the round
      // was listed: served next, as a launch from this host is, not a round later.
      if (await turns.maybe()) {
        const newcomers = await this.#k.store.pidsWithStatus("runnable", this.#listedUpTo);
        for (const pid of newcomers) if (!active.has(pid)) round.admit(pid);
        if (newcomers.length) this.#listedUpTo = newcomers[newcomers.length - 1];
      }
      if (this.#closed) {
        await Promise.all(active.values());
        if (fatal) throw fatal.error;
        return { quanta, idle: false };
      }
      if (round.empty && quanta < maxQuanta && await this.#newRound(round, active)) {
        return { quanta, idle: true };
      }
      while (active.size < this.#concurrency && quanta < maxQuanta && !this.#closed) {
        for (const pid of this.#k.takeRunnable()) if (!active.has(pid)) round.admit(pid);
        const turn = round.next();
        if (turn === undefined) break;
        const pid = turn.pid;
        if (active.has(pid)) continue;
        // Held at a quiescent point (a checkpoint is being taken or restored): it
        // comes back through takeRunnable once released.
        if (this.#k.isFrozen(pid)) continue;
        // A process served out of turn does not move where the rotation goes on.
        if (!turn.admitted) this.#lastPid = pid;
        quanta++;
        this.#k.enterQuantum(pid);
        active.set(
          pid,
          this.#quantum(pid).catch((error) => {
            fatal ??= { error };
          }).finally(() => {
            this.#k.leaveQuantum(pid);
            active.delete(pid);
            free();
          }),
        );
      }
      if (active.size === 0) {
        if (quanta >= maxQuanta) return { quanta, idle: false };
        continue;
      }
      await freed;
      rearm();
      if (fatal) throw fatal.error;
      if (quanta >= maxQuanta) {
        await Promise.all(active.values());
        return { quanta, idle: false };
      }
    }
  }

  // List the runnable processes (not the ended ones: a long history costs
  // nothing here) and continue after the last pid served, so every runnable
  // process gets a turn per round. True when nothing is runnable and nothing
  // is inside a quantum, decided with the listing: a quantum that ends after
  // it may leave its process runnable.
  async #newRound(round: _Round, active: Map<number, Promise<void>>): Promise<boolean> {
    await this.wakeExpired();
    // The listing below sees everything that became runnable until now.
    this.#k.takeRunnable();
    const listed = await this.#k.store.pidsWithStatus("runnable");
    if (listed.length) this.#listedUpTo = Math.max(this.#listedUpTo, listed[listed.length - 1]);
    const runnable = listed.filter((p) => !active.has(p));
    const start = runnable.findIndex((p) => p > this.#lastPid);
    round.reset(start <= 0 ? runnable : [...runnable.slice(start), ...runnable.slice(0, start)]);
    return runnable.length === 0 && active.size === 0;
  }

  /**
   * A human request left undecided past its expiry counts as denied: wake the
   * process waiting on it; its retry records the expiry and is refused (EPERM).
   */
  async wakeExpired(): Promise<void> {
    const waiting = await this.#k.store.pidsWithStatus("waiting_human");
    if (waiting.length === 0) return;
    const now = this.#k.providers.clock.now();
    const open = await this.#k.store.listHumanRequests({ status: "pending" });
    for (const pid of waiting) {
      const mine = open.filter((r) => r.pid === pid);
      // Only when every open request expired: a live one means the retry would park again.
      if (mine.length === 0 || mine.some((r) => Date.parse(r.expires_at) > now)) continue;
      // Only if still waiting: a decision, pause or kill that landed meanwhile wins.
      await this.#k.wake(pid, "waiting_human", "scheduler");
    }
  }

  /** Slots: processes that may be inside a quantum at once. */
  get concurrency(): number {
    return this.#concurrency;
  }

  /** Hand runs and single quanta to `driver` (leased claiming on a shared store). */
  useDriver(driver: QuantumDriver): void {
    this.#driver = driver;
  }

  /** Give one quantum to `pid` if it is runnable; what it wrote is committed when it returns. */
  async quantum(pid: number): Promise<void> {
    if (this.#driver) return await this.#driver.quantum(pid);
    if (this.#closed || this.#k.isFrozen(pid) || this.#k.inQuantum(pid)) return;
    this.#k.enterQuantum(pid);
    await this.#track((async () => {
      try {
        await this.#quantum(pid);
      } finally {
        this.#k.leaveQuantum(pid);
        await this.#k.store.flush();
      }
    })());
  }

  /**
   * One quantum for `pid`, through the kernel that acts for it (fenced by a
   * worker's lease, when it runs under one). `EFENCED` means the lease was
   * lost: nothing more was written and the process is another runtime's now.
   */
  async runQuantum(pid: number): Promise<void> {
    await this.#quantum(pid);
  }

  async #quantum(pid: number): Promise<void> {
    const k = this.#k.forPid(pid);
    const proc = await k.process(pid);
    if (proc.status !== "runnable") return;
    if (proc.cancel_requested) {
      await k.transition(pid, "killed", { exit_reason: "cancelled" });
      return;
    }
    const usage = k.usage(proc);
    const over = _overBudget(k.budgets(proc), usage);
    if (over) {
      await k.emit("budget.exhausted", "scheduler", `pid:${pid}`, { budget: over });
      await this.#fail(k, pid, `budget exhausted: ${over}`);
      return;
    }
    usage.quanta++;
    const q = new _Quantum(usage);
    try {
      if (proc.pending) await this.#toolStep(k, proc, proc.pending, q);
      else await this.#modelStep(k, proc, q);
    } catch (e) {
      const err = toLibosError(e);
      // The lease is gone: this runtime may write nothing more for the process.
      // Or the store stopped: nothing more may be written at all.
      if (err.code === "EFENCED" || this.#k.store.stopped) throw err;
      const cur = await k.process(pid);
      // Stamped before the process ends: no later write of it would carry the time.
      q.stamp();
      if (!isTerminal(cur.status)) await this.#fail(k, pid, `${err.code}: ${err.message}`);
    } finally {
      // Persisted with the process's next write (or flushed on close).
      q.stamp();
    }
  }

  // The scheduler ending a process is recorded like any other decision.
  async #fail(k: Kernel, pid: number, reason: string): Promise<void> {
    await k.transition(pid, "failed", { exit_code: 1, exit_reason: reason }, "scheduler");
    await k.audit({
      actor: "scheduler",
      action: "process.fail",
      target: `process:${pid}`,
      input_refs: null,
      output_refs: null,
      capability_refs: [],
      decision: "info",
      reason,
      correlation_id: null,
      parent_record_id: null,
    });
  }

  async #modelStep(k: Kernel, proc: ProcessRecord, q: _Quantum): Promise<void> {
    if (!proc.model) {
      await k.transition(proc.pid, "exited", { exit_code: 0, exit_reason: "no model" });
      return;
    }
    const kind = proc.model.kind;
    if (!Object.hasOwn(k.providers.models, kind)) {
      throw new LibosError("ENOENT", `model: no provider for '${kind}'`);
    }
    const provider = k.providers.models[kind];
    // A provider whose step reaches outside (a model API) must not act on state
    // that a crash could still take back: commit what is deferred first.
    if (!provider.pure) await k.store.flush();
    const decision = await provider.next(k.modelContext(proc));
    const model = { kind, state: _checkCursor(decision.cursor) };
    const step = decision.step;
    if (step.type === "exit") {
      // The model's exit goes through the same primitive as a tool's, so it is audited.
      await this.#decide(k, proc.pid, model, undefined, decision, q);
      const args: Record<string, unknown> = { code: step.code };
      if (step.result !== undefined) args.result = step.result;
      await syscall(k, proc.pid, "process.exit", args);
      return;
    }
    // Durable before the tool runs: a restart resumes the same action, never re-asks the model.
    const action: PendingAction = { tool: step.tool, args: step.args };
    if (step.error) action.error = { code: step.error.code, message: step.error.message };
    else if (nestsDeeper(step.args)) {
      // Stored as the pending action, it would overflow the stack inside a commit.
      action.args = {};
      action.error = {
        code: "EINVAL",
        message: `${step.tool}: arguments nest deeper than ${MAX_JSON_DEPTH} levels`,
      };
    }
    await this.#decide(k, proc.pid, model, action, decision, q);
  }

  // Store a decision: the cursor, the next action and the model's new log
  // entries land together. The stored status stays `runnable` (a model step
  // has no effect a crash could leave half done; a crash re-asks the model);
  // a process that ended meanwhile (a signal) keeps its end. The commit is
  // deferred: it lands with the next write that may precede an effect (at the
  // latest this process's `running` mark, before its action runs).
  async #decide(
    k: Kernel,
    pid: number,
    model: ModelState,
    pending: PendingAction | undefined,
    decision: ModelDecision,
    q: _Quantum,
  ): Promise<void> {
    q.stamp();
    const patch = { model, usage: { ...q.usage }, updated_at: k.now() };
    const next = pending ? { ...patch, pending } : patch;
    const log = decision.log ?? [];
    await k.store.transaction(async (tx) => {
      if (await tx.updateProcess(pid, next, _LIVE) && log.length) await tx.appendModelLog(pid, log);
    }, { defer: true });
  }

  async #toolStep(
    k: Kernel,
    proc: ProcessRecord,
    action: PendingAction,
    q: _Quantum,
  ): Promise<void> {
    // Durable before the tool's first effect: from here on a crash records the
    // step as unknown (EIO) instead of running it a second time.
    if (!(await k.markRunning(proc.pid))) return;
    const stepNo = await k.store.stepCount(proc.pid);
    let result: StepResult;
    const builtin = Object.hasOwn(BUILTIN_TOOLS, action.tool) && proc.tools.includes(action.tool);
    const jit = Object.hasOwn(proc.jit_tools ?? {}, action.tool);
    if (action.outcome) {
      // Caught by a crash: never run again; its result is what the human answered.
      const answered = await this.#outcome(k, action, stepNo);
      if (!answered) {
        await k.transition(proc.pid, "waiting_human", {}, "scheduler");
        return;
      }
      result = answered;
    } else if (action.error) {
      // The model's call could not be run as given: its error is the result.
      result = { step: stepNo, tool: action.tool, ok: false, error: action.error };
    } else if (!builtin && !jit) {
      const error = {
        code: "ENOENT",
        message: `tool: '${action.tool}' is not in process ${proc.pid}'s tool table`,
      };
      await k.audit({
        actor: `pid:${proc.pid}`,
        action: "tool.call",
        target: `tool:${action.tool}`,
        input_refs: payloadRef(action.args),
        output_refs: { error: "ENOENT" },
        capability_refs: [],
        decision: "error",
        reason: error.message,
        correlation_id: null,
        parent_record_id: null,
      });
      result = { step: stepNo, tool: action.tool, ok: false, error };
    } else {
      const correlationId = k.newId("step");
      const sys = (name: string, args: Record<string, unknown>) =>
        syscall(k, proc.pid, name, args, { correlationId });
      k.beginJournal(proc.pid, action.journal ?? []);
      try {
        const value = jit
          ? await sys("jit.call", { name: action.tool, args: action.args })
          : await runBuiltin(action.tool, action.args, sys);
        result = { step: stepNo, tool: action.tool, ok: true, value };
      } catch (e) {
        const err = e instanceof Error && (e as { code?: string }).code === "EINVAL"
          ? new LibosError("EINVAL", e.message)
          : toLibosError(e);
        if (err.code === "EAGAIN") {
          await this.#park(k, proc.pid, action, err);
          return;
        }
        result = { step: stepNo, tool: action.tool, ok: false, error: err.toJSON() };
      } finally {
        k.endJournal(proc.pid);
      }
    }
    await this.#finishStep(k, proc.pid, result, q);
  }

  // The result of a step a crash interrupted, from the human's answers on
  // whether its effects happened; null while one of them is still open.
  async #outcome(k: Kernel, action: PendingAction, step: number): Promise<StepResult | null> {
    const ids = action.outcome?.request_ids ?? [];
    const reqs = [];
    for (const id of ids) reqs.push(await k.store.getHumanRequest(id));
    const now = k.providers.clock.now();
    if (reqs.some((r) => r?.status === "pending" && Date.parse(r.expires_at) > now)) return null;
    const effects = reqs.map((r) => ({
      effect_id: r?.effect_id ?? null,
      syscall: r?.effect ?? null,
      resource: r?.resource ?? null,
      answer: r?.status === "done" || r?.status === "failed" ? r.status : "unknown",
      answered_by: r?.decided_by ?? null,
    }));
    const tool = action.tool;
    const stopped = "the runtime stopped during this step (it is not run again)";
    const failed = effects.filter((e) => e.answer === "failed");
    if (failed.length) {
      const what = failed.map((e) => `${e.syscall} on ${e.resource}`).join(", ");
      return {
        step,
        tool,
        ok: false,
        error: {
          code: "EIO",
          message: `${stopped}; ${failed[0].answered_by} answered that ${what} did not happen`,
        },
      };
    }
    if (effects.length && effects.every((e) => e.answer === "done")) {
      return { step, tool, ok: true, value: { outcome: "done", note: stopped, effects } };
    }
    return {
      step,
      tool,
      ok: false,
      error: {
        code: "EIO",
        message: `${stopped}; no human said whether it happened: outcome unknown`,
      },
    };
  }

  // Blocked on a child or a human: keep the action and what it already did; it
  // is retried when woken, replaying its completed syscalls from the journal.
  async #park(k: Kernel, pid: number, action: PendingAction, err: LibosError): Promise<void> {
    const journal = k.endJournal(pid);
    const target = k.takeWaitTarget(pid);
    await k.saveProcess(pid, { pending: { ...action, journal } });
    const cur = await k.process(pid);
    const to = err.wait === "human" ? "waiting_human" : "waiting_event";
    if (cur.status === "running") await k.transition(pid, to);
    // A child that ended while we were parking found nobody waiting: wake ourselves.
    if (to === "waiting_event" && k.takePendingWake(pid)) {
      await k.wake(pid, "waiting_event");
    }
    // The same when the child ended on another runtime (a worker on a shared
    // store): it is read again now that the parking is committed.
    if (to === "waiting_event" && target !== undefined) {
      const child = await k.store.getProcess(target);
      if (child && isTerminal(child.status)) await k.wake(pid, "waiting_event");
    }
    // A decision that landed while we were parking found nobody waiting: wake ourselves.
    if (
      to === "waiting_human" &&
      (await k.store.listHumanRequests({ pid, status: "pending" })).length === 0
    ) {
      await k.wake(pid, "waiting_human");
    }
  }

  // The step's result, its index, the cleared action and the status back to
  // runnable land together (unless the step itself moved the status: an exit,
  // a pause). No event for running -> runnable: see Kernel.markRunning. The
  // commit is deferred like a decision's: no effect depends on it, and a crash
  // before it lands finds the step `running` and records it as unknown, as for
  // a crash inside the step.
  async #finishStep(k0: Kernel, pid: number, result: StepResult, q: _Quantum): Promise<void> {
    q.stamp();
    await k0.atomically(async (k) => {
      await this.#record(k, pid, result);
      const done = { pending: null, usage: { ...q.usage }, updated_at: k.now() };
      if (!(await k.store.updateProcess(pid, { ...done, status: "runnable" }, "running"))) {
        await k.store.updateProcess(pid, done);
      }
    }, { defer: true });
  }

  /**
   * Record a tool step's result and clear the pending action (one transaction;
   * through `kernel` when the caller already holds one open).
   */
  async recordStep(
    pid: number,
    result: StepResult,
    kernel: Kernel = this.#k.forPid(pid),
  ): Promise<void> {
    // The result and the cleared pending action land together: a crash between
    // them would otherwise record the step a second time on recovery.
    await kernel.atomically(async (k) => {
      await this.#record(k, pid, result);
      await k.saveProcess(pid, { pending: null });
    });
  }

  // The result as a tool_result object named step-<n> (agents and the console
  // read it), indexed by step number (the model and the scheduler find it by key).
  async #record(k: Kernel, pid: number, result: StepResult): Promise<void> {
    const proc = await k.process(pid);
    // Stored like anything the process writes: it counts against max_store_bytes,
    // and one that would pass it is not kept (the step happened: an error says so).
    const u = k.usage(proc);
    const max = k.budgets(proc).max_store_bytes;
    let bytes = storeBytes(JSON.stringify(result));
    if (max !== null && max !== undefined && (u.store_bytes ?? 0) + bytes > max) {
      result = {
        step: result.step,
        tool: result.tool,
        ok: false,
        error: {
          code: "ELIMIT",
          message: `its result of ${bytes} bytes was not kept: over max_store_bytes ${max}`,
        },
      };
      bytes = storeBytes(JSON.stringify(result));
    }
    u.store_bytes = (u.store_bytes ?? 0) + bytes;
    const obj = await k.insertObject({
      namespace: proc.namespace,
      kind: "tool_result",
      name: `step-${result.step}`,
      // What a tool returned is at most as sensitive as everything its process has read.
      label: proc.taint,
      payload: result,
      created_by: pid,
    });
    await k.store.insertStep(pid, result.step, obj.oid);
  }

  /** Tool results of a process, in step order. */
  async steps(pid: number): Promise<StepResult[]> {
    await this.#k.process(pid);
    return (await this.#k.store.listSteps(pid)).map((o) => o.payload as StepResult);
  }
}

/** The budget of `b` that `usage` has used up, named, or null. */
function _overBudget(b: Budgets, usage: Usage): string | null {
  if (b.max_quanta !== null && usage.quanta >= b.max_quanta) return `max_quanta ${b.max_quanta}`;
  if (b.max_wall_ms !== null && usage.wall_ms >= b.max_wall_ms) {
    return `max_wall_ms ${b.max_wall_ms}`;
  }
  if (b.max_syscalls !== null && usage.syscalls >= b.max_syscalls) {
    return `max_syscalls ${b.max_syscalls}`;
  }
  // Step results are stored whatever they hold: past the budget, the process stops.
  const bytes = b.max_store_bytes;
  if (bytes !== null && bytes !== undefined && (usage.store_bytes ?? 0) >= bytes) {
    return `max_store_bytes ${bytes}`;
  }
  return null;
}

/** A model's cursor is rewritten every step: it must stay a small JSON object. */
function _checkCursor(cursor: unknown): Record<string, unknown> {
  if (cursor === null || typeof cursor !== "object" || Array.isArray(cursor)) {
    throw new LibosError("EINVAL", "model: the cursor must be a JSON object");
  }
  const size = JSON.stringify(cursor).length;
  if (size > MAX_CURSOR_CHARS) {
    throw new LibosError(
      "EINVAL",
      `model: cursor of ${size} characters is over ${MAX_CURSOR_CHARS}; keep history in the model log`,
    );
  }
  return cursor as Record<string, unknown>;
}
