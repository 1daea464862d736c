/**
 * Attack-first regression tests for filesystem.*: every denial is EPERM and
 * the effect did not happen; every allowed call returns the right value.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cap, type Env, launch, makeEnv, rejectsCode } from "./_helpers.ts";
import type { CapabilitySpec } from "../runtime/types.ts";
import type { Call } from "../primitives/call.ts";
import {
  type ResolvedPath,
  resolvePath,
  resolvePathFully,
  ROOT_RECHECK_MS,
} from "../primitives/filesystem.ts";

const ALL = ["read", "write", "delete"] as const;

function fsCap(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return cap(`filesystem:workspace:${path}`, ...rights);
}

function denyCap(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return { ...fsCap(path, ...rights), effect: "deny" };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A file outside the workspace (in the temp root), with known content. */
async function outsideFile(env: Env, name: string, content: string): Promise<string> {
  const p = join(env.root, name);
  await Deno.writeTextFile(p, content);
  return p;
}

async function effectsOf(env: Env, pid: number) {
  return (await env.rt.kernel.store.listEffects()).filter((e) => e.pid === pid);
}

Deno.test("filesystem: granted read, write, list, stat and delete return the right values", async () => {
  await using env = await makeEnv({
    files: { "a.txt": "alpha", "d/one.txt": "1", "d/two.txt": "22" },
  });
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  const sc = (name: string, args: Record<string, unknown>) => env.rt.syscall(pid, name, args);

  assert.equal(await sc("filesystem.read", { path: "a.txt" }), "alpha");

  const w = await sc("filesystem.write", { path: "b.txt", content: "héllo" });
  assert.deepEqual(w, { path: "b.txt", bytes: 6, label: "normal" });
  assert.equal(await Deno.readTextFile(join(env.ws, "b.txt")), "héllo");

  const l = await sc("filesystem.list", { path: "d" });
  assert.deepEqual(l, [{ name: "one.txt", kind: "file" }, { name: "two.txt", kind: "file" }]);

  const s = await sc("filesystem.stat", { path: "d/two.txt" }) as Record<string, unknown>;
  assert.equal(s.path, "d/two.txt");
  assert.equal(s.kind, "file");
  assert.equal(s.size, 2);
  assert.equal(s.label, "normal");

  assert.deepEqual(await sc("filesystem.delete", { path: "a.txt" }), {
    path: "a.txt",
    deleted: true,
  });
  assert.equal(await exists(join(env.ws, "a.txt")), false);

  // Writes and deletes went through the effect ledger; reads did not.
  const fx = await effectsOf(env, pid);
  assert.deepEqual(
    fx.map((e) => [e.syscall, e.resource, e.status]),
    [
      ["filesystem.write", "filesystem:workspace:b.txt", "done"],
      ["filesystem.delete", "filesystem:workspace:a.txt", "done"],
    ],
  );
});

Deno.test("filesystem: a path or a name too long for the host is EINVAL naming it, not EIO", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [cap("filesystem:workspace:*", "read", "write")]);
  const long = `${"d/".repeat(2040)}x`; // under the 4096 characters a path may have
  for (
    const [name, args] of [
      ["filesystem.read", { path: long }],
      ["filesystem.write", { path: `${"n".repeat(300)}.txt`, content: "x" }],
    ] as const
  ) {
    const e = await rejectsCode(env.rt.syscall(pid, name, args), "EINVAL");
    assert.match(e.message, /too long/i, name);
  }
});

Deno.test("filesystem: dot-dot traversal cannot leave the workspace", async () => {
  await using env = await makeEnv({ files: { "a/inner.txt": "in" } });
  const out = await outsideFile(env, "outside.txt", "OUTSIDE");
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  for (const path of ["../outside.txt", "a/../../outside.txt", "./a/./../../outside.txt"]) {
    await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path }), "EPERM");
    await rejectsCode(
      env.rt.syscall(pid, "filesystem.write", { path, content: "pwned" }),
      "EPERM",
    );
    await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path }), "EPERM");
  }
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "../created.txt", content: "x" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: ".." }), "EPERM");
  assert.equal(await Deno.readTextFile(out), "OUTSIDE");
  assert.equal(await exists(join(env.root, "created.txt")), false);
  // `..` that stays inside is fine.
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a/../a/inner.txt" }), "in");
  assert.equal((await effectsOf(env, pid)).length, 0);
});

