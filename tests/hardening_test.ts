/** Fixes found by the attack suites: each test is the attack that used to work. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { HostFileSystem } from "../runtime/providers/host.ts";
import type { FileStat } from "../runtime/providers/types.ts";
import { cap, launch, makeEnv, rawSql, rejectsCode, storeBytes } from "./_helpers.ts";
import { SQLITE_ONLY } from "./_pg.ts";

Deno.test("hardening: a tainted process cannot smuggle its secret into audit targets or events", async () => {
  const SECRET = "TOPSECRET-7c1e0b";
  await using env = await makeEnv({ files: { ".env": SECRET } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")], {
    policy: { labels: { ".env": "secret" } },
  });
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: ".env" }), SECRET);
  // Now encode the secret into arguments that become targets and messages.
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: SECRET }), "ENOENT");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: SECRET, content: "x" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "capability.check", { resource: SECRET, right: "read" }),
    "EINVAL",
  );
  await env.rt.close();
  const bytes = await storeBytes(env.storePath, ["", "-wal"]);
  assert.ok(bytes.includes(`pid:${pid}`), "the scan sees the store's records");
  assert.ok(!bytes.includes(SECRET), "secret found in the store");
  const rt = await Runtime.open({ store: env.storePath });
  const audit = await rt.kernel.store.listAudit({ actor: `pid:${pid}` });
  assert.ok(audit.length >= 4);
  assert.ok(
    audit.slice(1).every((r) => r.target.startsWith("[redacted:secret]")),
    "targets redacted",
  );
  await rt.close();
});

Deno.test("hardening: arguments nested thousands deep are EINVAL at the syscall and a model's become a tool error; the store keeps working", async () => {
  let deep: unknown = [];
  for (let i = 0; i < 5000; i++) deep = [deep];
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  // Any caller of a syscall (a tool, a JIT tool's broker, the host).
  const e = await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: "a.txt", x: deep }),
    "EINVAL",
  );
  assert.match(e.message, /arguments nest deeper than 64 levels/);
  // A model's decision (a provider whose step is not a validated script): the pending
  // action is stored before its syscall, so it is checked at the decision.
  const p2 = await env.rt.launch({
    image: { name: "deep", tools: ["read_file"] },
    workspace: env.ws,
    grants: [cap("filesystem:workspace:*", "read")],
    script: { steps: [{ tool: "read_file", args: { path: "a.txt" } }] },
  });
  let asked = 0;
  env.rt.kernel.providers.models.scripted = {
    pure: true,
    next: () =>
      Promise.resolve(
        asked++ === 0
          ? { step: { type: "tool", tool: "read_file", args: { x: deep } }, cursor: {} }
          : { step: { type: "exit", code: 0 }, cursor: {} },
      ),
  } as never;
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(p2.pid)).status, "exited");
  const step = await env.rt.kernel.store.getStep(p2.pid, 0);
  assert.equal((step?.payload as { ok: boolean }).ok, false);
  assert.match(JSON.stringify(step?.payload), /arguments nest deeper than 64 levels/);
  assert.equal((await env.rt.kernel.store.verifyAudit()).ok, true);
});

Deno.test("hardening: content written to a secret file or object by an untainted process is redacted in the audit's input preview", async () => {
  await using env = await makeEnv({ files: { "keys/prod.env": "old" } });
  const pid = await launch(env, [
    cap("filesystem:workspace:keys/*", "read", "write"),
    cap("filesystem:workspace:notes/*", "read", "write"),
  ], { policy: { labels: { "keys/*": "secret", "locked/*": "secret" } } });
  const needles = [
    "NEEDLE-FILE-1",
    "NEEDLE-LABEL-2",
    "NEEDLE-OBJECT-3",
    "NEEDLE-UPDATE-4",
    "NEEDLE-REFUSED-5",
  ];
  await env.rt.syscall(pid, "filesystem.write", { path: "keys/prod.env", content: needles[0] });
  await env.rt.syscall(pid, "filesystem.write", {
    path: "notes/n.txt",
    content: needles[1],
    label: "secret",
  });
  const put = await env.rt.syscall(pid, "memory.put", {
    kind: "evidence",
    payload: { key: needles[2] },
    label: "secret",
  }) as { oid: string };
  await env.rt.syscall(pid, "memory.update", {
    oid: put.oid,
    payload: { key: needles[3] },
    expected_version: 1,
  });
  // A write to a secret file that the capabilities refuse is audited the same way.
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "locked/x.txt", content: needles[4] }),
    "EPERM",
  );
  assert.equal((await env.rt.process(pid)).taint, "public", "the writer itself read nothing");
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({ actor: `pid:${pid}` }));
  for (const n of needles) assert.ok(!audit.includes(n), `${n} in the audit`);
  assert.match(audit, /\[redacted:secret\]/);
});

/** The host file system, with a swap made by "another process" at the worst moment: after the checks, before the open. */
class SwapBeforeOpen extends HostFileSystem {
  swap: (() => void) | null = null;
  #now(): void {
    const swap = this.swap;
    this.swap = null;
    swap?.();
  }
  override readText(path: string, maxBytes: number, known?: FileStat): Promise<string> {
    this.#now();
    return super.readText(path, maxBytes, known);
  }
  override writeText(path: string, content: string): Promise<void> {
    this.#now();
    return super.writeText(path, content);
  }
  override mkdir(path: string): Promise<void> {
    this.#now();
    return super.mkdir(path);
  }
  override remove(path: string, recursive: boolean): Promise<void> {
    this.#now();
    return super.remove(path, recursive);
  }
  override list(path: string): ReturnType<HostFileSystem["list"]> {
    this.#now();
    return super.list(path);
  }
  override statEntry(path: string): Promise<FileStat> {
    this.#now();
    return super.statEntry(path);
  }
}

