/**
 * Store durability and atomicity, on whichever store the suite runs on
 * (SQLite, or PostgreSQL with `LIBOS_TEST_STORE`): every kind of state
 * survives a close and reopen, transactions roll back completely, revocation
 * cascades exactly over the delegation subtree, limited capabilities give
 * exactly their uses. The SQLite file's own machinery (its layout migration,
 * deferred commits, read cache) is tested on SQLite only.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Store } from "../runtime/store/store.ts";
import { join } from "node:path";
import { parseImage } from "../runtime/images.ts";
import { Runtime } from "../host/runtime.ts";
import { SQLITE_SCHEMA_VERSION, SqliteStore } from "../runtime/store/sqlite.ts";
import { canonicalJson } from "../runtime/canonical.ts";
import { LibosError } from "../runtime/errors.ts";
import type { Capability, EffectRecord, MemoryObject, ProcessRecord } from "../runtime/types.ts";
import {
  cap,
  capRecord,
  launch,
  makeEnv,
  openStoreAt,
  rawRows,
  rejectsCode,
  startFixture,
} from "./_helpers.ts";
import { dropPgStore, freshPgStore, ON_PG, SQLITE_ONLY } from "./_pg.ts";

// ---- local helpers

const T = "2030-01-01T00:00:00.000Z";

/**
 * A store path in a temp dir (a fresh PostgreSQL database when the suite runs
 * on PostgreSQL); removed on dispose.
 */
async function tempStore(): Promise<{ path: string; [Symbol.asyncDispose](): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "libos-store-test-" });
  const path = ON_PG ? await freshPgStore() : join(dir, "store.db");
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
      if (ON_PG) await dropPgStore(path);
    },
  };
}

/** Open the store at `path` (this suite's kind). */
function open(path: string): Promise<Store> {
  return openStoreAt(path);
}

function procDraft(over: Partial<ProcessRecord> = {}): Omit<ProcessRecord, "pid"> {
  return {
    ppid: null,
    lineage: [],
    image: "img",
    status: "runnable",
    workspace: "/tmp/ws",
    cwd: ".",
    namespace: "proc:x",
    tools: ["read_file"],
    system_prompt: "be careful",
    goal: "do the thing",
    policy: {
      shell: "always_deny",
      shell_allowlist: [],
      shell_blocklist: [],
      labels: { ".env": "secret" },
      human_clearance: "confidential",
    },
    taint: "confidential",
    budgets: { max_quanta: 10, max_wall_ms: null, max_syscalls: 5 },
    usage: { quanta: 2, wall_ms: 7, syscalls: 3 },
    model: { kind: "scripted", state: { steps: [], position: 1 } },
    pending: { tool: "read_file", args: { path: "a" } },
    exit_code: null,
    exit_reason: null,
    origin: "root",
    cancel_requested: false,
    created_at: T,
    updated_at: T,
    ...over,
  } as Omit<ProcessRecord, "pid">;
}

function capRow(capId: string, over: Partial<Capability> = {}): Capability {
  return capRecord({
    cap_id: capId,
    resource: "filesystem:workspace:src/*",
    rights: ["read", "write"],
    created_at: T,
    ...over,
  });
}

function objRow(oid: string, over: Partial<MemoryObject> = {}): MemoryObject {
  return {
    oid,
    namespace: "proc:1",
    kind: "observation",
    name: null,
    version: 1,
    label: "normal",
    payload: { text: "hello" },
    derived_from: [],
    created_by: 1,
    created_at: T,
    updated_at: T,
    ...over,
  };
}

/**
 * Every version the store keeps of `oids`, in oid and version order: the
 * version table and the current rows together (a version in both has one
 * body, so it is listed once; two bodies for one version would show twice).
 */
async function everyVersion(
  path: string,
  oids: string[],
): Promise<{ oid: string; version: number; body: string }[]> {
  const list = oids.map((o) => `'${o}'`).join(", ");
  const rows = await rawRows(
    path,
    `SELECT oid, version, body FROM object_versions WHERE oid IN (${list})
     UNION SELECT oid, version, body FROM objects WHERE oid IN (${list})
     ORDER BY oid, version`,
  );
  return rows.map((r) => ({
    oid: r.oid as string,
    version: Number(r.version),
    body: r.body as string,
  }));
}

function effectRow(effectId: string, over: Partial<EffectRecord> = {}): EffectRecord {
  return {
    effect_id: effectId,
    pid: 1,
    syscall: "filesystem.write",
    resource: "filesystem:workspace:a.txt",
    args_hash: "h".repeat(64),
    status: "pending",
    outcome: null,
    created_at: T,
    finished_at: null,
    ...over,
  };
}

// ---- durability

Deno.test("store: processes survive closing and reopening the store file", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  const p1 = await s.insertProcess(procDraft());
  const p2 = await s.insertProcess(procDraft({ ppid: p1.pid, lineage: [p1.pid], goal: "child" }));
  assert.notEqual(p1.pid, p2.pid);
  assert.equal(await s.updateProcess(p2.pid, { status: "running", cwd: "src" }, "runnable"), true);
  // A stale expected status does not land.
  assert.equal(await s.updateProcess(p2.pid, { status: "exited" }, "runnable"), false);
  await s.close();

  s = await open(tmp.path);
  try {
    assert.deepEqual(await s.getProcess(p1.pid), p1);
    const c = await s.getProcess(p2.pid);
    assert.equal(c?.status, "running");
    assert.equal(c?.cwd, "src");
    assert.equal(c?.goal, "child");
    assert.deepEqual(c?.lineage, [p1.pid]);
    assert.deepEqual(c?.pending, { tool: "read_file", args: { path: "a" } });
    assert.deepEqual((await s.listProcesses()).map((p) => p.pid), [p1.pid, p2.pid]);
    // pids are never reused after a reopen.
    const p3 = await s.insertProcess(procDraft());
    assert.ok(p3.pid > p2.pid);
  } finally {
    await s.close();
  }
});

Deno.test("store: capabilities survive closing and reopening the store file", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  const a = capRow("capA", { uses_remaining: 3, expires_at: "2031-01-01T00:00:00.000Z" });
  const b = capRow("capB", {
    subject: 2,
    parent_cap_id: "capA",
    delegation_depth: 1,
    issued_by: "pid:1",
    constraints: { binding: { syscall: "filesystem.read", args_hash: "abc" } },
  });
  const d = capRow("capD", { effect: "deny", rights: ["delete"] });
  await s.insertCapability(a);
  await s.insertCapability(b);
  await s.insertCapability(d);
  assert.equal(await s.consumeCapability("capA"), true);
  await s.revokeCascade("capD");
  await s.close();

  s = await open(tmp.path);
  try {
    assert.deepEqual(await s.getCapability("capA"), { ...a, uses_remaining: 2 });
    assert.deepEqual(await s.getCapability("capB"), b);
    assert.equal((await s.getCapability("capD"))?.status, "revoked");
    assert.deepEqual((await s.capabilitiesOf(1)).map((c) => c.cap_id), ["capA", "capD"]);
    assert.deepEqual((await s.capabilitiesOf(2)).map((c) => c.cap_id), ["capB"]);
    assert.equal(await s.getCapability("nope"), null);
  } finally {
    await s.close();
  }
});

Deno.test("store: objects, versions and links survive closing and reopening", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  await s.insertObject(objRow("o1", { name: "plan", kind: "plan", payload: { v: 1 } }));
  await s.insertObject(objRow("o2"));
  const v2 = await s.updateObject("o1", 1, {
    payload: { v: 2 },
    label: "confidential",
    updated_at: T,
  });
  assert.equal(v2?.version, 2);
  // Compare-and-swap: a stale version does not land.
  assert.equal(
    await s.updateObject("o1", 1, { payload: { v: 99 }, label: "public", updated_at: T }),
    null,
  );
  await s.insertLink({ from_oid: "o1", to_oid: "o2", relation: "supports" });
  await s.insertLink({ from_oid: "o1", to_oid: "o2", relation: "supports" }); // idempotent
  await s.close();

  s = await open(tmp.path);
  try {
    const o1 = await s.getObject("o1");
    assert.equal(o1?.version, 2);
    assert.deepEqual(o1?.payload, { v: 2 });
    assert.equal(o1?.label, "confidential");
    assert.equal((await s.getObjectByName("proc:1", "plan"))?.oid, "o1");
    assert.deepEqual((await s.listObjects("proc:1")).map((o) => o.oid), ["o1", "o2"]);
    assert.deepEqual((await s.linksFrom("o1")).map((l) => ({ ...l })), [
      { from_oid: "o1", to_oid: "o2", relation: "supports" },
    ]);
    // CAS still works against the durable version, and the stale one still fails.
    assert.equal(
      await s.updateObject("o1", 1, { payload: { v: 3 }, label: "public", updated_at: T }),
      null,
    );
    const v3 = await s.updateObject("o1", 2, { payload: { v: 3 }, label: "public", updated_at: T });
    assert.equal(v3?.version, 3);
  } finally {
    await s.close();
  }
  // Every version is kept: in the version table, or as the current row.
  const rows = await everyVersion(tmp.path, ["o1"]);
  assert.deepEqual(rows.map((r) => r.version), [1, 2, 3]);
  assert.deepEqual(rows.map((r) => JSON.parse(r.body).payload.v), [1, 2, 3]);
});

