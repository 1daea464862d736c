/**
 * Object Memory: kinds, namespaces and object capabilities, versions and
 * compare-and-swap, links, and labels that follow data.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";
import { type CapabilitySpec, OBJECT_KINDS } from "../runtime/types.ts";
import { cap, type Env, launch, makeEnv, rejectsCode } from "./_helpers.ts";

interface PutResult {
  oid: string;
  version: number;
  label: string;
}

interface ObjView {
  oid: string;
  kind: string;
  name: string | null;
  namespace: string;
  version: number;
  label: string;
  payload: unknown;
  derived_from: string[];
}

async function put(env: Env, pid: number, args: Record<string, unknown>): Promise<PutResult> {
  return await env.rt.syscall(pid, "memory.put", {
    kind: "evidence",
    payload: null,
    ...args,
  }) as PutResult;
}

async function get(env: Env, pid: number, args: Record<string, unknown>): Promise<ObjView> {
  return await env.rt.syscall(pid, "memory.get", args) as ObjView;
}

async function stored(env: Env, oid: string) {
  const o = await env.rt.kernel.store.getObject(oid);
  assert.ok(o, `object ${oid} exists`);
  return o;
}

const deny = (resource: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec => ({
  resource,
  rights,
  effect: "deny",
});

/** Rows from the store can have null prototypes; compare plain JSON. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v));
}

/** `obj_` and a UUIDv7: a millisecond timestamp, the version, 74 random bits and the variant. */
const UUID_OID = /^obj_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// ---------------------------------------------------------------- kinds

Deno.test("memory: all 24 object kinds are accepted", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  assert.equal(OBJECT_KINDS.length, 24);
  assert.equal(new Set(OBJECT_KINDS).size, 24);
  // tool_result (a step's record) and tool_artifact (a validated JIT tool) are the
  // runtime's own; agents cannot write them.
  const writable = OBJECT_KINDS.filter((k) => k !== "tool_result" && k !== "tool_artifact");
  for (const kind of writable) {
    const r = await put(env, pid, { kind, payload: { kind } });
    const o = await get(env, pid, { oid: r.oid });
    assert.equal(o.kind, kind);
    assert.deepEqual(o.payload, { kind });
  }
  const kinds = (await env.rt.syscall(pid, "memory.list", {}) as ObjView[]).map((o) => o.kind);
  for (const kind of writable) assert.ok(kinds.includes(kind), kind);
  await rejectsCode(
    env.rt.syscall(pid, "memory.put", { kind: "tool_result", payload: {} }),
    "EINVAL",
  );
});

Deno.test("memory: a process cannot forge a step result", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [{ resource: "filesystem:workspace:a.txt", rights: ["read"] }], {
    script: { steps: [{ tool: "read_file", args: { path: "a.txt" } }] },
  });
  const forged = { step: 0, tool: "read_file", ok: true, value: "forged" };
  const e = await rejectsCode(
    env.rt.syscall(pid, "memory.put", { kind: "tool_result", name: "step-0", payload: forged }),
    "EINVAL",
  );
  assert.match(e.message, /runtime only/);
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(pid);
  assert.equal(steps.length, 1);
  assert.deepEqual(steps[0], { step: 0, tool: "read_file", ok: true, value: "a" });
});

Deno.test("memory: an unknown kind is EINVAL and stores nothing", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const ns = (await env.rt.process(pid)).namespace;
  const before = (await env.rt.kernel.store.listObjects(ns)).length;
  for (const kind of ["note", "Goal", "", "toString", "__proto__", 7, null]) {
    const e = await rejectsCode(
      env.rt.syscall(pid, "memory.put", { kind, payload: 1 }),
      "EINVAL",
    );
    assert.match(e.message, /memory\.put\.kind/);
  }
  await rejectsCode(env.rt.syscall(pid, "memory.put", { payload: 1 }), "EINVAL");
  await rejectsCode(env.rt.syscall(pid, "memory.put", { kind: "plan" }), "EINVAL");
  assert.equal((await env.rt.kernel.store.listObjects(ns)).length, before);
});

