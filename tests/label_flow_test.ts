/**
 * Labels follow data through every channel between processes, not just files
 * and messages: a child's exit result, another tree's request arguments, the
 * text a process leaves in shared metadata (checkpoint labels, the image
 * registry). Each test is an attack that used to launder a secret.
 */
import assert from "node:assert/strict";
import { QueueHuman } from "../runtime/providers/scripted.ts";
import { cap, launch, makeEnv, rejectsCode } from "./_helpers.ts";
import { type FakeRequest, startFakeModelServer } from "./fake_models.ts";

const SECRET = "TOPSECRET-4242";

Deno.test("label flow: a parent that waits on a tainted child takes its taint with its result", async () => {
  await using env = await makeEnv({ files: { "secret.txt": SECRET, "pub/.keep": "" } });
  const parent = await launch(env, [
    cap("process:spawn", "execute"),
    cap("filesystem:workspace:secret.txt", "read"),
    cap("filesystem:workspace:pub/*", "write"),
  ], { policy: { labels: { "secret.txt": "secret" } } });
  // The parent never reads the secret itself: a worker does, and exits with it.
  const { pid: child } = await env.rt.syscall(parent, "process.fork", {
    mode: "worker",
    goal: "read it",
    capabilities: [{ resource: "filesystem:workspace:secret.txt", rights: ["read"] }],
  }) as { pid: number };
  const content = await env.rt.syscall(child, "filesystem.read", { path: "secret.txt" });
  await env.rt.syscall(child, "process.exit", { code: 0, result: String(content) });
  const w = await env.rt.syscall(parent, "process.wait", { pid: child }) as { result: string };
  assert.equal(w.result, SECRET, "the parent gets its child's result");
  assert.equal((await env.rt.process(parent)).taint, "secret");
  await rejectsCode(
    env.rt.syscall(parent, "filesystem.write", { path: "pub/leak.txt", content: w.result }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(parent, "human.output", { text: w.result }), "EPERM");
  assert.deepEqual(env.human.shown, []);
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({ action: "process.wait" }));
  assert.ok(!audit.includes(SECRET), "the wait's result is in the audit in clear");
  // An untainted child's result leaves its parent as it was.
  const { pid: plain } = await env.rt.syscall(parent, "process.spawn", { goal: "g" }) as {
    pid: number;
  };
  const other = await launch(env, [cap("process:spawn", "execute")]);
  const { pid: plainChild } = await env.rt.syscall(other, "process.spawn", { goal: "g" }) as {
    pid: number;
  };
  await env.rt.syscall(plainChild, "process.exit", { code: 0, result: "fine" });
  await env.rt.syscall(other, "process.wait", { pid: plainChild });
  assert.equal((await env.rt.process(other)).taint, "public");
  assert.ok(plain > 0);
});

Deno.test("label flow: an approver process that lists other trees' requests takes the labels of what it read", async () => {
  const CONF = "CONFIDENTIAL-PAYROLL-777";
  await using env = await makeEnv({
    files: { "hr/pay.txt": CONF, "src/a.py": "", "pub/.keep": "" },
    providers: { human: new QueueHuman() },
  });
  const worker = await launch(env, [
    cap("filesystem:workspace:hr/pay.txt", "read"),
    { resource: "filesystem:workspace:src/*", rights: ["write"], effect: "ask" },
  ], { policy: { labels: { "hr/pay.txt": "confidential" } } });
  const approver = await launch(env, [
    cap("human:owner", "approve"),
    cap("filesystem:workspace:pub/*", "write"),
  ]);
  const data = await env.rt.syscall(worker, "filesystem.read", { path: "hr/pay.txt" });
  await rejectsCode(
    env.rt.syscall(worker, "filesystem.write", { path: "src/a.py", content: `# ${data}` }),
    "EAGAIN",
  );
  const reqs = await env.rt.syscall(approver, "human.requests", {}) as {
    args: { content: string };
    labels: string[];
  }[];
  assert.equal(reqs.length, 1);
  assert.deepEqual(reqs[0].labels, ["confidential"]);
  assert.equal((await env.rt.process(approver)).taint, "confidential");
  await rejectsCode(
    env.rt.syscall(approver, "filesystem.write", {
      path: "pub/leak.txt",
      content: reqs[0].args.content,
    }),
    "EPERM",
  );
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({ action: "human.requests" }));
  assert.ok(!audit.includes("PAYROLL"), "the listing is in the audit in clear");
});

