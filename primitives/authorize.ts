/**
 * The authorization gate every primitive passes through: the caller's live
 * capabilities decide (DENY > exact one-shot binding > ASK > ALLOW, default
 * deny), policy can only make the answer stricter, and an ASK goes to the
 * human channel, whose answer becomes a capability (never text from a tool).
 * @module
 */
import { decide } from "../runtime/capabilities.ts";
import { payloadRef } from "../runtime/canonical.ts";
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import { guardText, maxLabel, mayFlow, redactionFor } from "../runtime/labels.ts";
import type { HumanAnswer, HumanReply, OutcomeAnswer } from "../runtime/providers/types.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type {
  Capability,
  Effect,
  EffectRecord,
  HumanRequestRecord,
  HumanRequestStatus,
  Label,
  PendingAction,
  ProcessRecord,
  Right,
} from "../runtime/types.ts";
import { storeBytes } from "../runtime/budgets.ts";
import { type Call, chargeStore } from "./call.ts";

/** What a primitive asks the gate. */
export interface AuthRequest {
  /** Concrete resource (no wildcard). */
  resource: string;
  /** Right needed. */
  right: Right;
  /** What policy says on top of capabilities (`allow` if it has no opinion). */
  policy?: Effect;
  /** Why policy said so (shown to the human). */
  policyReason?: string;
  /** Label of the data involved (shown to the human). */
  label?: Label;
}

const _STRICTNESS: Record<Effect, number> = { allow: 0, ask: 1, deny: 2 };

/**
 * Authorize `req` for the caller or throw EPERM. Consumes one use of a
 * limited capability. Returns the capability that allowed.
 */
export async function authorize(call: Call, req: AuthRequest): Promise<Capability> {
  const k = call.k;
  const binding = { syscall: call.name, args_hash: call.argsHash };
  for (let round = 0; round < 4; round++) {
    const caps = await k.store.capabilitiesOf(call.proc.pid);
    const d = decide(caps, req.resource, req.right, binding, k.providers.clock.now());
    if (d.cap) call.capRefs.push(d.cap.cap_id);
    let effect = d.effect;
    let reason = d.reason;
    let rule = d.cap?.cap_id ?? "policy";
    // Policy can only tighten; a human-issued allow already carries consent.
    const policy = req.policy ?? "allow";
    // A human's consent answers a policy ASK, never a policy DENY.
    const consented = d.humanConsent && policy === "ask";
    if (effect !== "deny" && _STRICTNESS[policy] > _STRICTNESS[effect] && !consented) {
      effect = policy;
      reason = req.policyReason ?? `policy says ${policy}`;
      rule = "policy";
    }
    if (effect === "deny") throw denied(`${call.name} ${req.resource}: ${reason}`);
    if (effect === "allow") {
      const cap = d.cap!;
      if (cap.uses_remaining !== null) {
        // Lost a race for the last use: decide again on fresh rows.
        if (!(await k.store.consumeCapability(cap.cap_id))) continue;
        await k.emit("capability.consumed", `pid:${call.proc.pid}`, cap.cap_id, {
          uses_remaining: cap.uses_remaining - 1,
        }, call.correlationId);
      }
      return cap;
    }
    await _askHuman(call, req, rule, reason);
  }
  throw denied(`${call.name} ${req.resource}: authorization did not settle`);
}

/** How long a human request stays open; after that it counts as denied. */
export const HUMAN_REQUEST_TTL_MS = 24 * 60 * 60 * 1000;

const _STATUS: Record<HumanAnswer, HumanRequestStatus> = {
  allow_once: "allowed_once",
  always_allow: "allowed_always",
  deny: "denied",
  always_deny: "denied_always",
};

/**
 * Answer an ASK. A request for exactly this call (same process, syscall,
 * argument hash, resource and right) that is still pending parks the caller
 * (EAGAIN, wait "human"); one that was denied once is consumed and denies.
 * Otherwise a durable request is queued and the human channel is asked; it
 * may answer now or defer. Answers become capabilities in applyDecision,
 * never from text a tool or model wrote.
 */
