/**
 * The audit trail and the effect ledger: the hash chain detects tampering and
 * names the first bad record; every syscall leaves exactly one record naming
 * the deciding capability; secret content never reaches audit or events; the
 * effect intent is durable before the effect and unknown outcomes are never
 * replayed.
 */
import assert from "node:assert/strict";
import { main } from "../cli/libos.ts";
import { hashValue } from "../runtime/canonical.ts";
import { HostFileSystem } from "../runtime/providers/host.ts";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";
import { Runtime } from "../host/runtime.ts";
import { auditHash } from "../runtime/store/sqlite.ts";
import type { Store } from "../runtime/store/store.ts";
import type { AuditRecord, EffectRecord } from "../runtime/types.ts";
import {
  cap,
  type Env,
  launch,
  makeEnv,
  openStoreAt,
  rawSql,
  rejectsCode,
  storeBytes,
} from "./_helpers.ts";
import { SQLITE_ONLY } from "./_pg.ts";

// ---- local helpers

/** Records appended while `fn` ran. */
async function newAudit(env: Env, fn: () => Promise<unknown>): Promise<AuditRecord[]> {
  const before = await env.rt.kernel.store.listAudit();
  const last = before.at(-1)?.seq ?? 0;
  try {
    await fn();
  } catch { /* the caller asserts the outcome separately */ }
  return await env.rt.kernel.store.listAudit({ afterSeq: last });
}

/** The single record of syscall `name` among `recs` (asserting there is exactly one). */
function only(recs: AuditRecord[], name: string): AuditRecord {
  const mine = recs.filter((r) => r.action === name);
  assert.equal(mine.length, 1, `expected one '${name}' record, got ${JSON.stringify(recs)}`);
  return mine[0];
}

/** Cap id of the process's capability on `resource` with `effect`. */
async function capId(env: Env, pid: number, resource: string, effect = "allow"): Promise<string> {
  const c = (await env.rt.kernel.store.capabilitiesOf(pid)).find((c) =>
    c.resource === resource && c.effect === effect
  );
  assert.ok(c, `no ${effect} capability on ${resource}`);
  return c.cap_id;
}

/**
 * A closed store file with a mixed audit trail (allows and denies) made by
 * real syscalls. Returns the records as written.
 */
async function auditedStore(env: Env): Promise<AuditRecord[]> {
  const pid = await launch(env, [
    cap("filesystem:workspace:a.txt", "read"),
    cap("filesystem:workspace:out/*", "write"),
  ]);
  await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
  await env.rt.syscall(pid, "filesystem.write", { path: "out/x.txt", content: "x" });
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "b.txt", content: "y" }),
    "EPERM",
  );
  await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  const recs = await env.rt.kernel.store.listAudit();
  assert.equal(recs.length, 6);
  await env.rt.close();
  return recs;
}

/** Run raw SQL against the store, as an attacker with file or database access would. */
const tamper = rawSql;

async function verify(path: string) {
  const s = await openStoreAt(path);
  try {
    return await s.verifyAudit();
  } finally {
    await s.close();
  }
}

/** Run the CLI in-process, capturing what it prints. */
async function cli(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  console.error = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, out: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

const FILES = { "a.txt": "A", "b.txt": "B" };

// ---- hash chain

Deno.test("audit: verifyAudit is ok on a clean store and the chain links every record", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  recs.forEach((r, i) => {
    assert.equal(r.seq, i + 1);
    assert.equal(r.prev_hash, i === 0 ? "" : recs[i - 1].hash);
    const { hash: _h, prev_hash: _p, ...fields } = r;
    assert.equal(r.hash, auditHash(r.prev_hash, fields));
  });
  const v = await verify(env.storePath);
  assert.deepEqual(v, { ok: true, count: 6, head: recs[5].hash });
  const empty = await verify(`${env.root}/empty.db`);
  assert.deepEqual(empty, { ok: true, count: 0, head: "" });
});

