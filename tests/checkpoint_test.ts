/**
 * Checkpoints of process subtrees: create at a quiescent point, restore in
 * place, fork under new ids, commit to an image, diff, inspect; what a
 * checkpoint never gives back (authority, labels, budgets, external effects)
 * and a tampered checkpoint refused.
 */
import assert from "node:assert/strict";
import { canonicalJson, sha256 } from "../runtime/canonical.ts";
import type { CapabilitySpec, MemoryObject } from "../runtime/types.ts";
import type { CheckpointDiff, ForkResult, RestoreResult } from "../primitives/checkpoint.ts";
import { cap, type Env, makeEnv, rawRows, rawSql, rejectsCode } from "./_helpers.ts";
import { startFakeModelServer } from "./fake_models.ts";

const CKPT_TOOLS = [
  "put_object",
  "update_object",
  "get_object",
  "write_file",
  "read_file",
  "spawn",
  "fork",
  "send",
  "recv",
  "exit",
  "checkpoint_create",
  "checkpoint_list",
  "checkpoint_inspect",
  "checkpoint_diff",
  "checkpoint_restore",
  "checkpoint_fork",
  "checkpoint_commit",
];

/** Every checkpoint right over itself (and so its descendants), and spawning. */
const SELF_RIGHTS: CapabilitySpec[] = [
  cap("checkpoint:process:self", "write", "read", "execute", "materialize"),
  cap("process:spawn", "execute"),
];

async function proc(
  env: Env,
  grants: CapabilitySpec[] = [],
  script?: unknown,
  name = "ckpt",
  budgets?: Record<string, number | null>,
): Promise<number> {
  const p = await env.rt.launch({
    image: {
      name,
      tools: CKPT_TOOLS,
      system_prompt: `prompt of ${name}`,
      ...(budgets ? { budgets } : {}),
    },
    workspace: env.ws,
    grants,
    ...(script ? { script } : {}),
  });
  return p.pid;
}

function sys<T>(env: Env, pid: number, name: string, args: Record<string, unknown> = {}) {
  return env.rt.syscall(pid, name, args) as Promise<T>;
}

async function objects(env: Env, pid: number): Promise<MemoryObject[]> {
  return await env.rt.kernel.store.listObjects(`proc:${pid}`);
}

function named(objs: MemoryObject[]): Record<string, unknown> {
  return Object.fromEntries(objs.filter((o) => o.name).map((o) => [o.name!, o.payload]));
}

Deno.test("checkpoint: restore puts a subtree back in place: records, objects, links, steps, mailboxes; newcomers are killed", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "help" });
  const a = await sys<{ oid: string }>(env, root, "memory.put", {
    kind: "plan",
    name: "a",
    payload: { v: 1 },
  });
  const b = await sys<{ oid: string }>(env, root, "memory.put", {
    kind: "evidence",
    name: "b",
    payload: "b",
  });
  await sys(env, root, "memory.link", { from: a.oid, to: b.oid, relation: "uses" });
  await sys(env, child, "memory.put", { kind: "claim", name: "c", payload: "c" });
  await sys(env, root, "process.send", { pid: child, body: { hello: 1 } });
  const before = await env.rt.process(root);
  const ck = await env.rt.createCheckpoint(root, { label: "before changes" });
  assert.equal(ck.processes, 2);
  assert.match(ck.sha256, /^[0-9a-f]{64}$/);

  // Everything moves on.
  await sys(env, root, "memory.update", { oid: a.oid, payload: { v: 2 }, expected_version: 1 });
  const d = await sys<{ oid: string }>(env, root, "memory.put", {
    kind: "claim",
    name: "d",
    payload: "d",
  });
  await sys(env, root, "memory.link", { from: b.oid, to: a.oid, relation: "back" });
  assert.equal((await sys<unknown[]>(env, child, "process.recv")).length, 1);
  await sys(env, child, "memory.put", { kind: "claim", name: "e", payload: "e" });
  const { pid: late } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "late" });
  await sys(env, root, "process.chdir", { path: "." }).catch(() => {});

  const auditBefore = await env.rt.kernel.store.listAudit();
  const r = await env.rt.restoreCheckpoint(ck.checkpoint_id);
  assert.deepEqual(r.restored, [root, child]);
  // The audit trail is never rewritten or shortened: every record before is still there.
  const auditAfter = await env.rt.kernel.store.listAudit();
  assert.deepEqual(auditAfter.slice(0, auditBefore.length), auditBefore);
  assert.ok(auditAfter.length > auditBefore.length, "the restore itself is audited");
  assert.ok((await env.rt.kernel.store.verifyAudit()).ok);
  assert.deepEqual(r.killed, [late]);
  const rootObjs = named(await objects(env, root));
  assert.deepEqual(rootObjs.a, { v: 1 });
  assert.equal(rootObjs.b, "b");
  assert.ok(!("d" in rootObjs));
  assert.equal(await env.rt.kernel.store.getObject(d.oid), null, "made after: gone");
  // Versions never go back: the old content comes back as a new version.
  assert.equal((await env.rt.kernel.store.getObject(a.oid))!.version, 3);
  assert.deepEqual(
    (await env.rt.kernel.store.linksFromNamespace(`proc:${root}`)).map((l) => l.relation),
    ["uses"],
  );
  assert.deepEqual(Object.keys(named(await objects(env, child))).sort(), ["c", "goal"]);
  assert.equal((await env.rt.kernel.store.listMessages(child)).length, 1, "mailbox put back");
  const lateRec = await env.rt.process(late);
  assert.equal(lateRec.status, "killed");
  assert.match(lateRec.exit_reason ?? "", /made after the checkpoint/);
  // Budgets are never given back.
  const after = await env.rt.process(root);
  assert.ok(after.usage.syscalls >= before.usage.syscalls);
  assert.equal(after.status, "runnable");
  // Audited as the host.
  const rec = (await env.rt.kernel.store.listAudit({ action: "checkpoint.restore" }))[0];
  assert.equal(rec.actor, "host");
  assert.equal(rec.decision, "allow");
});