Deno.test("filesystem: absolute paths outside the workspace are denied", async () => {
  await using env = await makeEnv();
  const out = await outsideFile(env, "abs.txt", "KEEP");
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "/etc/passwd" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path: "/etc/passwd" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: "/etc" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: out }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: out, content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path: out }), "EPERM");
  const fresh = join(env.root, "fresh.txt");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: fresh, content: "x" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(out), "KEEP");
  assert.equal(await exists(fresh), false);
  // A sibling directory whose name starts with the workspace's is still outside.
  await Deno.mkdir(`${env.ws}2`);
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: `${env.ws}2/x.txt`, content: "x" }),
    "EPERM",
  );
  assert.equal(await exists(`${env.ws}2/x.txt`), false);
});

Deno.test("filesystem: absolute paths inside the workspace follow the grants", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A", "b.txt": "B" } });
  const pid = await launch(env, [fsCap("a.txt", "read", "write")]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: join(env.ws, "a.txt") }), "A");
  const w = await env.rt.syscall(pid, "filesystem.write", {
    path: join(env.ws, "a.txt"),
    content: "A2",
  });
  assert.equal((w as { path: string }).path, "a.txt");
  assert.equal(await Deno.readTextFile(join(env.ws, "a.txt")), "A2");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: join(env.ws, "b.txt") }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: join(env.ws, "b.txt"), content: "x" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "b.txt")), "B");
});

Deno.test("filesystem: a symlink out of the workspace is denied for read and write", async () => {
  await using env = await makeEnv();
  const out = await outsideFile(env, "target.txt", "OUTSIDE");
  await Deno.symlink(out, join(env.ws, "link"));
  await Deno.symlink("../target.txt", join(env.ws, "rel-link"));
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  for (const path of ["link", "rel-link"]) {
    await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path }), "EPERM");
    await rejectsCode(
      env.rt.syscall(pid, "filesystem.write", { path, content: "pwned" }),
      "EPERM",
    );
  }
  assert.equal(await Deno.readTextFile(out), "OUTSIDE");
  assert.equal(await exists(join(env.ws, "link")), true);
  assert.equal((await effectsOf(env, pid)).length, 0);
  // Deleting a link removes the link (a workspace entry), never what it points to.
  for (const path of ["link", "rel-link"]) {
    await env.rt.syscall(pid, "filesystem.delete", { path });
    assert.equal(await exists(join(env.ws, path)), false);
  }
  assert.equal(await Deno.readTextFile(out), "OUTSIDE");
});

Deno.test("filesystem: authorization is on the real path behind a symlink", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "SECRET", "public/ok.txt": "ok" } });
  await Deno.symlink("../secret.txt", join(env.ws, "public/link"));
  const pid = await launch(env, [fsCap("public/*", ...ALL)]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "public/ok.txt" }), "ok");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "public/link" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "public/link", content: "pwned" }),
    "EPERM",
  );
  // Deleting the link is within public/* and removes only the link.
  await env.rt.syscall(pid, "filesystem.delete", { path: "public/link" });
  assert.equal(await exists(join(env.ws, "public/link")), false);
  assert.equal(await Deno.readTextFile(join(env.ws, "secret.txt")), "SECRET");
  // The audit names the real resource, not the link.
  const denials = await env.rt.kernel.store.listAudit({
    action: "filesystem.read",
    decision: "deny",
  });
  assert.equal(denials.at(-1)?.target, "filesystem:workspace:secret.txt");
});

Deno.test("filesystem: a dangling symlink cannot create a file outside", async () => {
  await using env = await makeEnv();
  const target = join(env.root, "created.txt");
  const targetDir = join(env.root, "newdir");
  await Deno.symlink(target, join(env.ws, "dangling"));
  await Deno.symlink(targetDir, join(env.ws, "dangling-dir"));
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "dangling", content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "dangling-dir/x.txt", content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "dangling" }), "EPERM");
  assert.equal(await exists(target), false);
  assert.equal(await exists(targetDir), false);
  assert.equal((await effectsOf(env, pid)).length, 0);
});

