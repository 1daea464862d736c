/**
 * JIT validation refuses what is broken or unsafe, never what is merely
 * unidiomatic: the tools a model is likely to write (untyped, `any`, `.then`
 * chains, a sync `run`, helpers, JSDoc, unused type imports, `async` without
 * `await`, `let` that could be `const`, empty catches) validate, come back
 * with their style findings as warnings, and compute the right answer.
 * The hostile and broken sources that must be refused are in jit_test.ts.
 */
import assert from "node:assert/strict";
import { cap, type Env, launch, makeEnv } from "./_helpers.ts";

const CACHE = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-jit-plausible-" }));
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(CACHE, { recursive: true });
  } catch { /* gone */ }
});

const LOG = [
  "tests/test_a.py::test_one PASSED",
  "tests/test_a.py::test_two FAILED",
  "tests/test_b.py::test_three FAILED",
  "tests/test_b.py::test_four PASSED",
  "",
].join("\n");

interface Plausible {
  /** What a model wrote. */
  name: string;
  source: string;
  args: Record<string, unknown>;
  expect: unknown;
  /** Lint rules that must come back as warnings (style, never refusal). */
  warns?: string[];
}

const TOOLS: Plausible[] = [
  {
    name: "untyped",
    source: `export async function run(args, libos) {
  return libos.syscall("filesystem.read", { path: args.path });
}
`,
    args: { path: "logs/pytest.log" },
    expect: LOG,
    warns: ["require-await"],
  },
  {
    name: "any_typed",
    source: `export async function run(args: any, libos: any) {
  const unused = "left over from an earlier draft";
  return libos.syscall("filesystem.read", { path: args.path });
}
`,
    args: { path: "logs/pytest.log" },
    expect: LOG,
    warns: ["no-explicit-any", "no-unused-vars", "require-await"],
  },
  {
    name: "then_chain",
    source: `export function run(args, libos) {
  return libos.syscall("filesystem.read", { path: args.path })
    .then((text) => text.split("\\n"))
    .then((lines) => lines.filter((l) => l.endsWith("FAILED")).length);
}
`,
    args: { path: "logs/pytest.log" },
    expect: 2,
  },
  {
    name: "sync_run",
    source: `export function run(args) {
  return { sum: args.a + args.b };
}
`,
    args: { a: 2, b: 40 },
    expect: { sum: 42 },
  },
  {
    name: "helpers",
    source: `function parseLine(line: string) {
  const m = line.match(/^(\\S+)::(\\S+) (PASSED|FAILED)$/);
  if (!m) return null;
  return { file: m[1], test: m[2], outcome: m[3] };
}

function failed(lines: string[]) {
  let out = [];
  for (const l of lines) {
    const p = parseLine(l);
    if (p && p.outcome === "FAILED") out.push(p.test);
  }
  return out;
}

export async function run(args, libos) {
  const text = await libos.syscall("filesystem.read", { path: args.path });
  return failed(text.split("\\n"));
}
`,
    args: { path: "logs/pytest.log" },
    expect: ["test_two", "test_three"],
    warns: ["prefer-const"],
  },
  {
    name: "jsdoc_typed",
    source: `import type { Libos } from "./libos.ts";

/**
 * Counts the tests of a pytest log by outcome.
 * @param args.path the log file
 * @param libos the runtime
 * @returns counts keyed by outcome
 */
export async function run(args: { path: string }, libos: Libos): Promise<Record<string, number>> {
  const text = await libos.syscall<string>("filesystem.read", { path: args.path });
  const counts: Record<string, number> = {};
  for (const line of text.split("\\n")) {
    const outcome = line.split(" ").at(-1);
    if (!outcome) continue;
    counts[outcome] = (counts[outcome] ?? 0) + 1;
  }
  return counts;
}
`,
    args: { path: "logs/pytest.log" },
    expect: { PASSED: 2, FAILED: 2 },
  },
  {
    name: "unused_type_import",
    source: `import type { Libos, ToolRun } from "./libos.ts";

export async function run(args: { path: string }, libos: Libos) {
  const text = await libos.syscall<string>("filesystem.read", { path: args.path });
  return text.length;
}
`,
    args: { path: "logs/pytest.log" },
    expect: LOG.length,
    warns: ["no-unused-vars"],
  },
  {
    name: "arrow_export",
    source: `export const run = async (args, libos) => {
  const st = await libos.syscall("filesystem.stat", { path: args.path });
  return st.size;
};
`,
    args: { path: "logs/pytest.log" },
    expect: new TextEncoder().encode(LOG).length,
  },
  {
    name: "catch_message",
    source: `export async function run(args, libos) {
  try {
    return await libos.syscall("filesystem.read", { path: args.path });
  } catch (e) {
    return { error: e.message, code: e.code };
  }
}
`,
    args: { path: "secret/none.txt" },
    expect: null, // checked below: an EPERM comes back as data
  },
  {
    name: "var_and_loops",
    source: `export async function run(args, libos) {
  var text = await libos.syscall("filesystem.read", { path: args.path });
  var files = {};
  var lines = text.split("\\n");
  for (var i = 0; i < lines.length; i++) {
    var file = lines[i].split("::")[0];
    if (!file) continue;
    files[file] = (files[file] || 0) + 1;
  }
  return Object.keys(files).sort();
}
`,
    args: { path: "logs/pytest.log" },
    expect: ["tests/test_a.py", "tests/test_b.py"],
    warns: ["no-var"],
  },
  {
    name: "class_helper",
    source: `class Tally {
  private seen = new Map<string, number>();
  add(key: string) {
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
  }
  top(): [string, number][] {
    return Array.from(this.seen.entries()).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  }
}

export async function run(args, libos) {
  const t = new Tally();
  const text: string = await libos.syscall("filesystem.read", { path: args.path });
  text.split("\\n").filter(Boolean).forEach((l) => t.add(l.split(" ")[1]));
  return t.top();
}
`,
    args: { path: "logs/pytest.log" },
    expect: [["FAILED", 2], ["PASSED", 2]],
  },
  {
    name: "empty_catch_while_true",
    source: `export async function run(args, libos) {
  let tries = 0;
  while (true) {
    tries++;
    try {
      await libos.syscall("filesystem.stat", { path: args.path });
      break;
    } catch {}
    if (tries > 2) break;
  }
  return tries;
}
`,
    args: { path: "logs/pytest.log" },
    expect: 1,
    warns: ["no-empty"],
  },
  {
    name: "ts_ignore_and_interface",
    source: `interface Unused { a: number }

export async function run(args, libos) {
  // @ts-ignore
  const lines: string[] = (await libos.syscall("filesystem.read", { path: args.path })).split("\\n");
  return lines.filter((l) => l.includes(args.needle)).length;
}
`,
    args: { path: "logs/pytest.log", needle: "test_b" },
    expect: 2,
    warns: ["ban-ts-comment", "TS7006"],
  },
  {
    name: "extra_exports_and_json",
    source: `export const description = "summarise a log as JSON";
export const VERSION = 2;

export async function run(args, libos) {
  const text = await libos.syscall("filesystem.read", { path: args.path });
  const failed = text.split("\\n").filter((l) => / FAILED$/.test(l));
  await libos.syscall("filesystem.write", {
    path: args.out,
    content: JSON.stringify({ failed: failed.length }),
  });
  return JSON.parse(JSON.stringify({ written: args.out, failed: failed.length }));
}
`,
    args: { path: "logs/pytest.log", out: "reports/summary.json" },
    expect: { written: "reports/summary.json", failed: 2 },
  },
  {
    name: "promise_all",
    source: `export async function run(args, libos) {
  const [a, b] = await Promise.all(args.paths.map((p) => libos.syscall("filesystem.stat", { path: p })));
  return a.size === b.size;
}
`,
    args: { paths: ["logs/pytest.log", "logs/pytest.log"] },
    expect: true,
  },
];