Deno.test("checkpoint: a process checkpoints itself from its own step and resumes after that step when restored", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS, {
    steps: [
      { tool: "put_object", args: { kind: "observation", name: "x1", payload: 1 } },
      { tool: "checkpoint_create", args: { label: "mid" } },
      { tool: "put_object", args: { kind: "observation", name: "x2", payload: 2 } },
    ],
  });
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(root)).status, "exited");
  const steps = await env.rt.steps(root);
  assert.equal(steps.length, 3);
  const made = steps[1];
  assert.ok(made.ok);
  const id = (made.value as { checkpoint_id: string }).checkpoint_id;

  await env.rt.restoreCheckpoint(id);
  const back = await env.rt.process(root);
  assert.equal(back.status, "runnable");
  assert.equal(back.pending, null);
  assert.deepEqual(back.model?.state, { position: 2 }, "the script continues after the checkpoint");
  const kept = await env.rt.steps(root);
  assert.equal(kept.length, 2);
  assert.deepEqual(kept[1].ok && kept[1].value, {
    checkpoint_id: id,
    pid: root,
    label: "mid",
    processes: 1,
    objects: (made.value as { objects: number }).objects,
  });
  assert.ok(!("x2" in named(await objects(env, root))));
  await env.rt.runUntilIdle();
  const again = await env.rt.steps(root);
  assert.deepEqual(again.map((s) => [s.step, s.tool, s.ok]), [
    [0, "put_object", true],
    [1, "checkpoint_create", true],
    [2, "put_object", true],
  ]);
  assert.equal((await env.rt.process(root)).status, "exited");
});