Deno.test("store: every version an object had is in the version table once replaced, removed or restored over", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    for (const oid of ["u1", "r1", "c1"]) {
      await s.insertObject(objRow(oid, { payload: { v: `${oid}-1` } }));
    }
    assert.equal(
      (await s.updateObject("u1", 1, { payload: { v: "u1-2" }, label: "public", updated_at: T }))
        ?.version,
      2,
    );
    await s.removeObjects(["r1"]);
    await s.restoreObjects([objRow("c1", { payload: { v: "c1-restored" } })]);
    assert.equal((await s.getObject("c1"))?.version, 2);
    assert.equal(await s.getObject("r1"), null);
    // A version a restore made, then replaced by an update, then by a restore,
    // then removed: each is kept as it was.
    for (const oid of ["d1", "d2"]) {
      await s.insertObject(objRow(oid, { payload: { v: `${oid}-1` } }));
      await s.restoreObjects([objRow(oid, { payload: { v: `${oid}-restored` } })]);
    }
    await s.updateObject("d1", 2, { payload: { v: "d1-updated" }, label: "normal", updated_at: T });
    await s.restoreObjects([objRow("d2", { payload: { v: "d2-again" } })]);
    await s.removeObjects(["d1", "d2"]);
  } finally {
    await s.close();
  }
  const history = async (oid: string) =>
    (await everyVersion(tmp.path, [oid])).map((r) => [r.version, JSON.parse(r.body).payload.v]);
  assert.deepEqual(await history("u1"), [[1, "u1-1"], [2, "u1-2"]]);
  // A removed object keeps its history, its only version included.
  assert.deepEqual(await history("r1"), [[1, "r1-1"]]);
  // A restore writes its content as a new version; the one it replaced stays.
  assert.deepEqual(await history("c1"), [[1, "c1-1"], [2, "c1-restored"]]);
  assert.deepEqual(await history("d1"), [[1, "d1-1"], [2, "d1-restored"], [3, "d1-updated"]]);
  assert.deepEqual(await history("d2"), [[1, "d2-1"], [2, "d2-restored"], [3, "d2-again"]]);
  // Removed, so nothing is current: all of it is in the version table itself.
  const table = await rawRows(
    tmp.path,
    "SELECT oid, version FROM object_versions WHERE oid IN ('d1', 'd2') ORDER BY oid, version",
  );
  assert.deepEqual(table.map((r) => `${r.oid}@${r.version}`), [
    "d1@1",
    "d1@2",
    "d1@3",
    "d2@1",
    "d2@2",
    "d2@3",
  ]);
});

Deno.test("store: a restore told the rows' current versions numbers them as one that looks them up", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    await s.insertObject(objRow("k1", { name: "k1", payload: "k1-1" }));
    await s.insertObject(objRow("k2", { name: "k2", payload: "k2-1" }));
    await s.insertObject(objRow("k3", { payload: "k3-1" }));
    for (const v of [1, 2]) {
      await s.updateObject("k1", v, { payload: `k1-${v + 1}`, label: "normal", updated_at: T });
    }
    await s.removeObjects(["k3"]);
    assert.deepEqual(
      (await s.listObjectVersions("proc:1")).map((o) => [o.oid, o.version, o.label]),
      [["k1", 3, "normal"], ["k2", 1, "normal"]],
    );
    // k1 and k2 are known from their rows; k3's row is gone, so its history is read.
    const current = new Map((await s.listObjectVersions("proc:1")).map((o) => [o.oid, o]));
    await s.restoreObjects([
      objRow("k1", { name: "k1", payload: "k1-back" }),
      objRow("k2", { name: "k2", payload: "k2-back", label: "secret" }),
      objRow("k3", { payload: "k3-back" }),
    ], current);
    const now = await s.listObjects("proc:1");
    assert.deepEqual(
      now.map((o) => [o.oid, o.version, o.payload, o.label]).sort(),
      [["k1", 4, "k1-back", "normal"], ["k2", 2, "k2-back", "secret"], [
        "k3",
        2,
        "k3-back",
        "normal",
      ]],
    );
  } finally {
    await s.close();
  }
  const rows = await everyVersion(tmp.path, ["k1", "k2", "k3"]);
  assert.deepEqual(rows.map((r) => `${r.oid}@${r.version}`), [
    "k1@1",
    "k1@2",
    "k1@3",
    "k1@4",
    "k2@1",
    "k2@2",
    "k3@1",
    "k3@2",
  ]);
});

Deno.test("store: the mailbox survives reopening and delivers interrupts first", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  await s.insertMessage({ from_pid: 1, to_pid: 2, kind: "normal", body: "n1", created_at: T });
  await s.insertMessage({
    from_pid: null,
    to_pid: 2,
    kind: "interrupt",
    body: "i1",
    created_at: T,
  });
  await s.insertMessage({ from_pid: 1, to_pid: 2, kind: "normal", body: "n2", created_at: T });
  await s.insertMessage({ from_pid: 1, to_pid: 3, kind: "normal", body: "other", created_at: T });
  await s.insertMessage({ from_pid: 1, to_pid: 2, kind: "interrupt", body: "i2", created_at: T });
  await s.close();

  s = await open(tmp.path);
  try {
    const first = await s.takeMessages(2, 3);
    assert.deepEqual(first.map((m) => m.body), ["i1", "i2", "n1"]);
    assert.equal(first[0].from_pid, null);
    assert.equal(first[0].kind, "interrupt");
    // Taken messages are gone; the rest stay in order.
    assert.deepEqual((await s.takeMessages(2, 10)).map((m) => m.body), ["n2"]);
    assert.deepEqual(await s.takeMessages(2, 10), []);
    assert.deepEqual((await s.takeMessages(3, 10)).map((m) => m.body), ["other"]);
  } finally {
    await s.close();
  }
});

Deno.test("store: images, file labels and meta survive closing and reopening", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  const img = parseImage({
    name: "coder",
    description: "writes code",
    capabilities: [{ resource: "filesystem:workspace:src/*", rights: ["read"] }],
    policy: { labels: { ".env": "secret" } },
  }, []);
  await s.putImage(img, "host");
  await s.putImage(parseImage({ name: "alpha" }, []), "host");
  await s.setFileLabel("/ws/.env", "secret");
  await s.setFileLabel("/ws/a.txt", "public");
  await s.setFileLabel("/ws/a.txt", "restricted"); // replaced
  await s.setMeta("k", "v");
  await s.close();

  s = await open(tmp.path);
  try {
    assert.deepEqual(await s.getImage("coder"), img);
    assert.deepEqual((await s.listImages()).map((i) => i.name), ["alpha", "coder"]);
    assert.equal(await s.getImage("missing"), null);
    assert.equal(await s.getFileLabel("/ws/.env"), "secret");
    assert.equal(await s.getFileLabel("/ws/a.txt"), "restricted");
    assert.equal(await s.getFileLabel("/ws/none"), null);
    assert.equal(await s.getMeta("k"), "v");
  } finally {
    await s.close();
  }
});

Deno.test("store: audit, events and effects survive closing and reopening", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  const draft = {
    timestamp: T,
    actor: "pid:1",
    action: "filesystem.read",
    target: "filesystem:workspace:a",
    input_refs: { preview: "{}" },
    output_refs: null,
    capability_refs: ["capA"],
    decision: "allow" as const,
    reason: "ok",
    correlation_id: "c1",
    parent_record_id: null,
  };
  await s.appendAudit(draft);
  await s.appendAudit({ ...draft, decision: "deny", capability_refs: ["capD"] });
  const [a1, a2] = await s.listAudit();
  assert.deepEqual([a1.seq, a2.seq], [1, 2]);
  await s.appendEvent({
    type: "file.written",
    source: "pid:1",
    target: "filesystem:workspace:a",
    payload: { bytes: 3 },
    priority: 0,
    created_at: T,
    correlation_id: "c1",
  });
  await s.insertEffect(effectRow("fx1"));
  await s.insertEffect(effectRow("fx2"));
  await s.finishEffect("fx1", "done", { bytes: 3 }, T);
  await s.close();

  s = await open(tmp.path);
  try {
    assert.deepEqual(await s.listAudit(), [a1, a2]);
    assert.equal(a2.prev_hash, a1.hash);
    assert.deepEqual((await s.listAudit({ decision: "deny" })).map((r) => r.seq), [2]);
    assert.deepEqual(await s.verifyAudit(), { ok: true, count: 2, head: a2.hash });
    // The chain continues from the durable head.
    await s.appendAudit(draft);
    const a3 = (await s.listAudit()).at(-1)!;
    assert.equal(a3.seq, 3);
    assert.equal(a3.prev_hash, a2.hash);
    const events = await s.listEvents();
    assert.equal(events.length, 1);
    assert.equal(events[0].type, "file.written");
    assert.deepEqual(events[0].payload, { bytes: 3 });
    const fx = await s.listEffects();
    assert.deepEqual(fx.map((e) => [e.effect_id, e.status]), [["fx1", "done"], ["fx2", "pending"]]);
    assert.deepEqual(fx[0].outcome, { bytes: 3 });
    assert.equal(fx[0].finished_at, T);
    assert.deepEqual((await s.listEffects("pending")).map((e) => e.effect_id), ["fx2"]);
  } finally {
    await s.close();
  }
});

