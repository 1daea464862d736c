/**
 * The CLI contract, run as a real subprocess: JSON shapes, exit codes, error
 * codes, and bad input that leaves no state behind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { libos } from "./_helpers.ts";

interface Fixture {
  root: string;
  ws: string;
  store: string;
  file(name: string, value: unknown): Promise<string>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function fixture(files: Record<string, string> = {}): Promise<Fixture> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-cli-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(ws);
  for (const [rel, content] of Object.entries(files)) {
    await Deno.mkdir(join(ws, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(ws, rel), content);
  }
  return {
    root,
    ws,
    store: join(root, "store.db"),
    async file(name, value) {
      const p = join(root, name);
      await Deno.writeTextFile(p, typeof value === "string" ? value : JSON.stringify(value));
      return p;
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(root, { recursive: true });
    },
  };
}

const IMAGE = {
  name: "cli",
  tools: ["read_file", "write_file", "delete_file", "list_dir", "shell"],
};
const SECRET = "sk-live-CLI-SECRET-9f8e7d";

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test("cli: run --json prints pid, status and per-step ok/value or error code", async () => {
  await using f = await fixture({ "README.md": "hello readme", ".env": `TOKEN=${SECRET}` });
  const image = await f.file("image.json", IMAGE);
  const script = await f.file("script.json", {
    steps: [
      { tool: "read_file", args: { path: "README.md" } },
      { tool: "read_file", args: { path: ".env" } },
      { tool: "write_file", args: { path: "out.txt", content: "x" } },
      { tool: "read_file", args: { path: "missing.txt" } },
    ],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "filesystem:workspace:README.md=read",
    "--grant",
    "filesystem:workspace:missing.txt=read",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.pid, 1);
  assert.equal(out.status, "exited");
  assert.deepEqual(out.steps[0], { tool: "read_file", ok: true, value: "hello readme" });
  assert.equal(out.steps[1].ok, false);
  assert.equal(out.steps[1].error.code, "EPERM");
  assert.equal(out.steps[2].error.code, "EPERM");
  assert.equal(out.steps[3].error.code, "ENOENT");
  assert.equal(await exists(join(f.ws, "out.txt")), false);
  assert.ok(!r.stdout.includes(SECRET) && !r.stderr.includes(SECRET));
  const bytes = new TextDecoder().decode(await Deno.readFile(f.store));
  assert.ok(!bytes.includes(SECRET), "secret must not reach the store");
});

Deno.test("cli: a shell ASK in a non-interactive run is answered deny and recorded", async () => {
  await using f = await fixture({ "a.txt": "a" });
  const image = await f.file("image.json", {
    ...IMAGE,
    policy: { shell: "allowlist_auto_else_ask", shell_allowlist: [] },
  });
  const script = await f.file("script.json", {
    steps: [{ tool: "shell", args: { argv: ["ls"] } }],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "shell:ls=execute",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).steps[0].error.code, "EPERM");
  const audit = await libos(["audit", "--store", f.store, "--json"]);
  const actions = JSON.parse(audit.stdout).map((a: { action: string; decision: string }) =>
    `${a.action}:${a.decision}`
  );
  assert.ok(actions.includes("human.ask:ask"), actions.join(" "));
  assert.ok(actions.includes("human.decide:deny"), actions.join(" "));
  assert.ok(actions.includes("shell.run:deny"), actions.join(" "));
});

Deno.test("cli: a granted command runs sandboxed in a runtime without --allow-all", async () => {
  // The CLI here runs with explicit --allow-* flags, under which Deno refuses /proc to it.
  await using f = await fixture({ "a.txt": "a", "out/keep.txt": "" });
  const image = await f.file("image.json", { ...IMAGE, policy: { shell: "always_allow" } });
  const script = await f.file("script.json", {
    steps: [
      { tool: "shell", args: { argv: ["cp", "a.txt", "out/b.txt"] } },
      { tool: "shell", args: { argv: ["cp", "a.txt", "c.txt"] } },
    ],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "shell:cp=execute",
    "--grant",
    "filesystem:workspace:*=read",
    "--grant",
    "filesystem:workspace:out/*=read,write",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const steps = JSON.parse(r.stdout).steps;
  assert.equal(steps[0].ok, true, JSON.stringify(steps[0]));
  assert.equal(steps[0].value.code, 0, steps[0].value.stderr);
  assert.deepEqual(steps[0].value.writes.map((w: { path: string }) => w.path), ["out/b.txt"]);
  assert.notEqual(steps[1].value.code, 0, "no write capability on the workspace root");
  assert.equal(await exists(join(f.ws, "out/b.txt")), true);
  assert.equal(await exists(join(f.ws, "c.txt")), false);
});

Deno.test("cli: every file effect works in a runtime without --allow-all (no /proc/self to name open files)", async () => {
  await using f = await fixture({ "d/old.txt": "old", "d/tree/x.txt": "x" });
  const image = await f.file("image.json", {
    name: "files",
    tools: ["read_file", "write_file", "delete_file", "list_dir", "stat_file"],
  });
  const script = await f.file("script.json", {
    steps: [
      { tool: "write_file", args: { path: "d/new/deeper/n.txt", content: "new" } },
      { tool: "read_file", args: { path: "d/new/deeper/n.txt" } },
      { tool: "write_file", args: { path: "d/old.txt", content: "rewritten" } },
      { tool: "stat_file", args: { path: "d/old.txt" } },
      { tool: "delete_file", args: { path: "d/tree", recursive: true } },
      { tool: "list_dir", args: { path: "d" } },
    ],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "filesystem:workspace:d=read",
    "--grant",
    "filesystem:workspace:d/*=read,write,delete",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const steps = JSON.parse(r.stdout).steps as { ok: boolean; value: unknown }[];
  assert.deepEqual(steps.map((s) => s.ok), [true, true, true, true, true, true], r.stdout);
  assert.equal(steps[1].value, "new");
  assert.equal((steps[3].value as { size: number }).size, "rewritten".length);
  assert.deepEqual(steps[5].value, [
    { name: "new", kind: "dir" },
    { name: "old.txt", kind: "file" },
  ]);
  assert.equal(await Deno.readTextFile(join(f.ws, "d/old.txt")), "rewritten");
  assert.equal(await exists(join(f.ws, "d/tree")), false);
});

Deno.test("cli: image capabilities with effect deny, uses_remaining and expires_at are honoured", async () => {
  await using f = await fixture({ "a.txt": "a", "b.txt": "b", "c.txt": "c" });
  const image = await f.file("image.json", {
    ...IMAGE,
    capabilities: [
      { resource: "filesystem:workspace:*", rights: ["read"] },
      { resource: "filesystem:workspace:a.txt", rights: ["read"], effect: "deny" },
      { resource: "filesystem:workspace:out/*", rights: ["write"], uses_remaining: 1 },
      {
        resource: "filesystem:workspace:old/*",
        rights: ["write"],
        expires_at: "2001-01-01T00:00:00Z",
      },
    ],
  });
  const script = await f.file("script.json", {
    steps: [
      { tool: "read_file", args: { path: "a.txt" } },
      { tool: "read_file", args: { path: "b.txt" } },
      { tool: "write_file", args: { path: "out/1", content: "1" } },
      { tool: "write_file", args: { path: "out/2", content: "2" } },
      { tool: "write_file", args: { path: "old/x", content: "x" } },
    ],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--json",
  ]);
  const steps = JSON.parse(r.stdout).steps;
  assert.deepEqual(steps.map((s: { ok: boolean }) => s.ok), [false, true, true, false, false]);
  assert.equal(await exists(join(f.ws, "out/1")), true);
  assert.equal(await exists(join(f.ws, "out/2")), false);
  assert.equal(await exists(join(f.ws, "old/x")), false);
});

Deno.test("cli: malformed image names the field, exits 2 and creates no store", async () => {
  await using f = await fixture();
  const script = await f.file("script.json", { steps: [] });
  const cases: [unknown, string][] = [
    [{ tools: [] }, "name"],
    [{ name: "x", tools: ["no_such_tool"] }, "tools[0]"],
    [
      { name: "x", capabilities: [{ resource: "*", rights: ["read"] }] },
      "capabilities[0].resource",
    ],
    [
      { name: "x", capabilities: [{ resource: "shell:ls", rights: ["fly"] }] },
      "capabilities[0].rights",
    ],
    [
      { name: "x", capabilities: [{ resource: "filesystem:workspace:src*", rights: ["read"] }] },
      "capabilities[0].resource",
    ],
    [{ name: "x", policy: { shell: "sometimes" } }, "policy.shell"],
    [{ name: "x", surprise: 1 }, "surprise"],
    ["{not json", "image"],
  ];
  for (const [img, field] of cases) {
    const image = await f.file("image.json", img);
    const r = await libos([
      "run",
      image,
      "--workspace",
      f.ws,
      "--script",
      script,
      "--store",
      f.store,
    ]);
    assert.equal(r.code, 2, `${JSON.stringify(img)}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`EINVAL ${field.replace(/[[\]().]/g, "\\$&")}`), r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, "one-line error");
    assert.equal(await exists(f.store), false, "no store may be created for bad input");
  }
});

Deno.test("cli: malformed script and grant name the field and leave no state", async () => {
  await using f = await fixture();
  const image = await f.file("image.json", IMAGE);
  const good = await f.file("good.json", { steps: [] });
  const bads: [string[], string][] = [
    [["--script", await f.file("s1.json", { steps: "no" })], "script.steps"],
    [
      ["--script", await f.file("s2.json", { steps: [{ tool: "read_file", args: [] }] })],
      "script.steps[0].args",
    ],
    [["--script", await f.file("s3.json", { steps: [{ tool: 7 }] })], "script.steps[0].tool"],
    // Storing or hashing args this deep would overflow the stack (inside a commit, the store stops).
    [
      [
        "--script",
        await f.file(
          "s4.json",
          `{"steps":[{"tool":"read_file","args":{"x":${"[".repeat(3000)}${"]".repeat(3000)}}}]}`,
        ),
      ],
      "script.steps[0].args: nest deeper than 64 levels",
    ],
    // 17 MB of arguments: every quantum would read and parse the whole script again.
    [
      [
        "--script",
        await f.file("s5.json", {
          steps: Array.from({ length: 17 }, () => ({
            tool: "write_file",
            args: { path: "a", content: "x".repeat(1024 * 1024) },
          })),
        }),
      ],
      "script.steps[15]: the script's arguments pass 16777216 characters",
    ],
    [["--script", good, "--grant", "filesystem:workspace:a"], "--grant"],
    [["--script", good, "--grant", "nope:x=read"], "--grant"],
    [["--script", good, "--grant", "shell:ls=teleport"], "--grant"],
  ];
  for (const [extra, field] of bads) {
    const r = await libos(["run", image, "--workspace", f.ws, "--store", f.store, ...extra]);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(field), `${field} not named in: ${r.stderr}`);
    assert.equal(await exists(f.store), false);
  }
});

Deno.test("cli: a store inside the workspace is refused", async () => {
  await using f = await fixture();
  const image = await f.file("image.json", IMAGE);
  const script = await f.file("script.json", { steps: [] });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    join(f.ws, "s.db"),
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--store/);
  assert.equal(await exists(join(f.ws, "s.db")), false);
});

Deno.test("cli: a --store that is another application's database or a directory is refused (exit 2) and not written", async () => {
  await using f = await fixture();
  const db = new DatabaseSync(f.store);
  db.exec("CREATE TABLE objects (x INTEGER); INSERT INTO objects VALUES (1)");
  db.close();
  const image = await f.file("image.json", IMAGE);
  const script = await f.file("script.json", { steps: [] });
  for (
    const args of [
      ["ps", "--store", f.store],
      ["run", image, "--workspace", f.ws, "--script", script, "--store", f.store],
    ]
  ) {
    const r = await libos(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^libos: EINVAL store: .* is a SQLite database of something else/m);
    assert.doesNotMatch(r.stderr, /at SqliteStore|CREATE TABLE/, "a stack trace or the schema");
  }
  // A directory as the store: one line too.
  const dir = await libos(["ps", "--store", f.ws]);
  assert.equal(dir.code, 2, dir.stderr);
  assert.match(dir.stderr, /^libos: EINVAL store: cannot open .*ws: it is a directory$/m);
  assert.doesNotMatch(dir.stderr, /at SqliteStore/);
  const check = new DatabaseSync(f.store);
  const tables = check.prepare("SELECT name FROM sqlite_master").all().map((t) => t.name);
  check.close();
  assert.deepEqual(tables, ["objects"]);
  assert.deepEqual([...Deno.readDirSync(f.root)].map((e) => e.name).sort(), [
    "image.json",
    "script.json",
    "store.db",
    "ws",
  ]);
});

Deno.test("cli: unknown command and missing flags are usage errors (exit 2)", async () => {
  assert.equal((await libos(["fly"])).code, 2);
  assert.equal((await libos(["run"])).code, 2);
  assert.equal((await libos(["audit", "--store", "/nonexistent/x.db"])).code, 2);
});

Deno.test("cli: audit --verify passes on a clean store and names the first altered record", async () => {
  await using f = await fixture({ "a.txt": "a" });
  const image = await f.file("image.json", IMAGE);
  const script = await f.file("script.json", {
    steps: [
      { tool: "read_file", args: { path: "a.txt" } },
      { tool: "read_file", args: { path: "b.txt" } },
      { tool: "list_dir", args: { path: "." } },
    ],
  });
  await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "filesystem:workspace:a.txt=read",
  ]);
  const ok = await libos(["audit", "--store", f.store, "--verify"]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /audit ok: 4 records/);
  // Rewrite the denied read as allowed, as an attacker with file access would.
  const db = new DatabaseSync(f.store);
  const row = db.prepare("SELECT body FROM audit WHERE seq = 2").get() as { body: string };
  db.prepare("UPDATE audit SET body = ?, decision = 'allow' WHERE seq = 2").run(
    row.body.replace('"decision":"deny"', '"decision":"allow"'),
  );
  db.close();
  const bad = await libos(["audit", "--store", f.store, "--verify"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /record 2 \(a2\)/);
  const json = JSON.parse(
    (await libos(["audit", "--store", f.store, "--verify", "--json"])).stdout,
  );
  assert.equal(json.ok, false);
  assert.equal(json.firstBad.seq, 2);
});

Deno.test("cli: ps shows lineage and status of forked children", async () => {
  await using f = await fixture({ "a.txt": "a" });
  const image = await f.file("image.json", { name: "p", tools: ["fork", "wait", "read_file"] });
  const script = await f.file("script.json", {
    steps: [
      {
        tool: "fork",
        args: {
          mode: "worker",
          script: { steps: [{ tool: "read_file", args: { path: "a.txt" } }] },
        },
      },
      { tool: "wait", args: { pid: 2 } },
    ],
  });
  const r = await libos([
    "run",
    image,
    "--workspace",
    f.ws,
    "--script",
    script,
    "--store",
    f.store,
    "--grant",
    "process:spawn=execute",
    "--json",
  ]);
  assert.equal(JSON.parse(r.stdout).steps[1].value.status, "exited", r.stdout);
  const ps = JSON.parse((await libos(["ps", "--store", f.store, "--json"])).stdout);
  assert.equal(ps.length, 2);
  assert.deepEqual(ps[1].lineage, [1]);
  assert.equal(ps[1].ppid, 1);
  assert.equal(ps[1].origin, "fork:worker");
  const text = (await libos(["ps", "--store", f.store])).stdout;
  assert.match(text, /\n {2}2\texited/);
});

Deno.test("cli: state from one run is visible to the next invocation on the same store", async () => {
  await using f = await fixture({ "a.txt": "a" });
  const image = await f.file("image.json", IMAGE);
  const script = await f.file("script.json", {
    steps: [{ tool: "read_file", args: { path: "a.txt" } }],
  });
  await libos(["run", image, "--workspace", f.ws, "--script", script, "--store", f.store]);
  await libos(["run", image, "--workspace", f.ws, "--script", script, "--store", f.store]);
  const ps = JSON.parse((await libos(["ps", "--store", f.store, "--json"])).stdout);
  assert.deepEqual(ps.map((p: { pid: number }) => p.pid), [1, 2]);
  const v = await libos(["audit", "--store", f.store, "--verify"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /4 records/);
});