Deno.test("checkpoint: stored as its canonical JSON, objects spliced from the store's texts included", async () => {
  await using env = await makeEnv();
  const unsorted = { z: 1, b: { "10": [{ y: 1, x: 2 }], "9": "é" }, a: null };
  const root = await proc(env, SELF_RIGHTS, {
    steps: [
      { tool: "put_object", args: { kind: "observation", name: "u", payload: unsorted } },
      { tool: "checkpoint_create", args: { label: "self" } },
    ],
  });
  await env.rt.runUntilIdle();
  const other = await proc(env, SELF_RIGHTS);
  const { pid: child } = await sys<{ pid: number }>(env, other, "process.spawn", { goal: "g" });
  const o = await sys<{ oid: string }>(env, child, "memory.put", {
    kind: "claim",
    name: "k",
    payload: { d: [1, { f: 1, e: 2 }], c: "x" },
  });
  await sys(env, child, "memory.update", {
    oid: o.oid,
    expected_version: 1,
    payload: { "2": 1, "1": 2, b: unsorted },
  });
  const self = (await env.rt.steps(root))[1];
  assert.ok(self.ok);
  const ids = [
    (self.value as { checkpoint_id: string }).checkpoint_id,
    (await sys<{ checkpoint_id: string }>(env, other, "checkpoint.create", {})).checkpoint_id,
  ];
  await sys(env, child, "memory.update", { oid: o.oid, expected_version: 2, payload: "later" });
  await env.rt.restoreCheckpoint(ids[1]);
  ids.push((await env.rt.createCheckpoint(other)).checkpoint_id);
  await env.rt.kernel.store.flush();
  for (const id of ids) {
    const [row] = await rawRows(
      env.storePath,
      "SELECT body, sha256 FROM checkpoints WHERE checkpoint_id = ?",
      id,
    ) as { body: string; sha256: string }[];
    assert.equal(row.body, canonicalJson(JSON.parse(row.body)), id);
    assert.equal(row.sha256, sha256(row.body));
    const doc = JSON.parse(row.body);
    const objs = doc.processes.flatMap((p: { objects: MemoryObject[] }) => p.objects);
    assert.ok(objs.some((x: MemoryObject) => x.name === (id === ids[0] ? "u" : "k")), id);
  }
  // What the last one holds is what the store holds.
  const child_ = await objects(env, child);
  assert.deepEqual(named(child_).k, { "1": 2, "2": 1, b: unsorted });
});

Deno.test("checkpoint: a tampered checkpoint is refused with EINTEGRITY, audited, and changes nothing", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "g" });
  await sys(env, child, "memory.put", { kind: "claim", name: "k", payload: "original" });
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
  await sys(env, child, "memory.put", { kind: "claim", name: "later", payload: "later" });
  const id = ck.checkpoint_id;
  // Another connection in this thread: nothing of ours may be left uncommitted.
  await env.rt.kernel.store.flush();
  const [row] = await rawRows(
    env.storePath,
    "SELECT body, sha256 FROM checkpoints WHERE checkpoint_id = ?",
    id,
  ) as { body: string; sha256: string }[];
  const put = (body: string, hash = row.sha256) =>
    rawSql(
      env.storePath,
      "UPDATE checkpoints SET body = ?, sha256 = ? WHERE checkpoint_id = ?",
      body,
      hash,
      id,
    );
  const cases: [string, () => Promise<unknown>][] = [
    ["payload edited", () => put(row.body.replace('"original"', '"forged!!"'))],
    ["hash edited", () => put(row.body, "0".repeat(64))],
    ["not a checkpoint", () => put("[1,2,3]", sha256("[1,2,3]"))],
  ];
  for (const [what, tamper] of cases) {
    await env.rt.kernel.store.flush();
    await tamper();
    const e1 = await rejectsCode(env.rt.restoreCheckpoint(id), "EINTEGRITY");
    assert.match(e1.message, new RegExp(id), what);
    await rejectsCode(env.rt.forkCheckpoint(id), "EINTEGRITY");
    await rejectsCode(env.rt.inspectCheckpoint(id), "EINTEGRITY");
    await rejectsCode(sys(env, root, "checkpoint.restore", { checkpoint_id: id }), "EINTEGRITY");
    await rejectsCode(sys(env, root, "checkpoint.fork", { checkpoint_id: id }), "EINTEGRITY");
  }
  // Nothing restored, nothing forked.
  assert.ok("later" in named(await objects(env, child)));
  assert.equal((await env.rt.kernel.store.listProcesses()).length, 2);
  const refused = await env.rt.kernel.store.listAudit({ decision: "error" });
  const byHost = refused.filter((r) => r.actor === "host" && r.action === "checkpoint.restore");
  const byPid = refused.filter((r) => r.actor === `pid:${root}` && r.action === "checkpoint.fork");
  assert.equal(byHost.length, 3);
  assert.equal(byPid.length, 3);
  assert.ok(byHost.every((r) => r.reason.startsWith("EINTEGRITY")));
});