// ---------------------------------------------------------------- namespaces

Deno.test("memory: a process uses its own namespace without any grant", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const ns = `proc:${pid}`;
  const r = await put(env, pid, { kind: "plan", name: "plan-a", payload: { steps: 2 } });
  assert.equal(r.version, 1);
  assert.equal(r.label, "normal");
  const byOid = await get(env, pid, { oid: r.oid });
  assert.equal(byOid.namespace, ns);
  assert.deepEqual(byOid.payload, { steps: 2 });
  const byName = await get(env, pid, { name: "plan-a" });
  assert.equal(byName.oid, r.oid);
  const explicit = await get(env, pid, { name: "plan-a", namespace: ns });
  assert.equal(explicit.oid, r.oid);
  const listed = await env.rt.syscall(pid, "memory.list", {}) as ObjView[];
  assert.deepEqual(listed.map((o) => o.name), ["plan-a"]);
  assert.ok(!("payload" in listed[0]), "list has no payloads");
  await rejectsCode(put(env, pid, { name: "plan-a" }), "EEXIST");
  await rejectsCode(get(env, pid, { name: "nope" }), "ENOENT");
});

Deno.test("memory: a name is not a capability", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const other = await launch(env);
  const ns = `proc:${owner}`;
  const obj = await put(env, owner, { kind: "plan", name: "plan1", payload: "owner's" });
  const count = (await env.rt.kernel.store.listObjects(ns)).length;

  await rejectsCode(get(env, other, { oid: obj.oid }), "EPERM");
  await rejectsCode(get(env, other, { name: "plan1", namespace: ns }), "EPERM");
  // A missing name in a foreign namespace looks the same as a present one.
  await rejectsCode(get(env, other, { name: "no-such-name", namespace: ns }), "EPERM");
  await rejectsCode(env.rt.syscall(other, "memory.list", { namespace: ns }), "EPERM");
  await rejectsCode(put(env, other, { namespace: ns, name: "planted" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(other, "memory.update", {
      oid: obj.oid,
      payload: "overwritten",
      expected_version: 1,
    }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(other, "memory.links", { oid: obj.oid }), "EPERM");
  const mine = await put(env, other, {});
  await rejectsCode(
    env.rt.syscall(other, "memory.link", { from: mine.oid, to: obj.oid, relation: "cites" }),
    "EPERM",
  );
  await rejectsCode(put(env, other, { derived_from: [obj.oid] }), "EPERM");

  const o = await stored(env, obj.oid);
  assert.equal(o.payload, "owner's");
  assert.equal(o.version, 1);
  assert.equal((await env.rt.kernel.store.listObjects(ns)).length, count);
  assert.deepEqual(plain(await env.rt.kernel.store.linksFrom(mine.oid)), []);
  const denials = await env.rt.kernel.store.listAudit({ actor: `pid:${other}`, decision: "deny" });
  assert.ok(denials.length >= 9, `${denials.length} denials audited`);
});

Deno.test("memory: a child does not see its parent's namespace", async () => {
  await using env = await makeEnv();
  const parent = await launch(env, [cap("process:spawn", "execute")]);
  const obj = await put(env, parent, { name: "private", payload: 42 });
  const r = await env.rt.syscall(parent, "process.spawn", { goal: "g" }) as { pid: number };
  await rejectsCode(get(env, r.pid, { oid: obj.oid }), "EPERM");
  await rejectsCode(get(env, r.pid, { name: "private", namespace: `proc:${parent}` }), "EPERM");
  // And the parent does not see the child's, either: namespaces are owned, not inherited.
  const childObj = await put(env, r.pid, { payload: 1 });
  await rejectsCode(get(env, parent, { oid: childObj.oid }), "EPERM");
});

Deno.test("memory: an object capability grants that object only", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const a = await put(env, owner, { name: "a", payload: "A" });
  const b = await put(env, owner, { name: "b", payload: "B" });
  const reader = await launch(env, [cap(`object:${a.oid}`, "read")]);
  assert.equal((await get(env, reader, { oid: a.oid })).payload, "A");
  await rejectsCode(get(env, reader, { oid: b.oid }), "EPERM");
  // The object capability does not open the namespace for lookups or listing.
  await rejectsCode(get(env, reader, { name: "a", namespace: `proc:${owner}` }), "EPERM");
  await rejectsCode(env.rt.syscall(reader, "memory.list", { namespace: `proc:${owner}` }), "EPERM");
  await rejectsCode(
    env.rt.syscall(reader, "memory.update", { oid: a.oid, payload: "x", expected_version: 1 }),
    "EPERM",
  );
  assert.equal((await stored(env, a.oid)).payload, "A");

  const writer = await launch(env, [cap(`object:${a.oid}`, "read", "write")]);
  const u = await env.rt.syscall(writer, "memory.update", {
    oid: a.oid,
    payload: "A2",
    expected_version: 1,
  }) as PutResult;
  assert.equal(u.version, 2);
  assert.equal((await stored(env, a.oid)).payload, "A2");
  await rejectsCode(
    env.rt.syscall(writer, "memory.update", { oid: b.oid, payload: "x", expected_version: 1 }),
    "EPERM",
  );
});

Deno.test("memory: a DENY on the namespace beats an ALLOW on the object", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const a = await put(env, owner, { payload: "A" });
  const b = await put(env, owner, { payload: "B" });
  const ns = `object_namespace:proc:${owner}`;
  const denied = await launch(env, [
    cap(`object:${a.oid}`, "read", "write"),
    deny(ns, "read", "write"),
  ]);
  await rejectsCode(get(env, denied, { oid: a.oid }), "EPERM");
  await rejectsCode(
    env.rt.syscall(denied, "memory.update", { oid: a.oid, payload: "x", expected_version: 1 }),
    "EPERM",
  );
  assert.equal((await stored(env, a.oid)).payload, "A");
  const last = (await env.rt.kernel.store.listAudit({ actor: `pid:${denied}` })).at(-1)!;
  assert.equal(last.decision, "deny");
  assert.equal(last.target, `object:${a.oid}`);

  // The other way round: a DENY on the object beats an ALLOW on its namespace.
  const nsReader = await launch(env, [cap(ns, "read"), deny(`object:${a.oid}`, "read")]);
  await rejectsCode(get(env, nsReader, { oid: a.oid }), "EPERM");
  assert.equal((await get(env, nsReader, { oid: b.oid })).payload, "B");
  // Even the owner's own namespace grant loses to a DENY on one of its objects.
  const selfDenied = await launch(env, [deny("object:*", "read")]);
  const mine = await put(env, selfDenied, { payload: "mine" });
  await rejectsCode(get(env, selfDenied, { oid: mine.oid }), "EPERM");
});

