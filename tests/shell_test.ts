/**
 * Attack-first regression tests for shell.run: argv only, capability AND
 * policy, destructive commands never run, wrappers and inline code cannot
 * launder a command, path arguments need filesystem authority, cleared
 * environment, timeout and output caps, and the effect ledger.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cap, type Env, launch, makeEnv, rejectsCode } from "./_helpers.ts";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";
import { destructiveReason, SHELL_MAX_OUTPUT } from "../primitives/shell.ts";
import type { CapabilitySpec } from "../runtime/types.ts";

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timed_out: boolean;
  truncated: boolean;
}

const POLICIES = [
  "always_deny",
  "allowlist_auto_else_ask",
  "blocklist_ask_else_auto",
  "always_allow",
] as const;

function sh(exe: string): CapabilitySpec {
  return cap(`shell:${exe}`, "execute");
}

function fsCap(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return cap(`filesystem:workspace:${path}`, ...rights);
}

function run(env: Env, pid: number, argv: unknown, extra: Record<string, unknown> = {}) {
  return env.rt.syscall(pid, "shell.run", { argv, ...extra }) as Promise<RunResult>;
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

async function shellEffects(env: Env, pid?: number) {
  return (await env.rt.kernel.store.listEffects()).filter((e) =>
    e.syscall === "shell.run" && (pid === undefined || e.pid === pid)
  );
}

async function git(cwd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("git", {
    args: ["-c", "user.name=t", "-c", "user.email=t@example.com", ...args],
    cwd,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test("shell: argv must be an array with a bare executable name", async () => {
  await using env = await makeEnv({ files: { "a.txt": "a" } });
  const pid = await launch(env, [cap("shell:*", "execute"), fsCap("*", "read")], {
    policy: { shell: "always_allow" },
  });
  for (const argv of ["ls", "ls -la", [], [1], ["ls", 2], null, { 0: "ls" }]) {
    const e = await rejectsCode(run(env, pid, argv), "EINVAL");
    assert.match(e.message, /shell\.run\.argv/);
  }
  for (
    const exe of [
      "/bin/ls",
      "./ls",
      "../bin/ls",
      "bin/ls",
      "ls;id",
      "ls -la",
      "$(id)",
      "`id`",
      "ls|cat",
      "ls&&id",
      "ls>out",
      "-rf",
      "",
      "ls\nid",
    ]
  ) {
    const e = await rejectsCode(run(env, pid, [exe]), "EINVAL");
    assert.match(e.message, /shell\.run\.argv/);
  }
  const e = await rejectsCode(
    env.rt.syscall(pid, "shell.run", { argv: ["ls"], cwd: "/" }),
    "EINVAL",
  );
  assert.match(e.message, /shell\.run\.cwd/);
  await rejectsCode(run(env, pid, ["ls"], { timeout_ms: "5" }), "EINVAL");
  await rejectsCode(run(env, pid, ["ls"], { timeout_ms: 0 }), "EINVAL");
  assert.equal(await exists(join(env.ws, "out")), false);
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: a command needs both an execute capability and policy consent", async () => {
  await using env = await makeEnv();
  // Policy consents, no capability.
  const noCap = await launch(env, [], { policy: { shell: "always_allow" } });
  await rejectsCode(run(env, noCap, ["touch", "a"]), "EPERM");
  // A capability with the wrong right, or for another program, is not enough.
  const wrong = await launch(env, [cap("shell:touch", "read"), sh("echo")], {
    policy: { shell: "always_allow" },
  });
  await rejectsCode(run(env, wrong, ["touch", "b"]), "EPERM");
  // Capability, but the default policy (always_deny).
  const noPolicy = await launch(env, [sh("touch")]);
  await rejectsCode(run(env, noPolicy, ["touch", "c"]), "EPERM");
  for (const f of ["a", "b", "c"]) assert.equal(await exists(join(env.ws, f)), false);
  assert.equal(env.human.asked.length, 0);
  // Both: it runs (and may write where the process may: see shell_sandbox_test.ts).
  const both = await launch(env, [sh("touch"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, both, ["touch", "d"]);
  assert.equal(r.code, 0);
  assert.equal(await exists(join(env.ws, "d")), true);
});

Deno.test("shell: always_deny refuses even with a capability", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("shell:*", "execute"), sh("touch")], {
    policy: { shell: "always_deny", shell_allowlist: ["touch"] },
  });
  await rejectsCode(run(env, pid, ["touch", "x"]), "EPERM");
  assert.equal(await exists(join(env.ws, "x")), false);
  assert.equal(env.human.asked.length, 0);
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: allowlist_auto_else_ask runs allowlisted commands and asks for others", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("shell:*", "execute")], {
    policy: { shell: "allowlist_auto_else_ask", shell_allowlist: ["echo"] },
  });
  assert.equal((await run(env, pid, ["echo", "hi"])).stdout, "hi\n");
  assert.equal(env.human.asked.length, 0);
  await rejectsCode(run(env, pid, ["touch", "made"]), "EPERM");
  assert.equal(env.human.asked.length, 1);
  assert.equal(env.human.asked[0].resource, "shell:touch");
  assert.equal(env.human.asked[0].right, "execute");
  assert.equal(await exists(join(env.ws, "made")), false);
});

Deno.test("shell: blocklist_ask_else_auto asks for blocklisted commands only", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("shell:*", "execute")], {
    policy: { shell: "blocklist_ask_else_auto", shell_blocklist: ["touch"] },
  });
  assert.equal((await run(env, pid, ["echo", "hi"])).stdout, "hi\n");
  assert.equal(env.human.asked.length, 0);
  await rejectsCode(run(env, pid, ["touch", "made"]), "EPERM");
  assert.equal(env.human.asked.length, 1);
  assert.equal(env.human.asked[0].resource, "shell:touch");
  assert.equal(await exists(join(env.ws, "made")), false);
});

Deno.test("shell: always_allow runs a granted command without asking", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [sh("touch"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow" },
  });
  assert.equal((await run(env, pid, ["touch", "made"])).code, 0);
  assert.equal(await exists(join(env.ws, "made")), true);
  assert.equal(env.human.asked.length, 0);
});

Deno.test("shell: an ASK without a human is a deny and is audited", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [sh("touch")], { policy: { shell: "allowlist_auto_else_ask" } });
  await rejectsCode(run(env, pid, ["touch", "made"]), "EPERM");
  assert.equal(await exists(join(env.ws, "made")), false);
  const store = env.rt.kernel.store;
  const asks = await store.listAudit({ action: "human.ask" });
  const decides = await store.listAudit({ action: "human.decide" });
  assert.equal(asks.length, 1);
  assert.equal(asks[0].decision, "ask");
  assert.equal(asks[0].target, "shell:touch");
  assert.equal(decides.length, 1);
  assert.equal(decides[0].decision, "deny");
  assert.equal(decides[0].actor, "human:owner");
  assert.equal(decides[0].correlation_id, asks[0].correlation_id);
  const call = await store.listAudit({ action: "shell.run" });
  assert.equal(call.at(-1)?.decision, "deny");
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: a one-shot approval runs the exact command once", async () => {
  const human = new ScriptedHuman(["allow_once"]);
  await using env = await makeEnv({ providers: { human } });
  const pid = await launch(env, [sh("echo")], { policy: { shell: "allowlist_auto_else_ask" } });
  const r = await run(env, pid, ["echo", "once"]);
  assert.equal(r.stdout, "once\n");
  assert.equal(human.asked.length, 1);
  // The identical call asks again; the list is used up, so the answer is deny.
  await rejectsCode(run(env, pid, ["echo", "once"]), "EPERM");
  assert.equal(human.asked.length, 2);
  assert.equal(human.asked[1].args_hash, human.asked[0].args_hash);
  // The approval was bound to exactly that call and is spent.
  const caps = await env.rt.kernel.store.capabilitiesOf(pid);
  const approval = caps.find((c) => c.issued_by === "human:owner");
  assert.ok(approval);
  assert.equal(approval.resource, "shell:echo");
  assert.deepEqual(approval.constraints.binding, {
    syscall: "shell.run",
    args_hash: human.asked[0].args_hash,
  });
  assert.equal(approval.uses_remaining, 0);
  assert.equal((await shellEffects(env, pid)).length, 1);
});

Deno.test("shell: a one-shot approval does not cover different arguments", async () => {
  const human = new ScriptedHuman(["allow_once"]);
  await using env = await makeEnv({ providers: { human } });
  const pid = await launch(env, [sh("touch"), fsCap("*", "read", "write")], {
    policy: { shell: "allowlist_auto_else_ask" },
  });
  await run(env, pid, ["touch", "approved"]);
  await rejectsCode(run(env, pid, ["touch", "other"]), "EPERM");
  assert.equal(await exists(join(env.ws, "approved")), true);
  assert.equal(await exists(join(env.ws, "other")), false);
  assert.equal(human.asked.length, 2);
  assert.notEqual(human.asked[1].args_hash, human.asked[0].args_hash);
});

Deno.test("shell: an always_allow answer lets later identical calls run without asking", async () => {
  const human = new ScriptedHuman(["always_allow"]);
  await using env = await makeEnv({ providers: { human } });
  const pid = await launch(env, [sh("echo")], { policy: { shell: "allowlist_auto_else_ask" } });
  assert.equal((await run(env, pid, ["echo", "a"])).stdout, "a\n");
  assert.equal(human.asked.length, 1);
  assert.equal((await run(env, pid, ["echo", "a"])).stdout, "a\n");
  assert.equal((await run(env, pid, ["echo", "a"])).stdout, "a\n");
  assert.equal(human.asked.length, 1);
  assert.equal((await shellEffects(env, pid)).length, 3);
});

const DESTRUCTIVE: string[][] = [
  ["rm", "-rf", "x"],
  ["rm", "-r", "x"],
  ["rm", "-fr", "x"],
  ["rm", "-R", "x"],
  ["rm", "--recursive", "x"],
  ["rm", "-v", "-r", "--", "x"],
  ["git", "push", "--force"],
  ["git", "push", "--force-with-lease", "origin", "main"],
  ["git", "push", "origin", "+main"],
  ["git", "reset", "--hard"],
  ["git", "reset", "--hard", "HEAD~1"],
  ["git", "clean", "-fd"],
  ["git", "clean", "-f", "-d", "-x"],
  // Each of these throws uncommitted work away as surely as reset --hard.
  ["git", "checkout", "--", "tracked.txt"],
  ["git", "checkout", "."],
  ["git", "checkout", "-f"],
  ["git", "restore", "tracked.txt"],
  ["git", "restore", "--staged", "--worktree", "tracked.txt"],
  ["git", "switch", "--discard-changes", "main"],
  ["git", "stash", "drop"],
  ["dd", "if=x/keep.txt", "of=x/other"],
  ["mkfs.ext4", "x/img"],
  ["chmod", "-R", "000", "x"],
  ["find", ".", "-delete"],
];

Deno.test("shell: destructive commands are refused under every policy", async () => {
  await using env = await makeEnv({ files: { "x/keep.txt": "KEEP", "tracked.txt": "v1" } });
  await git(env.ws, "init", "-q");
  await git(env.ws, "add", "tracked.txt");
  await git(env.ws, "commit", "-q", "-m", "init");
  await Deno.writeTextFile(join(env.ws, "tracked.txt"), "local edit");
  const all = [
    "rm",
    "git",
    "dd",
    "mkfs.ext4",
    "chmod",
    "find",
  ].map(sh);
  for (const policy of POLICIES) {
    const pid = await launch(
      env,
      [cap("shell:*", "execute"), ...all, fsCap("*", "read", "write", "delete")],
      {
        policy: {
          shell: policy,
          shell_allowlist: ["rm", "git", "dd", "mkfs.ext4", "chmod", "find"],
        },
      },
    );
    for (const argv of DESTRUCTIVE) {
      const e = await rejectsCode(run(env, pid, argv), "EPERM");
      assert.match(e.message, /never run/, `${policy}: ${argv.join(" ")}`);
    }
  }
  assert.equal(await Deno.readTextFile(join(env.ws, "x/keep.txt")), "KEEP");
  assert.equal(await Deno.readTextFile(join(env.ws, "tracked.txt")), "local edit");
  assert.equal(await exists(join(env.ws, "x/other")), false);
  assert.equal((await Deno.stat(join(env.ws, "x"))).mode! & 0o700, 0o700);
  assert.equal(env.human.asked.length, 0);
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: spelling variants of destructive commands are refused", async () => {
  await using env = await makeEnv({ files: { "x/keep.txt": "KEEP", "tracked.txt": "v1" } });
  await git(env.ws, "init", "-q");
  await git(env.ws, "add", "tracked.txt");
  await git(env.ws, "commit", "-q", "-m", "init");
  await Deno.writeTextFile(join(env.ws, "tracked.txt"), "local edit");
  await Deno.writeTextFile(join(env.ws, "untracked.txt"), "new");
  const pid = await launch(env, [cap("shell:*", "execute"), fsCap("*", "read")], {
    policy: { shell: "always_allow" },
  });
  const variants = [
    // GNU getopt accepts any unambiguous prefix of a long option.
    ["rm", "--r", "x"],
    ["rm", "--recur", "x"],
    ["chmod", "--rec", "000", "x"],
    // Git's global options come before the subcommand.
    ["git", "-C", ".", "reset", "--hard"],
    ["git", "--work-tree", ".", "reset", "--hard"],
    ["git", "-C", ".", "clean", "-fd"],
    ["git", "reset", "--har"],
    ["git", "clean", "--forc", "-d"],
    // Bundled short flags.
    ["git", "push", "-fu", "origin", "main"],
    ["git", "push", "-qf", "origin", "main"],
  ];
  for (const argv of variants) {
    const e = await rejectsCode(run(env, pid, argv), "EPERM");
    assert.match(e.message, /never run/, argv.join(" "));
  }
  assert.equal(await Deno.readTextFile(join(env.ws, "x/keep.txt")), "KEEP");
  assert.equal(await Deno.readTextFile(join(env.ws, "tracked.txt")), "local edit");
  assert.equal(await Deno.readTextFile(join(env.ws, "untracked.txt")), "new");
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: wrappers cannot launder a command", async () => {
  await using env = await makeEnv({ files: { ".env": "TOKEN=sekrit", "x": "x" } });
  const pid = await launch(env, [cap("shell:*", "execute"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow" },
  });
  const wrapped = [
    ["env", "cat", ".env"],
    ["env", "-i", "cat", ".env"],
    ["env", "-Scat .env"],
    ["env", "--split-string=cat .env"],
    ["timeout", "5", "cat", "x"],
    ["nice", "rm", "x"],
    ["nice", "-n5", "rm", "x"],
    ["xargs", "cat"],
    ["xargs", "-a.env", "-0"],
    ["sudo", "cat", ".env"],
    ["nohup", "rm", "x"],
    ["find", ".", "-exec", "cat", "{}", ";"],
    ["find", ".", "-execdir", "rm", "{}", ";"],
    ["find", ".", "-ok", "rm", "{}", ";"],
    // git aliases and config run arbitrary programs.
    ["git", "-c", "alias.x=!cat .env", "x"],
    ["git", "--exec-path=.", "x"],
    ["git", "--config-env=alias.x=HOME", "x"],
  ];
  for (const argv of wrapped) {
    const e = await rejectsCode(run(env, pid, argv), "EPERM");
    assert.match(e.message, /wrapper|another program/, argv.join(" "));
  }
  assert.equal(await Deno.readTextFile(join(env.ws, "x")), "x");
  assert.equal(env.human.asked.length, 0);
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: inline interpreter code always asks a human", async () => {
  await using env = await makeEnv({ files: { ".env": "TOKEN=sekrit" } });
  const pid = await launch(env, [cap("shell:*", "execute"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow" },
  });
  const inline = [
    ["bash", "-c", "touch made1"],
    ["sh", "-c", "touch made2"],
    ["python3", "-c", "open('made3','w')"],
    ["node", "-e", "require('fs').writeFileSync('made4','')"],
    // Bundled and attached spellings of the same flags.
    ["bash", "-ec", "touch made5"],
    ["sh", "-xc", "touch made6"],
    ["python3", "-Ic", "open('made7','w')"],
    ["python3", "-copen('made8','w')"],
    ["perl", "-le", "open(F,'>made9')"],
    ["node", "--eval=require('fs').writeFileSync('made10','')"],
    ["awk", 'BEGIN{system("touch made11")}'],
  ];
  for (const [i, argv] of inline.entries()) {
    await rejectsCode(run(env, pid, argv), "EPERM");
    assert.equal(env.human.asked.length, i + 1, argv.join(" "));
    assert.equal(env.human.asked[i].resource, `shell:${argv[0]}`);
  }
  for (const [i] of inline.entries()) {
    assert.equal(await exists(join(env.ws, `made${i + 1}`)), false);
  }
  assert.equal((await shellEffects(env)).length, 0);
});

Deno.test("shell: path arguments need filesystem authority", async () => {
  await using env = await makeEnv({ files: { ".env": "TOKEN=sekrit", "ok.txt": "fine\n" } });
  const outside = join(env.root, "outside.txt");
  await Deno.writeTextFile(outside, "OUTSIDE");
  await Deno.symlink(outside, join(env.ws, "link"));
  const pid = await launch(
    env,
    [sh("cat"), sh("ls"), sh("head"), fsCap("ok.txt", "read"), fsCap("link", "read")],
    { policy: { shell: "always_allow" } },
  );
  const attempts = [
    ["cat", ".env"],
    ["cat", "./.env"],
    ["cat", join(env.ws, ".env")],
    ["cat", "ok.txt", ".env"],
    ["cat", "/etc/passwd"],
    ["cat", outside],
    ["cat", "link"],
    ["cat", "../outside.txt"],
    ["cat", "~/outside.txt"],
    ["head", "--lines=1", "/etc/passwd"],
    ["head", "-n1", "--", "/etc/passwd"],
    ["ls", "../"],
    ["ls", ".."],
    ["ls", "/"],
  ];
  for (const argv of attempts) await rejectsCode(run(env, pid, argv), "EPERM");
  assert.equal((await shellEffects(env)).length, 0);
  // With read on the file the same command runs.
  assert.equal((await run(env, pid, ["cat", "ok.txt"])).stdout, "fine\n");
});

Deno.test("shell: an option with an attached path needs filesystem authority", async () => {
  await using env = await makeEnv({ files: { "in.txt": "b\na\n" } });
  const outDir = join(env.root, "outdir");
  await Deno.mkdir(outDir);
  const pid = await launch(env, [sh("sort"), sh("cp"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow" },
  });
  await rejectsCode(run(env, pid, ["sort", `-o${outDir}/sorted.txt`, "in.txt"]), "EPERM");
  await rejectsCode(run(env, pid, ["sort", "-o../outdir/sorted.txt", "in.txt"]), "EPERM");
  await rejectsCode(run(env, pid, ["cp", `-t${outDir}`, "in.txt"]), "EPERM");
  assert.deepEqual([...Deno.readDirSync(outDir)], []);
  // Inside the workspace the same form works.
  assert.equal((await run(env, pid, ["sort", "-o./sorted.txt", "in.txt"])).code, 0);
  assert.equal(await Deno.readTextFile(join(env.ws, "sorted.txt")), "a\nb\n");
});

Deno.test("shell: a benign allowed command runs and returns its output", async () => {
  await using env = await makeEnv({ files: { "a.txt": "one\ntwo\nthree\n", "sub/b.txt": "" } });
  const pid = await launch(env, [sh("ls"), sh("echo"), sh("wc"), fsCap("*", "read")], {
    policy: { shell: "allowlist_auto_else_ask", shell_allowlist: ["ls", "echo", "wc"] },
  });
  const ls = await run(env, pid, ["ls"]);
  assert.deepEqual(ls.stdout.trim().split("\n"), ["a.txt", "sub"]);
  assert.equal(ls.code, 0);
  assert.equal(ls.timed_out, false);
  assert.equal(ls.truncated, false);
  const echo = await run(env, pid, ["echo", "hi"]);
  assert.equal(echo.stdout, "hi\n");
  const wc = await run(env, pid, ["wc", "-l", "a.txt"]);
  assert.equal(wc.stdout.trim(), "3 a.txt");
  // A failing command is a result with its exit code, not an error.
  const bad = await run(env, pid, ["ls", "nope"]);
  assert.notEqual(bad.code, 0);
  assert.ok(bad.stderr.length > 0);
  // It runs in the process cwd.
  await env.rt.syscall(pid, "process.chdir", { path: "sub" });
  assert.equal((await run(env, pid, ["ls"])).stdout, "b.txt\n");
  assert.equal(env.human.asked.length, 0);
});

Deno.test("shell: commands run with a cleared environment", async () => {
  const name = "LIBOS_TEST_SHELL_TOKEN";
  Deno.env.set(name, "tok-do-not-leak");
  try {
    await using env = await makeEnv();
    const pid = await launch(env, [sh("env")], { policy: { shell: "always_allow" } });
    const r = await run(env, pid, ["env"]);
    assert.equal(r.code, 0);
    const keys = r.stdout.trim().split("\n").map((l) => l.slice(0, l.indexOf("="))).sort();
    assert.deepEqual(keys, ["HOME", "LANG", "PATH"]);
    assert.ok(!r.stdout.includes("tok-do-not-leak"));
    assert.ok(!r.stdout.includes(name));
    // HOME is the sandbox's private /tmp, neither the host's home nor the workspace.
    assert.ok(r.stdout.split("\n").includes("HOME=/tmp"), r.stdout);
  } finally {
    Deno.env.delete(name);
  }
});

Deno.test("shell: a timeout kills the command", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [sh("sleep")], { policy: { shell: "always_allow" } });
  const r = await run(env, pid, ["sleep", "5"], { timeout_ms: 200 });
  assert.equal(r.timed_out, true);
  assert.notEqual(r.code, 0);
  const fx = await shellEffects(env, pid);
  assert.equal(fx.length, 1);
  assert.equal((fx[0].outcome as { timed_out: boolean }).timed_out, true);
});

Deno.test("shell: output beyond the cap is truncated", async () => {
  await using env = await makeEnv();
  await Deno.writeTextFile(join(env.ws, "big.txt"), "x".repeat(2 * 1024 * 1024));
  const pid = await launch(env, [sh("cat"), fsCap("big.txt", "read")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["cat", "big.txt"]);
  assert.equal(r.truncated, true);
  assert.equal(r.stdout.length, SHELL_MAX_OUTPUT);
  assert.equal(r.code, 0);
});

Deno.test("shell: the effect ledger records executed commands and nothing for refused ones", async () => {
  await using env = await makeEnv({ files: { "x/a": "a", ".env": "T" } });
  const pid = await launch(env, [cap("shell:*", "execute"), fsCap("x", "read")], {
    policy: { shell: "always_allow" },
  });
  await run(env, pid, ["echo", "one"]);
  await run(env, pid, ["ls", "x"]);
  await rejectsCode(run(env, pid, ["rm", "-rf", "x"]), "EPERM");
  await rejectsCode(run(env, pid, ["env", "cat", ".env"]), "EPERM");
  await rejectsCode(run(env, pid, ["bash", "-c", "ls"]), "EPERM");
  await rejectsCode(run(env, pid, ["cat", ".env"]), "EPERM");
  await rejectsCode(run(env, pid, "echo two"), "EINVAL");
  const fx = await shellEffects(env, pid);
  assert.deepEqual(fx.map((e) => [e.resource, e.status]), [
    ["shell:echo", "done"],
    ["shell:ls", "done"],
  ]);
  // Every call, allowed or not, has exactly one shell.run audit record.
  const audit = await env.rt.kernel.store.listAudit({ action: "shell.run" });
  assert.deepEqual(audit.map((a) => a.decision), [
    "allow",
    "allow",
    "deny",
    "deny",
    "deny",
    "deny",
    "error",
  ]);
});

Deno.test("shell: labelled data never flows into a shell command", async () => {
  await using env = await makeEnv({ files: { "secret.txt": "S3CRET", "ok.txt": "fine" } });
  const pid = await launch(env, [sh("cat"), sh("cp"), fsCap("*", "read", "write")], {
    policy: { shell: "always_allow", labels: { "secret.txt": "secret" } },
  });
  // A command given a labelled file could copy or send it anywhere: refused before it runs.
  await rejectsCode(env.rt.syscall(pid, "shell.run", { argv: ["cat", "secret.txt"] }), "EPERM");
  await rejectsCode(
    env.rt.syscall(pid, "shell.run", { argv: ["cp", "secret.txt", "copy.txt"] }),
    "EPERM",
  );
  assert.equal(await exists(join(env.ws, "copy.txt")), false);
  assert.equal((await run(env, pid, ["cat", "ok.txt"])).stdout, "fine");
  // Once the process itself holds secret data, no command runs at all.
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "secret.txt" }), "S3CRET");
  assert.equal((await env.rt.process(pid)).taint, "secret");
  const e = await rejectsCode(
    env.rt.syscall(pid, "shell.run", { argv: ["cat", "ok.txt"] }),
    "EPERM",
  );
  assert.match(e.message, /secret data may not flow/);
  await rejectsCode(
    env.rt.syscall(pid, "filesystem.write", { path: "leak.txt", content: "S3CRET" }),
    "EPERM",
  );
  assert.equal(await exists(join(env.ws, "leak.txt")), false);
  const ledger = await env.rt.kernel.store.listEffects();
  assert.equal(ledger.filter((x) => x.resource === "shell:cp").length, 0);
});

/**
 * Whether no host process whose command line holds `marker` is alive (a
 * zombie waiting for init counts as gone) within 3 s: a SIGKILLed process
 * closes its files before its state says so. Pids printed inside the sandbox
 * are its own namespace's, so processes are found by a unique argument.
 */