Deno.test("audit: editing a record's decision in its JSON body is detected at that record", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  const deny = recs.find((r) => r.decision === "deny")!;
  const n = await tamper(
    env.storePath,
    `UPDATE audit SET body = replace(body, '"decision":"deny"', '"decision":"allow"') WHERE seq = ?`,
    deny.seq,
  );
  assert.equal(n, 1);
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, deny.seq);
  assert.equal(v.firstBad?.record_id, deny.record_id);
  assert.match(v.firstBad!.problem, /hash/);
  assert.equal(v.count, deny.seq - 1);
});

Deno.test("audit: editing the indexed decision column is detected", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  const deny = recs.find((r) => r.decision === "deny")!;
  await tamper(env.storePath, "UPDATE audit SET decision = 'allow' WHERE seq = ?", deny.seq);
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, deny.seq);
  assert.match(v.firstBad!.problem, /indexed columns/);
  // The actor column too.
  await tamper(env.storePath, "UPDATE audit SET decision = 'deny' WHERE seq = ?", deny.seq);
  assert.equal((await verify(env.storePath)).ok, true);
  await tamper(env.storePath, "UPDATE audit SET actor = 'pid:999' WHERE seq = 1");
  assert.equal((await verify(env.storePath)).firstBad?.seq, 1);
});

Deno.test("audit: editing a record's target or reason is detected", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  await tamper(
    env.storePath,
    `UPDATE audit SET body = replace(body, 'b.txt', 'c.txt') WHERE seq = 4`,
  );
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, 4);
});

Deno.test("audit: a rewritten record with a recomputed hash breaks the next link", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  const deny = recs.find((r) => r.decision === "deny")!;
  const forged = { ...deny, decision: "allow" as const, reason: "forged" };
  const { hash: _h, prev_hash: _p, ...fields } = forged;
  forged.hash = auditHash(deny.prev_hash, fields);
  // The body column holds the record without its hashes, exactly as hashed.
  await tamper(
    env.storePath,
    "UPDATE audit SET decision = 'allow', hash = ?, body = ? WHERE seq = ?",
    forged.hash,
    JSON.stringify(fields),
    deny.seq,
  );
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, deny.seq + 1);
  assert.match(v.firstBad!.problem, /prev_hash/);
});

Deno.test("audit: deleting a middle record is detected and the gap is named", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  assert.equal(await tamper(env.storePath, "DELETE FROM audit WHERE seq = 3"), 1);
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, 4);
  assert.match(v.firstBad!.problem, /expected record 3/);
  assert.equal(v.count, 2);
});

Deno.test("audit: deleting the first record is detected", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  await tamper(env.storePath, "DELETE FROM audit WHERE seq = 1");
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, 2);
});

Deno.test("audit: truncating the tail of the chain is detected", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  assert.equal(await tamper(env.storePath, "DELETE FROM audit WHERE seq >= 5"), 2);
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.count, 4);
  assert.equal(v.firstBad?.seq, 5);
  assert.match(v.firstBad!.problem, /removed from the end/);
  // Deleting every record is a truncation too.
  await tamper(env.storePath, "DELETE FROM audit");
  const all = await verify(env.storePath);
  assert.equal(all.ok, false);
  assert.equal(all.firstBad?.seq, 1);
});

Deno.test("audit: changing a prev_hash is detected at that record", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  await tamper(env.storePath, "UPDATE audit SET prev_hash = ? WHERE seq = 3", "0".repeat(64));
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, 3);
  assert.equal(v.firstBad?.record_id, recs[2].record_id);
  assert.match(v.firstBad!.problem, /prev_hash/);
});

Deno.test("audit: a record body that is not JSON is detected", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  await tamper(env.storePath, "UPDATE audit SET body = 'garbage' WHERE seq = 2");
  const v = await verify(env.storePath);
  assert.equal(v.ok, false);
  assert.equal(v.firstBad?.seq, 2);
});

