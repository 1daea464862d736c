/**
 * Model-driven runs from the command line (`libos run --model`, `resume`,
 * `calls`, `human release`), and where a key may never be: no store file, no
 * audit, no output, no tool result, no shell command's environment.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { libos } from "./_helpers.ts";
import { startFakeModelServer } from "./fake_models.ts";

const KEY = `sk-cli-key-${crypto.randomUUID()}`;

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await walk(p));
    else if (e.isFile) out.push(p);
  }
  return out;
}

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("model cli: run --model drives an agent; calls lists the ledger; ps shows tokens; the key is nowhere", async () => {
  Deno.env.set("OPENAI_API_KEY", KEY);
  await using srv = startFakeModelServer();
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-model-cli-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(join(ws, "logs"), { recursive: true });
    await Deno.writeTextFile(join(ws, "logs/pytest.log"), "test_x FAILED\n");
    const image = join(root, "agent.json");
    await Deno.writeTextFile(
      image,
      JSON.stringify({
        name: "agent",
        system_prompt: "Find failures.",
        tools: ["read_file", "shell"],
        capabilities: [
          { resource: "filesystem:workspace:logs/*", rights: ["read"] },
          { resource: "shell:printenv", rights: ["execute"] },
        ],
        policy: { shell: "always_allow" },
      }),
    );
    srv.push(
      { tool_calls: [{ name: "shell", arguments: { argv: ["printenv"] } }] },
      { tool_calls: [{ name: "read_file", arguments: { path: "logs/pytest.log" } }] },
      { text: "test_x fails.", usage: { input_tokens: 77, output_tokens: 4 } },
    );
    const store = join(root, "s.db");
    const r = await libos([
      "run",
      image,
      "--workspace",
      ws,
      "--goal",
      "Which test fails?",
      "--model",
      "openai:gpt-fake",
      "--base-url",
      srv.openaiBaseUrl,
      "--store",
      store,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.status, "exited");
    assert.equal(out.exit_reason, "test_x fails.");
    assert.equal(out.steps.length, 2);
    // The shell command's environment has no key (it runs with a cleared environment).
    assert.ok(!JSON.stringify(out.steps[0]).includes("OPENAI_API_KEY"));
    assert.match(JSON.stringify(out.steps[0]), /PATH=/);
    // The key did travel, in the request headers only.
    assert.equal(srv.requests[0].headers.authorization, `Bearer ${KEY}`);
    assert.ok(srv.requests.every((q) => !q.raw.includes(KEY)));

    const calls = await libos(["calls", "--store", store, "--json"]);
    assert.equal(calls.code, 0, calls.stderr);
    const rows = JSON.parse(calls.stdout);
    assert.equal(rows.length, 3);
    assert.deepEqual(Object.keys(rows[0]).slice(0, 11), [
      "call_id",
      "pid",
      "provider",
      "model",
      "status",
      "input_tokens",
      "output_tokens",
      "latency_ms",
      "attempts",
      "finish_reason",
      "created_at",
    ]);
    assert.equal(rows[2].input_tokens, 77);
    assert.ok(
      rows.every((c: { provider: string; status: string }) =>
        c.provider === "openai" && c.status === "done"
      ),
    );
    const text = await libos(["calls", "--store", store, "--pid", "1"]);
    assert.match(text.stdout, /^CALL\tPID\tTURN/);
    const ps = await libos(["ps", "--store", store]);
    assert.match(ps.stdout, /model=3 calls, 97 in\/14 out tokens/);

    // Grep every file the runtime wrote, and every output, for the key.
    const needle = new TextEncoder().encode(KEY);
    for (const f of await walk(root)) {
      assert.ok(!contains(await Deno.readFile(f), needle), `${f} holds the key`);
    }
    for (const o of [r, calls, text, ps]) {
      assert.ok(!o.stdout.includes(KEY) && !o.stderr.includes(KEY));
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("model cli: bad model flags name the field and leave no store; resume continues a parked agent", async () => {
  Deno.env.set("OPENAI_API_KEY", KEY);
  await using srv = startFakeModelServer();
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-model-cli2-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(join(ws, "src"), { recursive: true });
    await Deno.writeTextFile(join(ws, "src/app.py"), "old\n");
    const image = join(root, "agent.json");
    await Deno.writeTextFile(
      image,
      JSON.stringify({
        name: "agent",
        tools: ["write_file"],
        capabilities: [{
          resource: "filesystem:workspace:src/*",
          rights: ["write"],
          effect: "ask",
        }],
      }),
    );
    const store = join(root, "s.db");
    const base = ["run", image, "--workspace", ws, "--store", store];
    for (
      const [args, msg] of [
        [
          ["--goal", "x", "--model", "gpt-4"],
          /--model: must be openai:<model> or anthropic:<model>/,
        ],
        [
          ["--goal", "x", "--model", "openai:m", "--base-url", "ftp://x"],
          /--base-url: must be http/,
        ],
        [["--goal", "x", "--model", "openai:m", "--base-url", "http://u:p@h/v1"], /credentials/],
        [["--model", "openai:m"], /needs --goal/],
        [["--goal", "x"], /--script SCRIPT\.json, or --goal TEXT with --model/],
      ] as const
    ) {
      const r = await libos([...base, ...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    await assert.rejects(Deno.stat(store));

    srv.push(
      { tool_calls: [{ name: "write_file", arguments: { path: "src/app.py", content: "new\n" } }] },
      { text: "written" },
    );
    const run = await libos([
      ...base,
      "--goal",
      "update the app",
      "--model",
      "openai:m",
      "--base-url",
      srv.openaiBaseUrl,
      "--human",
      "queue",
      "--json",
    ]);
    assert.equal(run.code, 3, run.stderr);
    const parked = JSON.parse(run.stdout);
    assert.equal(parked.status, "waiting_human");
    const approve = await libos([
      "human",
      "approve",
      parked.pending_requests[0],
      "--once",
      "--store",
      store,
    ]);
    assert.equal(approve.code, 0, approve.stderr);
    const resumed = await libos(["resume", "1", "--store", store, "--json"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(JSON.parse(resumed.stdout).exit_reason, "written");
    assert.equal(await Deno.readTextFile(join(ws, "src/app.py")), "new\n");
    assert.equal(srv.requests.length, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
