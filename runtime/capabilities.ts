/**
 * Capability logic: the resource grammar, wildcard matching, the precedence
 * rule and the narrowing check for delegation. Pure functions over data; the
 * store keeps the rows and primitives/authorize.ts applies the decision.
 *
 * Precedence: DENY > exact one-shot binding > ASK > ALLOW; no match is deny.
 * @module
 */
import { invalid } from "./errors.ts";
import {
  type Binding,
  type Capability,
  type CapabilitySpec,
  type Effect,
  type Right,
  RIGHTS,
} from "./types.ts";

/** Resource families and how many fixed `:`-segments follow the family name. */
const FAMILIES: Record<string, { minParts: number; maxParts: number }> = {
  filesystem: { minParts: 2, maxParts: 2 }, // filesystem:workspace:<path>
  shell: { minParts: 1, maxParts: 1 },
  human: { minParts: 1, maxParts: 1 },
  clock: { minParts: 1, maxParts: 1 },
  object: { minParts: 1, maxParts: 1 },
  object_namespace: { minParts: 1, maxParts: 1 },
  process: { minParts: 1, maxParts: 1 },
  image: { minParts: 1, maxParts: 1 },
  skill: { minParts: 1, maxParts: 1 },
  tool: { minParts: 1, maxParts: 1 }, // tool:<name>, JIT tool lifecycle
  checkpoint: { minParts: 2, maxParts: 2 }, // checkpoint:process:<pid>
  jsonrpc: { minParts: 2, maxParts: 2 }, // jsonrpc:<endpoint>:<method>
  mcp: { minParts: 2, maxParts: 2 }, // mcp:<server>:<tool>
};

/** Most delegation hops from a host grant. */
export const MAX_DELEGATION_DEPTH = 8;

/**
 * Validate a resource pattern and return it unchanged. Wildcards are allowed
 * only as a whole last segment (`src/*`, `shell:*`); a bare `*` is refused.
 */
export function parseResource(resource: unknown, field = "resource"): string {
  if (typeof resource !== "string" || resource.length === 0) {
    throw invalid(field, "must be a non-empty string");
  }
  if (resource.length > 4096) throw invalid(field, "longer than 4096 characters");
  if (resource === "*") throw invalid(field, "a bare '*' is refused; name a resource family");
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f]/.test(resource)) throw invalid(field, "contains control characters");
  const colon = resource.indexOf(":");
  if (colon < 0) throw invalid(field, `'${resource}' has no family (expected family:name)`);
  const family = resource.slice(0, colon);
  const shape = FAMILIES[family];
  if (!shape) {
    throw invalid(field, `unknown resource family '${family}' in '${resource}'`);
  }
  const rest = resource.slice(colon + 1);
  const parts = _splitFixed(rest, shape.maxParts);
  if (parts.length < shape.minParts || parts.some((p) => p.length === 0)) {
    throw invalid(field, `'${resource}' is not a well-formed ${family} resource`);
  }
  if (family === "filesystem") {
    if (parts[0] !== "workspace") {
      throw invalid(field, `filesystem resources are 'filesystem:workspace:<path>'`);
    }
    _checkPathPattern(parts[1], field);
  } else {
    const last = parts[parts.length - 1];
    for (const p of parts) {
      if (p.includes("*") && !(p === "*" && p === last)) {
        throw invalid(field, `wildcard only allowed as the whole last segment in '${resource}'`);
      }
    }
  }
  return resource;
}

function _splitFixed(rest: string, maxParts: number): string[] {
  const parts: string[] = [];
  let remaining = rest;
  while (parts.length < maxParts - 1) {
    const i = remaining.indexOf(":");
    if (i < 0) break;
    parts.push(remaining.slice(0, i));
    remaining = remaining.slice(i + 1);
  }
  parts.push(remaining);
  return parts;
}

function _checkPathPattern(path: string, field: string): void {
  if (path.startsWith("/")) throw invalid(field, "workspace paths are relative, not absolute");
  const segs = path.split("/");
  segs.forEach((s, i) => {
    if (s === "" && segs.length > 1) throw invalid(field, `empty path segment in '${path}'`);
    if (s === "..") throw invalid(field, `'..' is not allowed in '${path}'`);
    // Resolved paths never contain '.' segments ('.' alone is the workspace root).
    if (s === "." && segs.length > 1) throw invalid(field, `'.' segment in '${path}'`);
    if (s.includes("*") && !(s === "*" && i === segs.length - 1)) {
      throw invalid(field, `wildcard only allowed as the whole last segment in '${path}'`);
    }
  });
}

/**
 * Does `pattern` cover the concrete resource `target`? An exact string matches
 * itself; `prefix*` (where the prefix ends in `:` or `/`) matches anything
 * strictly below the prefix. `filesystem:workspace:*` also covers the root `.`.
 */
export function resourceMatches(pattern: string, target: string): boolean {
  if (!pattern.endsWith("*")) return pattern === target;
  const prefix = pattern.slice(0, -1);
  if (prefix === "filesystem:workspace:") return target.startsWith(prefix);
  return target.length > prefix.length && target.startsWith(prefix);
}

