/**
 * The safety benchmark's scenarios are data: the JSON-Schema validator they
 * are checked with, the loader's own checks (errors name the file and the
 * field), and the bundled scenario set itself.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compileSchema, validate } from "../safety/schema.ts";
import {
  loadScenario,
  loadScenarios,
  SCENARIO_DIR,
  ScenarioError,
  scenarioSchema,
  substitute,
} from "../safety/scenario.ts";
import { quoteResults } from "../safety/model.ts";
import { globMatch, humanApproves } from "../safety/rule.ts";

Deno.test("safety schema: the validator checks types, required and unknown fields, enums, patterns and lengths", () => {
  const s = compileSchema({
    type: "object",
    required: ["id", "n"],
    additionalProperties: false,
    properties: {
      id: { type: "string", pattern: "^[a-z]+$", minLength: 2 },
      n: { type: "integer", minimum: 1, maximum: 3 },
      tags: { type: "array", minItems: 1, items: { enum: ["a", "b"] } },
      c: { const: true },
    },
  });
  assert.deepEqual(validate(s, { id: "ab", n: 2 }), []);
  const paths = (v: unknown) => validate(s, v).map((e) => `${e.path}: ${e.message}`);
  assert.deepEqual(paths({ n: 2 }), ["id: is required"]);
  assert.deepEqual(paths({ id: "ab", n: 2, x: 1 }), ["x: unknown field"]);
  assert.deepEqual(paths({ id: "A1", n: 2 }), ["id: must match /^[a-z]+$/"]);
  assert.deepEqual(paths({ id: "a", n: 2 }), ["id: must be at least 2 characters"]);
  assert.deepEqual(paths({ id: "ab", n: 2.5 }), ["n: must be integer, not number"]);
  assert.deepEqual(paths({ id: "ab", n: 9 }), ["n: must be at most 3"]);
  assert.deepEqual(paths({ id: "ab", n: 1, tags: [] }), ["tags: must have at least 1 item(s)"]);
  assert.deepEqual(paths({ id: "ab", n: 1, tags: ["a", "z"] }), [
    'tags[1]: must be one of "a", "b"',
  ]);
  assert.deepEqual(paths({ id: "ab", n: 1, c: false }), ["c: must be true"]);
  assert.deepEqual(paths([]), [": must be object, not array"]);
});

Deno.test("safety schema: oneOf by kind reports the errors of the matching kind; $ref resolves", () => {
  const s = compileSchema({
    $defs: {
      a: {
        type: "object",
        required: ["kind", "path"],
        additionalProperties: false,
        properties: { kind: { const: "a" }, path: { type: "string" } },
      },
      b: {
        type: "object",
        required: ["kind"],
        additionalProperties: false,
        properties: { kind: { const: "b" } },
      },
      e: { oneOf: [{ $ref: "#/$defs/a" }, { $ref: "#/$defs/b" }] },
    },
    type: "object",
    properties: { list: { type: "array", items: { $ref: "#/$defs/e" } } },
  });
  assert.deepEqual(validate(s, { list: [{ kind: "a", path: "x" }, { kind: "b" }] }), []);
  assert.deepEqual(validate(s, { list: [{ kind: "a" }] }), [
    { path: "list[0].path", message: "is required" },
  ]);
  assert.deepEqual(validate(s, { list: [{ kind: "c" }] }), [
    { path: "list[0].kind", message: 'must be one of "a", "b"' },
  ]);
});

Deno.test("safety schema: a schema using a keyword the validator does not implement is refused", () => {
  assert.throws(
    () => compileSchema({ type: "string", format: "email" }),
    /unsupported keyword 'format'/,
  );
  assert.throws(() => compileSchema({ $ref: "#/$defs/missing" }), /does not name an entry/);
  assert.throws(() => compileSchema({ type: "strng" }), /unknown type/);
  // The bundled schema compiles.
  return scenarioSchema().then((s) => assert.equal(typeof s, "object"));
});

async function _scenarioFile(
  dir: string,
  patch: (s: Record<string, unknown>) => void,
  from = join("files", "traversal-read.json"),
) {
  const base = JSON.parse(await Deno.readTextFile(join(SCENARIO_DIR, from)));
  patch(base);
  const file = join(dir, "bad.json");
  await Deno.writeTextFile(file, JSON.stringify(base));
  return file;
}

/** Every case must be refused with a ScenarioError naming the file and including the text. */
async function _refused(
  dir: string,
  from: string,
  cases: [(s: Record<string, unknown>) => void, string][],
): Promise<void> {
  for (const [patch, expected] of cases) {
    const file = await _scenarioFile(dir, patch, from);
    await assert.rejects(loadScenario(file), (e: unknown) => {
      assert.ok(e instanceof ScenarioError, String(e));
      assert.ok(e.message.startsWith(`${file}: `), e.message);
      assert.ok(e.message.includes(expected), `${e.message} should include ${expected}`);
      return true;
    });
  }
}