Deno.test("checkpoint: restore never brings back a revoked or used-up capability; allows granted since are revoked, denies stay", async () => {
  await using env = await makeEnv({
    files: { "a.txt": "A", "b.txt": "B", "c.txt": "C", "d.txt": "D" },
  });
  const root = await proc(env, SELF_RIGHTS);
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "g" });
  const k = env.rt.kernel;
  const a = await k.grant(child, cap("filesystem:workspace:a.txt", "read"), "host");
  const b = await k.grant(child, {
    ...cap("filesystem:workspace:b.txt", "read"),
    uses_remaining: 1,
  }, "host");
  await k.grant(child, cap("filesystem:workspace:c.txt", "read"), "host");
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
  // Since the checkpoint: a revoked, b used up, a new allow on d, a new deny on c.
  await sys(env, child, "capability.revoke", { cap_id: a.cap_id });
  assert.equal(await sys(env, child, "filesystem.read", { path: "b.txt" }), "B");
  const d = await k.grant(child, cap("filesystem:workspace:d.txt", "read"), "host");
  const deny = await k.grant(child, {
    ...cap("filesystem:workspace:c.txt", "read"),
    effect: "deny",
  }, "host");

  const r = await sys<RestoreResult>(env, root, "checkpoint.restore", {
    checkpoint_id: ck.checkpoint_id,
  });
  assert.deepEqual(r.revoked, [d.cap_id]);
  const caps = new Map((await k.store.capabilitiesOf(child)).map((c) => [c.cap_id, c]));
  assert.equal(caps.get(a.cap_id)!.status, "revoked");
  assert.equal(caps.get(b.cap_id)!.status, "exhausted");
  assert.equal(caps.get(b.cap_id)!.uses_remaining, 0);
  assert.equal(caps.get(d.cap_id)!.status, "revoked");
  assert.equal(caps.get(deny.cap_id)!.status, "active");
  for (const path of ["a.txt", "b.txt", "c.txt", "d.txt"]) {
    await rejectsCode(sys(env, child, "filesystem.read", { path }), "EPERM");
  }
});

Deno.test("checkpoint: restore reports the effects since the checkpoint and undoes none of them; diff lists them too", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "g" });
  await env.rt.kernel.grant(
    child,
    cap("filesystem:workspace:*", "read", "write", "delete"),
    "host",
  );
  await sys(env, child, "filesystem.write", { path: "before.txt", content: "0" });
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
  await sys(env, child, "filesystem.write", { path: "out.txt", content: "1" });
  await sys(env, child, "filesystem.delete", { path: "before.txt" });
  await sys(env, root, "human.output", { text: "hi" }).catch(() => {}); // not the child's: not listed

  const diff = await sys<CheckpointDiff>(env, root, "checkpoint.diff", {
    checkpoint_id: ck.checkpoint_id,
  });
  const listed = (fx: { syscall: string; resource: string }[]) =>
    fx.map((e) => [e.syscall, e.resource]);
  const expected = [
    ["filesystem.write", "filesystem:workspace:out.txt"],
    ["filesystem.delete", "filesystem:workspace:before.txt"],
  ];
  assert.deepEqual(listed(diff.effects_since.effects), expected);
  const r = await env.rt.restoreCheckpoint(ck.checkpoint_id);
  assert.deepEqual(listed(r.effects_since.effects), expected);
  assert.equal(r.effects_since.effects_total, 2);
  assert.ok(r.effects_since.effects.every((e) => e.pid === child && e.status === "done"));
  // Not undone: the file written since is still there, the deleted one still gone.
  assert.equal(await Deno.readTextFile(`${env.ws}/out.txt`), "1");
  await assert.rejects(Deno.stat(`${env.ws}/before.txt`), Deno.errors.NotFound);
});