async function noneAlive(marker: string): Promise<boolean> {
  for (const until = Date.now() + 3000; Date.now() < until;) {
    let alive = false;
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        if (!Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(marker)) continue;
        const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
        if (!stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) alive = true;
      } catch { /* gone */ }
    }
    if (!alive) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

Deno.test("shell: background children die with the command and cannot hold the call open", async () => {
  const marker = `30.${Math.floor(Math.random() * 1e6)}`;
  await using env = await makeEnv({ files: { "bg.sh": `sleep ${marker} &\necho started\n` } });
  const pid = await launch(env, [sh("bash"), fsCap("*", "read")], {
    policy: { shell: "always_allow" },
  });
  const t0 = performance.now();
  const r = await run(env, pid, ["bash", "bg.sh"], { timeout_ms: 20_000 });
  // The background sleep kept stdout open: the call used to last its 30 s.
  assert.ok(performance.now() - t0 < 10_000, "returned once the script ended");
  assert.equal(r.code, 0);
  assert.equal(r.timed_out, false);
  assert.equal(r.stdout, "started\n");
  assert.equal(await noneAlive(`sleep\u0000${marker}`), true, "the background child was killed");
});

Deno.test("shell: a timeout kills the command's whole process group", async () => {
  const marker = `31.${Math.floor(Math.random() * 1e6)}`;
  await using env = await makeEnv({
    files: { "tree.sh": `sleep ${marker} &\nwait\n` },
  });
  const pid = await launch(env, [sh("bash"), fsCap("*", "read")], {
    policy: { shell: "always_allow" },
  });
  const t0 = performance.now();
  const r = await run(env, pid, ["bash", "tree.sh"], { timeout_ms: 500 });
  assert.ok(performance.now() - t0 < 10_000);
  assert.equal(r.timed_out, true);
  assert.equal(await noneAlive(`sleep\u0000${marker}`), true, "the grandchild was killed too");
});