// ---- transactions

Deno.test("store: a transaction that throws rolls back every kind of write", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const keep = await s.insertProcess(procDraft());
    await s.insertCapability(capRow("keep", { uses_remaining: 2 }));
    await s.insertObject(objRow("kept"));
    const boom = new Error("boom");
    await assert.rejects(
      s.transaction(async (tx) => {
        await tx.insertProcess(procDraft({ goal: "ghost" }));
        await tx.updateProcess(keep.pid, { status: "running" });
        await tx.insertCapability(capRow("ghost"));
        assert.equal(await tx.consumeCapability("keep"), true);
        await tx.revokeCascade("keep");
        await tx.insertObject(objRow("ghost"));
        await tx.updateObject("kept", 1, { payload: 1, label: "public", updated_at: T });
        await tx.insertLink({ from_oid: "kept", to_oid: "ghost", relation: "r" });
        await tx.insertMessage({ from_pid: 1, to_pid: 1, kind: "normal", body: 1, created_at: T });
        await tx.putImage(parseImage({ name: "ghost" }, []), "host");
        await tx.setFileLabel("/ghost", "secret");
        await tx.appendAudit({
          timestamp: T,
          actor: "host",
          action: "x",
          target: "",
          input_refs: null,
          output_refs: null,
          capability_refs: [],
          decision: "info",
          reason: "",
          correlation_id: null,
          parent_record_id: null,
        });
        await tx.appendEvent({
          type: "process.created",
          source: "k",
          target: "t",
          payload: null,
          priority: 0,
          created_at: T,
          correlation_id: null,
        });
        await tx.insertEffect(effectRow("ghost"));
        await tx.setMeta("ghost", "1");
        throw boom;
      }),
      (e) => e === boom,
    );
    const procs = await s.listProcesses();
    assert.deepEqual(procs.map((p) => p.pid), [keep.pid]);
    assert.equal(procs[0].status, "runnable");
    assert.equal(await s.getCapability("ghost"), null);
    const kept = await s.getCapability("keep");
    assert.equal(kept?.status, "active");
    assert.equal(kept?.uses_remaining, 2);
    assert.equal(await s.getObject("ghost"), null);
    assert.equal((await s.getObject("kept"))?.version, 1);
    assert.deepEqual(await s.linksFrom("kept"), []);
    assert.deepEqual(await s.takeMessages(1, 10), []);
    assert.equal(await s.getImage("ghost"), null);
    assert.equal(await s.getFileLabel("/ghost"), null);
    assert.deepEqual(await s.listAudit(), []);
    assert.deepEqual(await s.verifyAudit(), { ok: true, count: 0, head: "" });
    assert.deepEqual(await s.listEvents(), []);
    assert.deepEqual(await s.listEffects(), []);
    assert.equal(await s.getMeta("ghost"), null);
    // The store is usable afterwards and a committed transaction lands.
    await s.transaction(async (tx) => {
      await tx.insertCapability(capRow("landed"));
    });
    assert.equal((await s.getCapability("landed"))?.status, "active");
  } finally {
    await s.close();
  }
});

Deno.test("store: a failed launch or kernel transaction leaves no half-created process", async () => {
  await using env = await makeEnv();
  // The bad spec is refused up front (EINVAL naming the grant)...
  await rejectsCode(
    env.rt.launch({ image: { name: "x" }, workspace: env.ws, grants: [cap("*", "read")] }),
    "EINVAL",
  );
  // ...and a failure inside the launch transaction rolls back the process too.
  const k = env.rt.kernel;
  await assert.rejects(
    k.atomically(async (tk) => {
      await tk.createProcess({
        ppid: null,
        image: parseImage({ name: "y" }, []),
        workspace: env.ws,
        cwd: ".",
        goal: "",
        taint: "public",
        model: null,
        origin: "root",
      });
      throw new Error("fail after create");
    }),
    /fail after create/,
  );
  assert.deepEqual(await k.store.listProcesses(), []);
  assert.deepEqual(await k.store.capabilitiesOf(1), []);
  assert.deepEqual(await k.store.listEvents(), []);
});

// ---- revocation

Deno.test("store: revokeCascade revokes the whole delegation subtree and nothing else", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    //   root ─┬─ a ─┬─ a1 ── a1x
    //         │     └─ a2
    //         └─ b
    //   other ── o1          lone
    await s.insertCapability(capRow("root"));
    await s.insertCapability(capRow("a", { subject: 2, parent_cap_id: "root" }));
    await s.insertCapability(capRow("a1", { subject: 3, parent_cap_id: "a" }));
    await s.insertCapability(capRow("a1x", { subject: 4, parent_cap_id: "a1", effect: "deny" }));
    await s.insertCapability(capRow("a2", { subject: 3, parent_cap_id: "a", status: "exhausted" }));
    await s.insertCapability(capRow("b", { subject: 2, parent_cap_id: "root" }));
    await s.insertCapability(capRow("other"));
    await s.insertCapability(capRow("o1", { subject: 2, parent_cap_id: "other" }));
    await s.insertCapability(capRow("lone", { subject: 5 }));

    const first = await s.revokeCascade("a");
    assert.deepEqual([...first].sort(), ["a", "a1", "a1x", "a2"]);
    const status = async (id: string) => (await s.getCapability(id))?.status;
    for (const id of ["a", "a1", "a1x", "a2"]) assert.equal(await status(id), "revoked", id);
    for (const id of ["root", "b", "other", "o1", "lone"]) {
      assert.equal(await status(id), "active", id);
    }

    // Revoking the root reports only what changed now.
    const second = await s.revokeCascade("root");
    assert.deepEqual([...second].sort(), ["b", "root"]);
    for (const id of ["other", "o1", "lone"]) assert.equal(await status(id), "active", id);
    // Already revoked or unknown: nothing changes.
    assert.deepEqual(await s.revokeCascade("root"), []);
    assert.deepEqual(await s.revokeCascade("does-not-exist"), []);
  } finally {
    await s.close();
  }
});

Deno.test("store: revocation through capability.revoke cascades to a child's delegations", async () => {
  await using env = await makeEnv({ files: { "src/a.txt": "A" } });
  const pid = await launch(env, [cap("filesystem:workspace:src/*", "read")]);
  const k = env.rt.kernel;
  const parentCap = (await k.store.capabilitiesOf(pid)).find((c) =>
    c.resource === "filesystem:workspace:src/*"
  )!;
  // Delegate to two synthetic descendants directly in the store, the second from the first.
  const { pid: _pid, ...base } = await k.process(pid);
  const child = await k.store.insertProcess({ ...base, ppid: pid, lineage: [pid] });
  const grand = await k.store.insertProcess({
    ...base,
    ppid: child.pid,
    lineage: [pid, child.pid],
  });
  const r1 = await env.rt.syscall(pid, "capability.grant", {
    cap_id: parentCap.cap_id,
    to: child.pid,
    resource: "filesystem:workspace:src/a.txt",
  }) as { cap_id: string };
  const r2 = await env.rt.syscall(child.pid, "capability.grant", {
    cap_id: r1.cap_id,
    to: grand.pid,
  }) as { cap_id: string };
  assert.equal(await env.rt.syscall(grand.pid, "filesystem.read", { path: "src/a.txt" }), "A");

  const out = await env.rt.syscall(pid, "capability.revoke", { cap_id: r1.cap_id }) as {
    revoked: string[];
  };
  assert.deepEqual([...out.revoked].sort(), [r1.cap_id, r2.cap_id].sort());
  await rejectsCode(env.rt.syscall(grand.pid, "filesystem.read", { path: "src/a.txt" }), "EPERM");
  await rejectsCode(env.rt.syscall(child.pid, "filesystem.read", { path: "src/a.txt" }), "EPERM");
  // The delegator keeps its own grant.
  assert.equal((await k.store.getCapability(parentCap.cap_id))?.status, "active");
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "src/a.txt" }), "A");
});

// ---- limited uses

Deno.test("store: consumeCapability takes exactly the remaining uses", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    await s.insertCapability(capRow("three", { uses_remaining: 3 }));
    assert.equal(await s.consumeCapability("three"), true);
    assert.equal((await s.getCapability("three"))?.status, "active");
    assert.equal(await s.consumeCapability("three"), true);
    assert.equal(await s.consumeCapability("three"), true);
    assert.equal(await s.consumeCapability("three"), false);
    assert.equal(await s.consumeCapability("three"), false);
    const c = await s.getCapability("three");
    assert.equal(c?.status, "exhausted");
    assert.equal(c?.uses_remaining, 0);
    // Concurrent consumers never get more than the uses there are.
    await s.insertCapability(capRow("five", { uses_remaining: 5 }));
    const got = await Promise.all(Array.from({ length: 12 }, () => s.consumeCapability("five")));
    assert.equal(got.filter(Boolean).length, 5);
    assert.equal((await s.getCapability("five"))?.status, "exhausted");
    // Revoked caps give nothing; unknown caps give nothing.
    await s.insertCapability(capRow("gone", { uses_remaining: 4, status: "revoked" }));
    assert.equal(await s.consumeCapability("gone"), false);
    assert.equal((await s.getCapability("gone"))?.uses_remaining, 4);
    assert.equal(await s.consumeCapability("missing"), false);
  } finally {
    await s.close();
  }
});