Deno.test("filesystem: a symlinked directory component cannot leave the workspace", async () => {
  await using env = await makeEnv();
  const outDir = join(env.root, "outside");
  await Deno.mkdir(outDir);
  await Deno.writeTextFile(join(outDir, "x"), "OUTSIDE");
  await Deno.symlink(outDir, join(env.ws, "dir"));
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "dir/x" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: "dir" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "dir/x", content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "dir/new/deep.txt", content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "dir/x", recursive: true }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(outDir, "x")), "OUTSIDE");
  assert.equal(await exists(join(outDir, "new")), false);
});

Deno.test("filesystem: writing a new file under a granted directory creates its parents", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [fsCap("reports/*", "read", "write")]);
  const r = await env.rt.syscall(pid, "filesystem.write", {
    path: "reports/2024/q1/summary.md",
    content: "# Q1",
  });
  assert.deepEqual(r, { path: "reports/2024/q1/summary.md", bytes: 4, label: "normal" });
  assert.equal(await Deno.readTextFile(join(env.ws, "reports/2024/q1/summary.md")), "# Q1");
  assert.equal(
    await env.rt.syscall(pid, "filesystem.read", { path: "reports/2024/q1/summary.md" }),
    "# Q1",
  );
  // Outside the grant nothing is created, not even the parent directories.
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "notes/2024/x.md", content: "x" }),
    "EPERM",
  );
  assert.equal(await exists(join(env.ws, "notes")), false);
});

Deno.test("filesystem: a directory grant does not cover a sibling with the same prefix", async () => {
  await using env = await makeEnv({ files: { "src/a.ts": "a", "src2/x": "X" } });
  const pid = await launch(env, [fsCap("src/*", ...ALL)]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "src/a.ts" }), "a");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "src2/x" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "src2/x", content: "pwned" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "src2/new", content: "x" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path: "src2/x" }), "EPERM");
  // `src/*` is what is below src, not src itself.
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: "src" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "src", recursive: true }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "src2/x")), "X");
  assert.equal(await exists(join(env.ws, "src2/new")), false);
  assert.equal(await exists(join(env.ws, "src/a.ts")), true);
});

Deno.test("filesystem: a DENY capability beats a broader ALLOW", async () => {
  await using env = await makeEnv({ files: { ".env": "TOKEN=1", "readme": "hi" } });
  const pid = await launch(env, [fsCap("*", ...ALL), denyCap(".env", "read", "write", "delete")]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "readme" }), "hi");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: ".env" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "./.env" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: join(env.ws, ".env") }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: ".env", content: "TOKEN=2" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path: ".env" }), "EPERM");
  assert.equal(await Deno.readTextFile(join(env.ws, ".env")), "TOKEN=1");
  // A symlink to the denied file is denied as well (the real path decides).
  await Deno.symlink(".env", join(env.ws, "alias"));
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "alias" }), "EPERM");
});

Deno.test("filesystem: recursive delete needs delete on everything below", async () => {
  await using env = await makeEnv({ files: { "dir/a.txt": "a", "dir/sub/b.txt": "b" } });
  const narrow = await launch(env, [fsCap("dir", "delete")]);
  await rejectsCode(
    env.rt.syscall(narrow, "filesystem.delete", { path: "dir", recursive: true }),
    "EPERM",
  );
  assert.equal(await exists(join(env.ws, "dir/sub/b.txt")), true);
  // Delete on the contents only does not cover the directory itself.
  const below = await launch(env, [fsCap("dir/*", "delete")]);
  await rejectsCode(
    env.rt.syscall(below, "filesystem.delete", { path: "dir", recursive: true }),
    "EPERM",
  );
  assert.equal(await exists(join(env.ws, "dir/a.txt")), true);

  const both = await launch(env, [fsCap("dir", "delete"), fsCap("dir/*", "delete")]);
  assert.deepEqual(
    await env.rt.syscall(both, "filesystem.delete", { path: "dir", recursive: true }),
    { path: "dir", deleted: true },
  );
  assert.equal(await exists(join(env.ws, "dir")), false);
});

Deno.test("filesystem: recursive delete honours a DENY below the directory", async () => {
  await using env = await makeEnv({ files: { "dir/a.txt": "a", "dir/keep.txt": "KEEP" } });
  const pid = await launch(env, [
    fsCap("dir", "delete"),
    fsCap("dir/*", "delete"),
    denyCap("dir/keep.txt", "delete"),
  ]);
  await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path: "dir/keep.txt" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "dir", recursive: true }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "dir/keep.txt")), "KEEP");
  assert.equal(await exists(join(env.ws, "dir/a.txt")), true);
  // The file not covered by the DENY can still be deleted on its own.
  await env.rt.syscall(pid, "filesystem.delete", { path: "dir/a.txt" });
  assert.equal(await exists(join(env.ws, "dir/a.txt")), false);
});