Deno.test("hardening: a symlink or directory swapped in between the path check and the open leads nowhere", async () => {
  const fs = new SwapBeforeOpen();
  await using env = await makeEnv({
    files: { "pub/f.txt": "orig", ".env": "API_KEY=sk-live-123" },
    providers: { fs },
  });
  const outside = join(env.root, "outside");
  await Deno.mkdir(outside);
  await Deno.writeTextFile(join(outside, "f.txt"), "untouched");
  const pid = await launch(env, [
    cap("filesystem:workspace:pub/*", "read", "write"),
    { resource: "filesystem:workspace:.env", rights: ["read"], effect: "deny" },
  ]);
  const pub = join(env.ws, "pub");
  // The file becomes a link to the DENY'd .env: the read must not follow it.
  fs.swap = () => {
    Deno.removeSync(join(pub, "f.txt"));
    Deno.symlinkSync("../.env", join(pub, "f.txt"));
  };
  const r = await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: "pub/f.txt" }),
    "EPERM",
  );
  assert.match(r.message, /changed while it was opened/);
  // The file becomes a link out of the workspace: the write must not follow it.
  fs.swap = () => {
    Deno.removeSync(join(pub, "f.txt"));
    Deno.symlinkSync(join(outside, "f.txt"), join(pub, "f.txt"));
  };
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "pub/f.txt", content: "PWNED" }),
    "EPERM",
  );
  // The directory becomes a link out of the workspace (a final component that is no link).
  Deno.removeSync(join(pub, "f.txt"));
  Deno.writeTextFileSync(join(pub, "f.txt"), "orig");
  fs.swap = () => {
    Deno.renameSync(pub, join(env.ws, "pub-old"));
    Deno.symlinkSync(outside, pub);
  };
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "pub/f.txt", content: "PWNED" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(outside, "f.txt")), "untouched");
  // What was read and written is only ever the file the check found.
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({ actor: `pid:${pid}` }));
  assert.ok(!audit.includes("sk-live-123"));
  assert.equal((await env.rt.process(pid)).taint, "public");
});