Deno.test("store: reserveUses takes n uses atomically or none", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    await s.insertCapability(capRow("c", { uses_remaining: 3 }));
    assert.equal(await s.reserveUses("c", 2), true);
    assert.equal((await s.getCapability("c"))?.uses_remaining, 1);
    assert.equal(await s.reserveUses("c", 2), false);
    assert.equal((await s.getCapability("c"))?.uses_remaining, 1);
    assert.equal(await s.reserveUses("c", 1), true);
    const c = await s.getCapability("c");
    assert.equal(c?.uses_remaining, 0);
    assert.equal(c?.status, "exhausted");
  } finally {
    await s.close();
  }
});

Deno.test("store: a 3-use grant allows exactly 3 reads through the runtime", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const pid = await launch(env, [{
    resource: "filesystem:workspace:a.txt",
    rights: ["read"],
    uses_remaining: 3,
  }]);
  for (let i = 0; i < 3; i++) {
    assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
  }
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  const c = (await env.rt.kernel.store.capabilitiesOf(pid)).find((c) =>
    c.resource === "filesystem:workspace:a.txt"
  );
  assert.equal(c?.status, "exhausted");
  assert.equal(c?.uses_remaining, 0);
});

// ---- through the runtime

Deno.test("store: a launched process, its caps and its audit survive Runtime.open on the same file", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A", "b.txt": "B" } });
  const pid = await launch(env, [
    cap("filesystem:workspace:a.txt", "read"),
    { resource: "filesystem:workspace:b.txt", rights: ["read"], effect: "deny" },
  ]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
  const procBefore = await env.rt.process(pid);
  const capsBefore = await env.rt.kernel.store.capabilitiesOf(pid);
  const auditBefore = await env.rt.kernel.store.listAudit();
  assert.equal(auditBefore.length, 2);
  await env.rt.close();

  const rt = await Runtime.open({ store: env.storePath });
  try {
    const proc = await rt.process(pid);
    assert.equal(proc.status, "runnable");
    assert.equal(proc.image, "test");
    assert.equal(proc.workspace, env.ws);
    assert.equal(proc.namespace, `proc:${pid}`);
    assert.deepEqual(proc.tools, procBefore.tools);
    assert.deepEqual(await rt.kernel.store.capabilitiesOf(pid), capsBefore);
    assert.deepEqual(await rt.kernel.store.listAudit(), auditBefore);
    assert.equal((await rt.kernel.store.verifyAudit()).ok, true);
    assert.equal((await rt.kernel.store.getImage("test"))?.name, "test");
    // The reopened runtime enforces the same caps.
    assert.equal(await rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
    await rejectsCode(rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
    const audit = await rt.kernel.store.listAudit();
    assert.equal(audit.length, 4);
    assert.equal(audit[2].prev_hash, auditBefore[1].hash);
    assert.equal((await rt.kernel.store.verifyAudit()).ok, true);
    // Ids minted by the new runtime do not collide with the old ones.
    const grantAgain = await rt.kernel.grant(pid, cap("shell:git", "execute"), "host");
    assert.ok(!capsBefore.some((c) => c.cap_id === grantAgain.cap_id));
  } finally {
    await rt.close();
  }
});

// ---- process state, model input, model log, step index

/** A row read by a connection of its own (committed state only). */
async function readRow(path: string, sql: string, ...args: (string | number)[]) {
  return (await rawRows(path, sql, ...args))[0];
}

Deno.test("store: a process row keeps what rarely changes; a step rewrites only its small state row", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const goal = "g".repeat(50_000);
    const p = await s.insertProcess(procDraft({ goal }));
    const body = async () =>
      (await readRow(tmp.path, "SELECT body FROM processes WHERE pid = ?", p.pid)).body as string;
    const before = await body();
    assert.ok(before.includes(goal));
    // Status, pending action, cursor and usage: the state row alone.
    assert.equal(
      await s.updateProcess(p.pid, {
        status: "running",
        pending: null,
        model: { kind: "scripted", state: { position: 2 } },
        usage: { quanta: 3, wall_ms: 1, syscalls: 1 },
        updated_at: T,
      }, "runnable"),
      true,
    );
    assert.equal(await body(), before);
    const row = await readRow(
      tmp.path,
      "SELECT status, model FROM process_state WHERE pid = ?",
      p.pid,
    );
    assert.deepEqual({ ...row as object }, {
      status: "running",
      model: '{"kind":"scripted","state":{"position":2}}',
    });
    // Other fields still go to the document, with the state in the same call.
    assert.equal(await s.updateProcess(p.pid, { cwd: "src", status: "runnable" }, "running"), true);
    assert.equal(JSON.parse(await body()).cwd, "src");
    const got = await s.getProcess(p.pid);
    assert.equal(got?.status, "runnable");
    assert.equal(got?.cwd, "src");
    assert.equal(got?.goal, goal);
    assert.deepEqual(got?.model, { kind: "scripted", state: { position: 2 } });
    // A status list is a compare-and-swap over any of them.
    assert.equal(await s.updateProcess(p.pid, { cwd: "x" }, ["running", "paused"]), false);
    assert.equal((await s.getProcess(p.pid))?.cwd, "src");
  } finally {
    await s.close();
  }
});

Deno.test("store: a model input is stored once, the model log and steps are read by position", async () => {
  await using tmp = await tempStore();
  let s = await open(tmp.path);
  const p = await s.insertProcess(procDraft());
  await s.putModelInput(p.pid, { steps: [{ tool: "now", args: {} }] });
  // Stored once: there is no second input for a process.
  await assert.rejects(s.putModelInput(p.pid, { steps: [] }));
  assert.deepEqual(await s.getModelInput(p.pid), { steps: [{ tool: "now", args: {} }] });
  // Shared and frozen: a provider cannot change what another step will read.
  assert.ok(Object.isFrozen(await s.getModelInput(p.pid)));
  assert.equal(await s.getModelInput(p.pid + 1), null);

  assert.equal(await s.modelLogLength(p.pid), 0);
  assert.equal(await s.appendModelLog(p.pid, [{ turn: 0 }, { turn: 1 }]), 2);
  assert.equal(await s.appendModelLog(p.pid, [{ turn: 2 }]), 3);
  assert.deepEqual(await s.readModelLog(p.pid, 1), [{ turn: 1 }, { turn: 2 }]);
  assert.deepEqual(await s.readModelLog(p.pid, 0, 1), [{ turn: 0 }]);
  assert.deepEqual(await s.readModelLog(p.pid + 1, 0), []);

  assert.equal(await s.stepCount(p.pid), 0);
  for (const step of [0, 1]) {
    const o = objRow(`r${step}`, { kind: "tool_result", name: `step-${step}`, payload: { step } });
    await s.insertObject(o);
    await s.insertStep(p.pid, step, o.oid);
  }
  // A step is recorded once.
  await assert.rejects(s.insertStep(p.pid, 1, "r0"));
  await s.close();

  s = await open(tmp.path);
  try {
    assert.deepEqual(await s.getModelInput(p.pid), { steps: [{ tool: "now", args: {} }] });
    assert.equal(await s.modelLogLength(p.pid), 3);
    assert.equal(await s.stepCount(p.pid), 2);
    assert.deepEqual((await s.getStep(p.pid, 1))?.payload, { step: 1 });
    assert.equal(await s.getStep(p.pid, 2), null);
    assert.deepEqual((await s.listSteps(p.pid)).map((o) => o.oid), ["r0", "r1"]);
  } finally {
    await s.close();
  }
});

Deno.test("store: pidsWithStatus lists processes by status, ended ones included only when asked", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const [a, b, c] = [
      await s.insertProcess(procDraft()),
      await s.insertProcess(procDraft()),
      await s.insertProcess(procDraft({ status: "paused" })),
    ];
    assert.deepEqual(await s.pidsWithStatus("runnable"), [a.pid, b.pid]);
    assert.deepEqual(await s.pidsWithStatus("paused"), [c.pid]);
    await s.updateProcess(a.pid, { status: "exited" }, "runnable");
    await s.updateProcess(c.pid, { status: "runnable" }, "paused");
    assert.deepEqual(await s.pidsWithStatus("runnable"), [b.pid, c.pid]);
    assert.deepEqual(await s.pidsWithStatus("exited"), [a.pid]);
    // Forced back (as tests and repairs do): listed again.
    await s.updateProcess(a.pid, { status: "runnable" });
    assert.deepEqual(await s.pidsWithStatus("runnable"), [a.pid, b.pid, c.pid]);
    assert.deepEqual(await s.pidsWithStatus("exited"), []);
  } finally {
    await s.close();
  }
});

// Keys out of order at every depth, integer-like keys (which JS enumerates first) included.
const UNSORTED = {
  z: 1,
  b: { "10": [{ y: 1, x: 2 }], "9": null, a: "é\u2028" },
  a: [3, { d: 1, c: 2 }],
};

