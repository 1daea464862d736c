/**
 * The audit log of a file store: records are durable once the call returns
 * (even if the runtime dies before they are indexed), a crashed writer's
 * lines are indexed exactly once at the next open, one writer holds the log
 * while any other store on the file commits its own appends, and a full log
 * is emptied without breaking the chain.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { SqliteStore } from "../runtime/store/sqlite.ts";
import { LibosError } from "../runtime/errors.ts";
import { SQLITE_ONLY } from "./_pg.ts";
import { auditLogPath } from "../runtime/store/_audit_log.ts";
import type { AuditDraft } from "../runtime/store/store.ts";

const T = "2026-11-27T00:00:00.000Z";

function draft(i: number, actor = "pid:1"): AuditDraft {
  return {
    timestamp: T,
    actor,
    action: "filesystem.read",
    target: `filesystem:workspace:f${i}.txt`,
    input_refs: { n: i },
    output_refs: null,
    capability_refs: ["cap_x"],
    decision: i % 3 === 0 ? "deny" : "allow",
    reason: `r${i}`,
    correlation_id: `c${i}`,
    parent_record_id: null,
  };
}

async function tempDir(): Promise<{ dir: string; [Symbol.asyncDispose](): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "libos-auditlog-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A closed store file in `dir` holding one audit record (`draft(0)`); its path. */
async function storeWithOneRecord(dir: string): Promise<string> {
  const path = join(dir, "s.db");
  const s = SqliteStore.open(path);
  await s.appendAudit(draft(0));
  await s.close();
  return path;
}

function metaOffset(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const r = db.prepare("SELECT value FROM meta WHERE key = 'audit_log_offset'").get() as
      | { value: string }
      | undefined;
    return Number(r?.value ?? 0);
  } finally {
    db.close();
  }
}

Deno.test(
  "audit log: a runtime killed right after its calls returned loses no audit record",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const ws = join(tmp.dir, "ws");
    await Deno.mkdir(ws);
    await Deno.writeTextFile(join(ws, "a.txt"), "A");
    const runtimeUrl = new URL("../host/runtime.ts", import.meta.url).href;
    // The indexer usually lags the last calls by a few ms; on a busy machine it
    // can catch up before the kill, so up to three tries must see it lag once.
    let sawUnindexed = false;
    for (let attempt = 0; attempt < 3 && !sawUnindexed; attempt++) {
      const storePath = join(tmp.dir, `store${attempt}.db`);
      const child = join(tmp.dir, `child${attempt}.ts`);
      await Deno.writeTextFile(
        child,
        `import { Runtime } from ${JSON.stringify(runtimeUrl)};
const rt = await Runtime.open({ store: ${JSON.stringify(storePath)} });
const { pid } = await rt.launch({
  image: { name: "k", tools: ["read_file"], budgets: { max_syscalls: null } },
  workspace: ${JSON.stringify(ws)},
  grants: [{ resource: "filesystem:workspace:a.txt", rights: ["read"] }],
});
await Promise.all(Array.from({ length: 8 }, async () => {
  for (let i = 0; i < 25; i++) await rt.syscall(pid, "filesystem.read", { path: "a.txt" });
}));
// Every call above returned, so its record is durable; die before indexing.
Deno.kill(Deno.pid, "SIGKILL");
`,
      );
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-check", "-A", child],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.signal, "SIGKILL", new TextDecoder().decode(out.stderr));
      sawUnindexed = metaOffset(storePath) < (await Deno.stat(auditLogPath(storePath))).size;

      const s = SqliteStore.open(storePath);
      try {
        const reads = await s.listAudit({ action: "filesystem.read", decision: "allow" });
        assert.equal(reads.length, 200);
        const v = await s.verifyAudit();
        assert.equal(v.ok, true);
        assert.equal(v.count, (await s.listAudit()).length);
      } finally {
        await s.close();
      }
      // Indexed once: reopening again adds nothing.
      const again = SqliteStore.open(storePath);
      try {
        assert.equal((await again.listAudit({ action: "filesystem.read" })).length, 200);
      } finally {
        await again.close();
      }
    }
    assert.ok(sawUnindexed, "some records were still only in the log when the runtime died");
  },
);