Deno.test("hardening: a directory swapped for a link out of the workspace after the check is never deleted, created in, listed or looked at", async () => {
  const fs = new SwapBeforeOpen();
  await using env = await makeEnv({
    files: { "pub/f.txt": "orig", "pub/d/g.txt": "g" },
    providers: { fs },
  });
  const outside = join(env.root, "outside");
  await Deno.mkdir(join(outside, "d"), { recursive: true });
  await Deno.writeTextFile(join(outside, "f.txt"), "precious");
  await Deno.writeTextFile(join(outside, "d", "g.txt"), "precious");
  await Deno.writeTextFile(join(outside, "secret-name.txt"), "s");
  const pid = await launch(env, [
    cap("filesystem:workspace:pub", "read"),
    cap("filesystem:workspace:pub/*", "read", "write", "delete"),
  ]);
  const pub = join(env.ws, "pub");
  /** "Another process" moves pub away and puts a link out of the workspace in its place. */
  const swap = () => {
    Deno.renameSync(pub, join(env.ws, `pub-${crypto.randomUUID()}`));
    Deno.symlinkSync(outside, pub);
  };
  /** Puts a real pub back for the next attack. */
  const restore = () => {
    Deno.removeSync(pub, { recursive: !Deno.lstatSync(pub).isSymlink });
    Deno.mkdirSync(join(pub, "d"), { recursive: true });
    Deno.writeTextFileSync(join(pub, "f.txt"), "orig");
    Deno.writeTextFileSync(join(pub, "d", "g.txt"), "g");
  };
  const attacks: [string, Record<string, unknown>][] = [
    ["filesystem.delete", { path: "pub/f.txt" }],
    ["filesystem.delete", { path: "pub/d", recursive: true }],
    ["filesystem.write", { path: "pub/new.txt", content: "planted" }],
    ["filesystem.write", { path: "pub/newdir/x.txt", content: "planted" }],
    ["filesystem.list", { path: "pub" }],
    ["filesystem.list", { path: "pub/d" }],
    ["filesystem.stat", { path: "pub/f.txt" }],
  ];
  const wrong: string[] = [];
  for (const [name, args] of attacks) {
    fs.swap = swap;
    const how = await env.rt.syscall(pid, name, args).then(
      (v) => `acted through the link: ${JSON.stringify(v)}`,
      (e) => (e as { code?: string }).code === "EPERM" ? null : `${e}`,
    );
    // (swap is cleared by the provider call that used it.)
    if ((fs.swap as unknown) !== null) {
      wrong.push(`${name} ${JSON.stringify(args)} never reached the host: ${how}`);
    } else if (how) wrong.push(`${name} ${JSON.stringify(args)} ${how}`);
    fs.swap = null;
    restore();
  }
  assert.deepEqual(wrong, []);
  // Outside the workspace nothing was removed, created or seen.
  assert.equal(await Deno.readTextFile(join(outside, "f.txt")), "precious");
  assert.equal(await Deno.readTextFile(join(outside, "d", "g.txt")), "precious");
  const names = [...Deno.readDirSync(outside)].map((e) => e.name).sort();
  assert.deepEqual(names, ["d", "f.txt", "secret-name.txt"]);
  const audit = JSON.stringify(await env.rt.kernel.store.listAudit({ actor: `pid:${pid}` }));
  assert.ok(!audit.includes("secret-name"), "a listing outside the workspace reached the audit");
});

Deno.test("hardening: host paths never reach the agent in error messages", async () => {
  await using env = await makeEnv({ files: { "dir/a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read", "write")]);
  const e = await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "dir", content: "x" }),
    "EINVAL",
  );
  assert.ok(!e.message.includes(env.ws), e.message);
  const audit = await env.rt.kernel.store.listAudit({ actor: `pid:${pid}` });
  assert.ok(!audit.at(-1)!.reason.includes(env.root), audit.at(-1)!.reason);
});

Deno.test("hardening: reading a FIFO is refused instead of hanging the runtime", async () => {
  await using env = await makeEnv();
  const fifo = join(env.ws, "pipe");
  const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(mk.success);
  const pid = await launch(env, [cap("filesystem:workspace:*", "read")]);
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "pipe" }), "EINVAL");
  assert.deepEqual(await env.rt.syscall(pid, "filesystem.list", { path: "." }), [{
    name: "pipe",
    kind: "other",
  }]);
});

Deno.test("hardening: syscall budgets survive a restart of the runtime", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")], {
    budgets: { max_syscalls: 3 },
  });
  for (let i = 0; i < 3; i++) await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "ELIMIT");
  await env.rt.close();
  const rt = await Runtime.open({ store: env.storePath });
  try {
    await rejectsCode(rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "ELIMIT");
    assert.equal((await rt.process(pid)).usage.syscalls, 3);
  } finally {
    await rt.close();
  }
});