Deno.test("store: objects' canonical texts (what a checkpoint splices in) are their canonical JSON, in list order", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    await s.insertObject(objRow("o1", { name: "x", payload: UNSORTED }));
    await s.insertObject(objRow("o2", { payload: { b: 1, a: 2 } }));
    await s.insertObject(objRow("o3", { namespace: "proc:2" }));
    await s.insertObject(objRow("o4", { payload: UNSORTED }));
    await s.updateObject("o2", 1, {
      payload: { y: { "2": 0, "1": 0 }, x: 0 },
      label: "public",
      updated_at: T,
    });
    await s.restoreObjects([objRow("o1", { name: "x", payload: { q: 1, p: UNSORTED } })]);
    const objs = await s.listObjects("proc:1");
    const texts = await s.listObjectTexts("proc:1");
    assert.deepEqual(texts, objs.map((o) => canonicalJson(o)));
    assert.deepEqual(texts.map((t) => JSON.parse(t)), objs);
    assert.deepEqual(objs.map((o) => [o.oid, o.version]), [["o1", 2], ["o2", 2], ["o4", 1]]);
    assert.deepEqual(await s.listObjectTexts("proc:none"), []);
  } finally {
    await s.close();
  }
});

Deno.test("store: restoring objects puts them back at a version after every one they had, in place or removed", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    await s.insertObject(objRow("o1", { name: "a" }));
    await s.insertObject(objRow("o2", { name: "b" }));
    for (let v = 1; v <= 3; v++) {
      await s.updateObject("o1", v, { payload: { v }, label: "normal", updated_at: T });
    }
    await s.updateObject("o2", 1, { payload: { v: 1 }, label: "normal", updated_at: T });
    await s.removeObjects(["o2"]);
    assert.equal(await s.getObject("o2"), null);
    // o1 in place (at 4 now), o2 back from outside its namespace (last 2), o3 never stored.
    await s.restoreObjects([
      objRow("o3", { name: "c", version: 7, payload: "new" }),
      objRow("o2", { name: "b", payload: "b again" }),
      objRow("o1", { name: "a", payload: "a again", label: "secret" }),
    ]);
    const now = await s.listObjects("proc:1");
    assert.deepEqual(
      now.map((o) => [o.oid, o.name, o.version, o.payload, o.label]).sort(),
      [
        ["o1", "a", 5, "a again", "secret"],
        ["o2", "b", 3, "b again", "normal"],
        ["o3", "c", 7, "new", "normal"],
      ],
    );
    assert.equal((await s.getObjectByName("proc:1", "b"))?.oid, "o2");
    // A second restore goes on after the first; the history keeps every version.
    await s.restoreObjects([objRow("o1", { name: "a", payload: "third" })]);
    assert.equal((await s.getObject("o1"))?.version, 6);
    await s.flush?.();
    const rows = await everyVersion(tmp.path, ["o1", "o2", "o3"]);
    assert.deepEqual(rows.map((r) => `${r.oid}@${r.version}`), [
      "o1@1",
      "o1@2",
      "o1@3",
      "o1@4",
      "o1@5",
      "o1@6",
      "o2@1",
      "o2@2",
      "o2@3",
      "o3@7",
    ]);
  } finally {
    await s.close();
  }
});

Deno.test(
  "store: objects stored before bodies were canonical are rewritten canonical once, at open",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    let s = await open(tmp.path);
    await s.insertObject(objRow("o1", { payload: UNSORTED }));
    await s.close();
    // As the store wrote it before: JSON.stringify order, and no mark.
    const db = new DatabaseSync(tmp.path);
    const old = JSON.stringify(objRow("o1", { payload: UNSORTED }));
    assert.notEqual(old, canonicalJson(JSON.parse(old)));
    db.prepare("UPDATE objects SET body = ? WHERE oid = 'o1'").run(old);
    db.exec("DELETE FROM meta WHERE key = 'objects_canonical'");
    db.close();
    s = await open(tmp.path);
    try {
      const [text] = await s.listObjectTexts("proc:1");
      assert.equal(text, canonicalJson(JSON.parse(old)));
      assert.deepEqual(await s.getObject("o1"), JSON.parse(old));
    } finally {
      await s.close();
    }
    const rows = await rawRows(tmp.path, "SELECT value FROM meta WHERE key = 'objects_canonical'");
    assert.deepEqual(rows.map((r) => r.value), ["1"]);
  },
);