Deno.test("filesystem: the workspace root cannot be deleted", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a", "sub/b.txt": "b" } });
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  for (const path of [".", "./", env.ws, "sub/..", `${env.ws}/sub/..`]) {
    await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path, recursive: true }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path }), "EPERM");
  }
  assert.equal(await exists(join(env.ws, "a.txt")), true);
  assert.equal(await exists(join(env.ws, "sub/b.txt")), true);
  assert.equal((await effectsOf(env, pid)).length, 0);
});

Deno.test("filesystem: authorization precedes existence", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "S", "known/here.txt": "h" } });
  const pid = await launch(env, [fsCap("known/*", ...ALL)]);
  // Ungranted: EPERM whether the path exists or not, for every operation.
  for (const path of ["secret.txt", "missing.txt", "nodir/missing.txt"]) {
    await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path }), "EPERM");
    await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path }), "EPERM");
  }
  // Probing below an existing ungranted file must not reveal that it exists.
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "secret.txt/x" }), "EPERM");
  await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path: "secret.txt/x/y" }), "EPERM");
  // Granted: a missing path is ENOENT.
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "known/missing" }), "ENOENT");
  await rejectsCode(env.rt.syscall(pid, "filesystem.stat", { path: "known/missing" }), "ENOENT");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "known/missing" }),
    "ENOENT",
  );
  // A failed delete leaves no effect record.
  assert.equal((await effectsOf(env, pid)).length, 0);
});

Deno.test("filesystem: unknown argument names are EINVAL naming the field", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  const e1 = await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: "a.txt", encoding: "utf8" }),
    "EINVAL",
  );
  assert.match(e1.message, /filesystem\.read\.encoding/);
  const e2 = await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "a.txt", contents: "typo" }),
    "EINVAL",
  );
  assert.match(e2.message, /filesystem\.write\.contents/);
  const e3 = await rejectsCode(
    env.rt.syscall(pid, "filesystem.delete", { path: "a.txt", force: true }),
    "EINVAL",
  );
  assert.match(e3.message, /filesystem\.delete\.force/);
  assert.equal(await Deno.readTextFile(join(env.ws, "a.txt")), "A");
});

Deno.test("filesystem: wrong argument types are EINVAL", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  const sc = (name: string, args: unknown) =>
    env.rt.syscall(pid, name, args as Record<string, unknown>);
  assert.match((await rejectsCode(sc("filesystem.read", { path: 42 }), "EINVAL")).message, /path/);
  assert.match((await rejectsCode(sc("filesystem.read", {}), "EINVAL")).message, /path/);
  assert.match((await rejectsCode(sc("filesystem.read", { path: "" }), "EINVAL")).message, /path/);
  assert.match(
    (await rejectsCode(sc("filesystem.read", { path: "a.txt\u0000x" }), "EINVAL")).message,
    /path/,
  );
  assert.match(
    (await rejectsCode(sc("filesystem.write", { path: "new.txt", content: { x: 1 } }), "EINVAL"))
      .message,
    /content/,
  );
  assert.match(
    (await rejectsCode(
      sc("filesystem.write", { path: "a.txt", content: "x", label: "top" }),
      "EINVAL",
    ))
      .message,
    /label/,
  );
  assert.match(
    (await rejectsCode(sc("filesystem.delete", { path: "a.txt", recursive: "yes" }), "EINVAL"))
      .message,
    /recursive/,
  );
  await rejectsCode(sc("filesystem.read", ["a.txt"]), "EINVAL");
  await rejectsCode(sc("filesystem.read", "a.txt"), "EINVAL");
  assert.equal(await exists(join(env.ws, "new.txt")), false);
  assert.equal(await Deno.readTextFile(join(env.ws, "a.txt")), "A");
});