Deno.test("hardening: a refused recursive delete uses up no limited capability", async () => {
  await using env = await makeEnv({ files: { "d/keep.txt": "k", "d/x.txt": "x" } });
  const pid = await launch(env, [
    { resource: "filesystem:workspace:d", rights: ["delete"], uses_remaining: 1 },
    { resource: "filesystem:workspace:d/*", rights: ["delete"] },
    { resource: "filesystem:workspace:d/keep.txt", rights: ["delete"], effect: "deny" },
  ]);
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "d", recursive: true }),
    "EPERM",
  );
  const caps = await env.rt.kernel.store.capabilitiesOf(pid);
  const limited = caps.find((c) => c.resource === "filesystem:workspace:d")!;
  assert.equal(limited.uses_remaining, 1);
  assert.equal(limited.status, "active");
  assert.equal(await Deno.readTextFile(join(env.ws, "d/keep.txt")), "k");
});

// The one-scheduler rule is a SQLite store's; on PostgreSQL many workers share a store
// (worker_test.ts covers their leases).
/** `rt`'s scheduler lease, as if it had not beaten for a minute (it stays `rt`'s). */
async function staleSchedulerLease(rt: Runtime): Promise<void> {
  const lease = JSON.parse((await rt.kernel.store.getMeta("scheduler_lease"))!);
  await rt.kernel.store.setMeta(
    "scheduler_lease",
    JSON.stringify({ ...lease, heartbeat: Date.now() - 60_000 }),
  );
}

Deno.test(
  "hardening: one live scheduler per store; a client decides alongside it; a dead one's lease expires",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv({ files: { "a.txt": "a" } });
    const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
    // Put the process mid-step, as a live scheduler would have it.
    await env.rt.kernel.store.updateProcess(pid, {
      status: "running",
      pending: { tool: "read_file", args: { path: "a.txt" } },
    });
    const e = await rejectsCode(Runtime.open({ store: env.storePath }), "ESTATE");
    assert.match(e.message, /another runtime/);
    // A client neither recovers nor disturbs the live scheduler's running process.
    const client = await Runtime.open({ store: env.storePath, role: "client" });
    assert.equal((await client.process(pid)).status, "running");
    await client.close();
    assert.equal((await env.rt.process(pid)).status, "running");
    // A scheduler that died without closing: its lease goes stale and recovery runs.
    await staleSchedulerLease(env.rt);
    const next = await Runtime.open({ store: env.storePath });
    try {
      assert.equal((await next.process(pid)).status, "runnable");
      const steps = await next.steps(pid);
      assert.equal(steps.length, 1);
      assert.equal(steps[0].ok, false);
    } finally {
      await next.close();
    }
  },
);

Deno.test(
  "hardening: a scheduler that stalled past its lease writes nothing more once another took the store",
  SQLITE_ONLY,
  async () => {
    await using env = await makeEnv();
    const steps = Array.from({ length: 6 }, (_, i) => ({
      tool: "put_object",
      args: { kind: "observation", name: `s${i}`, payload: { i } },
    }));
    const pid = await launch(env, [], { script: { steps } });
    // Two of its steps (a model quantum and a tool quantum each) run here.
    await env.rt.runUntilIdle(4);
    // The runtime stalls (a terminal's Ctrl-Z, a stopped container) past its lease:
    // no heartbeat for a minute. Another runtime takes the store over.
    await staleSchedulerLease(env.rt);
    const next = await Runtime.open({ store: env.storePath });
    try {
      // The stalled one resumes: it may write nothing more for any process.
      const e = await rejectsCode(env.rt.runUntilIdle(), "EFENCED");
      assert.match(e.message, /another runtime/);
      await rejectsCode(env.rt.kernel.store.setMeta("scheduler_lease", "{}"), "EFENCED");
      // Its heartbeat did not take the lease back: the new runtime finishes the process,
      // each step once.
      assert.equal(
        JSON.parse((await next.kernel.store.getMeta("scheduler_lease"))!).os_pid,
        Deno.pid,
      );
      await next.runUntilIdle();
      const p = await next.process(pid);
      assert.equal(p.status, "exited", `${p.status} ${p.exit_reason}`);
      const done = (await next.steps(pid)).map((s) => [s.step, s.ok]);
      assert.deepEqual(done, steps.map((_, i) => [i, true]));
      // What it audited before the stall is indexed into the chain once it closes.
      await env.rt.close().catch(() => {});
      const puts = await next.kernel.store.listAudit({ action: "memory.put" });
      assert.equal(puts.length, steps.length);
      assert.equal((await next.kernel.store.verifyAudit()).ok, true);
    } finally {
      await next.close();
    }
  },
);

