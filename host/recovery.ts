/**
 * What a runtime that stopped (crashed, killed, or a worker whose lease ran
 * out) left behind. Effects whose outcome was never recorded become
 * `unknown` (never replayed) and a human is asked whether each happened; a
 * process caught mid-step waits for those answers, which become its step's
 * result, or, when its step had no external effect under way, gets "outcome
 * unknown" (EIO) as that result. A model call with no recorded outcome is
 * `unknown` and its turn is asked again (no reply was kept).
 *
 * A SQLite store's one scheduler does this for the whole store when it opens
 * ({@link recoverStore}); on a store several workers share, only for a process
 * whose lease expired, by the worker that claims it next ({@link recoverProcess}),
 * never for another live worker's, and only once what that worker started has
 * surely ended.
 * @module
 */
import { askOutcome } from "../primitives/authorize.ts";
import { payloadRef } from "../runtime/canonical.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { redactionFor } from "../runtime/labels.ts";
import type { EffectRecord, ProcessRecord } from "../runtime/types.ts";
import type { Scheduler } from "./scheduler.ts";
import { SHELL_DEADLINE_GRACE_MS, SHELL_TIMEOUT_MS } from "../primitives/shell.ts";

/** Options of {@link recoverStore}. */
export interface RecoverStoreOptions {
  /**
   * The runtime that left the store may still be alive (it stalled past its
   * lease rather than died), so an effect it started may still be under way:
   * a process with such an effect (before its `ends_by`) is left as it is.
   */
  underWayMayRun?: boolean;
}

/**
 * Recover everything a stopped runtime left in the store (one scheduler, at
 * open). Returns 0, or, when a process was left because an effect of it may
 * still be under way, how many ms until it should be recovered (call again).
 */
export async function recoverStore(
  k: Kernel,
  scheduler: Scheduler,
  options: RecoverStoreOptions = {},
): Promise<number> {
  if (options.underWayMayRun) return await _recoverEach(k, scheduler);
  const pending = await k.store.listEffects("pending");
  const unknown = await k.store.markPendingEffectsUnknown(k.now());
  if (unknown > 0) await k.emit("effect.unknown", "kernel", "ledger", { count: unknown });
  // A model call with no recorded outcome is `unknown`; its turn is asked again (no
  // reply was kept, and a call has no effect a human could confirm: see the README).
  const calls = await k.store.markPendingModelCallsUnknown(k.now());
  if (calls > 0) await k.emit("effect.unknown", "kernel", "model_calls", { count: calls });
  const running = await k.store.pidsWithStatus("running");
  if (pending.length === 0 && running.length === 0) return 0;
  const byPid = new Map<number, EffectRecord[]>();
  for (const e of pending) byPid.set(e.pid, [...(byPid.get(e.pid) ?? []), e]);
  await k.atomically(async (tx) => {
    for (const pid of running) {
      const effects = byPid.get(pid) ?? [];
      byPid.delete(pid);
      await recoverInterrupted(tx, scheduler, await tx.process(pid), effects);
    }
    // Effects of calls made outside a step (a host's syscall): the question alone.
    for (const [pid, effects] of byPid) {
      const p = await tx.store.getProcess(pid);
      for (const e of effects) await askOutcome(tx, e, p, null);
    }
  });
  return 0;
}

// Process by process, leaving those with an effect that may still be under way.
async function _recoverEach(k: Kernel, scheduler: Scheduler): Promise<number> {
  const pids = new Set((await k.store.listEffects("pending")).map((e) => e.pid));
  for (const pid of await k.store.pidsWithStatus("running")) pids.add(pid);
  let wait = 0;
  for (const pid of pids) wait = Math.max(wait, await recoverProcess(k, scheduler, pid));
  return wait;
}

/**
 * How far the clocks of a fleet's machines may disagree (ms): an effect
 * another machine started is taken to have ended this long after its `ends_by`.
 */
export const FLEET_CLOCK_SKEW_MS = 1_000;