Deno.test("checkpoint: fork remaps pids, oids and capability ids; copies hold no more authority than their originals now", async () => {
  await using env = await makeEnv({ files: { "p.txt": "P", "q.txt": "Q", "s.txt": "S" } });
  const root = await proc(env, [
    ...SELF_RIGHTS,
    cap("filesystem:workspace:p.txt", "read"),
    cap("filesystem:workspace:q.txt", "read"),
    { ...cap("filesystem:workspace:s.txt", "read"), uses_remaining: 3 },
    { ...cap("filesystem:workspace:q.txt", "read"), delegable: false },
    { ...cap("filesystem:workspace:secret.txt", "read"), effect: "deny" },
  ]);
  const k = env.rt.kernel;
  const rootCaps = await k.store.capabilitiesOf(root);
  const pCap = rootCaps.find((c) => c.resource.endsWith("p.txt"))!;
  const qCap = rootCaps.find((c) => c.resource.endsWith("q.txt") && c.delegable)!;
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.fork", {
    mode: "restricted",
    capabilities: [{ resource: "filesystem:workspace:p.txt", rights: ["read"] }],
  });
  const note = await sys<{ oid: string }>(env, child, "memory.put", {
    kind: "claim",
    name: "n",
    payload: "from the child",
  });
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", {});
  // Since the checkpoint the root lost q.txt.
  await sys(env, root, "capability.revoke", { cap_id: qCap.cap_id });

  const f = await sys<ForkResult>(env, root, "checkpoint.fork", {
    checkpoint_id: ck.checkpoint_id,
  });
  const rootCopy = f.pid;
  const childCopy = f.pids[String(child)];
  assert.equal(f.pids[String(root)], rootCopy);
  assert.ok(rootCopy > child && childCopy > rootCopy);
  const rc = await env.rt.process(rootCopy);
  const cc = await env.rt.process(childCopy);
  assert.equal(rc.ppid, root, "the copy is a child of the caller");
  assert.deepEqual(rc.lineage, [root]);
  assert.equal(cc.ppid, rootCopy);
  assert.deepEqual(cc.lineage, [root, rootCopy]);
  assert.equal(cc.namespace, `proc:${childCopy}`);
  assert.equal(rc.origin, `checkpoint:${ck.checkpoint_id}`);
  // Objects: same content, new oids, in the copies' namespaces.
  const copied = await objects(env, childCopy);
  const n = copied.find((o) => o.name === "n")!;
  assert.equal(n.payload, "from the child");
  assert.notEqual(n.oid, note.oid);
  assert.ok((await objects(env, child)).every((o) => !copied.some((c) => c.oid === o.oid)));
  // Capabilities: new ids; p.txt (live, delegable) yes; q.txt (revoked since), the
  // non-delegable and the use-limited ones no; the DENY yes.
  const copyCaps = await k.store.capabilitiesOf(rootCopy);
  const originals = new Set(
    [...rootCaps, ...await k.store.capabilitiesOf(child)].map((c) => c.cap_id),
  );
  assert.ok(copyCaps.every((c) => !originals.has(c.cap_id)));
  const res = (c: { resource: string; effect: string }) => `${c.effect} ${c.resource}`;
  const have = copyCaps.map(res).sort();
  assert.ok(have.includes("allow filesystem:workspace:p.txt"));
  assert.ok(have.includes("deny filesystem:workspace:secret.txt"));
  assert.ok(have.includes(`allow object_namespace:proc:${rootCopy}`));
  assert.ok(have.includes(`allow checkpoint:process:${rootCopy}`), have.join("; "));
  assert.ok(!have.some((r) => r.includes("q.txt")), have.join("; "));
  assert.ok(!have.some((r) => r.includes("s.txt")), have.join("; "));
  const why = new Map(f.capabilities.dropped.map((d) => [d.cap_id, d.why]));
  assert.match(why.get(qCap.cap_id) ?? "", /no longer live/);
  assert.equal(await sys(env, rootCopy, "filesystem.read", { path: "p.txt" }), "P");
  await rejectsCode(sys(env, rootCopy, "filesystem.read", { path: "q.txt" }), "EPERM");
  await rejectsCode(sys(env, rootCopy, "filesystem.read", { path: "s.txt" }), "EPERM");
  // The child's copy holds its delegation, under the root copy's copy.
  const childCopyP = (await k.store.capabilitiesOf(childCopy)).find((c) =>
    c.resource.endsWith("p.txt")
  )!;
  const rootCopyP = copyCaps.find((c) => c.resource.endsWith("p.txt"))!;
  assert.equal(childCopyP.parent_cap_id, rootCopyP.cap_id);
  assert.equal(rootCopyP.parent_cap_id, pCap.cap_id);
  // Revoking the original's capability revokes every copy of it.
  await sys(env, root, "capability.revoke", { cap_id: pCap.cap_id });
  await rejectsCode(sys(env, rootCopy, "filesystem.read", { path: "p.txt" }), "EPERM");
  await rejectsCode(sys(env, childCopy, "filesystem.read", { path: "p.txt" }), "EPERM");
});