Deno.test("shell: an executable not on the fixed PATH is ENOENT", async () => {
  await using env = await makeEnv();
  const pid = await launch(env, [cap("shell:*", "execute")], { policy: { shell: "always_allow" } });
  const e = await rejectsCode(run(env, pid, ["no-such-program-xyz"]), "ENOENT");
  assert.match(e.message, /no-such-program-xyz/);
});

Deno.test("shell: git commands that keep uncommitted work are not on the destructive list", () => {
  for (
    const argv of [
      ["git", "checkout", "-b", "feature"],
      ["git", "checkout", "main"],
      ["git", "restore", "--staged", "tracked.txt"],
      ["git", "switch", "main"],
      ["git", "stash", "list"],
      ["git", "status"],
    ]
  ) {
    assert.equal(destructiveReason(argv), null, argv.join(" "));
  }
});

Deno.test("shell: ln -s checks a relative target from the link's directory, not the cwd", async () => {
  await using env = await makeEnv({ files: { "src/app.py": "APP", "reports/.keep": "" } });
  await Deno.writeTextFile(join(env.root, "outside.txt"), "OUT");
  const pid = await launch(env, [
    sh("ln"),
    sh("cat"),
    fsCap("*", "read"),
    fsCap("reports/*", "read", "write"),
    fsCap("reports", "read", "write"),
  ], { policy: { shell: "always_allow" } });
  // ../src/app.py from reports/ is src/app.py: readable, so the link is made.
  const made = await run(env, pid, ["ln", "-s", "../src/app.py", "reports/app.py"]) as {
    code: number;
  };
  assert.equal(made.code, 0);
  assert.equal(await Deno.readLink(join(env.ws, "reports/app.py")), "../src/app.py");
  const cat = await run(env, pid, ["cat", "reports/app.py"]) as { stdout: string };
  assert.equal(cat.stdout, "APP");
  // ../../outside.txt from reports/ leaves the workspace: refused, no link made.
  await rejectsCode(run(env, pid, ["ln", "-s", "../../outside.txt", "reports/out.txt"]), "EPERM");
  assert.equal(await exists(join(env.ws, "reports/out.txt")), false);
  // Without -s the operands are paths from the cwd, as before.
  await rejectsCode(run(env, pid, ["ln", "../outside.txt", "reports/hard.txt"]), "EPERM");
});

