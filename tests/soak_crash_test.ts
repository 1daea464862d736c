/**
 * The crash soak, short: a few runs of the mixed workload (file writes, shell
 * commands, a JIT tool, human decisions, model calls, checkpoints), each
 * SIGKILLed at least once at a random point and resumed until every process
 * ended. No acknowledged audit record is lost, no effect happens twice, every
 * process ends, every chain verifies. `deno task soak:crash` runs 100.
 */
import assert from "node:assert/strict";
import { soakCrash, soakPassed } from "../bench/soak_crash.ts";

Deno.test("soak: a runtime SIGKILLed at random points under a mixed workload loses no acknowledged audit record and performs no effect twice", async () => {
  const r = await soakCrash({ runs: 3 });
  const { problems, ...figures } = r;
  const why = `seed ${r.seed}: ${JSON.stringify(figures)} ${problems.join("; ")}`;
  assert.equal(r.runs, 3);
  assert.ok(r.kills >= r.runs, `at least one kill a run: ${why}`);
  assert.equal(r.lost_audit_records, 0, why);
  assert.equal(r.duplicate_effects, 0, why);
  assert.equal(r.unfinished, 0, why);
  assert.equal(r.audit_verified, true, why);
  assert.deepEqual(problems, []);
  // Every kind of effect happened: 37 tokens a run when no kill cut one short.
  assert.ok(r.effects >= 3 * 30, why);
  assert.ok(r.model_requests >= 3 * 12, why);
  // Three asked a run; a kill can cut the one in flight short (its step is then
  // an unknown outcome, not a permission): at most one a kill.
  assert.ok(r.permission_requests >= 3 * 3 - r.kills, why);
  assert.equal(soakPassed(r), true, why);
});