async function _askHuman(
  call: Call,
  req: AuthRequest,
  rule: string,
  reason: string,
): Promise<void> {
  const k = call.k;
  const pid = call.proc.pid;
  const nowMs = k.providers.clock.now();
  for (const r of await k.store.listHumanRequests({ pid })) {
    if (r.kind === "outcome") continue;
    if (r.effect !== call.name || r.args_hash !== call.argsHash) continue;
    if (r.resource !== req.resource || r.right !== req.right) continue;
    if (r.status === "pending") {
      if (Date.parse(r.expires_at) > nowMs) {
        throw new LibosError(
          "EAGAIN",
          `${call.name}: waiting for human decision ${r.request_id}`,
          "human",
        );
      }
      await k.store.updateHumanRequest(r.request_id, { status: "expired" }, "pending");
      throw denied(`${call.name} ${req.resource}: human request ${r.request_id} expired`);
    }
    if (
      r.status === "denied" &&
      await k.store.updateHumanRequest(r.request_id, { status: "consumed" }, "denied")
    ) {
      throw denied(`${call.name} ${req.resource}: human answered deny (${r.request_id})`);
    }
  }
  const label = maxLabel(req.label ?? call.proc.taint, call.proc.taint);
  // The human sees what it is asked about (the exact arguments), unless the caller
  // holds data above the human's clearance: then only labels and hashes, like the audit.
  const visible = mayFlow(label, call.proc.policy.human_clearance);
  const shown = visible ? "public" : label;
  const request: HumanRequestRecord = {
    request_id: k.newId("hr"),
    pid,
    effect: call.name,
    args: visible ? call.args : payloadRef(call.args, label),
    args_hash: call.argsHash,
    resource: guardText(shown, req.resource),
    right: req.right,
    rule,
    summary: guardText(
      shown,
      `process ${pid} wants to ${req.right} ${req.resource} via ${call.name} (${reason})`,
    ),
    labels: [...new Set([label, call.proc.taint])],
    status: "pending",
    created_at: new Date(nowMs).toISOString(),
    expires_at: new Date(nowMs + HUMAN_REQUEST_TTL_MS).toISOString(),
    decided_by: null,
    decided_at: null,
    correlation_id: call.correlationId,
  };
  // The arguments are stored with it (up to the 16 MiB a call may carry): they count.
  chargeStore(call, storeBytes(JSON.stringify(request.args)));
  // Stored with the real resource (it is what a decision grants on); shown redacted.
  await k.store.insertHumanRequest({ ...request, resource: req.resource });
  await k.audit({
    actor: `pid:${pid}`,
    action: "human.ask",
    target: guardText(call.proc.taint, req.resource),
    input_refs: {
      request_id: request.request_id,
      args: payloadRef(call.args, redactionFor(label)),
    },
    output_refs: null,
    capability_refs: rule === "policy" ? [] : [rule],
    decision: "ask",
    reason: guardText(call.proc.taint, reason),
    correlation_id: call.correlationId,
    parent_record_id: null,
  });
  await k.emit(
    "human.asked",
    `pid:${pid}`,
    "human:owner",
    {
      request_id: request.request_id,
      effect: request.effect,
      resource: request.resource,
      summary: request.summary,
    },
    call.correlationId,
    1,
  );
  const reply: HumanReply = await k.providers.human.decide(request);
  if (reply === "defer") {
    throw new LibosError(
      "EAGAIN",
      `${call.name}: waiting for human decision ${request.request_id}`,
      "human",
    );
  }
  await applyDecision(k, request.request_id, reply, "human:owner");
  if (reply === "always_deny") {
    throw denied(`${call.name} ${req.resource}: human answered always_deny`);
  }
  if (reply === "deny") {
    await k.store.updateHumanRequest(request.request_id, { status: "consumed" }, "denied");
    throw denied(`${call.name} ${req.resource}: human answered deny`);
  }
}

/**
 * Record a human decision on a pending request and turn it into authority:
 * allow once mints an exact one-shot capability bound to the request's
 * syscall and argument hash; always allow an ALLOW on exactly that resource;
 * always deny a DENY on it; deny once is kept on the request and consumed by
 * the retried call. The only place human-issued capabilities are minted. A
 * process waiting on the request becomes runnable and retries its action.
 */