Deno.test("filesystem: relative paths resolve from the process cwd", async () => {
  await using env = await makeEnv({ files: { "a.txt": "top", "sub/a.txt": "inner" } });
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "top");
  assert.deepEqual(await env.rt.syscall(pid, "process.chdir", { path: "sub" }), { cwd: "sub" });
  assert.equal((await env.rt.process(pid)).cwd, "sub");
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "inner");
  await env.rt.syscall(pid, "filesystem.write", { path: "b.txt", content: "B" });
  assert.equal(await Deno.readTextFile(join(env.ws, "sub/b.txt")), "B");
  await env.rt.syscall(pid, "filesystem.write", { path: "../c.txt", content: "C" });
  assert.equal(await Deno.readTextFile(join(env.ws, "c.txt")), "C");
  // From sub, two levels up is outside the workspace.
  await outsideFile(env, "outside.txt", "OUTSIDE");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.read", { path: "../../outside.txt" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "../../outside.txt", content: "x" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.root, "outside.txt")), "OUTSIDE");
});

Deno.test("filesystem: chdir outside the workspace is denied", async () => {
  await using env = await makeEnv({ files: { "sub/a.txt": "a" } });
  await Deno.mkdir(join(env.root, "outdir"));
  await Deno.symlink(join(env.root, "outdir"), join(env.ws, "escape"));
  const pid = await launch(env, [fsCap("*", ...ALL)]);
  for (const path of ["..", "/tmp", env.root, "sub/../..", "escape"]) {
    await rejectsCode(env.rt.syscall(pid, "process.chdir", { path }), "EPERM");
  }
  assert.equal((await env.rt.process(pid)).cwd, ".");
  // chdir needs read on the directory itself.
  const narrow = await launch(env, [fsCap("sub/*", "read")]);
  await rejectsCode(env.rt.syscall(narrow, "process.chdir", { path: "sub" }), "EPERM");
  assert.equal((await env.rt.process(narrow)).cwd, ".");
});

Deno.test("filesystem: a one-shot capability works once", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const pid = await launch(env, [
    { ...fsCap("a.txt", "read"), uses_remaining: 1 },
    { ...fsCap("w.txt", "write"), uses_remaining: 1 },
  ]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  await env.rt.syscall(pid, "filesystem.write", { path: "w.txt", content: "1" });
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "w.txt", content: "2" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "w.txt")), "1");
});

Deno.test("filesystem: an expired capability grants nothing", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A" } });
  const past = new Date(Date.now() - 60_000).toISOString();
  const pid = await launch(env, [{ ...fsCap("*", ...ALL), expires_at: past }]);
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "new.txt", content: "x" }),
    "EPERM",
  );
  await rejectsCode(env.rt.syscall(pid, "filesystem.delete", { path: "a.txt" }), "EPERM");
  assert.equal(await exists(join(env.ws, "new.txt")), false);
  assert.equal(await exists(join(env.ws, "a.txt")), true);
});

Deno.test("filesystem: reading a labelled file taints the process and blocks lower sinks", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "S3CRET", "normal.txt": "N" } });
  const pid = await launch(
    env,
    [fsCap("*", "read", "write"), cap("human:owner", "write")],
    { policy: { labels: { "secret.txt": "secret" } } },
  );
  // Before reading anything secret, both sinks are open.
  await env.rt.syscall(pid, "human.output", { text: "hello" });
  await env.rt.syscall(pid, "filesystem.write", { path: "normal.txt", content: "N1" });
  assert.equal(env.human.shown.length, 1);

  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "secret.txt" }), "S3CRET");
  assert.equal((await env.rt.process(pid)).taint, "secret");

  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "normal.txt", content: "S3CRET" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "fresh.txt", content: "S3CRET" }),
    "EPERM",
  );
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "c.txt", content: "x", label: "confidential" }),
    "EPERM",
  );
  assert.equal(await Deno.readTextFile(join(env.ws, "normal.txt")), "N1");
  assert.equal(await exists(join(env.ws, "fresh.txt")), false);
  assert.equal(await exists(join(env.ws, "c.txt")), false);

  const ok = await env.rt.syscall(pid, "filesystem.write", {
    path: "copy.txt",
    content: "S3CRET",
    label: "secret",
  });
  assert.deepEqual(ok, { path: "copy.txt", bytes: 6, label: "secret" });
  // The label stays with the file: a fresh process that reads it is tainted too.
  const other = await launch(env, [fsCap("*", "read"), cap("human:owner", "write")]);
  const st = await env.rt.syscall(other, "filesystem.stat", { path: "copy.txt" });
  assert.equal((st as { label: string }).label, "secret");
  await env.rt.syscall(other, "filesystem.read", { path: "copy.txt" });
  assert.equal((await env.rt.process(other)).taint, "secret");
  await rejectsCode(env.rt.syscall(other, "human.output", { text: "S3CRET" }), "EPERM");

  // human.output needs human:owner write, and even with it secret data is refused.
  await rejectsCode(env.rt.syscall(pid, "human.output", { text: "S3CRET" }), "EPERM");
  assert.equal(env.human.shown.length, 1);
  const blocked = (await env.rt.kernel.store.listEvents()).filter((e) =>
    e.type === "label.blocked"
  );
  assert.ok(blocked.length >= 3);
});