Deno.test("safety schema: a bad scenario is refused with its file and field named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [(s: Record<string, unknown>) => void, string][] = [
      [(s) => delete s.track, "track: is required"],
      [
        (s) => ((s.expect as { forbidden: unknown[] }).forbidden[0] = { id: "x", kind: "nope" }),
        "expect.forbidden[0].kind: must be one of",
      ],
      [
        (
          s,
        ) => ((s.expect as { allowed: { path?: string }[] }).allowed[1].path =
          7 as unknown as string),
        "expect.allowed[1].path: must be string",
      ],
      [
        (s) => ((s.workspace as { files: Record<string, string> }).files["../../escape"] = "x"),
        "workspace.files[\"../../escape\"]: '../../escape' leaves the scenario root",
      ],
      [
        (s) => ((s.image as { tools: string[] }).tools = ["no_such_tool"]),
        "image.tools[0]: unknown builtin tool",
      ],
      [
        (s) => (s.grants = [{ resource: "bogus:x", rights: ["read"] }]),
        "grants[0].resource: unknown resource family 'bogus'",
      ],
      [(s) => (s.kind = "benign"), "expect.forbidden: a benign scenario forbids nothing"],
      [
        (s) => ((s.expect as { forbidden: { audit?: string[] }[] }).forbidden[0].audit = undefined),
        "expect.forbidden[0].audit: is required",
      ],
    ];
    await _refused(dir, join("files", "traversal-read.json"), cases);
    await Deno.writeTextFile(join(dir, "bad.json"), "{not json");
    await assert.rejects(
      loadScenario(join(dir, "bad.json")),
      /bad.json: \(document\): not readable JSON/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safety scenarios: at least 80, in at least 6 tracks, each track with attacks and benign tasks", async () => {
  const all = await loadScenarios(SCENARIO_DIR);
  assert.ok(all.length >= 80, `${all.length} scenarios`);
  const tracks = new Map<string, Set<string>>();
  for (const sc of all) {
    (tracks.get(sc.track) ?? tracks.set(sc.track, new Set()).get(sc.track)!).add(sc.kind);
  }
  assert.ok(tracks.size >= 6, [...tracks.keys()].join(", "));
  for (const [t, kinds] of tracks) {
    assert.ok(kinds.has("attack") && kinds.has("benign"), `${t} has ${[...kinds]}`);
  }
  for (
    const t of ["files", "shell", "delegation", "human", "labels", "jit", "model"]
  ) assert.ok(tracks.has(t), `track ${t}`);
  assert.equal(new Set(all.map((s) => s.id)).size, all.length, "ids are unique");
});

Deno.test("safety scenarios: placeholders are substituted; a child's script quotes its own results", () => {
  const sc = substitute({ a: "{{WS}}/x", b: ["{{EGRESS}}/y", "{{RESULT:0}}"], c: "{{OTHER}}" }, {
    WS: "/w",
    EGRESS: "http://e",
  });
  assert.deepEqual(sc, { a: "/w/x", b: ["http://e/y", "{{RESULT:0}}"], c: "{{OTHER}}" });
  const args = quoteResults(
    {
      content: "got {{RESULT:0}} then {{RESULT:-1}}",
      script: { steps: [{ args: { x: "{{RESULT:0}}" } }] },
    },
    ["first", "last"],
  );
  assert.deepEqual(args, {
    content: "got first then last",
    script: { steps: [{ args: { x: "{{RESULT:0}}" } }] },
  });
});

Deno.test("safety scenarios: the fixed human rule: refuse wins, then approve, else refuse", () => {
  assert.ok(globMatch("reports/*", "reports/a.md"));
  assert.ok(!globMatch("reports/*", "reports/x/a.md"));
  assert.ok(globMatch("reports/**", "reports/x/a.md"));
  assert.ok(!globMatch("src/*", "src2/a"));
  const human = {
    approve: [{ effect: "filesystem.write", args: { path: "src/**" } }, { effect: "shell.*" }],
    refuse: [{ effect: "filesystem.write", args: { content: "**os.system**" } }],
  };
  assert.ok(humanApproves(human, "filesystem.write", { path: "src/a.py", content: "x = 1" }));
  assert.ok(
    !humanApproves(human, "filesystem.write", { path: "src/a.py", content: "os.system()" }),
  );
  assert.ok(!humanApproves(human, "filesystem.write", { path: "lib/a.py", content: "x" }));
  assert.ok(humanApproves(human, "shell.run", { argv: ["ls"] }));
  assert.ok(!humanApproves(undefined, "shell.run", {}));
});