Deno.test("audit: the CLI audit --verify exits 0 on a clean store and 1 on tampering", async () => {
  await using env = await makeEnv({ files: FILES });
  const recs = await auditedStore(env);
  const clean = await cli(["audit", "--store", env.storePath, "--verify"]);
  assert.equal(clean.code, 0);
  assert.match(clean.out, /audit ok: 6 records/);
  const cleanJson = await cli(["audit", "--store", env.storePath, "--verify", "--json"]);
  assert.equal(cleanJson.code, 0);
  assert.equal(JSON.parse(cleanJson.out).ok, true);

  const deny = recs.find((r) => r.decision === "deny")!;
  await tamper(
    env.storePath,
    `UPDATE audit SET body = replace(body, '"decision":"deny"', '"decision":"allow"') WHERE seq = ?`,
    deny.seq,
  );
  const bad = await cli(["audit", "--store", env.storePath, "--verify"]);
  assert.equal(bad.code, 1);
  assert.match(bad.out, new RegExp(`TAMPERED: record ${deny.seq} `));
  const badJson = await cli(["audit", "--store", env.storePath, "--verify", "--json"]);
  assert.equal(badJson.code, 1);
  assert.equal(JSON.parse(badJson.out).firstBad.seq, deny.seq);
});

Deno.test("audit: the CLI audit --verify exits 1 when the tail was truncated", async () => {
  await using env = await makeEnv({ files: FILES });
  await auditedStore(env);
  await tamper(env.storePath, "DELETE FROM audit WHERE seq = 6");
  const r = await cli(["audit", "--store", env.storePath, "--verify"]);
  assert.equal(r.code, 1);
  assert.match(r.out, /TAMPERED: record 6 /);
});

// ---- one record per syscall, naming the deciding capability

Deno.test("audit: an allowed syscall leaves one allow record naming the allowing capability", async () => {
  await using env = await makeEnv({ files: FILES });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  const id = await capId(env, pid, "filesystem:workspace:*");
  const recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }));
  assert.equal(recs.length, 1);
  const r = recs[0];
  assert.equal(r.action, "filesystem.read");
  assert.equal(r.actor, `pid:${pid}`);
  assert.equal(r.decision, "allow");
  assert.equal(r.target, "filesystem:workspace:a.txt");
  assert.deepEqual(r.capability_refs, [id]);
  assert.match(r.reason, new RegExp(id));
});

Deno.test("audit: a default-deny syscall leaves one deny record with no capability", async () => {
  await using env = await makeEnv({ files: FILES });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
  const recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }));
  assert.equal(recs.length, 1);
  assert.equal(recs[0].action, "filesystem.read");
  assert.equal(recs[0].decision, "deny");
  assert.equal(recs[0].target, "filesystem:workspace:b.txt");
  assert.deepEqual(recs[0].capability_refs, []);
  assert.match(recs[0].reason, /^EPERM/);
  // And a syscall.denied event with the same correlation id.
  const ev = (await env.rt.kernel.store.listEvents()).filter((e) => e.type === "syscall.denied");
  assert.equal(ev.length, 1);
  assert.equal(ev[0].correlation_id, recs[0].correlation_id);
});

Deno.test("audit: a syscall denied by a DENY capability names that capability", async () => {
  await using env = await makeEnv({ files: FILES });
  const pid = await launch(env, [
    cap("filesystem:workspace:*", "read"),
    { resource: "filesystem:workspace:b.txt", rights: ["read"], effect: "deny" },
  ]);
  const denyId = await capId(env, pid, "filesystem:workspace:b.txt", "deny");
  const recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }));
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
  assert.equal(recs.length, 1);
  assert.equal(recs[0].decision, "deny");
  assert.deepEqual(recs[0].capability_refs, [denyId]);
  assert.match(recs[0].reason, new RegExp(denyId));
});