Deno.test(
  "store: an object store with the two older name indexes gets one on namespace and name, still unique",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    let s = await open(tmp.path);
    await s.insertObject(objRow("o1", { name: "plan" }));
    await s.close();
    // The layout before: a namespace index and a unique index on named objects only.
    const db = new DatabaseSync(tmp.path);
    db.exec(`DROP INDEX objects_ns_name;
      CREATE INDEX objects_ns ON objects(namespace);
      CREATE UNIQUE INDEX objects_name ON objects(namespace, name) WHERE name IS NOT NULL;`);
    db.close();
    s = await open(tmp.path);
    try {
      const indexes = await rawRows(
        tmp.path,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'objects' AND sql IS NOT NULL",
      );
      assert.deepEqual(indexes.map((r) => r.name), ["objects_ns_name"]);
      assert.equal((await s.getObjectByName("proc:1", "plan"))?.oid, "o1");
      await assert.rejects(s.insertObject(objRow("o2", { name: "plan" })), /UNIQUE/);
      // Unnamed objects do not collide; the same name in another namespace does not either.
      await s.insertObject(objRow("o3"));
      await s.insertObject(objRow("o4"));
      await s.insertObject(objRow("o5", { name: "plan", namespace: "proc:2" }));
      assert.deepEqual((await s.listObjects("proc:1")).map((o) => o.oid), ["o1", "o3", "o4"]);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a store written before the split is migrated on open and its process resumes at its step",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    // The layout before: the whole record, script included, in one row with a status column
    // (beside the meta table every layout has had).
    const old = new DatabaseSync(tmp.path);
    old.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE processes (
    pid INTEGER PRIMARY KEY AUTOINCREMENT, ppid INTEGER, status TEXT NOT NULL, body TEXT NOT NULL);
  CREATE TABLE objects (
    oid TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT, version INTEGER NOT NULL, body TEXT NOT NULL);`);
    const steps = [0, 1, 2].map((i) => ({
      tool: "put_object",
      args: { kind: "observation", name: `s${i}`, payload: { i } },
    }));
    const rec = {
      ...procDraft({
        namespace: "proc:1",
        tools: ["put_object"],
        taint: "public",
        budgets: { max_quanta: null, max_wall_ms: null, max_syscalls: null },
        usage: { quanta: 3, wall_ms: 0, syscalls: 1 },
        model: { kind: "scripted", state: { steps, position: 2 } },
        pending: { tool: "put_object", args: steps[1].args },
      }),
      jit_tools: {},
      pid: 1,
    };
    old.prepare("INSERT INTO processes (pid, ppid, status, body) VALUES (1, NULL, ?, ?)").run(
      "runnable",
      JSON.stringify(rec),
    );
    const objects: MemoryObject[] = [
      objRow("o-s0", { name: "s0", payload: { i: 0 } }),
      objRow("o-step0", {
        kind: "tool_result",
        name: "step-0",
        payload: { step: 0, tool: "put_object", ok: true, value: { oid: "o-s0" } },
      }),
      // Named like one, but not a step result: never indexed as one.
      objRow("o-fake", { kind: "observation", name: "step-7", created_by: 1 }),
    ];
    for (const o of objects) {
      old.prepare(
        "INSERT INTO objects (oid, namespace, name, version, body) VALUES (?, ?, ?, 1, ?)",
      )
        .run(o.oid, o.namespace, o.name, JSON.stringify(o));
    }
    old.close();

    const s = await open(tmp.path);
    try {
      const p = await s.getProcess(1);
      assert.equal(p?.status, "runnable");
      assert.deepEqual(p?.model, { kind: "scripted", state: { position: 2 } });
      assert.deepEqual(p?.pending, { tool: "put_object", args: steps[1].args });
      assert.deepEqual(await s.getModelInput(1), { steps });
      assert.equal(await s.stepCount(1), 1);
      assert.equal((await s.getStep(1, 0))?.oid, "o-step0");
      await s.insertCapability(capRecord({
        cap_id: "ns",
        resource: "object_namespace:proc:1",
        rights: ["read", "write"],
        created_at: T,
      }));
      // Pids keep counting from where the old table was.
      assert.equal((await s.insertProcess(procDraft())).pid, 2);
    } finally {
      await s.close();
    }
    // A second open finds nothing left to migrate.
    await (await open(tmp.path)).close();

    const rt = await Runtime.open({ store: tmp.path });
    try {
      // It continues with the action it had decided (step 1), then step 2, then exits.
      await rt.runUntilIdle();
      const p = await rt.process(1);
      assert.equal(p.status, "exited");
      assert.equal(p.exit_code, 0);
      const results = await rt.steps(1);
      assert.deepEqual(results.map((r) => [r.step, r.ok]), [[0, true], [1, true], [2, true]]);
      const names = (await rt.kernel.store.listObjects("proc:1")).map((o) => o.name);
      assert.deepEqual(names.filter((n) => /^s\d$/.test(n ?? "")), ["s0", "s1", "s2"]);
    } finally {
      await rt.close();
    }
  },
);

// ---- deferred writes

/** The cwd of `pid` as another connection sees it (committed rows only). */
async function committedCwd(path: string, pid: number): Promise<string> {
  const row = await readRow(path, "SELECT body FROM processes WHERE pid = ?", pid);
  return JSON.parse(row.body as string).cwd;
}

Deno.test(
  "store: deferred writes are read back here at once and by others once committed",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      await s.transaction(async (tx) => {
        await tx.updateProcess(p.pid, { cwd: "deferred" });
      }, { defer: true });
      assert.equal((await s.getProcess(p.pid))?.cwd, "deferred");
      assert.equal(await committedCwd(tmp.path, p.pid), ".");
      await s.flush();
      assert.equal(await committedCwd(tmp.path, p.pid), "deferred");
    } finally {
      await s.close();
    }
  },
);

Deno.test("store: a write that is not deferred commits the deferred writes before it", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const p = await s.insertProcess(procDraft());
    await s.transaction(async (tx) => {
      await tx.updateProcess(p.pid, { cwd: "decided" });
    }, { defer: true });
    // An effect's intent (or a running mark) must be durable before the effect,
    // and so must everything deferred before it.
    await s.insertEffect(effectRow("fx-intent"));
    assert.equal(await committedCwd(tmp.path, p.pid), "decided");
    const fx = await readRow(tmp.path, "SELECT status FROM effects WHERE effect_id = 'fx-intent'");
    assert.deepEqual({ ...fx as object }, { status: "pending" });
  } finally {
    await s.close();
  }
});

Deno.test("store: a deferred transaction that throws leaves the deferred writes before it to land", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const p = await s.insertProcess(procDraft());
    await s.transaction(async (tx) => {
      await tx.updateProcess(p.pid, { cwd: "kept" });
    }, { defer: true });
    const boom = new Error("boom");
    await assert.rejects(
      s.transaction(async (tx) => {
        await tx.updateProcess(p.pid, { cwd: "lost", status: "running" }, "runnable");
        throw boom;
      }, { defer: true }),
      (e) => e === boom,
    );
    assert.equal(await committedCwd(tmp.path, p.pid), "kept");
    const got = await s.getProcess(p.pid);
    assert.equal(got?.cwd, "kept");
    assert.equal(got?.status, "runnable");
  } finally {
    await s.close();
  }
});

/** `pid`'s state row as another connection sees it (committed rows only). */
async function committedState(path: string, pid: number): Promise<Record<string, unknown>> {
  const row = await readRow(path, "SELECT status, usage FROM process_state WHERE pid = ?", pid);
  return { status: row.status, usage: JSON.parse(row.usage as string) };
}

Deno.test(
  "store: a state row changed in memory is written back before the commit, once, with every change",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      const before = await committedState(tmp.path, p.pid);
      const usage = (n: number) => ({ quanta: n, wall_ms: 0, syscalls: n });
      // A decision, a running mark and a result, as one quantum writes them.
      await s.transaction((tx) => tx.updateProcess(p.pid, { usage: usage(1) }), { defer: true });
      await s.transaction(
        (tx) => tx.updateProcess(p.pid, { status: "running", usage: usage(2) }, "runnable"),
        { defer: true },
      );
      // A listing sees the change before it commits (by status: from memory; the
      // whole rows: written back first).
      assert.deepEqual(await s.pidsWithStatus("running"), [p.pid]);
      assert.deepEqual(await s.pidsWithStatus("runnable"), []);
      assert.deepEqual((await s.listProcesses()).map((r) => r.status), ["running"]);
      // The compare-and-swap goes by the row as changed in memory.
      assert.equal(
        await s.transaction((tx) => tx.updateProcess(p.pid, { status: "paused" }, "runnable"), {
          defer: true,
        }),
        false,
      );
      await s.transaction(
        (tx) => tx.updateProcess(p.pid, { status: "runnable", usage: usage(3) }, "running"),
        { defer: true },
      );
      assert.deepEqual(await committedState(tmp.path, p.pid), before);
      assert.deepEqual(await s.pidsWithStatus("running"), []);
      assert.deepEqual(await s.pidsWithStatus("runnable"), [p.pid]);
      await s.flush();
      assert.deepEqual(await committedState(tmp.path, p.pid), {
        status: "runnable",
        usage: usage(3),
      });
      assert.equal((await s.getProcess(p.pid))?.usage.quanta, 3);
      // Nothing read the row before this commit: the commit writes it.
      await s.transaction((tx) => tx.updateProcess(p.pid, { usage: usage(4) }), { defer: true });
      await s.flush();
      assert.deepEqual((await committedState(tmp.path, p.pid)).usage, usage(4));
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a deferred transaction that throws after its rows were written back keeps the earlier change",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      await s.transaction((tx) => tx.updateProcess(p.pid, { status: "paused" }), { defer: true });
      const boom = new Error("boom");
      await assert.rejects(
        s.transaction(async (tx) => {
          // The listing writes the paused row back inside this transaction's savepoint,
          // which the throw rolls back: the earlier change must still land.
          assert.deepEqual((await tx.listProcesses()).map((r) => r.status), ["paused"]);
          await tx.updateProcess(p.pid, { status: "killed" });
          throw boom;
        }, { defer: true }),
        (e) => e === boom,
      );
      assert.equal((await s.getProcess(p.pid))?.status, "paused");
      await s.flush();
      assert.equal((await committedState(tmp.path, p.pid)).status, "paused");
      assert.deepEqual(await s.pidsWithStatus("paused"), [p.pid]);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a deferred transaction that throws after writing a row leaves none of its writes",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      await s.transaction((tx) => tx.updateProcess(p.pid, { cwd: "kept" }), { defer: true });
      const boom = new Error("boom");
      await assert.rejects(
        s.transaction(async (tx) => {
          await tx.updateProcess(p.pid, { status: "running" }, "runnable");
          await tx.insertObject(objRow("o-lost"));
          await tx.insertStep(p.pid, 0, "o-lost");
          throw boom;
        }, { defer: true }),
        (e) => e === boom,
      );
      await s.flush();
      assert.equal(await s.getObject("o-lost"), null);
      assert.equal(await s.stepCount(p.pid), 0);
      assert.equal((await s.getProcess(p.pid))?.status, "runnable");
      assert.equal(await committedCwd(tmp.path, p.pid), "kept");
      assert.equal((await committedState(tmp.path, p.pid)).status, "runnable");
      const rows = await rawRows(tmp.path, "SELECT oid FROM objects WHERE oid = 'o-lost'");
      assert.equal(rows.length, 0);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: stepCount in an open group counts the steps its completed deferred transactions recorded, not a failed one's",
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      const record = (step: number, oid: string, fail = false) =>
        s.transaction(async (tx) => {
          await tx.insertObject(objRow(oid, { kind: "tool_result", name: `step-${oid}` }));
          await tx.insertStep(p.pid, step, oid);
          if (fail) throw new Error("boom");
        }, { defer: true });
      await record(0, "s0");
      assert.equal(await s.stepCount(p.pid), 1);
      await assert.rejects(record(1, "s1-lost", true), /boom/);
      assert.equal(await s.stepCount(p.pid), 1);
      await record(1, "s1");
      assert.equal(await s.stepCount(p.pid), 2);
      await s.flush();
      assert.equal(await s.stepCount(p.pid), 2);
      const again = await open(tmp.path);
      try {
        assert.equal(await again.stepCount(p.pid), 2);
        assert.deepEqual((await again.listSteps(p.pid)).map((o) => o.oid), ["s0", "s1"]);
      } finally {
        await again.close();
      }
    } finally {
      await s.close();
    }
  },
);

// ---- the step journal (SQLite file stores)

/**
 * Copy a store's files as a crash at this instant would leave them (what is
 * committed, the logs), synchronously: no timer may commit in between.
 */
function crashCopy(path: string, to: string): void {
  for (const suffix of ["", "-wal", "-auditlog", "-steps"]) {
    try {
      Deno.copyFileSync(path + suffix, to + suffix);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}

Deno.test(
  "store: a running mark made durable by the step journal is replayed when the store stopped before its commit",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    const copy = `${tmp.path}.crashed`;
    try {
      const p = await s.insertProcess(procDraft());
      const action = { tool: "now", args: {} };
      await s.transaction(
        (tx) =>
          tx.updateProcess(p.pid, { pending: action, model: { kind: "k", state: { at: 1 } } }),
        { defer: true },
      );
      await s.transaction((tx) => tx.updateProcess(p.pid, { status: "running" }, "runnable"), {
        defer: true,
      });
      await s.makeDurable!();
      crashCopy(tmp.path, copy);
      // Not committed: durable through the journal only.
      assert.equal((await committedState(copy, p.pid)).status, "runnable");
      const lines = (await Deno.readTextFile(`${copy}-steps`)).trim().split("\n");
      assert.equal(lines.length, 1);
      assert.deepEqual(JSON.parse(lines[0]).h[0], "running");
      const after = await open(copy);
      try {
        const got = await after.getProcess(p.pid);
        assert.equal(got?.status, "running");
        assert.deepEqual(got?.pending, action);
        assert.deepEqual(got?.model, { kind: "k", state: { at: 1 } });
      } finally {
        await after.close();
      }
      // The journal is emptied once replayed, and by the commit that covers it; both move
      // its epoch on (lines of an earlier epoch are never replayed).
      const epoch = async (path: string) =>
        (await rawRows(path, "SELECT value FROM meta WHERE key = 'journal_epoch'"))[0].value;
      assert.equal((await Deno.stat(`${copy}-steps`)).size, 0);
      assert.equal(await epoch(copy), "1");
      await s.flush();
      assert.equal((await Deno.stat(`${tmp.path}-steps`)).size, 0);
      assert.equal(await epoch(tmp.path), "1");
      assert.equal((await committedState(tmp.path, p.pid)).status, "running");
    } finally {
      await s.close();
    }
  },
);

/** A journal file whose writes fail as a full disk's do: part of the bytes, then ENOSPC. */
class FailingJournalFile {
  failWrites = 0;
  failTruncates = 0;
  /** Calls of writeSync. */
  writes = 0;
  constructor(readonly file: Deno.FsFile) {}
  writeSync(p: Uint8Array): number {
    this.writes++;
    if (this.failWrites > 0) {
      this.failWrites--;
      this.file.writeSync(p.subarray(0, Math.ceil(p.length / 2)));
      throw new Deno.errors.WriteZero("No space left on device (os error 28)");
    }
    return this.file.writeSync(p);
  }
  syncDataSync(): void {
    this.file.syncDataSync();
  }
  truncateSync(len?: number): void {
    if (this.failTruncates > 0) {
      this.failTruncates--;
      throw new Deno.errors.PermissionDenied("truncate refused");
    }
    this.file.truncateSync(len);
  }
  close(): void {
    this.file.close();
  }
}

/**
 * A store at `path` whose step journal file is a {@link FailingJournalFile}.
 * Every commit is the test's own (no group timer): none makes a mark durable
 * before the journal write the test is watching.
 */
function openWithJournalFile(path: string) {
  let jf!: FailingJournalFile;
  const s = SqliteStore.open(path, {
    _wrapJournalFile: (file) => jf = new FailingJournalFile(file),
    groupMaxMs: 60_000,
  });
  return { s, jf, journal: `${path}-steps` };
}

/**
 * Every file in `dir` with the sha256 of its bytes, for "nothing was written"
 * checks. A WAL file's `-shm` index is left out: any reader rewrites it.
 */
async function dirBytes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith("-shm")) continue;
    const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(join(dir, e.name)));
    out[e.name] = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }
  return out;
}

Deno.test(
  "store: a directory, a file that is not a SQLite database, or another application's database is refused and left as it was",
  SQLITE_ONLY,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "libos-foreign-" });
    try {
      const text = join(dir, "notes.db");
      await Deno.writeTextFile(text, "not a database, only some notes ".repeat(8));
      const other = join(dir, "app.db");
      const db = new DatabaseSync(other);
      db.exec("CREATE TABLE objects (x INTEGER); INSERT INTO objects VALUES (1)");
      db.close();
      const before = await dirBytes(dir);
      const refused = (path: string, message: RegExp) =>
        assert.throws(
          () => SqliteStore.open(path),
          (e) => e instanceof LibosError && e.code === "EINVAL" && message.test(e.message),
        );
      refused(text, /notes\.db is not a SQLite database/);
      refused(dir, /cannot open .*: it is a directory/);
      refused(other, /app\.db is a SQLite database of something else.*nothing was written/);
      // Not a table, an index, a WAL, an audit log or a step journal more.
      assert.deepEqual(await dirBytes(dir), before);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "store: a store file of a newer schema version is refused and left as it was; one from before versions is stamped",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    await (await open(tmp.path)).close();
    const version = () => {
      const db = new DatabaseSync(tmp.path);
      try {
        return Number(
          (db.prepare("PRAGMA user_version").get() as { user_version: number })
            .user_version,
        );
      } finally {
        db.close();
      }
    };
    assert.equal(version(), SQLITE_SCHEMA_VERSION);
    const set = (v: number) => {
      const db = new DatabaseSync(tmp.path);
      db.exec(`PRAGMA user_version = ${v}`);
      db.close();
    };
    set(SQLITE_SCHEMA_VERSION + 1);
    const dir = join(tmp.path, "..");
    const before = await dirBytes(dir);
    assert.throws(
      () => SqliteStore.open(tmp.path),
      (e) =>
        e instanceof LibosError && e.code === "ESTATE" &&
        e.message.includes(
          `schema version ${SQLITE_SCHEMA_VERSION + 1}, newer than this ` +
            `runtime's ${SQLITE_SCHEMA_VERSION}`,
        ),
    );
    assert.deepEqual(await dirBytes(dir), before);
    // A libos store made before versions were kept (0) opens as before, and is stamped.
    set(0);
    const s = await open(tmp.path);
    assert.equal(version(), SQLITE_SCHEMA_VERSION);
    await s.close();
  },
);