Deno.test("shell: ln -s follows the link's directory as the kernel will: a .. after a symlinked directory climbs from where it leads", async () => {
  await using env = await makeEnv({ files: { "pub/a/b/.keep": "", ".env": "API_KEY=sk-1" } });
  const pid = await launch(env, [
    sh("ln"),
    fsCap("pub/*", "read", "write", "delete"),
    fsCap("pub", "read", "write"),
    { ...fsCap(".env", "read", "write", "delete"), effect: "deny" },
  ], { policy: { shell: "always_allow" } });
  // pub/a/b/up -> .. (that is pub/a): allowed, it points inside pub.
  await run(env, pid, ["ln", "-s", "..", "pub/a/b/up"]);
  await run(env, pid, ["ln", "-s", "..", "pub/a/b/up/up"]);
  // From pub/a/b/up/up (really pub), ../.env is the workspace's .env: a DENY'd target.
  // Lexically (pub/a/b/up/up/../.env = pub/a/b/up/.env) it looked like a harmless new path.
  await rejectsCode(run(env, pid, ["ln", "-sfn", "../.env", "pub/a/b/up/up/f.txt"]), "EPERM");
  assert.equal(await exists(join(env.ws, "pub/f.txt")), false);
  await rejectsCode(run(env, pid, ["ln", "-s", "../../.env", "pub/a/b/up/l"]), "EPERM");
  assert.equal(await exists(join(env.ws, "pub/a/l")), false);
});
