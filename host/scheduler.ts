/**
 * The scheduler: async round-robin over runnable processes. A quantum is one
 * model step (decide the next action, durably) or one tool step (run that
 * action through the builtin tool and the syscall table). Per-process budgets
 * (quanta, wall time, syscalls) stop one busy process from starving others.
 * @module
 */
import { syscall } from "../primitives/mod.ts";
import { BUILTIN_TOOLS, runBuiltin } from "../tools/builtin.ts";
import { payloadRef } from "../runtime/canonical.ts";
import { LibosError, toLibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import type { PendingAction, ProcessRecord } from "../runtime/types.ts";

/** What a tool step produced (also stored as a `tool_result` object). */
export type StepResult =
  | { step: number; tool: string; ok: true; value: unknown }
  | { step: number; tool: string; ok: false; error: { code: string; message: string } };

/** Outcome of {@link Scheduler.runUntilIdle}. */
export interface RunReport {
  /** Quanta used. */
  quanta: number;
  /** True when nothing was left to run (false when `maxQuanta` stopped it). */
  idle: boolean;
}

/** Options of a {@link Scheduler}. */
export interface SchedulerOptions {
  /**
   * How many processes may be inside a quantum at once (default 1). Above 1, a
   * process stuck in a long tool step (a slow command, a JIT call) holds one
   * slot while the others keep running; each process still runs one quantum
   * at a time, in round-robin order.
   */
  concurrency?: number;
}

/** Round-robin scheduler over one kernel. */
export class Scheduler {
  #k: Kernel;
  #lastPid = 0;
  #concurrency: number;

  /** Schedule processes of `kernel`. */
  constructor(kernel: Kernel, options: SchedulerOptions = {}) {
    this.#k = kernel;
    const c = options.concurrency ?? 1;
    if (!Number.isInteger(c) || c < 1 || c > 256) {
      throw new LibosError("EINVAL", "concurrency: must be an integer from 1 to 256");
    }
    this.#concurrency = c;
  }

  /**
   * Run quanta round-robin until no process is runnable or `maxQuanta` were
   * started. Each round lists the runnable processes once and gives each one
   * quantum, up to `concurrency` at a time; a process still inside a quantum
   * sits the next round out instead of holding it up.
   */
  async runUntilIdle(maxQuanta = Number.MAX_SAFE_INTEGER): Promise<RunReport> {
    let quanta = 0;
    const active = new Map<number, Promise<void>>();
    let round: number[] = [];
    for (;;) {
      if (round.length === 0 && quanta < maxQuanta) {
        const procs = await this.#k.store.listProcesses();
        await this.#wakeExpired(procs);
        const runnable = procs.filter((p) => p.status === "runnable" && !active.has(p.pid));
        // Continue after the last pid served, so every runnable process gets a turn per round.
        const start = runnable.findIndex((p) => p.pid > this.#lastPid);
        const order = start <= 0
          ? runnable
          : [...runnable.slice(start), ...runnable.slice(0, start)];
        round = order.map((p) => p.pid);
        if (round.length === 0 && active.size === 0) return { quanta, idle: true };
      }
      while (round.length > 0 && active.size < this.#concurrency && quanta < maxQuanta) {
        const pid = round.shift()!;
        if (active.has(pid)) continue;
        this.#lastPid = pid;
        quanta++;
        active.set(pid, this.quantum(pid).finally(() => active.delete(pid)));
      }
      if (active.size === 0) {
        if (quanta >= maxQuanta) return { quanta, idle: false };
        continue;
      }
      await Promise.race(active.values());
      if (quanta >= maxQuanta && round.length === 0) {
        await Promise.all(active.values());
        return { quanta, idle: false };
      }
    }
  }

  // A human request left undecided past its expiry counts as denied: wake the
  // process waiting on it; its retry records the expiry and is refused (EPERM).
  async #wakeExpired(procs: ProcessRecord[]): Promise<void> {
    const waiting = procs.filter((p) => p.status === "waiting_human");
    if (waiting.length === 0) return;
    const now = this.#k.providers.clock.now();
    const open = await this.#k.store.listHumanRequests({ status: "pending" });
    for (const p of waiting) {
      const mine = open.filter((r) => r.pid === p.pid);
      // Only when every open request expired: a live one means the retry would park again.
      if (mine.length === 0 || mine.some((r) => Date.parse(r.expires_at) > now)) continue;
      // Only if still waiting: a decision, pause or kill that landed meanwhile wins.
      if (await this.#k.wake(p.pid, "waiting_human", "scheduler")) p.status = "runnable";
    }
  }

  /** Give one quantum to `pid` if it is runnable. */
  async quantum(pid: number): Promise<void> {
    const k = this.#k;
    let proc = await k.process(pid);
    if (proc.status !== "runnable") return;
    if (proc.cancel_requested) {
      await k.transition(pid, "killed", { exit_reason: "cancelled" });
      return;
    }
    const usage = k.usage(proc);
    const b = proc.budgets;
    const over = b.max_quanta !== null && usage.quanta >= b.max_quanta
      ? `max_quanta ${b.max_quanta}`
      : b.max_wall_ms !== null && usage.wall_ms >= b.max_wall_ms
      ? `max_wall_ms ${b.max_wall_ms}`
      : b.max_syscalls !== null && usage.syscalls >= b.max_syscalls
      ? `max_syscalls ${b.max_syscalls}`
      : null;
    if (over) {
      await k.emit("budget.exhausted", "scheduler", `pid:${pid}`, { budget: over });
      await this.#fail(pid, `budget exhausted: ${over}`);
      return;
    }
    proc = await k.transition(pid, "running");
    const t0 = performance.now();
    usage.quanta++;
    try {
      if (proc.pending) await this.#toolStep(proc, proc.pending);
      else await this.#modelStep(proc);
    } catch (e) {
      const err = toLibosError(e);
      const cur = await k.process(pid);
      if (!isTerminal(cur.status)) await this.#fail(pid, `${err.code}: ${err.message}`);
      return;
    } finally {
      usage.wall_ms += Math.round(performance.now() - t0);
    }
    const cur = await k.process(pid);
    if (cur.status === "running") await k.transition(pid, "runnable");
    else await k.saveProcess(pid, {});
  }

  // The scheduler ending a process is recorded like any other decision.
  async #fail(pid: number, reason: string): Promise<void> {
    await this.#k.transition(pid, "failed", { exit_code: 1, exit_reason: reason }, "scheduler");
    await this.#k.audit({
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

  async #modelStep(proc: ProcessRecord): Promise<void> {
    const k = this.#k;
    if (!proc.model) {
      await k.transition(proc.pid, "exited", { exit_code: 0, exit_reason: "no model" });
      return;
    }
    const model = k.providers.models[proc.model.kind];
    if (!model) throw new LibosError("ENOENT", `model: no provider for '${proc.model.kind}'`);
    const results = await this.steps(proc.pid);
    const { step, state } = await model.next(proc, results.at(-1) ?? null);
    const modelState = { kind: proc.model.kind, state };
    if (step.type === "exit") {
      // The model's exit goes through the same primitive as a tool's, so it is audited.
      await k.saveProcess(proc.pid, { model: modelState });
      const args: Record<string, unknown> = { code: step.code };
      if (step.result !== undefined) args.result = step.result;
      await syscall(k, proc.pid, "process.exit", args);
      return;
    }
    // Durable before the tool runs: a restart resumes the same action, never re-asks the model.
    await k.saveProcess(proc.pid, {
      model: modelState,
      pending: { tool: step.tool, args: step.args },
    });
  }

  async #toolStep(proc: ProcessRecord, action: PendingAction): Promise<void> {
    const k = this.#k;
    const stepNo = (await this.steps(proc.pid)).length;
    let result: StepResult;
    const builtin = Object.hasOwn(BUILTIN_TOOLS, action.tool) && proc.tools.includes(action.tool);
    const jit = Object.hasOwn(proc.jit_tools ?? {}, action.tool);
    if (!builtin && !jit) {
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
          // Blocked on a child or a human: keep the action and what it already did;
          // it is retried when woken, replaying its completed syscalls from the journal.
          const journal = k.endJournal(proc.pid);
          await k.saveProcess(proc.pid, { pending: { ...action, journal } });
          const cur = await k.process(proc.pid);
          const to = err.wait === "human" ? "waiting_human" : "waiting_event";
          if (cur.status === "running") await k.transition(proc.pid, to);
          // A child that ended while we were parking found nobody waiting: wake ourselves.
          if (to === "waiting_event" && k.takePendingWake(proc.pid)) {
            await k.wake(proc.pid, "waiting_event");
          }
          // A decision that landed while we were parking found nobody waiting: wake ourselves.
          if (
            to === "waiting_human" &&
            (await k.store.listHumanRequests({ pid: proc.pid, status: "pending" })).length === 0
          ) {
            await k.wake(proc.pid, "waiting_human");
          }
          return;
        }
        result = { step: stepNo, tool: action.tool, ok: false, error: err.toJSON() };
      } finally {
        k.endJournal(proc.pid);
      }
    }
    await this.recordStep(proc.pid, result);
  }

  /** Record a tool step's result and clear the pending action (one transaction). */
  async recordStep(pid: number, result: StepResult): Promise<void> {
    // The result and the cleared pending action land together: a crash between
    // them would otherwise record the step a second time on recovery.
    await this.#k.atomically(async (k) => {
      const proc = await k.process(pid);
      await k.insertObject({
        namespace: proc.namespace,
        kind: "tool_result",
        name: `step-${result.step}`,
        // What a tool returned is at most as sensitive as everything its process has read.
        label: proc.taint,
        payload: result,
        created_by: pid,
      });
      await k.saveProcess(pid, { pending: null });
    });
  }

  /** Tool results of a process, in step order. */
  async steps(pid: number): Promise<StepResult[]> {
    const proc = await this.#k.process(pid);
    return (await this.#k.store.listObjects(proc.namespace))
      .filter((o) => o.kind === "tool_result" && o.created_by === pid)
      .map((o) => o.payload as StepResult);
  }
}