Deno.test(
  "store: a groupMaxMs that is not a number of ms is refused before the file is opened",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    for (const bad of [-1, NaN, Infinity]) {
      assert.throws(
        () => SqliteStore.open(tmp.path, { groupMaxMs: bad }),
        (e) =>
          e instanceof LibosError && e.code === "EINVAL" &&
          e.message === `store: groupMaxMs must be a number of ms >= 0, not ${bad}`,
      );
    }
    await assert.rejects(Deno.stat(tmp.path), Deno.errors.NotFound, "nothing created");
  },
);

Deno.test(
  "store: the running marks made durable before the event loop's next task share one step journal write",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const { s, jf, journal } = openWithJournalFile(tmp.path);
    const mark = (pid: number) =>
      s.transaction((tx) => tx.updateProcess(pid, { status: "running" }, "runnable"), {
        defer: true,
      });
    try {
      const pids: number[] = [];
      for (let i = 0; i < 4; i++) pids.push((await s.insertProcess(procDraft())).pid);
      // As the quanta in flight do: each marks its process and waits for the mark to be durable.
      const durable: Promise<void>[] = [];
      for (const pid of pids) {
        await mark(pid);
        durable.push(s.makeDurable());
      }
      assert.equal(jf.writes, 0, "nothing written before the event loop's next task");
      await Promise.all(durable);
      assert.equal(jf.writes, 1, "one write for the four marks");
      const lines = Deno.readTextFileSync(journal).trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(lines.map((l) => [l.p, l.h[0]]), pids.map((p) => [p, "running"]));
      // A commit before that task makes the waiting marks durable: nothing is written for them.
      await mark(pids[0]);
      const waiting = s.makeDurable();
      await s.flush();
      await waiting;
      assert.equal(jf.writes, 1);
      assert.equal(Deno.readTextFileSync(journal), "", "the commit emptied the journal");
      assert.equal((await s.getProcess(pids[0]))?.status, "running");
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a step journal write that fails leaves only whole lines, and the rest of its group waits for the commit",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const { s, jf, journal } = openWithJournalFile(tmp.path);
    const lines = () => Deno.readTextFileSync(journal);
    const mark = async (pid: number, status: "running" | "runnable", from: string) => {
      await s.transaction((tx) => tx.updateProcess(pid, { status }, from as "runnable"), {
        defer: true,
      });
      await s.makeDurable();
    };
    try {
      const a = (await s.insertProcess(procDraft())).pid;
      const b = (await s.insertProcess(procDraft())).pid;
      await mark(a, "running", "runnable");
      assert.equal(lines().split("\n").length, 2, "one whole line");
      const whole = lines();
      // Half a line reaches the disk, then the write fails: cut back to the whole line.
      jf.failWrites = 1;
      await assert.rejects(mark(b, "running", "runnable"), /No space left/);
      assert.equal(lines(), whole);
      // The failed line is in no journal now: the next mark of the group waits for the
      // commit (which holds b's mark), and the commit empties the journal.
      await mark(a, "runnable", "running");
      assert.equal(lines(), "");
      assert.equal((await committedState(tmp.path, a)).status, "runnable");
      assert.equal((await committedState(tmp.path, b)).status, "running");
      // A new group journals again.
      await mark(a, "running", "runnable");
      assert.equal(JSON.parse(lines()).h[0], "running");
      await s.flush();
      // When even the cut fails (and the commit's emptying too), nothing is written after
      // the part of a line: marks wait for commits until one empties the file.
      jf.failWrites = 1;
      jf.failTruncates = 2;
      await assert.rejects(mark(b, "runnable", "running"), /No space left/);
      const torn = lines();
      assert.ok(!torn.endsWith("\n"), "part of a line is left");
      await mark(a, "runnable", "running");
      assert.equal((await committedState(tmp.path, b)).status, "runnable");
      assert.equal((await committedState(tmp.path, a)).status, "runnable");
      assert.equal(lines(), torn);
      await mark(a, "running", "runnable");
      assert.equal((await committedState(tmp.path, a)).status, "running");
      assert.equal(lines(), "");
      await mark(a, "runnable", "running");
      assert.equal(JSON.parse(lines()).h[0], "runnable", "journaled again");
    } finally {
      await s.close();
    }
    // Reopened: nothing to replay, nothing refused.
    const again = await open(tmp.path);
    await again.close();
  },
);

