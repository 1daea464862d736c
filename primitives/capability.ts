/**
 * capability.* primitives and delegation. Delegation only narrows (resource,
 * rights, expiry, uses, depth are all checked), goes only to descendants, and
 * always carries the delegator's DENY and ASK capabilities along, so a child can
 * never do what its parent was refused. Revocation cascades down the tree.
 * @module
 */
import {
  decide,
  isLive,
  narrowingViolation,
  parseCapabilitySpec,
} from "../runtime/capabilities.ts";
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type { Capability, CapabilitySpec } from "../runtime/types.ts";
import { type Call, pidArg, type Primitive, str } from "./call.ts";
import { parseResource, parseRights } from "../runtime/capabilities.ts";

/** Find a live capability of `holder` from which `spec` is a legal narrowing. */
export function findDelegable(
  caps: readonly Capability[],
  spec: CapabilitySpec,
  now: number,
): { cap: Capability | null; why: string } {
  let why = `no capability covers ${spec.resource}`;
  for (const c of caps) {
    const v = narrowingViolation(c, spec, now);
    if (v === null) return { cap: c, why: "" };
    if (c.resource === spec.resource || why.startsWith("no capability")) why = v;
  }
  return { cap: null, why };
}

/** Insert a narrowed copy of `parent` for `to` (reserving uses from a limited parent). */
export async function delegate(
  k: Kernel,
  parent: Capability,
  to: number,
  spec: CapabilitySpec,
): Promise<Capability> {
  // Uses come out of a limited parent's; an unlimited parent has nothing to reserve.
  if (
    spec.uses_remaining != null && parent.uses_remaining !== null &&
    !(await k.store.reserveUses(parent.cap_id, spec.uses_remaining))
  ) {
    throw denied(`capability ${parent.cap_id} has fewer than ${spec.uses_remaining} uses left`);
  }
  return await k.grant(to, { ...spec, effect: "allow" }, `pid:${parent.subject}`, {
    parent_cap_id: parent.cap_id,
    delegation_depth: parent.delegation_depth + 1,
    delegable: spec.delegable ?? parent.delegable,
  });
}

/**
 * Copy every live DENY and ASK capability of `from` to `to`, so authority
 * passed down can never be wider than what `from` may actually do.
 */
export async function propagateRestrictions(k: Kernel, from: number, to: number): Promise<void> {
  if (k.ablated("no-restriction-propagation")) return; // benchmark ablation only
  const now = k.providers.clock.now();
  const have = new Set((await k.store.capabilitiesOf(to)).map((c) => c.parent_cap_id));
  for (const c of await k.store.capabilitiesOf(from)) {
    if (c.effect === "allow" || !isLive(c, now) || have.has(c.cap_id)) continue;
    await k.grant(
      to,
      {
        resource: c.resource,
        rights: c.rights,
        effect: c.effect,
        expires_at: c.expires_at,
      },
      `pid:${from}`,
      {
        parent_cap_id: c.cap_id,
        delegation_depth: c.delegation_depth + 1,
        revocable: false,
      },
    );
  }
}

/** Throw unless `target` is a strict descendant of the caller. */
export async function assertDescendant(call: Call, target: number): Promise<void> {
  const t = await call.k.store.getProcess(target);
  if (!t || !t.lineage.includes(call.proc.pid)) {
    throw denied(`${call.name}: process ${target} is not a descendant of ${call.proc.pid}`);
  }
}

function _view(c: Capability): Record<string, unknown> {
  return { ...c };
}

/** The capability family. */
export const CAPABILITY: Record<string, Primitive> = {
  "capability.list": {
    fields: [],
    async run(call) {
      call.target = `process:${call.proc.pid}`;
      const now = call.k.providers.clock.now();
      return (await call.k.store.capabilitiesOf(call.proc.pid)).filter((c) => isLive(c, now)).map(
        _view,
      );
    },
  },
  "capability.check": {
    fields: ["resource", "right"],
    async run(call) {
      const resource = parseResource(call.args.resource, `${call.name}.resource`);
      const [right] = parseRights([call.args.right], `${call.name}.right`);
      call.target = resource;
      const caps = await call.k.store.capabilitiesOf(call.proc.pid);
      const d = decide(
        caps,
        resource,
        right,
        { syscall: "", args_hash: "" },
        call.k.providers.clock.now(),
      );
      return { effect: d.effect, cap_id: d.cap?.cap_id ?? null, reason: d.reason };
    },
  },
  "capability.grant": {
    fields: ["cap_id", "to", "resource", "rights", "expires_at", "uses_remaining", "delegable"],
    async run(call) {
      const capId = str(call, "cap_id", 128);
      const to = pidArg(call, "to");
      const parent = await call.k.store.getCapability(capId);
      if (!parent || parent.subject !== call.proc.pid) {
        throw denied(`${call.name}: capability ${capId} is not held by ${call.proc.pid}`);
      }
      await assertDescendant(call, to);
      const spec = parseCapabilitySpec({
        resource: call.args.resource ?? parent.resource,
        rights: call.args.rights ?? parent.rights,
        ...(call.args.expires_at !== undefined
          ? { expires_at: call.args.expires_at }
          : parent.expires_at
          ? { expires_at: parent.expires_at }
          : {}),
        ...(call.args.uses_remaining !== undefined
          ? { uses_remaining: call.args.uses_remaining }
          : {}),
        ...(call.args.delegable !== undefined ? { delegable: call.args.delegable } : {}),
      }, call.name);
      call.target = spec.resource;
      call.capRefs.push(parent.cap_id);
      const why = call.k.ablated("no-delegation-narrowing")
        ? null // benchmark ablation only
        : narrowingViolation(parent, spec, call.k.providers.clock.now());
      if (why) throw denied(`${call.name}: ${why}`);
      const cap = await delegate(call.k, parent, to, spec);
      await propagateRestrictions(call.k, call.proc.pid, to);
      return { cap_id: cap.cap_id, subject: to, resource: cap.resource, rights: cap.rights };
    },
  },
  "capability.revoke": {
    fields: ["cap_id"],
    async run(call) {
      const capId = str(call, "cap_id", 128);
      const cap = await call.k.store.getCapability(capId);
      if (!cap) throw new LibosError("ENOENT", `${call.name}.cap_id: no capability ${capId}`);
      call.target = cap.resource;
      call.capRefs.push(cap.cap_id);
      const issuer = cap.issued_by === `pid:${call.proc.pid}`;
      // A holder may drop its own allow grants, never a DENY or ASK placed on it.
      const selfDrop = cap.subject === call.proc.pid && cap.effect === "allow";
      if (!issuer && !selfDrop) {
        throw denied(`${call.name}: ${capId} was not issued by ${call.proc.pid}`);
      }
      if (issuer && !cap.revocable && !selfDrop) {
        throw invalid(`${call.name}.cap_id`, `${capId} is not revocable`);
      }
      const revoked = await call.k.store.revokeCascade(capId);
      for (const id of revoked) {
        await call.k.emit(
          "capability.revoked",
          `pid:${call.proc.pid}`,
          id,
          { root: capId },
          call.correlationId,
        );
      }
      return { revoked };
    },
  },
};
