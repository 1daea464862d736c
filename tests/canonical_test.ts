/**
 * Canonical JSON: keys sorted at every depth, whatever order a value's keys
 * were made in, and the splice of texts already canonical (what a checkpoint
 * is written with) giving the same text.
 */
import assert from "node:assert/strict";
import { canonicalJson, canonicalJsonWith } from "../runtime/canonical.ts";

// The definition: a sorted copy of every level, serialized.
function reference(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        const x = (v as Record<string, unknown>)[k];
        if (x !== undefined) out[k] = sort(x);
      }
      return out;
    }
    return v;
  };
  return JSON.stringify(sort(value));
}

// A small seeded generator of JSON-like values with awkward keys.
function gen(seed: number) {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  const KEYS = ["a", "b", "z", "10", "9", "0", "é", "A", "aa", "_", "\u2028", ""];
  const val = (depth: number): unknown => {
    const r = rnd();
    if (depth > 3 || r < 0.3) {
      return [null, true, 0, -0, 1.5, 1e21, "s", '\u0000"\\', undefined][Math.floor(rnd() * 9)];
    }
    if (r < 0.6) return Array.from({ length: Math.floor(rnd() * 4) }, () => val(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(rnd() * 5); i > 0; i--) {
      o[KEYS[Math.floor(rnd() * KEYS.length)]] = val(depth + 1);
    }
    return o;
  };
  return val;
}

Deno.test("canonical: the same text as a sorted copy of every level, for values made in any key order", () => {
  for (let seed = 1; seed <= 400; seed++) {
    const v = gen(seed)(0);
    const text = canonicalJson(v);
    assert.equal(text, reference(v), `seed ${seed}`);
    // Parsed back (integer-like keys then come first in JS): the same text again.
    if (text !== undefined) assert.equal(canonicalJson(JSON.parse(text)), text, `seed ${seed}`);
  }
  // Shapes a sorted walk could get wrong.
  const holes = [1, , 3];
  const cases: unknown[] = [
    { b: 1, a: 2 },
    { a: 1, b: undefined, c: [undefined, holes] },
    { "10": 1, "9": 2, a: { y: 1, x: [{ d: 1, c: 2 }] } },
    Object.assign(Object.create(null), { a: 1, b: 2 }),
    { at: new Date(0), m: new Map([[1, 2]]) },
    [{ a: 1 }, { b: { c: 1 } }],
    "text",
    42,
    null,
  ];
  for (const c of cases) assert.equal(canonicalJson(c), reference(c));
});

Deno.test("canonical: members given as canonical texts are spliced in as canonicalJson would write them", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const val = gen(seed);
    const inner = { k: val(1), j: [val(1), val(1)] };
    const head = { z: val(1), b: "x", objects: undefined, m: val(2) };
    const spliced = canonicalJsonWith(head, { objects: canonicalJson(inner) });
    assert.equal(spliced, canonicalJson({ ...head, objects: inner }), `seed ${seed}`);
  }
  assert.equal(canonicalJsonWith({}, { a: "[]" }), '{"a":[]}');
  assert.equal(canonicalJsonWith({ b: 1, f: () => 0 }, { a: "1" }), '{"a":1,"b":1}');
});