Deno.test(
  "store: a deferred write the step journal cannot replay makes a running mark wait for the commit",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      // A static field: not in a journal line.
      await s.transaction((tx) => tx.updateProcess(p.pid, { cwd: "sub" }), { defer: true });
      await s.transaction((tx) => tx.updateProcess(p.pid, { status: "running" }, "runnable"), {
        defer: true,
      });
      await s.makeDurable!();
      assert.equal((await committedState(tmp.path, p.pid)).status, "running");
      assert.equal(await committedCwd(tmp.path, p.pid), "sub");
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a step journal's replay records a result once, skips lines a commit covered, leaves a process another runtime ended, drops a torn line and refuses a bad one",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    let s = await open(tmp.path);
    const p1 = await s.insertProcess(procDraft({ status: "running" }));
    const p2 = await s.insertProcess(procDraft({ status: "running" }));
    await s.updateProcess(p2.pid, { status: "killed" });
    await s.close();
    const db = new DatabaseSync(tmp.path);
    db.exec("UPDATE meta SET value = '5' WHERE key = 'journal_epoch'");
    db.close();
    const usage = JSON.stringify({ quanta: 9, wall_ms: 0, syscalls: 9 });
    const result = canonicalJson(objRow("o-step", { name: "step-0", namespace: "proc:x" }));
    const line1 = {
      e: 5,
      p: p1.pid,
      h: ["runnable", null, null, usage, T],
      r: [[0, "o-step", "proc:x", "step-0", 1, result]],
    };
    const line2 = { e: 5, p: p2.pid, h: ["running", null, null, usage, T] };
    // The same line twice replays as once.
    const text = [line1, line1, line2].map((l) => JSON.stringify(l)).join("\n");
    await Deno.writeTextFile(`${tmp.path}-steps`, text + '\n{"p": 1, "h": ["run');
    s = await open(tmp.path);
    try {
      assert.equal(await s.stepCount(p1.pid), 1);
      assert.equal((await s.getStep(p1.pid, 0))?.oid, "o-step");
      const p1now = await s.getProcess(p1.pid);
      assert.equal(p1now?.status, "runnable");
      assert.equal(p1now?.pending, null);
      assert.equal(p1now?.usage.quanta, 9);
      assert.equal((await s.getProcess(p2.pid))?.status, "killed");
      const objects = await rawRows(tmp.path, "SELECT oid FROM objects WHERE oid = 'o-step'");
      assert.equal(objects.length, 1);
    } finally {
      await s.close();
    }
    assert.equal((await Deno.stat(`${tmp.path}-steps`)).size, 0);
    const [epoch] = await rawRows(tmp.path, "SELECT value FROM meta WHERE key = 'journal_epoch'");
    assert.equal(epoch.value, "6");
    // A line of an earlier epoch was covered by a commit (the store stopped before it
    // emptied the journal): it is not replayed over what that commit wrote.
    const covered = { e: 5, p: p1.pid, h: ["running", '{"tool":"now","args":{}}', null, usage, T] };
    await Deno.writeTextFile(`${tmp.path}-steps`, JSON.stringify(covered) + "\n");
    s = await open(tmp.path);
    try {
      const p1now = await s.getProcess(p1.pid);
      assert.equal(p1now?.status, "runnable");
      assert.equal(p1now?.pending, null);
    } finally {
      await s.close();
    }
    await Deno.writeTextFile(`${tmp.path}-steps`, "not a line\n");
    await assert.rejects(open(tmp.path), (e: Error) => {
      assert.match(e.message, /step journal .*-steps: line 1 is not a journal line/);
      return true;
    });
  },
);

Deno.test("store: deferred writes commit on their own once the event loop is free", async () => {
  await using tmp = await tempStore();
  const s = await open(tmp.path);
  try {
    const p = await s.insertProcess(procDraft());
    await s.transaction(async (tx) => {
      await tx.updateProcess(p.pid, { cwd: "later" });
    }, { defer: true });
    let cwd = await committedCwd(tmp.path, p.pid);
    for (let i = 0; i < 200 && cwd !== "later"; i++) {
      await new Promise((r) => setTimeout(r, 5));
      cwd = await committedCwd(tmp.path, p.pid);
    }
    assert.equal(cwd, "later");
  } finally {
    await s.close();
  }
});

/** Another OS process holding the store's write lock (`fixtures/hold_write_lock.ts`) until `release()`. */
async function holdWriteLock(
  path: string,
): Promise<{ release: () => Promise<void>; kill: () => Promise<void> }> {
  const holder = await startFixture("hold_write_lock.ts", [path]);
  assert.equal(holder.first, "holding");
  return {
    async release() {
      await holder.go();
      await holder.rest();
    },
    kill: holder.kill,
  };
}

Deno.test(
  "store: a write waits for another process's transaction without blocking this thread, and fails EBUSY past the busy timeout",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const s = await open(tmp.path);
    try {
      const p = await s.insertProcess(procDraft());
      const other = await holdWriteLock(tmp.path);
      // A plain write and a deferred one, both waiting for the other process's commit.
      let settled = 0;
      const write = s.updateProcess(p.pid, { cwd: "plain" }).finally(() => settled++);
      const deferred = s.transaction((tx) => tx.updateProcess(p.pid, { status: "paused" }), {
        defer: true,
      }).finally(() => settled++);
      // This thread's timers keep running meanwhile (it does not sleep inside SQLite).
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(settled, 0, "the writes wait for the other process");
      await other.release();
      assert.equal(await write, true);
      assert.equal(await deferred, true);
      await s.flush();
      assert.equal(await committedCwd(tmp.path, p.pid), "plain");
      const state = await readRow(
        tmp.path,
        "SELECT status FROM process_state WHERE pid = ?",
        p.pid,
      );
      assert.equal(state.status, "paused");
      // Held past the busy timeout: the write fails with EBUSY and writes nothing.
      const stuck = await holdWriteLock(tmp.path);
      try {
        await rejectsCode(s.updateProcess(p.pid, { cwd: "late" }), "EBUSY");
      } finally {
        await stuck.kill();
      }
      assert.equal((await s.getProcess(p.pid))?.cwd, "plain");
      assert.equal(await s.updateProcess(p.pid, { cwd: "after" }), true);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "store: a second store on the same file in the same thread writes while the first holds deferred writes",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempStore();
    const a = await open(tmp.path);
    const b = await open(tmp.path);
    try {
      const p = await a.insertProcess(procDraft());
      // a holds the write lock for its group of deferred writes, committed once the
      // event loop is free: b's write waits for that on the event loop, not inside SQLite.
      await a.transaction((tx) => tx.updateProcess(p.pid, { cwd: "deferred" }), { defer: true });
      assert.equal(await b.updateProcess(p.pid, { cwd: "second" }), true);
      assert.equal((await b.getProcess(p.pid))?.cwd, "second");
      assert.equal(await committedCwd(tmp.path, p.pid), "second");
    } finally {
      await b.close();
      await a.close();
    }
  },
);

Deno.test("store: a status changed by another connection is seen through the read cache", async () => {
  await using tmp = await tempStore();
  const a = await open(tmp.path);
  const b = await open(tmp.path);
  try {
    const p = await a.insertProcess(procDraft());
    assert.equal((await a.getProcess(p.pid))?.status, "runnable");
    // A quantum's own runnable <-> running is not announced; every other move is.
    assert.equal(await b.updateProcess(p.pid, { status: "paused" }, "runnable"), true);
    let seen = (await a.getProcess(p.pid))?.status;
    for (let i = 0; i < 100 && seen !== "paused"; i++) {
      await new Promise((r) => setTimeout(r, 1));
      seen = (await a.getProcess(p.pid))?.status;
    }
    assert.equal(seen, "paused");
    // And a's own compare-and-swap goes by the stored status, whatever it cached.
    assert.equal(await a.updateProcess(p.pid, { status: "running" }, "runnable"), false);
  } finally {
    await b.close();
    await a.close();
  }
});

Deno.test(
  "store: a new SQLite store and the files beside it are the owner's alone (mode 0600)",
  SQLITE_ONLY,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "libos-modes-" });
    try {
      await Deno.chmod(dir, 0o755); // a shared directory: only the files' own modes protect them
      const path = join(dir, "s.db");
      const rt = await Runtime.open({ store: path });
      try {
        await rt.launch({
          image: { name: "m", tools: ["put_object"] },
          workspace: await Deno.makeTempDir({ dir }),
          script: { steps: [{ tool: "put_object", args: { kind: "claim", payload: "x" } }] },
        });
        await rt.runUntilIdle();
        const modes: Record<string, string> = {};
        for (const suffix of ["", "-wal", "-shm", "-auditlog", "-steps"]) {
          const st = await Deno.stat(path + suffix).catch(() => null);
          if (st) modes[suffix || "db"] = (st.mode! & 0o777).toString(8);
        }
        assert.ok(Object.keys(modes).length >= 4, JSON.stringify(modes));
        for (const [f, m] of Object.entries(modes)) assert.equal(m, "600", `${f}: ${m}`);
      } finally {
        await rt.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