Deno.test("audit: failed and malformed syscalls also leave exactly one record", async () => {
  await using env = await makeEnv({ files: FILES });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  const id = await capId(env, pid, "filesystem:workspace:*");
  // Allowed, then the file is missing: an error record still naming the cap.
  let recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "nope" }));
  assert.equal(recs.length, 1);
  assert.equal(recs[0].decision, "error");
  assert.deepEqual(recs[0].capability_refs, [id]);
  assert.match(recs[0].reason, /^ENOENT/);
  // Unknown argument.
  recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "a", x: 1 }));
  assert.equal(recs.length, 1);
  assert.equal(recs[0].decision, "error");
  assert.match(recs[0].reason, /^EINVAL: filesystem\.read\.x: unknown argument/);
  // Unknown syscall.
  recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.format", {}));
  assert.equal(recs.length, 1);
  // The name is the caller's text: the action is the kind, the reason names it.
  assert.equal(recs[0].action, "syscall.unknown");
  assert.equal(recs[0].decision, "error");
  assert.match(recs[0].reason, /no syscall named 'filesystem\.format'/);
  // Unknown process.
  recs = await newAudit(env, () => env.rt.syscall(9999, "filesystem.read", { path: "a.txt" }));
  assert.equal(recs.length, 1);
  assert.equal(recs[0].actor, "pid:9999");
  assert.equal(recs[0].decision, "error");
  assert.equal((await env.rt.kernel.store.verifyAudit()).ok, true);
});

Deno.test("audit: an ASK answered deny leaves one syscall record naming the ASK capability", async () => {
  await using env = await makeEnv({ files: FILES });
  const pid = await launch(env, [
    { resource: "filesystem:workspace:a.txt", rights: ["read"], effect: "ask" },
  ]);
  const askId = await capId(env, pid, "filesystem:workspace:a.txt", "ask");
  const recs = await newAudit(env, () => env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }));
  const r = only(recs, "filesystem.read");
  assert.equal(r.decision, "deny");
  assert.ok(r.capability_refs.includes(askId), JSON.stringify(r.capability_refs));
  // The question and the answer are recorded too, tied by correlation id.
  const ask = only(recs, "human.ask");
  assert.equal(ask.decision, "ask");
  assert.deepEqual(ask.capability_refs, [askId]);
  assert.equal(only(recs, "human.decide").decision, "deny");
  assert.ok(recs.every((x) => x.correlation_id === r.correlation_id));
  assert.equal(env.human.asked.length, 1);
});

Deno.test("audit: a one-shot human approval is named in the syscall's allow record", async () => {
  const human = new ScriptedHuman(["allow_once"]);
  await using env = await makeEnv({ files: FILES, providers: { human } });
  const pid = await launch(env, [
    { resource: "filesystem:workspace:a.txt", rights: ["read"], effect: "ask" },
  ]);
  const askId = await capId(env, pid, "filesystem:workspace:a.txt", "ask");
  let value: unknown;
  const recs = await newAudit(env, async () => {
    value = await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  });
  assert.equal(value, "A");
  const r = only(recs, "filesystem.read");
  assert.equal(r.decision, "allow");
  const bound = (await env.rt.kernel.store.capabilitiesOf(pid)).find((c) =>
    c.constraints.binding !== undefined
  )!;
  assert.ok(bound, "a one-shot capability was minted");
  assert.equal(bound.issued_by, "human:owner");
  assert.equal(bound.status, "exhausted");
  assert.ok(r.capability_refs.includes(bound.cap_id), JSON.stringify(r.capability_refs));
  assert.ok(r.capability_refs.includes(askId));
  // The one-shot approval is spent: the same call asks again (and is denied).
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  assert.equal(human.asked.length, 2);
});

// ---- secrets never reach audit or events

const SECRET = "sk-live-TOPSECRET-4242-zq";
const SECRET_FILES = { ".env": `API_KEY=${SECRET}\n`, "a.txt": "PUBLIC-MARKER-777" };
const SECRET_POLICY = { labels: { ".env": "secret" } };

