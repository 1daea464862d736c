/**
 * Budgets as a resource a process tree shares: a child's budgets come out of
 * its parent's, and what a child did not use goes back when its parent
 * collects its result. So everything a tree does (quanta, time, syscalls,
 * model calls and tokens, bytes stored) stays within what the host gave its
 * root, however many processes it spawns: a fork bomb runs out of budget,
 * not the host out of disk.
 *
 * ```ts
 * import { carveBudgets } from "./budgets.ts";
 * const { child, parent } = carveBudgets(
 *   { max_quanta: 100, max_wall_ms: null, max_syscalls: 10 },
 *   { quanta: 20, wall_ms: 0, syscalls: 4 },
 *   {},
 *   "process.spawn.budgets",
 * );
 * // child: 40 quanta, unbounded time, 3 syscalls; parent keeps 60 and 7.
 * ```
 * @module
 */
import { Buffer } from "node:buffer";
import { invalid, LibosError } from "./errors.ts";
import type { Budgets, Usage } from "./types.ts";

/** Each budget and the usage counter it bounds. */
export const BUDGET_COUNTERS = {
  max_quanta: "quanta",
  max_wall_ms: "wall_ms",
  max_syscalls: "syscalls",
  max_model_calls: "model_calls",
  max_input_tokens: "input_tokens",
  max_output_tokens: "output_tokens",
  max_store_bytes: "store_bytes",
} as const;

/** A budget's name. */
export type BudgetName = keyof typeof BUDGET_COUNTERS;

/** Every budget's name. */
export const BUDGET_NAMES = Object.keys(BUDGET_COUNTERS) as BudgetName[];

/** What `text` takes in the store: its UTF-8 bytes (a character can take four). */
export function storeBytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/** How much of `name` is used. */
export function used(u: Usage, name: BudgetName): number {
  return u[BUDGET_COUNTERS[name]] ?? 0;
}

/**
 * Split a child's budgets off its parent's (`b`, with `u` used so far): each
 * bounded budget gives the child what `asked` names (at most what is left),
 * else half of what is left, and the parent's own limit drops by as much. An
 * unbounded budget stays unbounded for the child unless `asked` bounds it.
 * ELIMIT, naming the budget, when the parent has too little left to give.
 */
export function carveBudgets(
  b: Budgets,
  u: Usage,
  asked: Partial<Budgets>,
  field: string,
): { child: Budgets; parent: Budgets } {
  const child: _Loose = { ...b };
  const parent: _Loose = { ...b };
  for (const name of BUDGET_NAMES) {
    const max = b[name];
    const want = asked[name];
    if (max === null || max === undefined) {
      child[name] = want ?? max;
      continue;
    }
    const left = max - used(u, name);
    if (want === null) throw invalid(`${field}.${name}`, `cannot be unbounded: ${left} left`);
    const give = want ?? Math.floor(left / 2);
    if (give > left) {
      throw new LibosError("ELIMIT", `${field}.${name}: ${give} asked, ${left} left to give`);
    }
    if (give < 1) {
      throw new LibosError(
        "ELIMIT",
        `${field}.${name}: ${left} left, too little to give a child any`,
      );
    }
    child[name] = give;
    parent[name] = max - give;
  }
  return { child: child as Budgets, parent: parent as Budgets };
}

/** Budgets indexed by any budget's name (the required ones stay set: they are copied). */
type _Loose = Partial<Record<BudgetName, number | null>>;

/** What a child that has ended did not use of each bounded budget (to give back). */
export function unusedBudgets(b: Budgets, u: Usage): Partial<Budgets> {
  const out: _Loose = {};
  for (const name of BUDGET_NAMES) {
    const max = b[name];
    if (max === null || max === undefined) continue;
    out[name] = Math.max(0, max - used(u, name));
  }
  return out;
}

/** `b` with each bounded budget lowered to what `u` has used of it: nothing left to spend. */
export function spentBudgets(b: Budgets, u: Usage): Budgets {
  const out: _Loose = { ...b };
  for (const name of BUDGET_NAMES) {
    const max = b[name];
    if (max === null || max === undefined) continue;
    out[name] = Math.min(max, used(u, name));
  }
  return out as Budgets;
}

/** `b` with `back` added to its bounded budgets. */
export function returnBudgets(b: Budgets, back: Partial<Budgets>): Budgets {
  const out: _Loose = { ...b };
  for (const name of BUDGET_NAMES) {
    const max = b[name];
    const more = back[name];
    if (max === null || max === undefined || more === null || more === undefined) continue;
    out[name] = max + more;
  }
  return out as Budgets;
}

/**
 * Budgets for copies a process makes of others (a checkpoint's subtree it
 * forks), paid out of its own (`b`, with `u` used): per bounded budget, each
 * copy gets an even share of half of what the caller has left, and no more
 * than its original had left; the caller's limit drops by what they got. An
 * unbounded budget of the caller leaves the originals' limits as they were.
 * ELIMIT when a share would be under 1.
 */
export function shareBudgets(
  b: Budgets,
  u: Usage,
  originals: readonly { budgets: Budgets; usage: Usage }[],
  field: string,
): { copies: Budgets[]; parent: Budgets } {
  const copies: _Loose[] = originals.map((o) => ({ ...o.budgets }));
  const parent: _Loose = { ...b };
  for (const name of BUDGET_NAMES) {
    const max = b[name];
    if (max === null || max === undefined) continue;
    const left = max - used(u, name);
    const share = Math.floor(left / 2 / Math.max(1, originals.length));
    if (share < 1) {
      throw new LibosError(
        "ELIMIT",
        `${field}.${name}: ${left} left, too little to give ${originals.length} copies any`,
      );
    }
    let given = 0;
    originals.forEach((o, i) => {
      const own = o.budgets[name];
      const ownLeft = own === null || own === undefined
        ? share
        : Math.max(0, own - used(o.usage, name));
      copies[i][name] = Math.min(share, ownLeft);
      given += copies[i][name]!;
    });
    parent[name] = max - given;
  }
  return { copies: copies as Budgets[], parent: parent as Budgets };
}