export async function applyDecision(
  k: Kernel,
  requestId: string,
  answer: HumanAnswer | OutcomeAnswer,
  decidedBy: string,
): Promise<HumanRequestRecord> {
  const r = await k.store.getHumanRequest(requestId);
  if (!r) throw new LibosError("ENOENT", `request_id: no human request ${requestId}`);
  if (r.kind === "outcome") {
    if (answer !== "done" && answer !== "failed") {
      throw invalid("decision", `${requestId} asks what happened: answer done or failed`);
    }
  } else if (!Object.hasOwn(_STATUS, answer)) {
    throw invalid("decision", "must be allow_once, always_allow, deny or always_deny");
  }
  const at = k.now();
  if (r.status === "pending" && Date.parse(r.expires_at) <= k.providers.clock.now()) {
    // Counts as denied: left pending for the waiting process, whose retry (the
    // scheduler wakes it) records the expiry and is refused.
    throw new LibosError("ESTATE", `request_id: ${requestId} expired at ${r.expires_at}`);
  }
  if (r.kind === "outcome") return await _applyOutcome(k, r, answer as OutcomeAnswer, decidedBy);
  const decided = await k.atomically(async (tx) => {
    const patch = {
      status: _STATUS[answer as HumanAnswer],
      decided_by: decidedBy,
      decided_at: at,
    };
    // Compare-and-swap: a request is decided once, whoever races for it.
    if (!(await tx.store.updateHumanRequest(requestId, patch, "pending"))) {
      const cur = await tx.store.getHumanRequest(requestId);
      throw new LibosError("ESTATE", `request_id: ${requestId} is already ${cur?.status}`);
    }
    const exact = { resource: r.resource, rights: [r.right], delegable: false };
    if (answer === "allow_once" && k.ablated("no-one-shot-binding")) {
      // Benchmark ablation only: the approval covers the resource, not the exact call.
      await tx.grant(r.pid, exact, decidedBy, { constraints: { human_request: requestId } });
    } else if (answer === "allow_once") {
      await tx.grant(r.pid, { ...exact, uses_remaining: 1 }, decidedBy, {
        constraints: { binding: { syscall: r.effect, args_hash: r.args_hash } },
      });
    } else if (answer === "always_allow") {
      // Marked as a human decision whoever relayed it (`pid:N` holding approve), so it answers the ASK.
      await tx.grant(r.pid, exact, decidedBy, { constraints: { human_request: requestId } });
    } else if (answer === "always_deny") {
      await tx.grant(r.pid, { ...exact, effect: "deny" }, decidedBy);
    }
    await tx.audit({
      actor: decidedBy,
      action: "human.decide",
      target: r.resource,
      input_refs: { request_id: requestId, pid: r.pid, effect: r.effect, args_hash: r.args_hash },
      output_refs: { answer },
      capability_refs: [],
      decision: answer === "allow_once" || answer === "always_allow" ? "allow" : "deny",
      reason: `${decidedBy} answered ${answer}`,
      correlation_id: r.correlation_id ?? null,
      parent_record_id: null,
    });
    await tx.emit(
      "human.decided",
      decidedBy,
      `pid:${r.pid}`,
      { request_id: requestId, answer },
      r.correlation_id ?? null,
    );
    return { ...r, ...patch };
  });
  // Compare-and-swap: the scheduler may be waking the same process right now.
  await k.wake(r.pid, "waiting_human", decidedBy);
  return decided;
}

/** The right an effect of `syscall` exercised (what an outcome request shows). */
function _rightOf(syscall: string): Right {
  return syscall === "filesystem.delete" ? "delete" : syscall === "shell.run" ? "execute" : "write";
}

/**
 * Ask the human what happened to an effect a crash left `unknown` (the
 * intent is in the ledger, the outcome never came): a durable `outcome`
 * request showing the effect and, when the effect's process was running an
 * action, that action (its tool and arguments, hidden like an ASK's when the
 * process holds data above the human's clearance). Audited as
 * `effect.unknown`. Never answered by a provider: only the host's human (CLI,
 * console) answers, with {@link applyDecision}.
 */
