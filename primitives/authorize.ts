/**
 * The authorization gate every primitive passes through: the caller's live
 * capabilities decide (DENY > exact one-shot binding > ASK > ALLOW, default
 * deny), policy can only make the answer stricter, and an ASK goes to the
 * human channel, whose answer becomes a capability (never text from a tool).
 * @module
 */
import { decide } from "../runtime/capabilities.ts";
import { payloadRef } from "../runtime/canonical.ts";
import { denied } from "../runtime/errors.ts";
import { guardText, maxLabel, mayFlow, redactionFor } from "../runtime/labels.ts";
import type { HumanAnswer, HumanRequest } from "../runtime/providers/types.ts";
import type { Capability, Effect, Label, Right } from "../runtime/types.ts";
import type { Call } from "./call.ts";

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
    // Policy can only tighten; a human-issued allow already carries consent.
    const policy = req.policy ?? "allow";
    // A human's consent answers a policy ASK, never a policy DENY.
    const consented = d.humanConsent && policy === "ask";
    if (effect !== "deny" && _STRICTNESS[policy] > _STRICTNESS[effect] && !consented) {
      effect = policy;
      reason = req.policyReason ?? `policy says ${policy}`;
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
    await _askHuman(call, req, d.cap?.cap_id ?? "policy", reason);
  }
  throw denied(`${call.name} ${req.resource}: authorization did not settle`);
}

/**
 * Ask the human channel and turn the answer into a capability. Only this
 * function mints human-issued capabilities, and only from the provider's answer.
 */
async function _askHuman(
  call: Call,
  req: AuthRequest,
  rule: string,
  reason: string,
): Promise<void> {
  const k = call.k;
  const pid = call.proc.pid;
  const label = maxLabel(req.label ?? call.proc.taint, call.proc.taint);
  // The human sees what it is asked about, unless the caller holds data above
  // the human's clearance: then only labels and hashes, like the audit.
  const shown = mayFlow(label, call.proc.policy.human_clearance) ? "public" : label;
  const request: HumanRequest = {
    request_id: k.newId("hr"),
    pid,
    effect: call.name,
    args: payloadRef(call.args, redactionFor(label)),
    args_hash: call.argsHash,
    resource: guardText(shown, req.resource),
    right: req.right,
    rule,
    summary: guardText(
      shown,
      `process ${pid} wants to ${req.right} ${req.resource} via ${call.name} (${reason})`,
    ),
    label,
  };
  await k.audit({
    actor: `pid:${pid}`,
    action: "human.ask",
    target: guardText(call.proc.taint, req.resource),
    input_refs: { request_id: request.request_id, args: request.args },
    output_refs: null,
    capability_refs: rule === "policy" ? [] : [rule],
    decision: "ask",
    reason: guardText(call.proc.taint, reason),
    correlation_id: call.correlationId,
    parent_record_id: null,
  });
  await k.emit("human.asked", `pid:${pid}`, "human:owner", request, call.correlationId, 1);
  const answer: HumanAnswer = await k.providers.human.decide(request);
  await k.audit({
    actor: "human:owner",
    action: "human.decide",
    target: guardText(call.proc.taint, req.resource),
    input_refs: { request_id: request.request_id },
    output_refs: { answer },
    capability_refs: [],
    decision: answer === "allow_once" || answer === "always_allow" ? "allow" : "deny",
    reason: `human answered ${answer}`,
    correlation_id: call.correlationId,
    parent_record_id: null,
  });
  await k.emit("human.decided", "human:owner", `pid:${pid}`, {
    request_id: request.request_id,
    answer,
  }, call.correlationId);
  const exact = { resource: req.resource, rights: [req.right], delegable: false };
  switch (answer) {
    case "allow_once":
      await k.grant(pid, { ...exact, uses_remaining: 1 }, "human:owner", {
        constraints: { binding: { syscall: call.name, args_hash: call.argsHash } },
        revocable: true,
      });
      return;
    case "always_allow":
      await k.grant(pid, exact, "human:owner");
      return;
    case "always_deny":
      await k.grant(pid, { ...exact, effect: "deny" }, "human:owner");
      throw denied(`${call.name} ${req.resource}: human answered always_deny`);
    default:
      throw denied(`${call.name} ${req.resource}: human answered deny`);
  }
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