Deno.test(
  "audit log: a crashed writer's lines are indexed once at open, a torn last line dropped",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const path = await storeWithOneRecord(tmp.dir);
    // What a writer that died mid-batch leaves: whole lines, then half a line.
    const lines = [1, 2, 3].map((i) => JSON.stringify(draft(i)));
    await Deno.writeTextFile(
      auditLogPath(path),
      lines.join("\n") + "\n" + JSON.stringify(draft(4)).slice(0, 20),
    );
    const r = SqliteStore.open(path);
    try {
      const recs = await r.listAudit();
      assert.deepEqual(recs.map((x) => [x.seq, x.reason]), [[1, "r0"], [2, "r1"], [3, "r2"], [
        4,
        "r3",
      ]]);
      assert.equal((await r.verifyAudit()).ok, true);
      assert.equal((await Deno.stat(auditLogPath(path))).size, 0);
      await r.appendAudit(draft(5));
      assert.deepEqual((await r.listAudit()).map((x) => x.seq), [1, 2, 3, 4, 5]);
    } finally {
      await r.close();
    }
  },
);

Deno.test(
  "audit log: a line that is not a record (the log changed outside the runtime) is refused at open, nothing indexed, the log kept",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const path = await storeWithOneRecord(tmp.dir);
    const good = JSON.stringify(draft(1));
    for (const bad of ["not json at all", '{"seq":1}', "[1,2]", '{"actor":"pid:1"}', "null"]) {
      const text = `${good}\n${bad}\n${JSON.stringify(draft(2))}\n`;
      await Deno.writeTextFile(auditLogPath(path), text);
      assert.throws(
        () => SqliteStore.open(path),
        (e) =>
          e instanceof LibosError && e.code === "EIO" &&
          e.message.startsWith(`audit log ${auditLogPath(path)}: line 2 after the indexed part`) &&
          e.message.includes("changed outside the runtime"),
        bad,
      );
      // Not one line of the batch went in, and the log still holds all of it.
      assert.equal(await Deno.readTextFile(auditLogPath(path)), text);
      const db = new DatabaseSync(path, { readOnly: true });
      const n = (db.prepare("SELECT count(*) AS n FROM audit").get() as { n: number }).n;
      db.close();
      assert.equal(n, 1, bad);
    }
  },
);

Deno.test(
  "audit log: a second store on the file commits its own appends into the same chain",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, "s.db");
    const a = SqliteStore.open(path);
    const b = SqliteStore.open(path); // the log is a's: b commits its appends itself
    try {
      for (let i = 0; i < 20; i++) {
        await Promise.all([a.appendAudit(draft(i, "pid:a")), b.appendAudit(draft(i, "pid:b"))]);
      }
      await a.transaction(async (tx) => {
        await tx.appendAudit(draft(99, "pid:tx"));
      });
      const all = await a.listAudit();
      assert.equal(all.length, 41);
      assert.deepEqual(all.map((r) => r.seq), Array.from({ length: 41 }, (_, i) => i + 1));
      assert.equal(all.filter((r) => r.actor === "pid:a").length, 20);
      assert.equal(all.filter((r) => r.actor === "pid:b").length, 20);
      assert.deepEqual(await b.verifyAudit(), await a.verifyAudit());
      assert.equal((await a.verifyAudit()).ok, true);
    } finally {
      await b.close();
      await a.close();
    }
  },
);