/**
 * A resource as every spelling that may name the same file folds to: Unicode
 * compatibility-normalized (NFKC: composed accents, fullwidth forms) and
 * lower-cased. Used for restrictions only, never to widen an ALLOW.
 */
export function foldResource(resource: string): string {
  return _plain(resource) ? resource : resource.normalize("NFKC").toLowerCase();
}

// Pure lower-case ASCII folds to itself: the common case skips normalize().
function _plain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7e || (c >= 0x41 && c <= 0x5a)) return false;
  }
  return true;
}

/**
 * Does a restriction (a DENY, an ASK, a label pattern) written as `pattern`
 * cover `target`? Exactly as {@link resourceMatches}, or once both are folded
 * ({@link foldResource}): a file system that ignores case or normalizes
 * names opens the same file under `.ENV`, `.env` or `．ｅｎｖ`, and a name the
 * host wrote composed (`café`) may sit on disk decomposed. A restriction that
 * covers too much only asks or refuses more; an ALLOW is matched exactly.
 */
export function restrictionMatches(pattern: string, target: string): boolean {
  if (resourceMatches(pattern, target)) return true;
  const p = foldResource(pattern);
  const t = foldResource(target);
  return (p !== pattern || t !== target) && resourceMatches(p, t);
}

/** Is every resource `inner` covers also covered by `outer`? (Delegation narrowing.) */
export function resourceCovers(outer: string, inner: string): boolean {
  if (!inner.endsWith("*")) return resourceMatches(outer, inner);
  if (!outer.endsWith("*")) return false;
  const outerPrefix = outer.slice(0, -1);
  const innerPrefix = inner.slice(0, -1);
  if (outerPrefix === "filesystem:workspace:") return innerPrefix.startsWith(outerPrefix);
  return innerPrefix.startsWith(outerPrefix);
}

/** Validate a rights list. */
export function parseRights(rights: unknown, field = "rights"): Right[] {
  if (!Array.isArray(rights) || rights.length === 0) {
    throw invalid(field, "must be a non-empty array of rights");
  }
  const out: Right[] = [];
  for (const r of rights) {
    if (typeof r !== "string" || !(RIGHTS as readonly string[]).includes(r)) {
      throw invalid(field, `unknown right '${String(r)}' (expected one of ${RIGHTS.join(", ")})`);
    }
    if (!out.includes(r as Right)) out.push(r as Right);
  }
  return out;
}

/** Validate a capability spec from an image, the CLI or a syscall. */
export function parseCapabilitySpec(raw: unknown, field = "capability"): CapabilitySpec {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw invalid(field, "must be an object {resource, rights}");
  }
  const o = raw as Record<string, unknown>;
  const allowed = ["resource", "rights", "effect", "uses_remaining", "expires_at", "delegable"];
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw invalid(`${field}.${k}`, "unknown field");
  }
  const spec: CapabilitySpec = {
    resource: parseResource(o.resource, `${field}.resource`),
    rights: parseRights(o.rights, `${field}.rights`),
  };
  if (o.effect !== undefined) {
    if (o.effect !== "allow" && o.effect !== "deny" && o.effect !== "ask") {
      throw invalid(`${field}.effect`, "must be allow, deny or ask");
    }
    spec.effect = o.effect;
  }
  if (o.uses_remaining !== undefined && o.uses_remaining !== null) {
    if (!Number.isInteger(o.uses_remaining) || (o.uses_remaining as number) < 1) {
      throw invalid(`${field}.uses_remaining`, "must be a positive integer");
    }
    spec.uses_remaining = o.uses_remaining as number;
  }
  if (o.expires_at !== undefined && o.expires_at !== null) {
    if (
      typeof o.expires_at !== "string" || !_ISO.test(o.expires_at) ||
      isNaN(Date.parse(o.expires_at))
    ) {
      throw invalid(`${field}.expires_at`, "must be an ISO-8601 timestamp");
    }
    spec.expires_at = new Date(o.expires_at).toISOString();
  }
  if (o.delegable !== undefined) {
    if (typeof o.delegable !== "boolean") throw invalid(`${field}.delegable`, "must be a boolean");
    spec.delegable = o.delegable;
  }
  return spec;
}

const _ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * Parse a CLI grant `RESOURCE=RIGHT,RIGHT` (the last `=` separates; resources
 * never contain `=` in practice but paths might, so we split on the last one).
 */
export function parseGrantFlag(flag: string): CapabilitySpec {
  const i = flag.lastIndexOf("=");
  if (i <= 0 || i === flag.length - 1) {
    throw invalid("--grant", `'${flag}' must be RESOURCE=RIGHT[,RIGHT]`);
  }
  return {
    resource: parseResource(flag.slice(0, i), "--grant"),
    rights: parseRights(flag.slice(i + 1).split(","), "--grant"),
  };
}

/** Is the capability usable at `now` (active, unexpired, uses left)? */
export function isLive(cap: Capability, now: number): boolean {
  if (cap.status !== "active") return false;
  if (cap.expires_at !== null && Date.parse(cap.expires_at) <= now) return false;
  if (cap.uses_remaining !== null && cap.uses_remaining <= 0) return false;
  return true;
}