type _Turns = { tool_calls?: { name: string; arguments: Record<string, unknown> }[] }[];
const _turns = (s: Record<string, unknown>) =>
  (s.model as { transcript: { turns: _Turns } }).transcript.turns;

Deno.test("safety schema: a transcript scenario loads: its provider defaults to openai and its tool calls become the baselines' steps", async () => {
  const sc = await loadScenario(join(SCENARIO_DIR, "model", "backdoor-patch.json"));
  assert.equal(sc.model.transcript?.provider, "openai");
  assert.deepEqual(sc.model.script.steps.map((s) => s.tool), [
    "read_file",
    "write_file",
    "write_file",
    "exit",
  ]);
  assert.deepEqual(
    sc.model.script.steps[1].args,
    sc.model.transcript!.turns[1].tool_calls![0].arguments,
  );
  const anthropic = await loadScenario(join(SCENARIO_DIR, "model", "secret-to-endpoint.json"));
  assert.equal(anthropic.model.transcript?.provider, "anthropic");
  const scripted = await loadScenario(join(SCENARIO_DIR, "model", "git-hook.json"));
  assert.equal(scripted.model.transcript, null);
  // Both kinds are bundled: the scripted model and the real model loop are both exercised.
  const model = await loadScenarios(join(SCENARIO_DIR, "model"));
  assert.ok(model.filter((s) => s.model.transcript).length >= 8);
  assert.ok(model.filter((s) => !s.model.transcript).length >= 2);
});

Deno.test("safety schema: a bad transcript is refused naming its file and field", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await _refused(dir, join("model", "backdoor-patch.json"), [
      [
        (s) => ((s.model as Record<string, unknown>).script = { steps: [] }),
        "model: give exactly one of script, transcript",
      ],
      [
        (s) => delete (s.model as Record<string, unknown>).transcript,
        "model: needs one of script, transcript",
      ],
      [
        (
          s,
        ) => ((s.model as { transcript: Record<string, unknown> }).transcript.provider = "gemini"),
        'model.transcript.provider: must be one of "openai", "anthropic"',
      ],
      [(s) => (_turns(s)[1] = {}), "model.transcript.turns[1]: must have at least 1 entr(ies)"],
      [
        (s) => delete (_turns(s)[1].tool_calls![0] as Record<string, unknown>).name,
        "model.transcript.turns[1].tool_calls[0].name: is required",
      ],
      [
        (s) => ((_turns(s)[0].tool_calls![0] as Record<string, unknown>).arguments = "path=x"),
        "model.transcript.turns[0].tool_calls[0].arguments: must be object, not string",
      ],
      [
        (s) => (_turns(s)[0].tool_calls![0].name = "rm_rf"),
        "model.transcript.turns[0].tool_calls[0].name: 'rm_rf' is not a tool the image offers",
      ],
      [
        (s) => delete _turns(s)[0].tool_calls,
        "model.transcript.turns[0]: a reply without tool calls ends the process",
      ],
      [
        (s) => (_turns(s)[2].tool_calls = [{ name: "fork", arguments: { mode: "copy" } }]),
        "model.transcript.turns[2].tool_calls[0].arguments.script: is required: a transcript drives the root process only",
      ],
      [
        (s) => (_turns(s)[2].tool_calls = [{
          name: "spawn",
          arguments: { goal: "g", script: { steps: [{ tool: "Bad Tool" }] } },
        }]),
        "model.transcript.turns[2].tool_calls[0].arguments.script.steps[0].tool: must be a tool name",
      ],
      [
        (s) => ((s.expect as { forbidden: unknown[] }).forbidden[0] = {
          id: "m",
          kind: "model_saw",
          text: "attacker.invalid",
          audit: ["model:openai:fake"],
        }),
        "expect.forbidden[0].text: is written by the transcript itself",
      ],
    ]);
    // model_saw needs a model endpoint: a scripted scenario has none.
    await _refused(dir, join("model", "git-hook.json"), [[
      (s) => ((s.expect as { forbidden: unknown[] }).forbidden[0] = {
        id: "m",
        kind: "model_saw",
        text: "x",
        audit: ["model:openai:fake"],
      }),
      "expect.forbidden[0].kind: model_saw needs a model transcript",
    ]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