// ---------------------------------------------------------------- versions

Deno.test("memory: versions are compare-and-swap", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const r = await put(env, pid, { payload: { v: 1 } });
  assert.equal(r.version, 1);
  const u2 = await env.rt.syscall(pid, "memory.update", {
    oid: r.oid,
    payload: { v: 2 },
    expected_version: 1,
  }) as PutResult;
  assert.equal(u2.version, 2);
  // A writer that read version 1 lost the race: its update is refused, nothing changes.
  const e = await rejectsCode(
    env.rt.syscall(pid, "memory.update", {
      oid: r.oid,
      payload: { v: "stale" },
      expected_version: 1,
    }),
    "ECONFLICT",
  );
  assert.match(e.message, /version 2/);
  await rejectsCode(
    env.rt.syscall(pid, "memory.update", {
      oid: r.oid,
      payload: { v: "ahead" },
      expected_version: 3,
    }),
    "ECONFLICT",
  );
  let o = await get(env, pid, { oid: r.oid });
  assert.equal(o.version, 2);
  assert.deepEqual(o.payload, { v: 2 });
  await rejectsCode(
    env.rt.syscall(pid, "memory.update", { oid: r.oid, payload: { v: "blind" } }),
    "EINVAL",
  );
  const u3 = await env.rt.syscall(pid, "memory.update", {
    oid: r.oid,
    payload: { v: 3 },
    expected_version: 2,
  }) as PutResult;
  assert.equal(u3.version, 3);
  o = await get(env, pid, { oid: r.oid });
  assert.deepEqual(o.payload, { v: 3 });
  await rejectsCode(
    env.rt.syscall(pid, "memory.update", {
      oid: "obj_00000000-0000-4000-8000-000000000000",
      payload: 1,
      expected_version: 1,
    }),
    "ENOENT",
  );
});