Deno.test("filesystem: human.output needs a human:owner write capability", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, []);
  await rejectsCode(env.rt.syscall(pid, "human.output", { text: "hi" }), "EPERM");
  assert.equal(env.human.shown.length, 0);
});

Deno.test("filesystem: a write cannot lower a file's label", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "S" } });
  const pid = await launch(env, [fsCap("*", "read", "write")], {
    policy: { labels: { "secret.txt": "secret" } },
  });
  const r = await env.rt.syscall(pid, "filesystem.write", {
    path: "secret.txt",
    content: "overwritten",
    label: "public",
  });
  assert.equal((r as { label: string }).label, "secret");
  await env.rt.syscall(pid, "filesystem.read", { path: "secret.txt" });
  assert.equal((await env.rt.process(pid)).taint, "secret");
});

Deno.test("filesystem: the direct resolution gives what full resolution gives", async () => {
  await using env = await makeEnv({
    files: { "a.txt": "a", "sub/b.txt": "b", "sub/deep/c.txt": "c", "emptydir/.keep": "" },
  });
  const out = await outsideFile(env, "out.txt", "OUTSIDE");
  await Deno.mkdir(join(env.root, "outdir"));
  await Deno.symlink("a.txt", join(env.ws, "in-link"));
  await Deno.symlink("../a.txt", join(env.ws, "sub/up-link"));
  await Deno.symlink("sub", join(env.ws, "dirlink"));
  await Deno.symlink(out, join(env.ws, "out-link"));
  await Deno.symlink(join(env.root, "outdir"), join(env.ws, "out-dir"));
  await Deno.symlink(join(env.root, "nothing"), join(env.ws, "dangling"));
  const paths = [
    ".",
    "./",
    "a.txt",
    "a.txt/",
    "a.txt/x",
    "sub",
    "sub/",
    "sub/b.txt",
    "sub/deep/c.txt",
    "sub/deep/../b.txt",
    "sub/../a.txt",
    "missing.txt",
    "sub/missing/x",
    "in-link",
    "sub/up-link",
    "dirlink",
    "dirlink/b.txt",
    "dirlink/deep/c.txt",
    "out-link",
    "out-dir",
    "out-dir/x",
    "dangling",
    "emptydir",
    "../out.txt",
    join(env.ws, "a.txt"),
    join(env.ws, "sub/deep/c.txt"),
    "/etc/passwd",
  ];
  const pid = await launch(env, [fsCap("*", "read")]);
  const settle = (p: Promise<ResolvedPath>) =>
    p.then(({ real, rel, resource }) => ({ real, rel, resource }), (e) => ({ error: e.code }));
  for (const cwd of [".", "sub"]) {
    const proc = { ...(await env.rt.process(pid)), cwd };
    const call: Call = {
      k: env.rt.kernel,
      proc,
      name: "filesystem.stat",
      args: {},
      argsHash: "",
      correlationId: "c_test",
      target: "",
      capRefs: [],
      resultLabel: "public",
      argsLabel: "public",
    };
    for (const path of paths) {
      assert.deepEqual(
        await settle(resolvePath(call, path)),
        await settle(resolvePathFully(call, path)),
        `${path} (cwd ${cwd})`,
      );
    }
    // The shortcut is really taken for plain entries (it carries their lstat).
    const direct = await resolvePath(call, join(env.ws, "sub/deep/c.txt"));
    assert.equal(direct.stat?.kind, "file");
    assert.equal((await resolvePath(call, join(env.ws, "a.txt"))).stat?.size, 1);
  }
});