Deno.test("label flow: a tainted process cannot write its data into checkpoint labels or the image registry", async () => {
  await using env = await makeEnv({ files: { "secret.txt": SECRET } });
  const p = await launch(env, [
    cap("filesystem:workspace:secret.txt", "read"),
    cap("checkpoint:process:self", "read", "write", "materialize"),
    cap("image:notes", "write"),
  ], { policy: { labels: { "secret.txt": "secret" } } });
  // Untainted, the same calls work.
  const before = await env.rt.syscall(p, "checkpoint.create", { label: "before" }) as {
    checkpoint_id: string;
  };
  await env.rt.syscall(p, "image.register", {
    image: { name: "notes", description: "plain", tools: ["read_file"] },
  });
  const s = await env.rt.syscall(p, "filesystem.read", { path: "secret.txt" });
  assert.equal((await env.rt.process(p)).taint, "secret");
  await rejectsCode(env.rt.syscall(p, "checkpoint.create", { label: `x ${s}` }), "EPERM");
  await rejectsCode(
    env.rt.syscall(p, "image.register", {
      image: { name: "notes", description: `d ${s}`, tools: ["read_file"] },
    }),
    "EPERM",
  );
  // A checkpoint without a label of its own carries no data of the process's: still allowed.
  await env.rt.syscall(p, "checkpoint.create", {});
  const q = await launch(env, [cap("image:*", "read")]);
  const imgs = JSON.stringify(await env.rt.syscall(q, "image.list", {}));
  const cks = JSON.stringify(await env.rt.listCheckpoints(p, null));
  assert.ok(!imgs.includes(SECRET) && !cks.includes(SECRET));
  assert.match(cks, new RegExp(before.checkpoint_id));
});

/** A process that read a secret (`.env`, labelled secret) and may write `pid`'s namespace. */
async function secretWriter(
  env: Awaited<ReturnType<typeof makeEnv>>,
  pid: number,
): Promise<number> {
  const q = await launch(env, [
    cap("filesystem:workspace:.env", "read"),
    cap(`object_namespace:proc:${pid}`, "read", "write"),
  ], { policy: { labels: { ".env": "secret" } } });
  await env.rt.syscall(q, "filesystem.read", { path: ".env" });
  return q;
}

Deno.test("label flow: a constraint carrying data above the endpoint's clearance is kept out of a summary's words", async () => {
  Deno.env.set("OPENAI_API_KEY", "sk-test-label-flow");
  const KEY = "AKIA-" + crypto.randomUUID();
  await using srv = startFakeModelServer();
  const files: Record<string, string> = { ".env": `TOKEN=${KEY}\n` };
  for (let i = 0; i < 6; i++) files[`logs/${i}.log`] = `log ${i}: ` + "x".repeat(1500);
  await using env = await makeEnv({ files });
  let reads = 0;
  const answer = (req: FakeRequest) => {
    if (((req.body.tools as unknown[] | undefined) ?? []).length === 0) return { text: "summary" };
    if (reads < 6) {
      return { tool_calls: [{ name: "read_file", arguments: { path: `logs/${reads++}.log` } }] };
    }
    return { text: "all clean" };
  };
  for (let i = 0; i < 30; i++) srv.push(answer);
  const p = await env.rt.launch({
    image: { name: "agent", tools: ["read_file"], system_prompt: "agent" },
    workspace: env.ws,
    grants: [cap("filesystem:workspace:logs/*", "read")],
    goal: "Check every log.",
    model: {
      provider: "openai",
      name: "m",
      base_url: srv.openaiBaseUrl,
      context_window: 2048,
      compact_at: 0.5,
    },
  });
  const q = await secretWriter(env, p.pid);
  await env.rt.syscall(q, "memory.put", {
    namespace: `proc:${p.pid}`,
    kind: "constraint",
    payload: `never print ${KEY}`,
  });
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(p.pid)).status, "exited");
  const summaries = (await env.rt.kernel.store.listObjects(`proc:${p.pid}`))
    .filter((o) => o.kind === "summary");
  assert.ok(summaries.length > 0, "compaction never ran");
  assert.equal(
    srv.requests.filter((r) => r.raw.includes(KEY)).length,
    0,
    "the key reached a request",
  );
  for (const s of summaries) {
    assert.ok(!JSON.stringify(s.payload).includes(KEY) || s.label === "secret", s.label);
    assert.match(JSON.stringify(s.payload), /\[redacted:secret\]/);
  }
});

Deno.test("label flow: a listing shows the name of an object labelled above the caller as a label and a hash", async () => {
  const KEY = "AKIA-" + crypto.randomUUID();
  await using env = await makeEnv({ files: { ".env": `TOKEN=${KEY}\n` } });
  const p = await launch(env, []);
  const q = await secretWriter(env, p);
  await env.rt.syscall(q, "memory.put", {
    namespace: `proc:${p}`,
    kind: "evidence",
    name: `token-${KEY}`,
    payload: "x",
  });
  const seen = JSON.stringify(await env.rt.syscall(p, "memory.list", {}));
  assert.ok(!seen.includes(KEY), seen);
  assert.match(seen, /\[redacted:secret\]/);
  assert.equal((await env.rt.process(p)).taint, "public");
  // The writer, which carries the secret already, sees the name.
  assert.ok(
    JSON.stringify(await env.rt.syscall(q, "memory.list", { namespace: `proc:${p}` })).includes(
      KEY,
    ),
  );
});