Deno.test("memory: two updates from the same version, only one lands", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const r = await put(env, owner, { payload: "base" });
  const other = await launch(env, [cap(`object:${r.oid}`, "read", "write")]);
  const results = await Promise.allSettled([
    env.rt.syscall(owner, "memory.update", { oid: r.oid, payload: "owner", expected_version: 1 }),
    env.rt.syscall(other, "memory.update", { oid: r.oid, payload: "other", expected_version: 1 }),
  ]);
  const ok = results.filter((x) => x.status === "fulfilled");
  const bad = results.filter((x) => x.status === "rejected") as PromiseRejectedResult[];
  assert.equal(ok.length, 1);
  assert.equal(bad.length, 1);
  assert.equal((bad[0].reason as { code: string }).code, "ECONFLICT");
  const o = await stored(env, r.oid);
  assert.equal(o.version, 2);
  assert.equal(o.payload, results[0].status === "fulfilled" ? "owner" : "other");
});

// ---------------------------------------------------------------- links

Deno.test("memory: a link needs link on the source and read on the target", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const x = await put(env, owner, { payload: "X" });
  const readsX = await launch(env, [cap(`object:${x.oid}`, "read")]);
  const linksX = await launch(env, [cap(`object:${x.oid}`, "link")]);
  const yR = await put(env, readsX, { payload: "Y" });
  const yL = await put(env, linksX, { payload: "Y" });

  // From its own object to X: needs read on X.
  await env.rt.syscall(readsX, "memory.link", { from: yR.oid, to: x.oid, relation: "cites" });
  await rejectsCode(
    env.rt.syscall(linksX, "memory.link", { from: yL.oid, to: x.oid, relation: "cites" }),
    "EPERM",
  );
  // From X to its own object: needs link on X.
  await rejectsCode(
    env.rt.syscall(readsX, "memory.link", { from: x.oid, to: yR.oid, relation: "cites" }),
    "EPERM",
  );
  await env.rt.syscall(linksX, "memory.link", { from: x.oid, to: yL.oid, relation: "cites" });

  assert.deepEqual(plain(await env.rt.kernel.store.linksFrom(yR.oid)), [
    { from_oid: yR.oid, to_oid: x.oid, relation: "cites" },
  ]);
  assert.deepEqual(plain(await env.rt.kernel.store.linksFrom(yL.oid)), []);
  assert.deepEqual(plain(await env.rt.kernel.store.linksFrom(x.oid)), [
    { from_oid: x.oid, to_oid: yL.oid, relation: "cites" },
  ]);
  assert.deepEqual(plain(await env.rt.syscall(readsX, "memory.links", { oid: yR.oid })), [
    { from_oid: yR.oid, to_oid: x.oid, relation: "cites" },
  ]);
  await rejectsCode(
    env.rt.syscall(readsX, "memory.link", { from: yR.oid, to: x.oid, relation: "Bad Rel" }),
    "EINVAL",
  );
});

// ---------------------------------------------------------------- labels