Deno.test("hardening: a revocation committed by another process is honoured by the read cache", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
  // Warm the cache: process, capabilities and file label are now held in memory.
  for (let i = 0; i < 3; i++) await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" });
  const capId = (await env.rt.kernel.store.capabilitiesOf(pid))
    .find((c) => c.resource === "filesystem:workspace:a.txt")!.cap_id;
  // Another process (here: another connection) revokes it directly in the store.
  await rawSql(env.storePath, "UPDATE capabilities SET status = 'revoked' WHERE cap_id = ?", capId);
  await new Promise((r) => setTimeout(r, 5)); // past FOREIGN_WRITE_WINDOW_MS
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  // And a write of this runtime's own is seen at once, with no window.
  const pid2 = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
  assert.equal(await env.rt.syscall(pid2, "filesystem.read", { path: "a.txt" }), "a");
  const own = (await env.rt.kernel.store.capabilitiesOf(pid2))
    .find((c) => c.resource === "filesystem:workspace:a.txt")!.cap_id;
  await env.rt.kernel.store.revokeCascade(own);
  await rejectsCode(env.rt.syscall(pid2, "filesystem.read", { path: "a.txt" }), "EPERM");
});

Deno.test("hardening: a DENY on a descendant's checkpoints is not bypassed through an ancestor's subtree", async () => {
  await using env = await makeEnv();
  const r = await launch(env, [
    cap("checkpoint:process:self", "read", "write", "execute"),
    cap("process:spawn", "execute"),
  ]);
  const { pid: e } = await env.rt.syscall(r, "process.spawn", { goal: "e" }) as { pid: number };
  await env.rt.kernel.grant(e, { resource: "process:spawn", rights: ["execute"] }, "host");
  const { pid: d } = await env.rt.syscall(e, "process.spawn", { goal: "d" }) as { pid: number };
  await env.rt.syscall(d, "memory.put", { kind: "claim", name: "d-private", payload: "v1" });
  // Before the DENY: a checkpoint of e's subtree, which holds d.
  const early = await env.rt.syscall(r, "checkpoint.create", { pid: e }) as {
    checkpoint_id: string;
  };
  await env.rt.kernel.grant(r, {
    resource: `checkpoint:process:${d}`,
    rights: ["read", "write", "execute"],
    effect: "deny",
  }, "host");
  await rejectsCode(env.rt.syscall(r, "checkpoint.create", { pid: d }), "EPERM");
  // Every operation on a subtree that holds d is refused as well.
  await rejectsCode(env.rt.syscall(r, "checkpoint.create", { pid: e }), "EPERM");
  await rejectsCode(env.rt.syscall(r, "checkpoint.create", {}), "EPERM");
  const id = early.checkpoint_id;
  await rejectsCode(env.rt.syscall(r, "checkpoint.inspect", { checkpoint_id: id }), "EPERM");
  await env.rt.syscall(d, "memory.put", { kind: "claim", name: "d-later", payload: "v2" });
  await rejectsCode(env.rt.syscall(r, "checkpoint.restore", { checkpoint_id: id }), "EPERM");
  const names = (await env.rt.kernel.store.listObjects(`proc:${d}`)).map((o) => o.name).sort();
  assert.deepEqual(names, ["d-later", "d-private", "goal"], "d was restored");
  // Each refusal is audited, naming the DENY on d.
  const refused = (await env.rt.kernel.store.listAudit({ actor: `pid:${r}` }))
    .filter((a) => a.decision === "deny");
  assert.equal(refused.length, 5);
  for (const a of refused) assert.match(a.reason, new RegExp(`checkpoint:process:${d}\\b`));
});