Deno.test("checkpoint: a process acts only on itself and its descendants, with the rights its image grants over itself", async () => {
  await using env = await makeEnv();
  // No checkpoint rights at all: EPERM.
  const bare = await proc(env, [cap("process:spawn", "execute")]);
  await rejectsCode(sys(env, bare, "checkpoint.create", {}), "EPERM");
  // checkpoint:process:self from the image covers its descendants.
  const p = await env.rt.launch({
    image: {
      name: "selfish",
      tools: CKPT_TOOLS,
      capabilities: [cap("checkpoint:process:self", "write", "read")],
    },
    workspace: env.ws,
  });
  const root = p.pid;
  const held = (await env.rt.kernel.store.capabilitiesOf(root)).map((c) => c.resource);
  assert.ok(held.includes(`checkpoint:process:${root}`), held.join(", "));
  await env.rt.kernel.grant(root, cap("process:spawn", "execute"), "host");
  const { pid: child } = await sys<{ pid: number }>(env, root, "process.fork", { mode: "copy" });
  const made = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
  assert.equal((await sys<unknown[]>(env, root, "checkpoint.list", { pid: child })).length, 1);
  // Write and read only: restoring needs execute.
  await rejectsCode(
    sys(env, root, "checkpoint.restore", { checkpoint_id: made.checkpoint_id }),
    "EPERM",
  );
  // The child got a copy of its parent's checkpoint right (fork copy delegates it),
  // yet it cannot act on its parent: the parent is not its descendant.
  assert.ok(
    (await env.rt.kernel.store.capabilitiesOf(child)).some((c) =>
      c.resource === `checkpoint:process:${root}`
    ),
  );
  await rejectsCode(sys(env, child, "checkpoint.create", { pid: root }), "EPERM");
  await rejectsCode(sys(env, child, "checkpoint.list", { pid: root }), "EPERM");
  await rejectsCode(sys(env, bare, "checkpoint.list", { pid: root }), "EPERM");
  // A DENY on the child's resource beats the right over its ancestor.
  await env.rt.kernel.grant(root, {
    ...cap(`checkpoint:process:${child}`, "write"),
    effect: "deny",
  }, "host");
  await rejectsCode(sys(env, root, "checkpoint.create", { pid: child }), "EPERM");
  const denied = await env.rt.kernel.store.listAudit({
    action: "checkpoint.create",
    decision: "deny",
  });
  assert.ok(denied.length >= 3);
});

Deno.test("checkpoint: a subtree is never restored from inside it; restore needs the scheduler's role", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", {});
  const e = await rejectsCode(
    sys(env, root, "checkpoint.restore", { checkpoint_id: ck.checkpoint_id }),
    "ESTATE",
  );
  assert.match(e.message, /never from inside/);
  await env.rt.close();
  const { Runtime } = await import("../host/runtime.ts");
  const client = await Runtime.open({ store: env.storePath, role: "client" });
  try {
    await rejectsCode(client.restoreCheckpoint(ck.checkpoint_id), "ESTATE");
    // Reading and creating work from a client (committed state only).
    assert.equal((await client.listCheckpoints(root)).length, 1);
    await client.createCheckpoint(root, { label: "from a client" });
    assert.equal((await client.listCheckpoints(root)).length, 2);
  } finally {
    await client.close();
  }
});

Deno.test("checkpoint: commit makes an image that grants nothing", async () => {
  await using env = await makeEnv({ files: { "r.txt": "R" } });
  const root = await proc(env, [
    ...SELF_RIGHTS,
    cap("filesystem:workspace:r.txt", "read"),
    cap("image:snap", "write"),
  ]);
  const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { label: "L" });
  await rejectsCode(
    sys(env, root, "checkpoint.commit", { checkpoint_id: ck.checkpoint_id, image: "other" }),
    "EPERM",
  );
  const out = await sys<{ image: string; granted: unknown[] }>(env, root, "checkpoint.commit", {
    checkpoint_id: ck.checkpoint_id,
    image: "snap",
  });
  assert.deepEqual(out.granted, []);
  const img = (await env.rt.kernel.store.getImage("snap"))!;
  assert.deepEqual(img.capabilities, []);
  assert.equal(img.system_prompt, "prompt of ckpt");
  assert.deepEqual(img.tools, CKPT_TOOLS);
  assert.deepEqual(img.required_capabilities.map((c) => c.resource).sort(), [
    "filesystem:workspace:r.txt",
    "image:snap",
  ]);
  assert.match(img.description, new RegExp(ck.checkpoint_id));
  // Launching it grants nothing the host does not grant.
  const p = await env.rt.launch({ image: img, workspace: env.ws });
  await rejectsCode(sys(env, p.pid, "filesystem.read", { path: "r.txt" }), "EPERM");
});