/** The outcome of checking a request against a subject's capabilities. */
export interface CapDecision {
  /** allow, deny or ask. */
  effect: Effect;
  /** The capability that decided, or `null` for default deny. */
  cap: Capability | null;
  /** Why, in words. */
  reason: string;
  /** A matching human-issued allow exists: a human already consented to this. */
  humanConsent: boolean;
}

/**
 * Decide a request: which of the subject's live capabilities match `resource`
 * with `right`, and which wins. Binding capabilities only count when their
 * binding equals `binding` exactly.
 */
export function decide(
  caps: readonly Capability[],
  resource: string,
  right: Right,
  binding: Binding,
  now: number,
): CapDecision {
  let bound: Capability | null = null;
  let ask: Capability | null = null;
  let allow: Capability | null = null;
  let humanConsent = false;
  let humanAllow: Capability | null = null;
  for (const cap of caps) {
    if (!isLive(cap, now)) continue;
    if (!cap.rights.includes(right)) continue;
    const matches = cap.effect === "allow"
      ? resourceMatches(cap.resource, resource)
      : restrictionMatches(cap.resource, resource);
    if (!matches) continue;
    const b = cap.constraints.binding;
    if (cap.effect === "deny") {
      return {
        effect: "deny",
        cap,
        reason: `denied by capability ${cap.cap_id} (${cap.resource})`,
        humanConsent: false,
      };
    }
    if (b) {
      if (b.syscall === binding.syscall && b.args_hash === binding.args_hash) bound ??= cap;
      continue;
    }
    if (cap.effect === "ask") ask ??= cap;
    else {
      allow = _preferUnlimited(allow, cap);
      const human = cap.issued_by.startsWith("human:") ||
        cap.constraints.human_request !== undefined;
      if (human) (humanConsent = true, humanAllow ??= cap);
    }
  }
  if (bound) {
    return {
      effect: "allow",
      cap: bound,
      reason: `one-shot approval ${bound.cap_id}`,
      humanConsent: true,
    };
  }
  // A human's standing "always allow" answers the ASK it was given for.
  if (ask && humanAllow) {
    return {
      effect: "allow",
      cap: humanAllow,
      reason: `human approval ${humanAllow.cap_id} answers ${ask.cap_id}`,
      humanConsent: true,
    };
  }
  if (ask) {
    return {
      effect: "ask",
      cap: ask,
      reason: `capability ${ask.cap_id} asks a human`,
      humanConsent,
    };
  }
  if (allow) {
    return {
      effect: "allow",
      cap: allow,
      reason: `allowed by capability ${allow.cap_id}`,
      humanConsent,
    };
  }
  return {
    effect: "deny",
    cap: null,
    reason: `no capability grants ${right} on ${resource}`,
    humanConsent: false,
  };
}

// Prefer a capability that is not used up by this call, so a limited grant is
// kept for when nothing else covers the request.
function _preferUnlimited(current: Capability | null, next: Capability): Capability {
  if (current === null) return next;
  if (current.uses_remaining !== null && next.uses_remaining === null) return next;
  return current;
}

/**
 * Check that `child` is a narrowing of `parent`: same or narrower resource,
 * subset of rights, no later expiry, no more uses, and only from a delegable
 * ALLOW capability within the depth limit. Throws EINVAL/EPERM-worthy messages
 * via the returned string; `null` means the delegation is legal.
 */
export function narrowingViolation(
  parent: Capability,
  child: CapabilitySpec,
  now: number,
): string | null {
  if (!isLive(parent, now)) return `capability ${parent.cap_id} is not live`;
  if (!parent.delegable) return `capability ${parent.cap_id} is not delegable`;
  if (parent.effect !== "allow") return `only allow capabilities are delegated`;
  if (parent.constraints.binding) return `one-shot approvals cannot be delegated`;
  if (parent.delegation_depth + 1 > MAX_DELEGATION_DEPTH) {
    return `delegation depth ${parent.delegation_depth + 1} exceeds ${MAX_DELEGATION_DEPTH}`;
  }
  if (!resourceCovers(parent.resource, child.resource)) {
    return `${child.resource} is wider than ${parent.resource}`;
  }
  for (const r of child.rights) {
    if (!parent.rights.includes(r)) return `right '${r}' is not held on ${parent.resource}`;
  }
  if (child.effect !== undefined && child.effect !== "allow") {
    return `a delegation is an allow capability`;
  }
  if (parent.expires_at !== null) {
    if (!child.expires_at || Date.parse(child.expires_at) > Date.parse(parent.expires_at)) {
      return `expiry may not outlast ${parent.expires_at}`;
    }
  }
  if (parent.uses_remaining !== null) {
    if (child.uses_remaining == null || child.uses_remaining > parent.uses_remaining) {
      return `uses may not exceed ${parent.uses_remaining}`;
    }
  }
  if (child.delegable && !parent.delegable) return `cannot make a delegable copy`;
  return null;
}
