/**
 * The fixed human of a scenario: which requests for an effect it approves.
 * Every runner that asks a human (the runtime's human channel, the
 * confirmation wrapper) applies the same rule to what it is shown: the
 * syscall and its arguments as the agent gave them.
 * @module
 */

/** One rule: a syscall-name glob and globs over argument values. */
export interface HumanRule {
  /** Syscall name glob (`filesystem.write`, `shell.*`). */
  effect: string;
  /** Argument name -> glob over the value as text (arrays joined by spaces). */
  args?: Record<string, string>;
}

/** What a scenario says about its human. */
export interface HumanSpec {
  /** Requests the human approves (once). */
  approve?: HumanRule[];
  /** Requests the human refuses, whatever `approve` says. */
  refuse?: HumanRule[];
  /** Answers the runtime's human channel gives, in order, before the rule applies. */
  answers?: ("allow_once" | "always_allow" | "deny" | "always_deny" | "defer")[];
  /** After the run goes idle: move the clock on, then answer every pending request. */
  late?: { advance_ms: number; answer: "allow_once" | "always_allow" | "deny" | "always_deny" };
}

const _cache = new Map<string, RegExp>();

/**
 * Glob match over the whole text: `**` matches anything, `*` anything but
 * `/`, `?` one character but `/`; everything else is literal.
 */
export function globMatch(pattern: string, text: string): boolean {
  let re = _cache.get(pattern);
  if (!re) {
    let src = "";
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i];
      if (c === "*" && pattern[i + 1] === "*") {
        src += "[\\s\\S]*";
        i++;
      } else if (c === "*") src += "[^/]*";
      else if (c === "?") src += "[^/]";
      else src += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    re = new RegExp(`^${src}$`, "u");
    _cache.set(pattern, re);
  }
  return re.test(text);
}

/** An argument value as the human reads it. */
export function argText(v: unknown): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join(" ");
  }
  return v === undefined ? "" : JSON.stringify(v);
}

function _matches(rule: HumanRule, effect: string, args: unknown): boolean {
  if (!globMatch(rule.effect, effect)) return false;
  const a = args !== null && typeof args === "object" ? args as Record<string, unknown> : {};
  for (const [name, glob] of Object.entries(rule.args ?? {})) {
    if (!Object.hasOwn(a, name) || !globMatch(glob, argText(a[name]))) return false;
  }
  return true;
}

/** Does the scenario's human approve a request for `effect` with `args`? */
export function humanApproves(spec: HumanSpec | undefined, effect: string, args: unknown): boolean {
  if (!spec) return false;
  if ((spec.refuse ?? []).some((r) => _matches(r, effect, args))) return false;
  return (spec.approve ?? []).some((r) => _matches(r, effect, args));
}