Deno.test("audit: a denied read of a secret file never puts its content in the store", async () => {
  await using env = await makeEnv({ files: SECRET_FILES });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")], {
    policy: SECRET_POLICY,
  });
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: ".env" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path: ".env" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: "." }), "EPERM");
  // Positive control: allowed public content is previewed, so the byte scan can see text.
  assert.equal(
    await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }),
    "PUBLIC-MARKER-777",
  );
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit());
  const events = JSON.stringify(await env.rt.kernel.store.listEvents());
  assert.ok(audit.includes("PUBLIC-MARKER-777"));
  assert.ok(!audit.includes("TOPSECRET"));
  assert.ok(!events.includes("TOPSECRET"));
  const open = await storeBytes(env.storePath);
  assert.ok(open.includes("PUBLIC-MARKER-777"), "byte scan sees written text");
  assert.ok(!open.includes("TOPSECRET"), "secret found in the live store files");
  await env.rt.close();
  const closed = await storeBytes(env.storePath);
  assert.ok(closed.includes("PUBLIC-MARKER-777"));
  assert.ok(!closed.includes("TOPSECRET"), "secret found in the closed store file");
});

Deno.test("audit: a denied scripted read of a secret file never reaches the store", async () => {
  await using env = await makeEnv({ files: SECRET_FILES });
  const pid = await launch(env, [], {
    policy: SECRET_POLICY,
    script: {
      steps: [
        { tool: "read_file", args: { path: ".env" } },
        { tool: "output", args: { text: "done" } },
      ],
    },
  });
  await env.rt.runUntilIdle();
  const steps = await env.rt.steps(pid);
  assert.equal(steps[0].ok, false);
  assert.equal(steps[0].ok ? "" : steps[0].error.code, "EPERM");
  await env.rt.close();
  assert.ok(!(await storeBytes(env.storePath)).includes("TOPSECRET"));
});

Deno.test("audit: an allowed read of a secret file is redacted in audit but keeps sha256 and size", async () => {
  await using env = await makeEnv({ files: SECRET_FILES });
  const pid = await launch(env, [
    cap("filesystem:workspace:.env", "read"),
    cap("filesystem:workspace:a.txt", "read"),
    cap("filesystem:workspace:copy.env", "write"),
  ], { policy: SECRET_POLICY });
  let content: unknown;
  const recs = await newAudit(env, async () => {
    content = await env.rt.syscall(pid, "filesystem.read", { path: ".env" });
  });
  assert.equal(content, `API_KEY=${SECRET}\n`);
  const r = only(recs, "filesystem.read");
  assert.equal(r.decision, "allow");
  const out = r.output_refs as { preview: string; sha256: string; size: number };
  assert.equal(out.preview, "[redacted:secret]");
  assert.equal(out.sha256, hashValue(content));
  assert.equal(out.size, new TextEncoder().encode(JSON.stringify(content)).length);
  // The process is now secret-tainted: its later inputs are redacted too,
  // even when it writes the secret back out under a secret label.
  assert.equal((await env.rt.process(pid)).taint, "secret");
  const w = await newAudit(env, () =>
    env.rt.syscall(pid, "filesystem.write", {
      path: "copy.env",
      content: `again ${SECRET}`,
      label: "secret",
    }));
  const wr = only(w, "filesystem.write");
  assert.equal(wr.decision, "allow");
  assert.equal((wr.input_refs as { preview: string }).preview, "[redacted:secret]");
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit());
  const events = JSON.stringify(await env.rt.kernel.store.listEvents());
  const effects = JSON.stringify(await env.rt.kernel.store.listEffects());
  assert.ok(!audit.includes("TOPSECRET"));
  assert.ok(!events.includes("TOPSECRET"));
  assert.ok(!effects.includes("TOPSECRET"));
  await env.rt.close();
  assert.ok(!(await storeBytes(env.storePath)).includes("TOPSECRET"));
});

// ---- effect ledger

/** A file system that snapshots the effect ledger whenever it is asked to write. */
class LedgerWatchingFs extends HostFileSystem {
  store: Store | null = null;
  seen: EffectRecord[][] = [];
  writes = 0;
  override async writeText(path: string, content: string): Promise<void> {
    this.writes++;
    if (this.store) this.seen.push(await this.store.listEffects());
    return await super.writeText(path, content);
  }
}

