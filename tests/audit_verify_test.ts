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
import { insertAuditRows } from "../runtime/store/_audit_rows.ts";
import type { AuditDraft } from "../runtime/store/store.ts";

const N = 120; // four ranges of 30 with four threads: (0,30], (30,60], (60,90], (90,120]

function draft(i: number): AuditDraft {
  return {
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
  };
}

/**
 * A chain of N records. `legacy` records (those below it) are laid out as
 * stores wrote them before bodies opened with the indexed fields: the
 * draft's own key order (timestamp first).
 */
async function chain(path: string, legacy: number): Promise<void> {
  const s = SqliteStore.open(path, { auditLog: false });
  await s.close();
  const db = new DatabaseSync(path);
  try {
    db.exec("BEGIN IMMEDIATE");
    const old = Array.from({ length: legacy }, (_, i) => draft(i));
    insertAuditRows((sql) => db.prepare(sql), old.map((d) => [JSON.stringify(d), d]));
    db.exec("COMMIT");
  } finally {
    db.close();
  }
  const t = SqliteStore.open(path, { auditLog: false });
  await t.transaction(async (tx) => {
    for (let i = legacy; i < N; i++) await tx.appendAudit(draft(i));
  });
  await t.close();
}

/** Chains by how many of their records (from the first) are in the old layout. */
const LAYOUTS: Record<string, number> = { "new": 0, "old": N, "old then new": 45 };

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
    // What each tampering is found as, per layout: the same in all of them.
    const found = new Map<string, string>();
    let i = 0;
    for (const [layout, legacy] of Object.entries(LAYOUTS)) {
      const base = join(dir, `base${i++}.db`);
      await chain(base, legacy);
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
          assert.deepEqual(b, a, `${layout}: ${what}`);
          assert.equal(a.ok, what === "clean", `${layout}: ${what}: ${JSON.stringify(a)}`);
          const answer = JSON.stringify({ count: a.count, firstBad: a.firstBad ?? null });
          assert.equal(answer, found.get(what) ?? answer, `${layout}: ${what}`);
          found.set(what, answer);
        } finally {
          await one.close();
          await four.close();
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit verify: a body opens with its seq, id and indexed fields, and a column edited there is found", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-verify-" });
  try {
    const path = join(dir, "a.db");
    await chain(path, 0);
    const db = new DatabaseSync(path);
    const body = (db.prepare("SELECT body FROM audit WHERE seq = 3").get() as { body: string })
      .body;
    assert.ok(
      body.startsWith(
        '{"seq":3,"record_id":"a3","actor":"pid:2","action":"memory.put","decision":"allow",',
      ),
      body,
    );
    // Each indexed column, edited to a value that still parses, is caught.
    for (const col of ["actor", "action", "decision"]) {
      const copy = join(dir, `${col}.db`);
      await Deno.copyFile(path, copy);
      const t = new DatabaseSync(copy);
      t.exec(`UPDATE audit SET ${col} = ${col} || 'x' WHERE seq = 77`);
      t.close();
      const s = SqliteStore.open(copy, { auditLog: false });
      try {
        const v = await s.verifyAudit();
        assert.equal(v.ok, false, col);
        assert.equal(v.firstBad?.seq, 77, col);
        assert.equal(v.firstBad?.problem, "indexed columns disagree with the hashed record");
      } finally {
        await s.close();
      }
    }
    db.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