async function env(): Promise<Env> {
  return await makeEnv({ files: { "logs/pytest.log": LOG }, jitCacheDir: CACHE });
}

Deno.test("jit: at least 12 plausible model-written tools validate, warn on style and compute the right answer", async () => {
  assert.ok(TOOLS.length >= 12);
  await using e = await env();
  await Deno.mkdir(`${e.ws}/reports`);
  const pid = await launch(e, [
    cap("filesystem:workspace:logs/*", "read"),
    cap("filesystem:workspace:reports/*", "read", "write"),
    ...TOOLS.map((t) => cap(`tool:${t.name}`, "write")),
  ], { tools: [] });
  // Two at a time: validation type-checks each tool in a subprocess.
  const validated = new Map<string, { warnings: { rule: string; message: string }[] }>();
  for (let i = 0; i < TOOLS.length; i += 2) {
    await Promise.all(
      TOOLS.slice(i, i + 2).map(async (t) => {
        const c = await e.rt.syscall(pid, "jit.propose", { name: t.name, source: t.source }) as {
          oid: string;
        };
        try {
          const a = await e.rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
            oid: string;
            warnings: { rule: string; message: string }[];
          };
          validated.set(t.name, a);
          await e.rt.syscall(pid, "jit.register", { oid: a.oid });
        } catch (err) {
          throw new Error(`plausible tool '${t.name}' was refused: ${(err as Error).message}`);
        }
      }),
    );
  }
  for (const t of TOOLS) {
    const rules = validated.get(t.name)!.warnings.map((w) => w.rule);
    for (const r of t.warns ?? []) {
      assert.ok(rules.includes(r), `${t.name}: expected a ${r} warning, got ${rules.join(", ")}`);
    }
    const value = await e.rt.syscall(pid, "jit.call", { name: t.name, args: t.args });
    if (t.name === "catch_message") {
      assert.equal((value as { code: string }).code, "EPERM");
      continue;
    }
    assert.deepEqual(value, t.expect, `${t.name} computed the wrong answer`);
  }
  assert.equal(
    await Deno.readTextFile(`${e.ws}/reports/summary.json`),
    JSON.stringify({ failed: 2 }),
  );
});