Deno.test("audit: a filesystem.write records its intent as pending before writing, then done", async () => {
  const fs = new LedgerWatchingFs();
  await using env = await makeEnv({ providers: { fs } });
  fs.store = env.rt.kernel.store;
  const pid = await launch(env, [cap("filesystem:workspace:out.txt", "write")]);
  const args = { path: "out.txt", content: "hello" };
  await env.rt.syscall(pid, "filesystem.write", args);
  assert.equal(await Deno.readTextFile(`${env.ws}/out.txt`), "hello");
  // At the moment of the write, the intent was already durable and pending.
  assert.equal(fs.seen.length, 1);
  assert.equal(fs.seen[0].length, 1);
  const during = fs.seen[0][0];
  assert.equal(during.status, "pending");
  assert.equal(during.finished_at, null);
  assert.equal(during.args_hash, hashValue(args));
  // Afterwards the same entry is done.
  const after = await env.rt.kernel.store.listEffects();
  assert.equal(after.length, 1);
  assert.equal(after[0].effect_id, during.effect_id);
  assert.equal(after[0].status, "done");
  assert.equal(after[0].pid, pid);
  assert.equal(after[0].syscall, "filesystem.write");
  assert.equal(after[0].resource, "filesystem:workspace:out.txt");
  assert.equal(after[0].args_hash, hashValue(args));
  assert.notEqual(after[0].finished_at, null);
  assert.ok(after[0].outcome !== null);
  // The args hash is the one the audit record's input refers to.
  const rec = (await env.rt.kernel.store.listAudit({ action: "filesystem.write" }))[0];
  assert.equal((rec.input_refs as { sha256: string }).sha256, after[0].args_hash);
});

Deno.test("audit: a denied write records no effect intent", async () => {
  const fs = new LedgerWatchingFs();
  await using env = await makeEnv({ providers: { fs } });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "a.txt", content: "x" }),
    "EPERM",
  );
  assert.deepEqual(await env.rt.kernel.store.listEffects(), []);
  assert.equal(fs.writes, 0);
});

Deno.test("audit: a failed write leaves its effect record failed", async () => {
  await using env = await makeEnv({ files: { "dir/keep.txt": "k" } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "write")]);
  const args = { path: "dir", content: "overwrite a directory" };
  await rejectsCode(env.rt.syscall(pid, "filesystem.write", args), "EINVAL");
  const fx = await env.rt.kernel.store.listEffects();
  assert.equal(fx.length, 1);
  assert.equal(fx[0].status, "failed");
  assert.equal(fx[0].args_hash, hashValue(args));
  assert.notEqual(fx[0].finished_at, null);
  assert.equal((fx[0].outcome as { code: string }).code, "EINVAL");
  assert.equal(
    (await env.rt.kernel.store.listAudit({ action: "filesystem.write" }))[0].decision,
    "error",
  );
  assert.deepEqual(await env.rt.kernel.store.listEffects("pending"), []);
  // The directory is untouched.
  assert.equal(await Deno.readTextFile(`${env.ws}/dir/keep.txt`), "k");
});