/** Longest a takeover is put off for one effect (a corrupt `ends_by` holds nothing forever). */
const _MAX_DEFER_MS = SHELL_TIMEOUT_MS.max + SHELL_DEADLINE_GRACE_MS + FLEET_CLOCK_SKEW_MS;

/**
 * Recover one process a worker took over from a worker whose lease expired,
 * through `k` (the kernel fenced by the new lease): its pending effects and
 * model calls, and its step if it was caught inside one.
 *
 * The worker that lost the lease may not be dead (a stalled one is not): an
 * effect it started may still be under way. While one can be (before its
 * `ends_by`), nothing is recovered and no human is asked whether it happened:
 * this returns how many ms to wait (0 once recovered).
 */
export async function recoverProcess(
  k: Kernel,
  scheduler: Scheduler,
  pid: number,
): Promise<number> {
  const pending = (await k.store.listEffects("pending")).filter((e) => e.pid === pid);
  const wait = untilEnded(pending, Date.now());
  if (wait > 0) {
    // Visible to whoever watches (the console, `libos events`): why nothing is asked yet.
    await k.emit("recovery.deferred", "recovery", `pid:${pid}`, {
      until: new Date(Date.now() + wait).toISOString(),
      effects: pending.map((e) => e.effect_id),
    });
    return wait;
  }
  const unknown = await k.store.markPendingEffectsUnknown(k.now(), pid);
  if (unknown > 0) {
    await k.emit("effect.unknown", "recovery", "ledger", { pid, count: unknown });
  }
  const calls = await k.store.markPendingModelCallsUnknown(k.now(), pid);
  if (calls > 0) {
    await k.emit("effect.unknown", "recovery", "model_calls", { pid, count: calls });
  }
  const p = await k.process(pid);
  if (p.status !== "running" && pending.length === 0) return 0;
  await k.atomically(async (tx) => {
    if (p.status === "running") await recoverInterrupted(tx, scheduler, p, pending);
    else for (const e of pending) await askOutcome(tx, e, p, null);
  });
  return 0;
}

/** Ms from `now` until every one of `effects` has surely ended (0: all have). */
export function untilEnded(effects: readonly EffectRecord[], now: number): number {
  let wait = 0;
  for (const e of effects) {
    const end = e.ends_by ? Date.parse(e.ends_by) : NaN;
    if (Number.isNaN(end)) continue;
    wait = Math.max(wait, Math.min(end + FLEET_CLOCK_SKEW_MS - now, _MAX_DEFER_MS));
  }
  return Math.ceil(wait);
}

/** A process caught inside a step: ask about its effects, or record the step unknown. */
export async function recoverInterrupted(
  k: Kernel,
  scheduler: Scheduler,
  p: ProcessRecord,
  effects: EffectRecord[],
): Promise<void> {
  if (p.pending && effects.length) {
    const request_ids: string[] = [];
    for (const e of effects) request_ids.push((await askOutcome(k, e, p, p.pending)).request_id);
    const { journal: _done, ...action } = p.pending;
    const outcome = { effect_ids: effects.map((e) => e.effect_id), request_ids };
    await k.saveProcess(p.pid, { pending: { ...action, outcome } });
    await k.transition(p.pid, "waiting_human", {}, "recovery");
    return;
  }
  if (p.pending) {
    await k.audit({
      actor: "kernel",
      action: "step.interrupted",
      target: `process:${p.pid}`,
      input_refs: {
        tool: p.pending.tool,
        args: payloadRef(p.pending.args, redactionFor(p.taint)),
      },
      output_refs: null,
      capability_refs: [],
      decision: "info",
      reason: "the runtime stopped during this step with no external effect under way; " +
        "its result is unknown (EIO); not replayed",
      correlation_id: null,
      parent_record_id: null,
    });
    await scheduler.recordStep(p.pid, {
      step: await k.store.stepCount(p.pid),
      tool: p.pending.tool,
      ok: false,
      error: {
        code: "EIO",
        message: "runtime stopped during this step; outcome unknown, not replayed",
      },
    }, k);
  }
  await k.transition(p.pid, "runnable", { pending: null }, "recovery");
}
