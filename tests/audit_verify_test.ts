/**
 * `verifyAudit` split among threads by seq ranges names the same first bad
 * record, with the same problem, count and head, as one thread checking from
 * the first record: for a clean chain and for every kind of tampering,
 * including at the edges of the ranges.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { SqliteStore } from "../runtime/store/sqlite.ts";

const N = 120; // four ranges of 30 with four threads: (0,30], (30,60], (60,90], (90,120]

async function chain(path: string): Promise<void> {
  const s = SqliteStore.open(path, { auditLog: false });
  await s.transaction(async (tx) => {
    for (let i = 0; i < N; i++) {
      await tx.appendAudit({
        timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
        actor: `pid:${i % 7}`,
        action: i % 2 ? "filesystem.read" : "memory.put",
        target: `filesystem:workspace:f${i}`,
        input_refs: { n: i },
        output_refs: null,
        capability_refs: [],
        decision: i % 5 ? "allow" : "deny",
        reason: `record ${i}`,
        correlation_id: null,
        parent_record_id: null,
      });
    }
  });
  await s.close();
}

const TAMPERING: Record<string, string[]> = {
  "clean": [],
  "a body edited": [
    "UPDATE audit SET body = replace(body, 'record 49', 'record X') WHERE seq = 50",
  ],
  "a column edited": ["UPDATE audit SET decision = 'allow' WHERE seq = 71"],
  "a middle record removed": ["DELETE FROM audit WHERE seq = 40"],
  "a range's first record removed": ["DELETE FROM audit WHERE seq = 31"],
  "a range's last record removed": ["DELETE FROM audit WHERE seq = 60"],
  "a whole range removed": ["DELETE FROM audit WHERE seq > 60 AND seq <= 90"],
  "a link broken at a range's edge": [
    "UPDATE audit SET prev_hash = '00' || substr(prev_hash, 3) WHERE seq = 61",
  ],
  "a link and a hash broken at a range's edge": [
    "UPDATE audit SET prev_hash = '00' || substr(prev_hash, 3), hash = 'ff' WHERE seq = 61",
  ],
  "invalid JSON at a range's edge": ["UPDATE audit SET body = '{nope' WHERE seq = 91"],
  "a record id altered": ["UPDATE audit SET record_id = 'a999' WHERE seq = 89"],
  "the tail truncated": ["DELETE FROM audit WHERE seq > 117"],
  "the first record removed": ["DELETE FROM audit WHERE seq = 1"],
};

Deno.test("audit verify: threads over seq ranges give exactly the single-thread answer, clean or tampered", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-verify-" });
  try {
    const base = join(dir, "base.db");
    await chain(base);
    let i = 0;
    for (const [what, sql] of Object.entries(TAMPERING)) {
      const path = join(dir, `t${i++}.db`);
      await Deno.copyFile(base, path);
      const db = new DatabaseSync(path);
      for (const q of sql) db.exec(q);
      db.close();
      const one = SqliteStore.open(path, { auditLog: false, verifyThreads: 1 });
      const four = SqliteStore.open(path, {
        auditLog: false,
        verifyThreads: 4,
        verifyParallelAbove: 10,
      });
      try {
        const a = await one.verifyAudit();
        const b = await four.verifyAudit();
        assert.deepEqual(b, a, what);
        assert.equal(a.ok, what === "clean", `${what}: ${JSON.stringify(a)}`);
      } finally {
        await one.close();
        await four.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
