/**
 * Ablations: switches that turn off one safety mechanism of the full system,
 * so the safety benchmark can show what each mechanism is worth. They exist for
 * measurement only. Only the host sets them, when it opens a runtime
 * (`Runtime.open({ ablations })`, used by `libos bench safety`); no image,
 * `libos run` flag, syscall or tool can reach them, the set is frozen at open,
 * and a runtime opened with any ablation says so in its first audit record.
 * Default: none.
 * @module
 */
import { invalid } from "./errors.ts";

/** Every ablation, with the one mechanism it switches off. */
export const ABLATIONS = {
  "no-realpath":
    "paths are resolved lexically and files opened by name: symlinks are not followed before authorization, an open follows them, and dangling links are not refused",
  "no-labels":
    "data labels do not gate flows: no check of a write, human output or shell command against the caller's taint",
  "no-one-shot-binding":
    "an allow-once human approval becomes a plain allow on the resource, bound to neither the exact arguments nor one use",
  "no-delegation-narrowing":
    "fork and capability.grant delegate what the caller asks for, without checking it narrows a capability it holds",
  "no-restriction-propagation":
    "a delegator's DENY and ASK capabilities do not travel to the processes it delegates to",
  "no-shell-policy":
    "the argv rules of shell.run are off (destructive commands, wrappers, inline code, path arguments); the shell capability and the policy's allowlist still apply",
} as const;

/** The name of an ablation. */
export type Ablation = keyof typeof ABLATIONS;

/** Names of every ablation. */
export const ABLATION_NAMES: readonly Ablation[] = Object.freeze(
  Object.keys(ABLATIONS) as Ablation[],
);

/** A set of ablations, fixed when made: it can be read, never changed. */
export interface AblationSet extends Iterable<Ablation> {
  /** How many. */
  readonly size: number;
  /** Is this mechanism switched off? */
  has(a: Ablation): boolean;
}

/** Validate a list of ablation names into a fixed set (EINVAL naming the bad entry). */
export function parseAblations(raw: unknown, field = "ablations"): AblationSet {
  if (raw === undefined) return _NONE;
  if (!Array.isArray(raw)) throw invalid(field, "must be an array of ablation names");
  const out = new Set<Ablation>();
  raw.forEach((a, i) => {
    if (typeof a !== "string" || !Object.hasOwn(ABLATIONS, a)) {
      throw invalid(`${field}[${i}]`, `unknown ablation '${String(a)}'`);
    }
    out.add(a as Ablation);
  });
  return out.size === 0 ? _NONE : new _Fixed(out);
}

class _Fixed implements AblationSet {
  readonly #items: Set<Ablation>;
  constructor(items: Iterable<Ablation>) {
    this.#items = new Set(items);
    Object.freeze(this);
  }
  get size(): number {
    return this.#items.size;
  }
  has(a: Ablation): boolean {
    return this.#items.has(a);
  }
  [Symbol.iterator](): Iterator<Ablation> {
    return this.#items.values();
  }
}

const _NONE: AblationSet = new _Fixed([]);
