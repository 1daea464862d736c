/**
 * The CLI's checkpoint commands (create, list, diff, restore, fork), `objects`
 * and `human done|failed`, each a real subprocess over a store file; every
 * host operation is audited as `host via cli`.
 */
import assert from "node:assert/strict";
import { Runtime } from "../host/runtime.ts";
import { hashValue } from "../runtime/canonical.ts";
import { cap, libos, makeEnv } from "./_helpers.ts";

Deno.test("checkpoint cli: create, list, diff, restore and fork a subtree; objects lists metadata; each call audited as the host", async () => {
  await using env = await makeEnv();
  const root = (await env.rt.launch({
    image: { name: "cli", tools: [] },
    workspace: env.ws,
    grants: [cap("process:spawn", "execute")],
  })).pid;
  await env.rt.syscall(root, "memory.put", { kind: "claim", name: "kept", payload: "visible" });
  await env.rt.syscall(root, "memory.put", {
    kind: "evidence",
    name: "classified",
    payload: "TOP-SECRET-PAYLOAD",
    label: "secret",
  });
  await env.rt.close();
  const S = ["--store", env.storePath];

  const made = await libos([
    "checkpoint",
    "create",
    String(root),
    "--label",
    "first",
    ...S,
    "--json",
  ]);
  assert.equal(made.code, 0, made.stderr);
  const ck = JSON.parse(made.stdout) as {
    checkpoint_id: string;
    sha256: string;
    processes: number;
  };
  assert.equal(ck.processes, 1);

  const rt = await Runtime.open({ store: env.storePath });
  await rt.syscall(root, "memory.put", { kind: "claim", name: "later", payload: "later" });
  await rt.close();

  const list = await libos(["checkpoint", "list", String(root), ...S, "--json"]);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(JSON.parse(list.stdout).map((c: { label: string }) => c.label), ["first"]);
  const diff = await libos(["checkpoint", "diff", ck.checkpoint_id, ...S, "--json"]);
  assert.equal(diff.code, 0, diff.stderr);
  const d = JSON.parse(diff.stdout);
  assert.deepEqual(d.processes[0].objects.added.map((o: { name: string }) => o.name), ["later"]);
  const text = await libos(["checkpoint", "diff", ck.checkpoint_id, ...S]);
  assert.match(text.stdout, /objects \+1 -0 ~0/);

  const restored = await libos(["checkpoint", "restore", ck.checkpoint_id, ...S, "--json"]);
  assert.equal(restored.code, 0, restored.stderr);
  assert.deepEqual(JSON.parse(restored.stdout).restored, [root]);

  const forked = await libos(["checkpoint", "fork", ck.checkpoint_id, ...S]);
  assert.equal(forked.code, 0, forked.stderr);
  const copy = Number(forked.stdout.trim());
  assert.ok(copy > root, forked.stdout);

  const objs = await libos(["objects", ...S, "--pid", String(copy), "--json"]);
  assert.equal(objs.code, 0, objs.stderr);
  const rows = JSON.parse(objs.stdout) as { name: string; label: string; preview: string }[];
  assert.equal(rows.length, 2);
  assert.ok(rows.some((r) => r.name === "kept"));
  assert.ok(rows.some((r) => r.name.startsWith("[redacted:secret]")), "a secret name is not shown");
  assert.ok(!objs.stdout.includes("TOP-SECRET-PAYLOAD"), "no payload above normal");
  assert.equal(rows.find((r) => r.name === "kept")!.preview, '"visible"');
  assert.equal(rows.find((r) => r.label === "secret")!.preview, "[redacted:secret]");
  const all = await libos(["objects", ...S, "--json"]);
  assert.equal(JSON.parse(all.stdout).length, 4, "the root's and the copy's objects");

  // Bad input names the field, exits 2 and opens nothing.
  const bad = await libos(["checkpoint", "diff", "nope", ...S]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /CKPT: must be a checkpoint id/);
  const missing = await libos(["checkpoint", "restore", "ckpt_missing", ...S]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /ENOENT/);

  const after = await Runtime.open({ store: env.storePath, role: "client" });
  try {
    const byCli = (await after.kernel.store.listAudit({ actor: "host via cli" }))
      .map((r) => [r.action, r.decision]);
    assert.deepEqual(byCli, [
      ["checkpoint.create", "allow"],
      ["checkpoint.list", "allow"],
      ["checkpoint.diff", "allow"],
      ["checkpoint.diff", "allow"],
      ["checkpoint.restore", "allow"],
      ["checkpoint.fork", "allow"],
      ["checkpoint.restore", "error"],
    ]);
    assert.ok(
      !("later" in Object.fromEntries(
        (await after.kernel.store.listObjects(`proc:${root}`)).map((o) => [o.name, 1]),
      )),
    );
  } finally {
    await after.close();
  }
});

Deno.test("checkpoint cli: human done answers an unknown effect and resume finishes the process", async () => {
  await using env = await makeEnv();
  const args = { path: "w.txt", content: "token:w" };
  const pid = (await env.rt.launch({
    image: { name: "w", tools: ["write_file"] },
    workspace: env.ws,
    grants: [cap("filesystem:workspace:*", "write")],
    script: { steps: [{ tool: "write_file", args }] },
  })).pid;
  await env.rt.runUntilIdle(1);
  await env.rt.kernel.store.updateProcess(pid, { status: "running" });
  await env.rt.kernel.store.insertEffect({
    effect_id: "fx_w",
    pid,
    syscall: "filesystem.write",
    resource: "filesystem:workspace:w.txt",
    args_hash: hashValue(args),
    status: "pending",
    outcome: null,
    created_at: new Date().toISOString(),
    finished_at: null,
  });
  await env.rt.close();
  const S = ["--store", env.storePath];
  // The recovery of the next scheduler asks; `resume` is that scheduler here.
  const first = await libos(["resume", String(pid), ...S, "--json"]);
  assert.equal(first.code, 3, first.stderr);
  const list = await libos(["human", "list", ...S, "--json"]);
  const [r] = JSON.parse(list.stdout) as { request_id: string; kind: string }[];
  assert.equal(r.kind, "outcome");
  const wrong = await libos(["human", "approve", r.request_id, "--once", ...S]);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /decision: .* answer done or failed/);
  const done = await libos(["human", "done", r.request_id, ...S]);
  assert.equal(done.code, 0, done.stderr);
  const resumed = await libos(["resume", String(pid), ...S, "--json"]);
  assert.equal(resumed.code, 0, resumed.stderr);
  const out = JSON.parse(resumed.stdout);
  assert.equal(out.status, "exited");
  assert.equal(out.steps[0].ok, true);
  assert.equal(out.steps[0].value.outcome, "done");
  await assert.rejects(Deno.stat(`${env.ws}/w.txt`), Deno.errors.NotFound, "never run again");
});