export async function askOutcome(
  k: Kernel,
  effect: EffectRecord,
  proc: ProcessRecord | null,
  action: PendingAction | null,
): Promise<HumanRequestRecord> {
  const taint: Label = proc?.taint ?? "public";
  const visible = proc ? mayFlow(taint, proc.policy.human_clearance) : true;
  const nowMs = k.providers.clock.now();
  const detail = {
    effect_id: effect.effect_id,
    pid: effect.pid,
    syscall: effect.syscall,
    resource: effect.resource,
    args_hash: effect.args_hash,
    intent_at: effect.created_at,
  };
  const shownAction = action
    ? { tool: action.tool, args: visible ? action.args : payloadRef(action.args, taint) }
    : null;
  const request: HumanRequestRecord = {
    request_id: k.newId("hr"),
    pid: effect.pid,
    effect: effect.syscall,
    args: { effect: detail, action: shownAction },
    args_hash: effect.args_hash,
    resource: effect.resource,
    right: _rightOf(effect.syscall),
    rule: "recovery",
    summary: guardText(
      visible ? "public" : taint,
      `Did this happen? Process ${effect.pid}'s ${effect.syscall} on ${effect.resource} was under ` +
        `way when the runtime stopped (intent recorded ${effect.created_at}); its outcome is ` +
        `unknown and it will not be run again. Answer done if it happened, failed if it did not.`,
    ),
    labels: [taint],
    status: "pending",
    created_at: new Date(nowMs).toISOString(),
    expires_at: new Date(nowMs + HUMAN_REQUEST_TTL_MS).toISOString(),
    decided_by: null,
    decided_at: null,
    correlation_id: null,
    kind: "outcome",
    effect_id: effect.effect_id,
  };
  await k.store.insertHumanRequest(request);
  await k.audit({
    actor: "kernel",
    action: "effect.unknown",
    target: guardText(taint, effect.resource),
    input_refs: detail,
    output_refs: { request_id: request.request_id },
    capability_refs: [],
    decision: "info",
    reason: `the runtime stopped between the intent of ${effect.syscall} and its outcome; ` +
      `not replayed; a human is asked whether it happened (${request.request_id})`,
    correlation_id: null,
    parent_record_id: null,
  });
  await k.emit(
    "human.asked",
    "kernel",
    "human:owner",
    {
      request_id: request.request_id,
      kind: "outcome",
      effect: request.effect,
      resource: request.resource,
      summary: request.summary,
    },
    null,
    1,
  );
  return request;
}

/**
 * Record a human's answer to an outcome request: the request is decided once
 * (compare-and-swap), the effect's ledger entry gets the outcome the human
 * gave, audited as `human.outcome`; a process waiting on its outcome requests
 * becomes runnable once none is left open, and its step records the answer.
 */
async function _applyOutcome(
  k: Kernel,
  r: HumanRequestRecord,
  answer: OutcomeAnswer,
  decidedBy: string,
): Promise<HumanRequestRecord> {
  const at = k.now();
  const patch = { status: answer, decided_by: decidedBy, decided_at: at };
  const decided = await k.atomically(async (tx) => {
    if (!(await tx.store.updateHumanRequest(r.request_id, patch, "pending"))) {
      const cur = await tx.store.getHumanRequest(r.request_id);
      throw new LibosError("ESTATE", `request_id: ${r.request_id} is already ${cur?.status}`);
    }
    const fx = r.effect_id ? await tx.store.getEffect(r.effect_id) : null;
    if (fx && fx.status === "unknown") {
      await tx.store.finishEffect(fx.effect_id, answer, {
        confirmed_by: decidedBy,
        request_id: r.request_id,
      }, at);
    }
    await tx.audit({
      actor: decidedBy,
      action: "human.outcome",
      target: r.resource,
      input_refs: { request_id: r.request_id, pid: r.pid, effect_id: r.effect_id ?? null },
      output_refs: { answer },
      capability_refs: [],
      decision: "info",
      reason: `${decidedBy} answered that ${r.effect} on ${r.resource} ${
        answer === "done" ? "happened" : "did not happen"
      }`,
      correlation_id: null,
      parent_record_id: null,
    });
    await tx.emit("effect.confirmed", decidedBy, `pid:${r.pid}`, {
      request_id: r.request_id,
      effect_id: r.effect_id ?? null,
      answer,
    });
    await tx.emit("human.decided", decidedBy, `pid:${r.pid}`, {
      request_id: r.request_id,
      answer,
    });
    return { ...r, ...patch };
  });
  const proc = await k.store.getProcess(r.pid);
  const waitingOn = proc?.pending?.outcome?.request_ids ?? [];
  if (proc?.status === "waiting_human" && waitingOn.includes(r.request_id)) {
    const open = (await k.store.listHumanRequests({ pid: r.pid, status: "pending" }))
      .some((q) => waitingOn.includes(q.request_id));
    if (!open) await k.wake(r.pid, "waiting_human", decidedBy);
  }
  return decided;
}

/**
 * Is `right` on `resource` allowed without asking or consuming anything?
 * For read-only checks (listing what a caller may see).
 */
export async function peek(call: Call, resource: string, right: Right): Promise<boolean> {
  const caps = await call.k.store.capabilitiesOf(call.proc.pid);
  const binding = { syscall: call.name, args_hash: call.argsHash };
  return decide(caps, resource, right, binding, call.k.providers.clock.now()).effect === "allow";
}
