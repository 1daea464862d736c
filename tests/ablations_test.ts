/**
 * Benchmark ablations are host-only: off by default, fixed when a runtime
 * opens, recorded first in its audit, and out of reach of images, `libos run`
 * and syscalls. What each one costs is measured by the safety benchmark
 * (tests/safety_bench_test.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { ABLATION_NAMES, parseAblations } from "../runtime/ablations.ts";
import { parseImage } from "../runtime/images.ts";
import { BUILTIN_TOOL_NAMES } from "../tools/builtin.ts";
import { SYSCALL_NAMES } from "../primitives/mod.ts";
import { cap, libos, makeEnv, rejectsCode } from "./_helpers.ts";

Deno.test("ablations: off by default, fixed at open, recorded first in the audit", async () => {
  const plain = await Runtime.open({ store: ":memory:" });
  try {
    assert.equal(plain.kernel.ablations.size, 0);
    for (const a of ABLATION_NAMES) assert.equal(plain.kernel.ablated(a), false);
    assert.deepEqual(await plain.kernel.store.listAudit({ action: "runtime.ablations" }), []);
  } finally {
    await plain.close();
  }
  const rt = await Runtime.open({ store: ":memory:", ablations: ["no-labels"] });
  try {
    assert.equal(rt.kernel.ablated("no-labels"), true);
    assert.equal(rt.kernel.ablated("no-realpath"), false);
    const set = rt.kernel.ablations as unknown as { add?: unknown; delete?: unknown };
    assert.equal(set.add, undefined, "the set has no way to change");
    assert.equal(set.delete, undefined);
    assert.ok(Object.isFrozen(rt.kernel.ablations));
    const [first] = await rt.kernel.store.listAudit();
    assert.equal(first.action, "runtime.ablations");
    assert.match(first.reason, /no-labels/);
  } finally {
    await rt.close();
  }
  await rejectsCode(
    Runtime.open({ store: ":memory:", ablations: ["no-such" as "no-labels"] }),
    "EINVAL",
  );
  assert.throws(() => parseAblations("no-labels"), /must be an array/);
});

Deno.test("ablations: no image, libos run flag or syscall can switch one on", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  assert.throws(
    () => parseImage({ name: "x", ablations: ["no-labels"] }, BUILTIN_TOOL_NAMES),
    /ablations: unknown field/,
  );
  assert.throws(
    () => parseImage({ name: "x", policy: { ablations: ["no-labels"] } }, BUILTIN_TOOL_NAMES),
    /policy.ablations: unknown field/,
  );
  assert.ok(!SYSCALL_NAMES.some((s) => /ablat/i.test(s)), "no syscall names ablations");
  await Deno.writeTextFile(join(env.root, "image.json"), JSON.stringify({ name: "x", tools: [] }));
  await Deno.writeTextFile(join(env.root, "script.json"), JSON.stringify({ steps: [] }));
  const run = await libos([
    "run",
    join(env.root, "image.json"),
    "--workspace",
    env.ws,
    "--script",
    join(env.root, "script.json"),
    "--store",
    join(env.root, "cli.db"),
    "--ablation",
    "no-labels",
  ]);
  assert.equal(run.code, 2, run.stderr);
  assert.match(run.stderr, /ablation/);
  // A process that tries every syscall with an `ablations` argument changes nothing.
  const pid = (await env.rt.launch({
    image: { name: "probe", tools: [] },
    workspace: env.ws,
    grants: [cap("filesystem:workspace:*", "read")],
  })).pid;
  for (const name of SYSCALL_NAMES) {
    await env.rt.syscall(pid, name, { ablations: ["no-labels"] }).catch(() => {});
    if ((await env.rt.process(pid)).status !== "runnable") break;
  }
  assert.equal(env.rt.kernel.ablations.size, 0);
});