Deno.test("jit: warnings are stored with the validation result and returned again for a cached artifact", async () => {
  await using e = await env();
  const t = TOOLS.find((x) => x.name === "any_typed")!;
  const pid = await launch(e, [cap("tool:any_typed", "write")], { tools: [] });
  const validateOnce = async () => {
    const c = await e.rt.syscall(pid, "jit.propose", { name: t.name, source: t.source }) as {
      oid: string;
    };
    return await e.rt.syscall(pid, "jit.validate", { oid: c.oid }) as {
      oid: string;
      warnings: { rule: string; message: string; line: number }[];
    };
  };
  const first = await validateOnce();
  const again = await validateOnce();
  assert.deepEqual(again.warnings, first.warnings);
  const explicitAny = first.warnings.filter((w) => w.rule === "no-explicit-any");
  assert.equal(explicitAny.length, 2);
  assert.equal(explicitAny[0].line, 1);
  const art = await e.rt.kernel.store.getObject(first.oid);
  assert.deepEqual((art!.payload as { warnings: unknown }).warnings, first.warnings);
});

Deno.test("jit: lint rules that find real bugs still refuse, naming the rule and tool.ts", async () => {
  await using e = await env();
  const pid = await launch(e, [cap("tool:buggy", "write")], { tools: [] });
  // Bugs the type checker lets through and lint catches.
  const bugs = [
    `export function run(args) { let a = args.x; a = a; return a; }\n`,
    `export function run(args) { return args.x === -0; }\n`,
    `export function run(args) { let n = 0; for (let i = 0; i < args.x; i--) n++; return n; }\n`,
  ];
  const rules = ["no-self-assign", "no-compare-neg-zero", "for-direction"];
  for (const [i, source] of bugs.entries()) {
    const c = await e.rt.syscall(pid, "jit.propose", { name: "buggy", source }) as { oid: string };
    await assert.rejects(
      e.rt.syscall(pid, "jit.validate", { oid: c.oid }),
      (err: Error) => {
        assert.match(err.message, new RegExp(`^jit\\.validate: lint: tool\\.ts:1: ${rules[i]}: `));
        return true;
      },
    );
  }
});