// Recovery at open is the one-scheduler rule of a SQLite store; on PostgreSQL it
// happens when a worker takes a dead worker's process over (worker_test.ts).
Deno.test(
  "audit: a pending effect left by a crash becomes unknown on Runtime.open and is not replayed",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const pid = await launch(env, [cap("filesystem:workspace:*", "write")]);
    const args = { path: "ghost.txt", content: "should never be written" };
    await env.rt.kernel.store.insertEffect({
      effect_id: "fx_crashed",
      pid,
      syscall: "filesystem.write",
      resource: "filesystem:workspace:ghost.txt",
      args_hash: hashValue(args),
      status: "pending",
      outcome: null,
      created_at: "2030-01-01T00:00:00.000Z",
      finished_at: null,
    });
    await env.rt.close();

    const fs = new LedgerWatchingFs();
    let rt = await Runtime.open({ store: env.storePath, providers: { fs } });
    try {
      const fx = await rt.kernel.store.listEffects();
      assert.equal(fx.length, 1);
      assert.equal(fx[0].effect_id, "fx_crashed");
      assert.equal(fx[0].status, "unknown");
      assert.notEqual(fx[0].finished_at, null);
      assert.deepEqual(await rt.kernel.store.listEffects("pending"), []);
      const unknown = (await rt.kernel.store.listEvents()).filter((e) =>
        e.type === "effect.unknown"
      );
      assert.equal(unknown.length, 1);
      assert.deepEqual(unknown[0].payload, { count: 1 });
      await rt.runUntilIdle();
      assert.equal(fs.writes, 0);
      await assert.rejects(Deno.stat(`${env.ws}/ghost.txt`), Deno.errors.NotFound);
    } finally {
      await rt.close();
    }
    // A second restart leaves it unknown and reports nothing new.
    rt = await Runtime.open({ store: env.storePath, providers: { fs } });
    try {
      assert.equal((await rt.kernel.store.listEffects())[0].status, "unknown");
      const unknown = (await rt.kernel.store.listEvents()).filter((e) =>
        e.type === "effect.unknown"
      );
      assert.equal(unknown.length, 1);
      assert.equal(fs.writes, 0);
    } finally {
      await rt.close();
    }
  },
);

Deno.test(
  "audit: a process caught mid-step gets an unknown outcome instead of a replay",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const pid = await launch(env, [cap("filesystem:workspace:*", "write")], {
      script: { steps: [] },
    });
    const k = env.rt.kernel;
    await k.transition(pid, "running");
    await k.saveProcess(pid, {
      pending: { tool: "write_file", args: { path: "ghost2.txt", content: "x" } },
    });
    await env.rt.close();

    const fs = new LedgerWatchingFs();
    const rt = await Runtime.open({ store: env.storePath, providers: { fs } });
    try {
      const p = await rt.process(pid);
      assert.equal(p.status, "runnable");
      assert.equal(p.pending, null);
      const steps = await rt.steps(pid);
      assert.equal(steps.length, 1);
      assert.equal(steps[0].tool, "write_file");
      assert.equal(steps[0].ok, false);
      assert.equal(steps[0].ok ? "" : steps[0].error.code, "EIO");
      await rt.runUntilIdle();
      assert.equal(fs.writes, 0);
      await assert.rejects(Deno.stat(`${env.ws}/ghost2.txt`), Deno.errors.NotFound);
      assert.equal((await rt.process(pid)).status, "exited");
    } finally {
      await rt.close();
    }
  },
);

Deno.test("audit: a policy label pattern that could never match is refused, not ignored", async () => {
  await using env = await makeEnv({ files: { ".env": `API_KEY=${SECRET}\n` } });
  // A glob-style pattern would silently label nothing and let the secret be previewed.
  for (const pattern of ["*.env", "../.env", "/etc/passwd", "a/*/b", "filesystem:workspace:src*"]) {
    const e = await rejectsCode(
      launch(env, [cap("filesystem:workspace:.env", "read")], {
        policy: { labels: { [pattern]: "secret" } },
      }),
      "EINVAL",
    );
    assert.ok(e.message.startsWith(`policy.labels.${pattern}:`), e.message);
  }
  assert.deepEqual(await env.rt.kernel.store.listProcesses(), []);
});

Deno.test("audit: a wildcard label pattern redacts every file below it", async () => {
  await using env = await makeEnv({ files: { "keys/prod.txt": `k=${SECRET}` } });
  const pid = await launch(env, [cap("filesystem:workspace:keys/*", "read")], {
    policy: { labels: { "keys/*": "secret" } },
  });
  const recs = await newAudit(
    env,
    () => env.rt.syscall(pid, "filesystem.read", { path: "keys/prod.txt" }),
  );
  const r = only(recs, "filesystem.read");
  assert.equal(r.decision, "allow");
  assert.equal((r.output_refs as { preview: string }).preview, "[redacted:secret]");
  assert.ok(!JSON.stringify(await env.rt.kernel.store.listAudit()).includes("TOPSECRET"));
});