Deno.test("memory: labels follow data into derived objects", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const secret = await put(env, pid, { label: "secret", payload: "s" });
  const conf = await put(env, pid, { label: "confidential", payload: "c" });
  const plain = await put(env, pid, { payload: "n" });
  assert.equal(secret.label, "secret");
  assert.equal(plain.label, "normal");

  const d1 = await put(env, pid, { label: "normal", derived_from: [secret.oid], payload: "sum" });
  assert.equal(d1.label, "secret");
  assert.equal((await stored(env, d1.oid)).label, "secret");
  const d2 = await put(env, pid, { label: "public", derived_from: [plain.oid, conf.oid] });
  assert.equal(d2.label, "confidential");
  // Derived from a derived object: still secret, transitively.
  const d3 = await put(env, pid, { label: "public", derived_from: [d1.oid] });
  assert.equal(d3.label, "secret");
  assert.deepEqual((await stored(env, d3.oid)).derived_from, [d1.oid]);
  // Writing objects does not taint the writer: an unrelated put stays as asked.
  const fresh = await put(env, pid, { label: "public" });
  assert.equal(fresh.label, "public");
  await rejectsCode(put(env, pid, { label: "top-secret" }), "EINVAL");
  await rejectsCode(put(env, pid, { derived_from: "x" }), "EINVAL");
});

Deno.test("memory: reading a secret object taints the process", async () => {
  await using env = await makeEnv({ files: { "notes.txt": "plain" } });
  const writer = await launch(env);
  const s = await put(env, writer, { label: "secret", payload: "the key" });
  const pid = await launch(env, [
    cap(`object:${s.oid}`, "read"),
    cap("filesystem:workspace:*", "read", "write"),
    cap("human:owner", "write"),
  ]);
  // Before reading: normal puts, file writes and output all work.
  assert.equal((await put(env, pid, { label: "normal" })).label, "normal");
  await env.rt.syscall(pid, "filesystem.write", { path: "notes.txt", content: "before" });
  await env.rt.syscall(pid, "human.output", { text: "hello" });
  assert.equal(env.human.shown.length, 1);

  const o = await get(env, pid, { oid: s.oid });
  assert.equal(o.payload, "the key");
  assert.equal((await env.rt.process(pid)).taint, "secret");

  const after = await put(env, pid, { label: "normal", payload: "harmless?" });
  assert.equal(after.label, "secret");
  assert.equal((await stored(env, after.oid)).label, "secret");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "notes.txt", content: "the key" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "notes.txt")), "before");
  await rejectsCode(env.rt.syscall(pid, "human.output", { text: "the key" }), "EPERM");
  assert.equal(env.human.shown.length, 1);
  assert.ok(!env.human.shown.some((s) => s.text.includes("the key")));
  const blocked = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "label.blocked"
  );
  assert.equal(blocked.length, 2);
  // A sink labelled secret may take it.
  await env.rt.syscall(pid, "filesystem.write", {
    path: "vault.txt",
    content: "the key",
    label: "secret",
  });
  // The taint never comes back down.
  assert.equal((await env.rt.process(pid)).taint, "secret");
});

Deno.test("memory: labels never go down on update", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const s = await put(env, pid, { label: "secret", payload: 1 });
  const u = await env.rt.syscall(pid, "memory.update", {
    oid: s.oid,
    payload: 2,
    expected_version: 1,
    label: "public",
  }) as PutResult;
  assert.equal(u.label, "secret");
  assert.equal((await stored(env, s.oid)).label, "secret");

  const n = await put(env, pid, { payload: 1 });
  const up = await env.rt.syscall(pid, "memory.update", {
    oid: n.oid,
    payload: 2,
    expected_version: 1,
    label: "confidential",
  }) as PutResult;
  assert.equal(up.label, "confidential");
  const down = await env.rt.syscall(pid, "memory.update", {
    oid: n.oid,
    payload: 3,
    expected_version: 2,
    label: "normal",
  }) as PutResult;
  assert.equal(down.label, "confidential");
  const kept = await env.rt.syscall(pid, "memory.update", {
    oid: n.oid,
    payload: 4,
    expected_version: 3,
  }) as PutResult;
  assert.equal(kept.label, "confidential");
  assert.equal((await stored(env, n.oid)).label, "confidential");
});