Deno.test(
  "audit log: records committed inside transactions while lines wait to be indexed keep the chain whole",
  SQLITE_ONLY,
  async () => {
    // The indexer numbers and hashes lines before it takes the write lock,
    // after the head it last wrote; a transaction's own record moves the head
    // in between, and the lines must then be chained after it instead.
    await using tmp = await tempDir();
    const path = join(tmp.dir, "s.db");
    const s = SqliteStore.open(path);
    try {
      let n = 0;
      for (let round = 0; round < 30; round++) {
        const logged = [];
        for (let i = 0; i < 5; i++) logged.push(s.appendAudit(draft(n++, "pid:log")));
        await Promise.all(logged);
        await s.transaction(async (tx) => {
          await tx.appendAudit(draft(n++, "pid:tx"));
        });
        // Let the indexer catch up now and then, so it has a head of its own to chain after.
        if (round % 3 === 0) await s.auditIndexed();
        else await new Promise((r) => setTimeout(r, round % 2));
      }
      const all = await s.listAudit();
      assert.equal(all.length, n);
      assert.deepEqual(all.map((r) => r.seq), Array.from({ length: n }, (_, i) => i + 1));
      assert.equal(all.filter((r) => r.actor === "pid:tx").length, 30);
      assert.equal(all.filter((r) => r.actor === "pid:log").length, 150);
      assert.equal((await s.verifyAudit()).ok, true);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "audit log: a full log is emptied once indexed and the chain stays whole",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, "s.db");
    const s = SqliteStore.open(path, { auditLogMaxBytes: 4096 });
    try {
      let peak = 0;
      for (let round = 0; round < 40; round++) {
        await Promise.all(
          Array.from({ length: 10 }, (_, i) => s.appendAudit(draft(round * 10 + i))),
        );
        peak = Math.max(peak, (await Deno.stat(auditLogPath(path))).size);
      }
      const v = await s.verifyAudit();
      assert.deepEqual([v.ok, v.count], [true, 400]);
      const recs = await s.listAudit();
      assert.deepEqual(recs.map((r) => r.reason), Array.from({ length: 400 }, (_, i) => `r${i}`));
      // 400 records are ~120 KB of lines; the log never held more than a few batches.
      assert.ok(peak < 4096 + 8 * 1024, `log peaked at ${peak} bytes`);
    } finally {
      await s.close();
    }
  },
);

Deno.test(
  "audit log: a store without a log (or in memory) still commits every append",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    for (const path of [join(tmp.dir, "nolog.db"), ":memory:"]) {
      const s = SqliteStore.open(path, { auditLog: false });
      try {
        await Promise.all(Array.from({ length: 30 }, (_, i) => s.appendAudit(draft(i))));
        const v = await s.verifyAudit();
        assert.deepEqual([v.ok, v.count], [true, 30]);
      } finally {
        await s.close();
      }
    }
    await assert.rejects(Deno.stat(auditLogPath(join(tmp.dir, "nolog.db"))), Deno.errors.NotFound);
  },
);

Deno.test(
  "audit log: its thread makes the WAL start over while the store writes without pause",
  SQLITE_ONLY,
  async () => {
    await using tmp = await tempDir();
    const path = join(tmp.dir, "s.db");
    const s = SqliteStore.open(path);
    try {
      const payload = "x".repeat(3000);
      // Up to 240,000 WAL pages of commits with no pause: a WAL starts over only when
      // a write begins while it is checkpointed to its end, which a checkpoint run
      // beside a writer never is. The log's thread finishes one under the write
      // lock and writes (counting it in meta), instead of leaving the WAL to grow
      // until the store's own connection checkpoints all of it on its thread.
      // Until it started over twice (a fast machine gets there sooner), or 60,000 commits.
      let n = 0;
      for (let i = 0; i < 60_000; i++) {
        if (i % 1000 === 0 && Number(await s.getMeta("wal_restarts")) >= 2) break;
        n++;
        await s.insertObject({
          oid: `o${i}`,
          namespace: "ns",
          kind: "observation",
          name: null,
          version: 1,
          label: "normal",
          payload,
          derived_from: [],
          created_by: 1,
          created_at: T,
          updated_at: T,
        });
      }
      assert.ok(Number(await s.getMeta("wal_restarts")) >= 2, "the WAL never started over");
      assert.equal((await s.listObjects("ns")).length, n);
    } finally {
      await s.close();
    }
  },
);
