/**
 * Pieces both benchmarks share: command-line numbers and medians.
 * @module
 */

/** A positive number given as `NAME VALUE` on the command line, or `fallback`. */
export function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(Deno.args[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
  return n;
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A positive whole number given as `NAME VALUE`, or `fallback`. */
export function intFlag(name: string, fallback: number): number {
  const n = flag(name, fallback);
  if (!Number.isInteger(n)) throw new Error(`${name} needs a positive integer`);
  return n;
}