Deno.test("filesystem: a workspace root swapped for a symlink is refused once rechecked", async () => {
  await using env = await makeEnv({ files: { "a.txt": "inside" } });
  const elsewhere = join(env.root, "elsewhere");
  await Deno.mkdir(elsewhere);
  await Deno.writeTextFile(join(elsewhere, "a.txt"), "OUTSIDE");
  const pid = await launch(env, [fsCap("*", "read")]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "inside");
  // The host moves the workspace away and leaves a symlink to another directory.
  await Deno.rename(env.ws, join(env.root, "ws-moved"));
  await Deno.symlink(elsewhere, env.ws);
  await new Promise((r) => setTimeout(r, ROOT_RECHECK_MS + 20));
  const err = await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "EPERM");
  assert.doesNotMatch(err.message, /OUTSIDE/);
  await rejectsCode(env.rt.syscall(pid, "filesystem.list", { path: "." }), "EPERM");
});

Deno.test("filesystem: deleting a symlink removes the link, never its target", async () => {
  await using env = await makeEnv({ files: { "a.txt": "A", "sub/b.txt": "B" } });
  await Deno.symlink("a.txt", join(env.ws, "link"));
  await Deno.symlink("../a.txt", join(env.ws, "sub/up"));
  await Deno.symlink("sub", join(env.ws, "dirlink"));
  // Delete on the target only does not cover the link.
  const targetOnly = await launch(env, [fsCap("a.txt", "delete"), fsCap("sub", "delete")]);
  for (const path of ["link", "dirlink"]) {
    await rejectsCode(env.rt.syscall(targetOnly, "filesystem.delete", { path }), "EPERM");
  }
  // Delete on the link path removes the link and leaves the target.
  const linksOnly = await launch(env, [
    fsCap("link", "delete"),
    fsCap("sub/up", "delete"),
    fsCap("dirlink", "delete"),
  ]);
  for (const path of ["link", "sub/up", "dirlink"]) {
    assert.deepEqual(await env.rt.syscall(linksOnly, "filesystem.delete", { path }), {
      path,
      deleted: true,
    });
    assert.equal(await exists(join(env.ws, path)), false);
  }
  assert.equal(await Deno.readTextFile(join(env.ws, "a.txt")), "A");
  assert.equal(await Deno.readTextFile(join(env.ws, "sub/b.txt")), "B");
  // A link inside a symlinked directory that leaves the workspace is still refused.
  const outDir = join(env.root, "outside");
  await Deno.mkdir(outDir);
  await Deno.symlink(join(env.ws, "a.txt"), join(outDir, "l"));
  await Deno.symlink(outDir, join(env.ws, "out"));
  const all = await launch(env, [fsCap("*", "delete")]);
  await rejectsCode(env.rt.syscall(all, "filesystem.delete", { path: "out/l" }), "EPERM");
  assert.equal(await exists(join(outDir, "l")), true);
});

Deno.test("filesystem: a DENY covers the same file under another case, a decomposed or a fullwidth spelling", async () => {
  // The host denies the names it knows; the names on disk (or the ones an agent
  // types) may be spelt otherwise and still open the same file.
  await using env = await makeEnv({
    files: {
      "config/cafe\u0301.txt": "decomposed secret",
      ".env": "API_KEY=1",
      "config/app.toml": "port = 8080",
    },
  });
  await Deno.symlink(".env", join(env.ws, ".ENV"));
  await Deno.symlink(".env", join(env.ws, "\uff0eenv"));
  await Deno.writeTextFile(join(env.ws, "NOTES.md"), "upper-case name, not denied");
  const pid = await launch(env, [
    fsCap("*", "read"),
    denyCap("config/caf\u00e9.txt", "read"),
    denyCap(".env", "read"),
    denyCap("notes.md", "write"),
  ]);
  const read = (path: string) => env.rt.syscall(pid, "filesystem.read", { path });
  await rejectsCode(read("config/cafe\u0301.txt"), "EPERM");
  await rejectsCode(read(".ENV"), "EPERM");
  await rejectsCode(read("\uff0eenv"), "EPERM");
  // A restriction only refuses more: other files and other rights are unaffected.
  assert.equal(await read("config/app.toml"), "port = 8080");
  assert.equal(await read("NOTES.md"), "upper-case name, not denied");
});