Deno.test("memory: an update by a tainted process raises the object's label", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const plain = await put(env, pid, { payload: "p" });
  const secret = await put(env, pid, { label: "secret", payload: "s" });
  await get(env, pid, { oid: secret.oid });
  const u = await env.rt.syscall(pid, "memory.update", {
    oid: plain.oid,
    payload: "now mixed",
    expected_version: 1,
    label: "normal",
  }) as PutResult;
  assert.equal(u.label, "secret");
  assert.equal((await stored(env, plain.oid)).label, "secret");
});

// ---------------------------------------------------------------- oids

Deno.test("memory: oids are unguessable uuids", async () => {
  await using env = await makeEnv();
  const pid = await launch(env);
  const seen = new Set<string>();
  const random = new Set<string>();
  const oids: string[] = [];
  const before = Date.now();
  for (let i = 0; i < 40; i++) {
    const r = await put(env, pid, { payload: i });
    assert.match(r.oid, UUID_OID);
    seen.add(r.oid);
    oids.push(r.oid);
    // Everything after the timestamp and the version digit is random.
    random.add(r.oid.slice(18));
  }
  const after = Date.now();
  assert.equal(seen.size, 40);
  assert.equal(random.size, 40, "no two share their random bits");
  // The timestamp is the creation's millisecond: new oids sort after older ones.
  for (const oid of oids) {
    const ms = parseInt(oid.slice(4, 17).replace("-", ""), 16);
    assert.ok(ms >= before && ms <= after, `${oid}: ${ms} not in [${before}, ${after}]`);
  }
  const ms = oids.map((o) => o.slice(4, 17));
  assert.deepEqual(ms, [...ms].sort());
  // The goal object of a spawned child is an unguessable uuid too.
  const parent = await launch(env, [cap("process:spawn", "execute")]);
  const child = await env.rt.syscall(parent, "process.spawn", { goal: "g" }) as { pid: number };
  for (const o of await env.rt.kernel.store.listObjects(`proc:${child.pid}`)) {
    assert.match(o.oid, UUID_OID);
  }
});

Deno.test("memory: an ASK on the namespace is not bypassed by an ALLOW on the object", async () => {
  await using env = await makeEnv();
  const owner = await launch(env);
  const a = await put(env, owner, { payload: "A" });
  const pid = await launch(env, [
    cap(`object:${a.oid}`, "read"),
    { resource: `object_namespace:proc:${owner}`, rights: ["read"], effect: "ask" },
  ]);
  // The non-interactive human answers deny.
  await rejectsCode(get(env, pid, { oid: a.oid }), "EPERM");
  assert.equal(env.human.asked.length, 1);
  assert.equal(env.human.asked[0].pid, pid);
  assert.equal((await env.rt.process(pid)).taint, "public");

  // A human who answers always_allow settles it for good.
  await using env2 = await makeEnv({ providers: { human: new ScriptedHuman(["always_allow"]) } });
  const owner2 = await launch(env2);
  const b = await put(env2, owner2, { payload: "B" });
  const pid2 = await launch(env2, [
    cap(`object:${b.oid}`, "read"),
    { resource: `object_namespace:proc:${owner2}`, rights: ["read"], effect: "ask" },
  ]);
  assert.equal((await get(env2, pid2, { oid: b.oid })).payload, "B");
  assert.equal((await get(env2, pid2, { oid: b.oid })).payload, "B");
  assert.equal(env2.human.asked.length, 1);
});

Deno.test("memory: a refused lookup by name names the namespace in its audit record", async () => {
  await using env = await makeEnv();
  const owner = await launch(env, []);
  await env.rt.syscall(owner, "memory.put", { kind: "plan", name: "plan", payload: { t: 1 } });
  const other = await launch(env, []);
  await rejectsCode(
    env.rt.syscall(other, "memory.get", { name: "plan", namespace: `proc:${owner}` }),
    "EPERM",
  );
  const recs = await env.rt.kernel.store.listAudit({ action: "memory.get" });
  assert.deepEqual(recs.map((r) => [r.decision, r.target]), [
    ["deny", `object_namespace:proc:${owner}`],
  ]);
});
