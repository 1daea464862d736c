/**
 * Pieces the benchmarks share: command-line numbers, medians, interleaved rounds.
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

/** One variant: each sample returns one number (ms, us or ops/s). */
export interface Variant {
  /** Shown name. */
  name: string;
  /** Take one sample. */
  sample: () => Promise<number>;
  /** Samples per round. */
  repeat: number;
  /** Samples taken so far. */
  values: number[];
}

/** A variant taking `repeat` samples per round. */
export function variant(name: string, repeat: number, sample: () => Promise<number>): Variant {
  return { name, sample, repeat, values: [] };
}

/** Interleave: each round runs every variant once, in an order rotated per round. */
export async function rounds(variants: Variant[], count: number): Promise<void> {
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < variants.length; j++) {
      const v = variants[(r + j) % variants.length];
      for (let i = 0; i < v.repeat; i++) v.values.push(await v.sample());
    }
  }
}

/** Summary of one variant's samples. */
export interface Stat {
  /** Median sample. */
  median: number;
  /** Smallest sample. */
  min: number;
  /** Largest sample. */
  max: number;
  /** How many. */
  samples: number;
}

/** Median, min, max of a variant, rounded to `digits`. */
export function stat(v: Variant, digits = 2): Stat {
  const f = (n: number) => Number(n.toFixed(digits));
  return {
    median: f(median(v.values)),
    min: f(Math.min(...v.values)),
    max: f(Math.max(...v.values)),
    samples: v.values.length,
  };
}

/**
 * Median over rounds of `a`'s round median over `b`'s: both ran back to back in
 * each round, so load drift between rounds cancels (a noise check on the ratio
 * of medians, which the targets use).
 */
export function pairedRatio(a: Variant, b: Variant): number {
  const ratios: number[] = [];
  for (let i = 0; i * a.repeat < a.values.length && i * b.repeat < b.values.length; i++) {
    const ra = median(a.values.slice(i * a.repeat, (i + 1) * a.repeat));
    const rb = median(b.values.slice(i * b.repeat, (i + 1) * b.repeat));
    ratios.push(ra / rb);
  }
  return r2(median(ratios));
}

/** Round to two decimals. */
export function r2(n: number): number {
  return Number(n.toFixed(2));
}