Deno.test("checkpoint: diff against now and against another checkpoint; inspect shows no payload", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const x = await sys<{ oid: string }>(env, root, "memory.put", {
    kind: "claim",
    name: "x",
    payload: "one",
  });
  const c1 = await env.rt.createCheckpoint(root);
  await sys(env, root, "memory.update", { oid: x.oid, payload: "two", expected_version: 1 });
  await sys(env, root, "memory.put", { kind: "claim", name: "y", payload: "y" });
  const c2 = await env.rt.createCheckpoint(root);
  await sys(env, root, "memory.put", { kind: "claim", name: "z", payload: "z" });
  const d12 = await env.rt.diffCheckpoint(c1.checkpoint_id, c2.checkpoint_id);
  assert.equal(d12.processes.length, 1);
  const p = d12.processes[0];
  assert.equal(p.change, "changed");
  assert.deepEqual(p.objects.added.map((o) => o.name), ["y"]);
  assert.deepEqual(p.objects.changed.map(([a, b]) => [a.name, a.version, b.version]), [[
    "x",
    1,
    2,
  ]]);
  const dNow = await env.rt.diffCheckpoint(c2.checkpoint_id);
  assert.deepEqual(dNow.processes[0].objects.added.map((o) => o.name), ["z"]);
  assert.deepEqual(dNow.processes[0].objects.changed, []);
  const same = await env.rt.diffCheckpoint(c2.checkpoint_id, c2.checkpoint_id);
  assert.equal(same.processes[0].change, "same");
  const info = await env.rt.inspectCheckpoint(c1.checkpoint_id);
  assert.equal(info.verified, true);
  assert.equal(info.sha256, c1.sha256);
  assert.ok(!JSON.stringify(info).includes('"one"'), "no payload");
  await rejectsCode(env.rt.diffCheckpoint(c1.checkpoint_id, "ckpt_nope"), "ENOENT");
});

Deno.test("checkpoint: bad input names the field and changes nothing", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS);
  const e1 = await rejectsCode(
    sys(env, root, "checkpoint.restore", { checkpoint_id: "x" }),
    "EINVAL",
  );
  assert.match(e1.message, /^checkpoint\.restore\.checkpoint_id:/);
  const e2 = await rejectsCode(sys(env, root, "checkpoint.create", { lable: "typo" }), "EINVAL");
  assert.match(e2.message, /^checkpoint\.create\.lable:/);
  const e3 = await rejectsCode(sys(env, root, "checkpoint.create", { label: 7 }), "EINVAL");
  assert.match(e3.message, /^checkpoint\.create\.label:/);
  await rejectsCode(env.rt.restoreCheckpoint("ckpt_missing"), "ENOENT");
  await rejectsCode(env.rt.createCheckpoint(999), "ENOENT");
  assert.deepEqual(await env.rt.kernel.store.listCheckpoints(), []);
});

Deno.test("checkpoint: a model-driven process restored continues its conversation from the checkpoint; model calls since are reported", async () => {
  Deno.env.set("OPENAI_API_KEY", "sk-test-not-a-key");
  await using srv = startFakeModelServer();
  await using env = await makeEnv();
  srv.push(
    { tool_calls: [{ name: "checkpoint_create", arguments: { label: "t1" } }] },
    { tool_calls: [{ name: "write_file", arguments: { path: "w.txt", content: "after" } }] },
    { text: "first ending" },
    { tool_calls: [{ name: "write_file", arguments: { path: "w2.txt", content: "again" } }] },
    { text: "second ending" },
  );
  const p = await env.rt.launch({
    image: { name: "m", tools: ["write_file", "checkpoint_create"] },
    workspace: env.ws,
    grants: [...SELF_RIGHTS, cap("filesystem:workspace:*", "write")],
    goal: "checkpoint, then write",
    model: { provider: "openai", name: "m", base_url: srv.openaiBaseUrl, stream: false },
  });
  await env.rt.runUntilIdle();
  const done = await env.rt.process(p.pid);
  assert.equal(done.exit_reason, "first ending");
  const id = ((await env.rt.steps(p.pid))[0] as { value: { checkpoint_id: string } }).value
    .checkpoint_id;
  const logBefore = await env.rt.kernel.store.modelLogLength(p.pid);
  const r = await env.rt.restoreCheckpoint(id);
  assert.deepEqual(r.effects_since.effects.map((e) => e.syscall), ["filesystem.write"]);
  assert.deepEqual(r.effects_since.model_calls.map((c) => c.turn), [2, 3]);
  const logAfter = await env.rt.kernel.store.modelLogLength(p.pid);
  assert.ok(logAfter < logBefore);
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(p.pid)).exit_reason, "second ending");
  // Turn 2 was asked again from the checkpoint's conversation: one reply, its result.
  assert.equal(srv.requests.length, 5);
  const msgs = srv.requests[3].body.messages as { role: string }[];
  assert.deepEqual(msgs.map((m) => m.role), ["user", "assistant", "tool"]);
  assert.equal(await Deno.readTextFile(`${env.ws}/w.txt`), "after", "not undone");
  assert.equal(await Deno.readTextFile(`${env.ws}/w2.txt`), "again");
});

Deno.test("checkpoint: copies an agent forks from a checkpoint get their budgets out of its own", async () => {
  await using env = await makeEnv();
  const root = await proc(env, SELF_RIGHTS, undefined, "forker", {
    max_quanta: 1000,
    max_wall_ms: null,
    max_syscalls: 40,
  });
  const { checkpoint_id } = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create");
  // Each fork used to be a new tree with the checkpoint's 40 syscalls and none used.
  let refused = 0;
  for (let i = 0; i < 10; i++) {
    try {
      await sys(env, root, "checkpoint.fork", { checkpoint_id });
    } catch (e) {
      assert.equal((e as { code?: string }).code, "ELIMIT", String(e));
      refused++;
    }
  }
  const all = await env.rt.kernel.store.listProcesses();
  assert.ok(all.length > 1, "no copy was made");
  const total = all.reduce((n, q) => n + (q.budgets.max_syscalls ?? Infinity), 0);
  assert.ok(total <= 40, `the tree may make ${total} syscalls; its root was given 40`);
  assert.ok(refused > 0, "every fork went through");
});

Deno.test("checkpoint: restore never gives budgets back, and what fork and restore store anew is counted", async () => {
  // A child restored after its parent waited for it (and got its unused budget back)
  // used to run again on that same budget: five rounds, a root of 100 syscalls made 316.
  {
    await using env = await makeEnv();
    const root = await proc(env, SELF_RIGHTS, undefined, "r", { max_syscalls: 100 });
    const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", { goal: "g" });
    const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
    await sys(env, child, "process.exit", {});
    await sys(env, root, "process.wait", { pid: child });
    await sys(env, root, "checkpoint.restore", { checkpoint_id: ck.checkpoint_id });
    assert.equal((await env.rt.process(child)).status, "runnable");
    await rejectsCode(sys(env, child, "process.self"), "ELIMIT");
  }
  // A fork stores the checkpoint's contents again, and a restore the objects it puts
  // back as new versions: both at the caller's expense.
  {
    await using env = await makeEnv();
    const root = await proc(env, SELF_RIGHTS, undefined, "f", { max_store_bytes: 1_000_000 });
    const { pid: child } = await sys<{ pid: number }>(env, root, "process.spawn", {
      goal: "g",
      budgets: { max_store_bytes: 200_000 },
    });
    const o = await sys<{ oid: string }>(env, child, "memory.put", {
      kind: "evidence",
      name: "big",
      payload: "x".repeat(150_000),
    });
    const ck = await sys<{ checkpoint_id: string }>(env, root, "checkpoint.create", { pid: child });
    let refused: string | null = null;
    let version = 1;
    for (let i = 0; i < 30 && !refused; i++) {
      await sys(env, child, "memory.update", { oid: o.oid, payload: 0, expected_version: version });
      try {
        await sys(env, root, "checkpoint.restore", { checkpoint_id: ck.checkpoint_id });
      } catch (e) {
        refused = (e as { code?: string }).code ?? String(e);
      }
      version = (await env.rt.kernel.store.getObject(o.oid))!.version;
    }
    // Before, 30 rounds stored 4.5 MB of versions against a 1 MB budget.
    assert.equal(refused, "ELIMIT");
    assert.ok(version < 30, `${version} versions`);
    const forked = await sys(env, root, "checkpoint.fork", { checkpoint_id: ck.checkpoint_id })
      .then(() => "ok", (e) => (e as { code?: string }).code);
    assert.equal(forked, "ELIMIT");
  }
});
