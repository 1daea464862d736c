/**
 * Attack-first tests for the OS wall around shell.run: every command runs
 * under bubblewrap with a mount namespace derived from the process's
 * capabilities at the moment of the call. Each attack here succeeded when a
 * granted (or human-approved) command ran with the runtime's own OS
 * permissions; the controls show granted work still gets done.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cap,
  capRecord,
  type Env,
  launch,
  libos,
  liveWith,
  makeEnv,
  rejectsCode,
  storeBytes,
} from "./_helpers.ts";
import { createApp } from "../server/app.ts";
import { HostShell } from "../runtime/providers/host.ts";
import { LibosError } from "../runtime/errors.ts";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";
import type { HumanAnswer, ShellRunOptions, ShellSandbox } from "../runtime/providers/types.ts";
import {
  checkedCommand,
  type CommandLimits,
  MOUNT_CHECK_FAILED,
  planSandbox,
  SANDBOX_SHM_BYTES,
  SANDBOX_TMP_BYTES,
  type ShellView,
} from "../runtime/sandbox/bwrap.ts";
import { deriveGrants } from "../runtime/sandbox/flags.ts";
import { commandLimitKinds } from "../runtime/sandbox/cgroups.ts";
import { SHELL_LIMITS } from "../primitives/shell.ts";
import type { CapabilitySpec } from "../runtime/types.ts";

interface Change {
  path: string;
  change: "created" | "changed" | "deleted";
  kind: string;
  size: number | null;
  sha256: string | null;
  label: string | null;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timed_out: boolean;
  truncated: boolean;
  writes: Change[];
  writes_complete: boolean | null;
}

const SECRET = "TOKEN=SECRET-4711";
const OUTSIDE = "OUTSIDE-CONTENT-0815";
const ASKED = "ASKED-CONTENT-2323";

function sh(exe: string): CapabilitySpec {
  return cap(`shell:${exe}`, "execute");
}

function fsCap(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return cap(`filesystem:workspace:${path}`, ...rights);
}

function deny(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return { ...fsCap(path, ...rights), effect: "deny" };
}

function ask(path: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return { ...fsCap(path, ...rights), effect: "ask" };
}

/** A human who approves every ASK once (an approval is consent, never authority). */
function approver(n = 64): ScriptedHuman {
  return new ScriptedHuman(Array<HumanAnswer>(n).fill("allow_once"));
}

function run(env: Env, pid: number, argv: string[], extra: Record<string, unknown> = {}) {
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

/** The issue's new-user image: read src/*, read+write out/*, DENY .env, ASK asked.txt. */
const USER_CAPS: CapabilitySpec[] = [
  // Listing `.`, `src` and `out` themselves (argv naming a directory needs read on it).
  fsCap(".", "read"),
  fsCap("src", "read"),
  fsCap("out", "read"),
  fsCap("src/*", "read"),
  fsCap("out/*", "read", "write"),
  deny(".env", "read", "write", "delete"),
  ask("asked.txt", "read"),
];

const USER_FILES = {
  "src/a.txt": "alpha\nbeta\n",
  "out/old.txt": "old\n",
  ".env": SECRET,
  "asked.txt": ASKED,
  "rest/private.txt": "not granted\n",
};

/** A workspace with the issue's files and a file outside the workspace. */
async function userEnv(human?: ScriptedHuman): Promise<Env & { outside: string }> {
  const env = await makeEnv({ files: USER_FILES, providers: human ? { human } : undefined });
  const outside = join(env.root, "outside.txt");
  await Deno.writeTextFile(outside, OUTSIDE);
  return Object.assign(env, { outside });
}

/** Everything the store keeps (rows through the API and the raw files), for leak scans. */
async function storeText(env: Env): Promise<string> {
  const s = env.rt.kernel.store;
  const all = JSON.stringify([await s.listAudit(), await s.listEvents(), await s.listEffects()]);
  return all +
    await storeBytes(env.storePath, ["", "-wal", "-shm", "-journal", "-auditlog", "-steps"]);
}

/**
 * Options for running `HostShell` directly (no runtime): one ALLOW capability
 * on `resource` derived for the workspace `ws`, the shell's limits, `view` and
 * `limits` overriding.
 */
function directOptions(
  ws: string,
  resource: string,
  rights: CapabilitySpec["rights"],
  over: { view?: Partial<ShellView>; limits?: Partial<CommandLimits>; timeoutMs?: number } = {},
): ShellRunOptions & { sandbox: ShellSandbox } {
  const timeoutMs = over.timeoutMs ?? 5000;
  const grants = deriveGrants(
    [capRecord({ cap_id: "c1", resource, rights, created_at: new Date().toISOString() })],
    ws,
    Date.now(),
    Date.now() + timeoutMs,
  );
  return {
    cwd: ws,
    timeoutMs,
    maxOutputBytes: 1 << 20,
    sandbox: {
      view: { workspace: ws, grants, hide: [], readOnly: [], callRead: [], ...over.view },
      limits: { cpuSeconds: Math.ceil(timeoutMs / 1000) + 1, ...SHELL_LIMITS, ...over.limits },
      maxWritableEntries: 1000,
    },
  };
}

/** Runs one sandboxed command through `HostShell` in an OS process of its own. */
const SHELL_RUN_FIXTURE = new URL("./fixtures/shell_run.ts", import.meta.url).pathname;

/** A script starting `tries` background sleeps, printing the count as each starts. */
function bombScript(tries: number, marker: string): string {
  // dash gives up at the first fork that fails.
  return `i=0\nwhile [ $i -lt ${tries} ]; do sleep ${marker} & i=$((i+1)); echo $i; done\n`;
}

/** The cgroups of shell commands that exist now, anywhere under /sys/fs/cgroup. */
function commandGroups(): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number) => {
    try {
      for (const e of Deno.readDirSync(dir)) {
        if (!e.isDirectory) continue;
        if (e.name.startsWith("libos-cmd-")) out.push(`${dir}/${e.name}`);
        else if (depth < 4) walk(`${dir}/${e.name}`, depth + 1);
      }
    } catch { /* not there */ }
  };
  walk("/sys/fs/cgroup", 0);
  return out;
}

/** Whether no host process carries `marker` within 3 s (a SIGKILL takes a moment to land). */
async function noneAlive(marker: string): Promise<boolean> {
  for (const until = Date.now() + 3000; Date.now() < until;) {
    if (liveWith(marker).length === 0) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

async function git(cwd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("git", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A repository with a local identity (`git -c` is refused by shell.run). */
async function repo(dir: string): Promise<void> {
  await git(dir, "init", "-q", "-b", "main");
  await git(dir, "config", "user.name", "t");
  await git(dir, "config", "user.email", "t@example.com");
  await git(dir, "add", "-A");
  await git(dir, "commit", "-q", "-m", "init");
}

// ---------------------------------------------------------------- writes without a capability

Deno.test("shell sandbox: cp, touch, mv and rm without a write capability change nothing", async () => {
  await using env = await userEnv();
  const pid = await launch(env, [...USER_CAPS, ...["cp", "touch", "mv", "rm"].map(sh)], {
    policy: { shell: "always_allow" },
  });
  const attempts = [
    ["cp", "src/a.txt", "src/b.txt"],
    ["touch", "src/new.txt"],
    ["mv", "src/a.txt", "src/moved.txt"],
    ["rm", "src/a.txt"],
    ["touch", "top.txt"],
    ["cp", "src/a.txt", "rest/copy.txt"],
  ];
  for (const argv of attempts) {
    const r = await run(env, pid, argv);
    assert.notEqual(r.code, 0, `${argv.join(" ")} must fail: ${r.stderr}`);
    assert.deepEqual(r.writes, [], argv.join(" "));
  }
  assert.equal(await Deno.readTextFile(join(env.ws, "src/a.txt")), "alpha\nbeta\n");
  for (const f of ["src/b.txt", "src/new.txt", "src/moved.txt", "top.txt", "rest/copy.txt"]) {
    assert.equal(await exists(join(env.ws, f)), false, f);
  }
});

Deno.test("shell sandbox: a file argv names, read-approved by a human under an ASK, is visible to that call only", async () => {
  const human = new ScriptedHuman(["allow_once"]);
  await using env = await userEnv(human);
  const pid = await launch(env, [...USER_CAPS, sh("cat"), sh("wc")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["cat", "asked.txt"]);
  assert.equal(human.asked.length, 1);
  assert.equal(human.asked[0].resource, "filesystem:workspace:asked.txt");
  assert.equal(r.stdout, ASKED);
  // Another call that does not name it (and was approved by no one) does not see it.
  const other = await run(env, pid, ["wc", "-c", "src/a.txt"]);
  assert.equal(other.code, 0);
  assert.equal(human.asked.length, 1);
});

Deno.test("shell sandbox: write without read binds nothing (a writable mount can be read)", async () => {
  await using env = await userEnv();
  const pid = await launch(env, [fsCap("drop/*", "write"), fsCap("src/*", "read"), sh("cp")], {
    policy: { shell: "always_allow" },
  });
  await Deno.mkdir(join(env.ws, "drop"));
  await Deno.writeTextFile(join(env.ws, "drop/inbox.txt"), "someone else's\n");
  const r = await run(env, pid, ["cp", "src/a.txt", "drop/a.txt"]);
  assert.notEqual(r.code, 0);
  assert.equal(await exists(join(env.ws, "drop/a.txt")), false);
});

Deno.test("shell sandbox: sed's e command runs inside the sandbox and writes nothing", async () => {
  await using env = await userEnv();
  const pid = await launch(env, [...USER_CAPS, sh("sed")], { policy: { shell: "always_allow" } });
  const pwned = join(env.root, "sed-pwned");
  for (const script of [`1e touch ${pwned}`, "1e touch src/sed-made", "1e cat .env"]) {
    const r = await run(env, pid, ["sed", "-n", script, "src/a.txt"]);
    assert.ok(!r.stdout.includes(SECRET), script);
  }
  assert.equal(await exists(pwned), false);
  assert.equal(await exists(join(env.ws, "src/sed-made")), false);
});

Deno.test("shell sandbox: tar --to-command runs its program inside the sandbox", async () => {
  await using env = await userEnv();
  await new Deno.Command("tar", { args: ["-cf", "src/a.tar", "-C", "src", "a.txt"], cwd: env.ws })
    .output();
  const pid = await launch(env, [...USER_CAPS, sh("tar")], { policy: { shell: "always_allow" } });
  const pwned = join(env.root, "tar-pwned");
  for (const to of [`tee ${pwned}`, "tee src/tar-made"]) {
    await run(env, pid, ["tar", "-xf", "src/a.tar", `--to-command=${to}`]);
  }
  assert.equal(await exists(pwned), false);
  assert.equal(await exists(join(env.ws, "src/tar-made")), false);
});

Deno.test("shell sandbox: find -fprint cannot write where the process may not", async () => {
  await using env = await userEnv();
  const pid = await launch(env, [...USER_CAPS, sh("find")], { policy: { shell: "always_allow" } });
  const r = await run(env, pid, ["find", "src", "-fprint", "src/list.txt"]);
  assert.notEqual(r.code, 0);
  assert.equal(await exists(join(env.ws, "src/list.txt")), false);
  // Into a writable directory the same command works, and lists only what is visible.
  const ok = await run(env, pid, ["find", ".", "-fprint", "out/list.txt"]);
  assert.equal(ok.code, 0, ok.stderr);
  const listed = (await Deno.readTextFile(join(env.ws, "out/list.txt"))).split("\n");
  assert.ok(listed.includes("./src/a.txt"));
  assert.ok(!listed.includes("./rest/private.txt"), "an ungranted file is not visible");
  assert.ok(!listed.includes("./asked.txt"), "an ASK'd file is not visible");
});

// ---------------------------------------------------------------- approved interpreters

const INTERPRETERS: {
  name: string;
  argv: (code: string) => string[];
  code: Record<string, string>;
}[] = [
  {
    name: "python3",
    argv: (c) => ["python3", "-c", c],
    code: {
      writeOutside: "open({OUT!r}, 'w').write('x')",
      readOutside: "print(open('../outside.txt').read())",
      readDenied: "print(open('.env').read())",
      readAsked: "print(open('asked.txt').read())",
      list: "import os; print(sorted(os.listdir('.')))",
      writeReadOnly: "open('src/py.txt', 'w').write('x')",
    },
  },
  {
    name: "node",
    argv: (c) => ["node", "-e", c],
    code: {
      writeOutside: "require('fs').writeFileSync({OUT}, 'x')",
      readOutside: "console.log(require('fs').readFileSync('../outside.txt', 'utf8'))",
      readDenied: "console.log(require('fs').readFileSync('.env', 'utf8'))",
      readAsked: "console.log(require('fs').readFileSync('asked.txt', 'utf8'))",
      list: "console.log(require('fs').readdirSync('.').sort().join(' '))",
      writeReadOnly: "require('fs').writeFileSync('src/node.txt', 'x')",
    },
  },
  {
    name: "sh",
    argv: (c) => ["sh", "-c", c],
    code: {
      writeOutside: "echo x > {OUT}",
      readOutside: "cat ../outside.txt",
      readDenied: "cat .env",
      readAsked: "cat asked.txt",
      list: "ls -A",
      writeReadOnly: "echo x > src/sh.txt",
    },
  },
];

/** Every attack of one interpreter, each approved by the human; none may get through. */
async function approvedInterpreterIsConfined(name: string): Promise<void> {
  const it = INTERPRETERS.find((i) => i.name === name)!;
  const human = approver();
  await using env = await userEnv(human);
  const pid = await launch(env, [...USER_CAPS, sh(it.name)], {
    policy: { shell: "always_allow" },
  });
  const out = join(env.root, `${it.name}-pwned`);
  const code = (k: string) =>
    it.code[k].replace("{OUT!r}", `'${out}'`).replace(
      "{OUT}",
      it.name === "sh" ? out : `'${out}'`,
    );
  const results: Record<string, RunResult> = {};
  for (const k of Object.keys(it.code)) results[k] = await run(env, pid, it.argv(code(k)));
  // Every one of them was put to the human (inline code), and approved.
  assert.equal(human.asked.length, Object.keys(it.code).length);
  assert.equal(await exists(out), false, "wrote outside the workspace");
  assert.equal(
    await exists(join(env.ws, `src/${it.name === "python3" ? "py" : it.name}.txt`)),
    false,
  );
  for (const k of ["readOutside", "readDenied", "readAsked"]) {
    assert.notEqual(results[k].code, 0, `${k}: ${results[k].stdout}`);
  }
  const printed = Object.values(results).map((r) => r.stdout + r.stderr).join("\n");
  for (const leak of [SECRET, OUTSIDE, ASKED]) assert.ok(!printed.includes(leak), leak);
  // The rest of the workspace is not there: only what a capability binds.
  const listing = results.list.stdout;
  assert.equal(results.list.code, 0, results.list.stderr);
  for (const name of ["src", "out"]) assert.ok(listing.includes(name), listing);
  for (const name of ["rest", "asked.txt", ".env"]) assert.ok(!listing.includes(name), listing);
  const stored = await storeText(env);
  for (const leak of [SECRET, OUTSIDE, ASKED]) {
    assert.ok(!stored.includes(leak), `store: ${leak}`);
  }
}

Deno.test("shell sandbox: an approved python3 cannot write or read outside its capabilities", () =>
  approvedInterpreterIsConfined("python3"));

Deno.test("shell sandbox: an approved node cannot write or read outside its capabilities", () =>
  approvedInterpreterIsConfined("node"));

Deno.test("shell sandbox: an approved sh cannot write or read outside its capabilities", () =>
  approvedInterpreterIsConfined("sh"));

Deno.test("shell sandbox: a masked file cannot be unmounted, and the name is all that shows", async () => {
  await using env = await userEnv(approver());
  // Read and write on the whole workspace except the DENY'd .env.
  const pid = await launch(env, [
    fsCap("*", "read", "write"),
    deny(".env", "read", "write"),
    sh("sh"),
  ], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, [
    "sh",
    "-c",
    "umount .env; umount -l .env; cat .env; echo x > .env; cat .env",
  ]);
  assert.ok(!r.stdout.includes(SECRET), r.stdout);
  assert.equal(await Deno.readTextFile(join(env.ws, ".env")), SECRET);
  assert.ok(!(await storeText(env)).includes(SECRET));
});

// ---------------------------------------------------------------- indirection

Deno.test("shell sandbox: a hook a granted git runs stays inside the sandbox", async () => {
  await using env = await userEnv();
  const pwned = join(env.root, "hook-pwned");
  await repo(env.ws);
  await Deno.writeTextFile(
    join(env.ws, ".git/hooks/pre-commit"),
    `#!/bin/sh\necho hooked > ${pwned}\ncat ${env.outside} > out/stolen.txt\ncat .env >> out/stolen.txt\nexit 0\n`,
  );
  await Deno.chmod(join(env.ws, ".git/hooks/pre-commit"), 0o755);
  const pid = await launch(
    env,
    [fsCap("*", "read", "write"), deny(".env", "read", "write"), sh("git")],
    { policy: { shell: "always_allow" } },
  );
  const r = await run(env, pid, ["git", "commit", "-q", "--allow-empty", "-m", "second"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await exists(pwned), false, "the hook wrote outside the workspace");
  const stolen = await Deno.readTextFile(join(env.ws, "out/stolen.txt"));
  assert.ok(!stolen.includes(OUTSIDE) && !stolen.includes(SECRET), stolen);
  // The commit itself happened, and its writes are on record.
  assert.ok(r.writes.some((w) => w.path === "out/stolen.txt" && w.change === "created"));
  assert.ok(r.writes.some((w) => w.path.startsWith(".git/")));
});

Deno.test("shell sandbox: commands have no network, not even loopback", async () => {
  let hits = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    hits++;
    return new Response("hello from the host");
  });
  try {
    const port = server.addr.port;
    await using env = await userEnv(approver());
    const pid = await launch(env, [...USER_CAPS, sh("python3"), sh("git")], {
      policy: { shell: "always_allow" },
    });
    const py = await run(env, pid, [
      "python3",
      "-c",
      `import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:${port}/', timeout=3).read())`,
    ]);
    assert.notEqual(py.code, 0);
    assert.ok(!py.stdout.includes("hello from the host"));
    // A granted program without inline code, too.
    const g = await run(env, pid, ["git", "ls-remote", `http://127.0.0.1:${port}/repo.git`]);
    assert.notEqual(g.code, 0);
    assert.equal(hits, 0, "the loopback server was reached");
  } finally {
    await server.shutdown();
  }
});

Deno.test("shell sandbox: a setsid or double-forked child does not outlive the call", async () => {
  const marker = `30.${Math.floor(Math.random() * 1e6)}`;
  await using env = await makeEnv({
    files: {
      // Output elsewhere, so no child holds the call's pipes open.
      "bg.sh": [
        `setsid -f sleep ${marker}1 >/dev/null 2>&1`,
        `( sleep ${marker}2 >/dev/null 2>&1 & )`,
        `nohup sleep ${marker}3 >/dev/null 2>&1 &`,
        "echo started",
      ].join("\n"),
    },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("bash")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["bash", "bg.sh"], { timeout_ms: 20_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "started\n");
  assert.equal(await noneAlive(`sleep\u0000${marker}`), true, "a child outlived the call");
});

Deno.test("shell sandbox: a timeout ends every process the command started", async () => {
  const marker = `31.${Math.floor(Math.random() * 1e6)}`;
  await using env = await makeEnv({
    files: { "tree.sh": `setsid -f sleep ${marker} >/dev/null 2>&1\nsleep ${marker}9 &\nwait\n` },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("bash")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["bash", "tree.sh"], { timeout_ms: 500 });
  assert.equal(r.timed_out, true);
  assert.equal(await noneAlive(`sleep\u0000${marker}`), true, "a process survived the timeout");
});

Deno.test("shell sandbox: a fork bomb stops at the command's process limit", async () => {
  const marker = `32.${Math.floor(Math.random() * 1e6)}`;
  const tries = SHELL_LIMITS.processes + 150;
  await using env = await makeEnv({
    files: {
      "bomb.sh": bombScript(tries, marker),
    },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("sh")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["sh", "bomb.sh"], { timeout_ms: 20_000 });
  const started = Number(r.stdout.trim().split("\n").at(-1));
  assert.ok(
    started < SHELL_LIMITS.processes,
    `${started} processes started (limit ${SHELL_LIMITS.processes})`,
  );
  // The limit stopped it, not something else: all but the sandbox's own few started.
  assert.ok(started > SHELL_LIMITS.processes - 10, `only ${started} started`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /fork/i);
  assert.equal(await noneAlive(`sleep\u0000${marker}`), true, "a process outlived the call");
  // The ledger says what capped it (on this host, never "none": the bomb above proves a cap).
  const effect = (await env.rt.kernel.store.listEffects()).find((e) => e.resource === "shell:sh");
  const outcome = effect?.outcome as { limits?: { processes: string } } | undefined;
  assert.equal(outcome?.limits?.processes, commandLimitKinds().processes);
});

Deno.test("shell sandbox: a runtime that is not root caps a fork bomb with RLIMIT_NPROC, beside its user's other processes", async () => {
  // Run as root, this test starts the shell provider as an unprivileged user
  // (who cannot make pids cgroups); a runtime that is not root is that case already.
  if (Deno.uid() !== 0) return;
  const NOBODY = "65534";
  const marker = `33.${Math.floor(Math.random() * 1e6)}`;
  const root = await Deno.makeTempDir({ prefix: "libos-nproc-" });
  const asNobody = (cmd: string, args: string[]) =>
    new Deno.Command("setpriv", {
      args: [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", cmd, ...args],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", HOME: join(root, "home"), DENO_DIR: join(root, "home") },
      stdout: "piped",
      stderr: "piped",
    }).output();
  try {
    await Deno.chmod(root, 0o755);
    for (const d of ["ws", "home"]) {
      await Deno.mkdir(join(root, d));
      await Deno.chown(join(root, d), Number(NOBODY), Number(NOBODY));
    }
    // The user already runs 100 processes: RLIMIT_NPROC counts them too.
    const others = await asNobody("sh", [
      "-c",
      `for i in $(seq 100); do sleep ${marker} >/dev/null 2>&1 & done`,
    ]);
    assert.equal(others.code, 0);
    const out = await asNobody(Deno.execPath(), [
      "run",
      "-A",
      "--no-check",
      SHELL_RUN_FIXTURE,
      join(root, "ws"),
      bombScript(SHELL_LIMITS.processes + 150, "30"),
    ]);
    const dec = new TextDecoder();
    assert.equal(out.code, 0, `the fixture failed as uid ${NOBODY}: ${dec.decode(out.stderr)}`);
    const r = JSON.parse(dec.decode(out.stdout).trim().split("\n").at(-1)!);
    assert.equal(r.limits.processes, "rlimit");
    const started = Number(r.stdout.trim().split("\n").at(-1));
    assert.ok(started < SHELL_LIMITS.processes, `${started} started`);
    // The user's other 100 did not eat the command's share.
    assert.ok(started > SHELL_LIMITS.processes - 10, `only ${started} started: ${r.stderr}`);
    assert.match(r.stderr, /fork/i);
  } finally {
    for (const pid of liveWith(`sleep\u0000${marker}`)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("shell sandbox: what a runtime killed mid-command left (its cgroups, an orphaned command) is ended by the next runtime", async () => {
  const kinds = commandLimitKinds();
  if (kinds.processes !== "cgroup" && kinds.memory !== "cgroup") return; // nothing to leave
  const ws = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-orphan-" }));
  const runner = (script: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", SHELL_RUN_FIXTURE, ws, script],
      stdout: "piped",
      stderr: "piped",
    });
  try {
    const marker = `34.${Math.floor(Math.random() * 1e6)}`;
    const crashed = runner(`sleep ${marker}\n`).spawn();
    const mine = () => commandGroups().filter((g) => g.includes(`libos-cmd-${crashed.pid}-`));
    // Killed once its command's groups exist: early, bwrap may not have armed
    // --die-with-parent yet, and the command then runs on, orphaned.
    for (const until = Date.now() + 10_000; mine().length === 0 && Date.now() < until;) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(mine().length > 0, "the runtime made no cgroup for its command");
    crashed.kill("SIGKILL");
    await crashed.status;
    await crashed.stdout.cancel();
    await crashed.stderr.cancel();
    assert.ok(mine().length > 0, "nothing was left to clean up");
    const next = await runner("echo ok\n").output();
    assert.equal(next.code, 0, new TextDecoder().decode(next.stderr));
    assert.deepEqual(mine(), []);
    assert.deepEqual(liveWith(`sleep\u0000${marker}`), [], "the crashed runtime's command runs on");
  } finally {
    await Deno.remove(ws, { recursive: true });
  }
});

Deno.test("shell sandbox: a command ends at its deadline by the sandbox's own timer while its runtime is stopped", async () => {
  const ws = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-deadline-" }));
  const marker = `35.${Math.floor(Math.random() * 1e6)}`;
  // The runtime's own timeout is 20 s; the command's deadline 2.5 s from its start.
  const stalled = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", SHELL_RUN_FIXTURE, ws, `sleep ${marker}\n`, "2500"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    for (const until = Date.now() + 10_000; Date.now() < until;) {
      if (liveWith(`sleep\u0000${marker}`).length > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(liveWith(`sleep\u0000${marker}`).length > 0, "the command never started");
    // The runtime stalls (a stopped worker, say): none of its timers fire.
    Deno.kill(stalled.pid, "SIGSTOP");
    const started = Date.now();
    for (const until = started + 6000; Date.now() < until;) {
      if (liveWith(`sleep\u0000${marker}`).length === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.deepEqual(liveWith(`sleep\u0000${marker}`), [], "the command outlived its deadline");
    // Its runtime, going on, sees it as timed out.
    Deno.kill(stalled.pid, "SIGCONT");
    const text = new TextDecoder().decode((await stalled.output()).stdout);
    const out = JSON.parse(text.trim().split("\n").at(-1)!);
    assert.equal(out.code, 137);
  } finally {
    try {
      stalled.kill("SIGKILL");
    } catch { /* ended */ }
    await Deno.remove(ws, { recursive: true });
  }
});

Deno.test("shell sandbox: a command whose deadline passed before it started runs nothing", async () => {
  const ws = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-deadline-" }));
  try {
    const shell = new HostShell();
    const options = directOptions(ws, "filesystem:workspace:*", ["read", "write"]);
    const late = await shell.run(["touch", "made"], { ...options, deadline: Date.now() - 1 });
    assert.equal(late.code, 125);
    assert.match(late.stderr, /deadline passed before it started; nothing ran/);
    assert.equal(await exists(join(ws, "made")), false);
    assert.deepEqual(late.writes, []);
    // In time, the same command runs (and the deadline changes nothing else).
    const r = await shell.run(["touch", "made"], { ...options, deadline: Date.now() + 10_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.timed_out, false);
    assert.equal(await exists(join(ws, "made")), true);
    // Unsandboxed (the unsafe policy), the deadline holds too.
    const bare = new HostShell({ bwrap: null });
    const free = { cwd: ws, timeoutMs: 20_000, maxOutputBytes: 1024, sandbox: null };
    await rejectsCode(
      bare.run(["touch", "late"], { ...free, deadline: Date.now() - 1 }),
      "ETIMEDOUT",
    );
    assert.equal(await exists(join(ws, "late")), false);
    const t0 = Date.now();
    const cut = await bare.run(["sleep", "30"], { ...free, deadline: Date.now() + 1200 });
    assert.equal(cut.timed_out, true);
    assert.ok(Date.now() - t0 < 10_000, `ran ${Date.now() - t0} ms`);
  } finally {
    await Deno.remove(ws, { recursive: true });
  }
});

Deno.test("shell sandbox: an aborted call kills its command at once and fails with the abort's reason", async () => {
  const ws = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-abort-" }));
  const marker = `36.${Math.floor(Math.random() * 1e6)}`;
  try {
    const shell = new HostShell();
    const stop = new AbortController();
    const options = directOptions(ws, "filesystem:workspace:*", ["read"], { timeoutMs: 20_000 });
    const running = shell.run(["sleep", marker], { ...options, signal: stop.signal });
    for (const until = Date.now() + 10_000; Date.now() < until;) {
      if (liveWith(`sleep\u0000${marker}`).length > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    stop.abort(new LibosError("EFENCED", "the lease was lost"));
    const e = await rejectsCode(running, "EFENCED");
    assert.match(e.message, /lease was lost/);
    assert.equal(await noneAlive(`sleep\u0000${marker}`), true);
    // Aborted before it starts: nothing runs.
    await rejectsCode(shell.run(["touch", "made"], { ...options, signal: stop.signal }), "EFENCED");
    assert.equal(await exists(join(ws, "made")), false);
  } finally {
    await Deno.remove(ws, { recursive: true });
  }
});

Deno.test("shell sandbox: each command's cgroups are gone when the call returns", async () => {
  const kinds = commandLimitKinds();
  if (kinds.processes !== "cgroup" && kinds.memory !== "cgroup") return; // nothing to clean up
  await using env = await makeEnv({
    files: { "a.txt": "a\n", "bg.sh": "sleep 30 &\nsleep 30 &\ncat a.txt\n" },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("sh")], {
    policy: { shell: "always_allow" },
  });
  const before = commandGroups();
  const r = await run(env, pid, ["sh", "bg.sh"], { timeout_ms: 20_000 });
  assert.equal(r.stdout, "a\n");
  assert.deepEqual(commandGroups().filter((g) => !before.includes(g)), []);
});

Deno.test("shell sandbox: /proc/1/root and /proc/self/cwd lead nowhere outside", async () => {
  await using env = await userEnv(approver());
  const pid = await launch(env, [...USER_CAPS, sh("sh")], { policy: { shell: "always_allow" } });
  const tricks = [
    `cat /proc/1/root${env.outside}`,
    // (`..` spelled by printf: the argv checks refuse an argument containing `..` outright.)
    'up=$(printf "%s%s" . .); cat /proc/self/cwd/$up/outside.txt',
    `cat /proc/self/root${env.outside}`,
    `cat /proc/${Deno.pid}/root${env.outside}`,
    `cat /proc/${Deno.pid}/cwd/README.md`,
    "cat /proc/1/cwd/.env",
    `ls /proc/1/root${env.root}`,
  ];
  for (const t of tricks) {
    const r = await run(env, pid, ["sh", "-c", t]);
    assert.ok(!r.stdout.includes(OUTSIDE) && !r.stdout.includes(SECRET), `${t}: ${r.stdout}`);
    assert.ok(!r.stdout.includes("outside.txt"), `${t}: ${r.stdout}`);
  }
  // The runtime's own process is not even visible: a new pid namespace.
  const ps = await run(env, pid, ["sh", "-c", "ls /proc | grep -c '^[0-9]'"]);
  assert.ok(Number(ps.stdout.trim()) < 10, ps.stdout);
});

Deno.test("shell sandbox: kernel settings under /proc/sys are read-only to a command", async () => {
  // The command's uid is the runtime's (root here) in a user namespace: without a read-only
  // /proc it could write global sysctls (core_pattern runs a program as host root).
  // `test -w` asks the kernel without writing anything.
  await using env = await userEnv(approver());
  const pid = await launch(env, [...USER_CAPS, sh("sh")], { policy: { shell: "always_allow" } });
  const files = [
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/vm/drop_caches",
    "/proc/sys/fs/protected_symlinks",
    "/proc/sysrq-trigger",
  ];
  const r = await run(env, pid, [
    "sh",
    "-c",
    `for f in ${
      files.join(" ")
    }; do [ -w "$f" ] && echo "writable $f"; done; cat /proc/sys/kernel/ostype`,
  ]);
  assert.ok(!r.stdout.includes("writable"), r.stdout);
  assert.match(r.stdout, /Linux/, "procfs is there, readable");
});

Deno.test("shell sandbox: a command cannot make a set-user-ID or set-group-ID file", async () => {
  // A command's uid is the runtime's (root here): a setuid file it left in the workspace
  // would be a setuid-root program on the host for whoever runs it.
  await using env = await userEnv(approver());
  const pid = await launch(env, [...USER_CAPS, sh("chmod"), sh("python3"), sh("sh")], {
    policy: { shell: "always_allow" },
  });
  await Deno.writeTextFile(join(env.ws, "out/t"), "#!/bin/sh\necho hi\n");
  await Deno.chmod(join(env.ws, "out/t"), 0o755);
  for (const mode of ["u+s", "g+s", "4755", "6755"]) {
    const r = await run(env, pid, ["chmod", mode, "out/t"]);
    assert.notEqual(r.code, 0, `chmod ${mode}: ${r.stderr}`);
  }
  await run(env, pid, [
    "python3",
    "-c",
    "import os\nfor p, m in (('out/u', 0o4755), ('out/v', 0o2755)):\n" +
    "  try: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, m))\n  except OSError as e: print(e)\n" +
    "try: os.chmod('out/t', 0o4755)\nexcept OSError as e: print(e)",
  ]);
  await run(env, pid, [
    "sh",
    "-c",
    "install -m 4755 out/t out/w; cp -p /usr/bin/passwd out/x",
  ]);
  for await (const e of Deno.readDir(join(env.ws, "out"))) {
    const mode = (await Deno.lstat(join(env.ws, "out", e.name))).mode! & 0o7777;
    assert.equal(mode & 0o6000, 0, `out/${e.name} has mode ${mode.toString(8)}`);
  }
  // Ordinary modes still work.
  assert.equal((await run(env, pid, ["chmod", "750", "out/t"])).code, 0);
  assert.equal((await Deno.lstat(join(env.ws, "out/t"))).mode! & 0o7777, 0o750);
});

Deno.test("shell sandbox: the kernel keyrings of the runtime's user are out of reach", async () => {
  // Same uid as the runtime, so without a filter a command would share its user keyrings.
  await using env = await userEnv(approver());
  const pid = await launch(env, [...USER_CAPS, sh("python3")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, [
    "python3",
    "-c",
    "import ctypes, os, platform\n" +
    "nr = {'x86_64': 250, 'aarch64': 219}[platform.machine()]\n" +
    "libc = ctypes.CDLL(None, use_errno=True)\n" +
    "r = libc.syscall(nr, 0, -4, 0)\n" + // KEYCTL_GET_KEYRING_ID of the user keyring
    "print(r, os.strerror(ctypes.get_errno()) if r < 0 else 'keyring reached')",
  ]);
  assert.match(r.stdout, /^-1 Function not implemented/, r.stdout + r.stderr);
  // Nor are their names listed.
  const keys = await run(env, pid, [
    "python3",
    "-c",
    "try: print(open('/proc/keys').read())\nexcept OSError as e: print('refused', e)",
  ]);
  assert.ok(!keys.stdout.includes("_uid"), keys.stdout);
});

Deno.test("shell sandbox: symlinks in the workspace that point out lead nowhere", async () => {
  await using env = await userEnv();
  const outdir = join(env.root, "outdir");
  await Deno.mkdir(outdir);
  await Deno.writeTextFile(join(outdir, "f.txt"), OUTSIDE);
  await Deno.symlink(env.outside, join(env.ws, "src/link.txt"));
  await Deno.symlink(outdir, join(env.ws, "src/linkdir"));
  await Deno.symlink(join(env.ws, ".env"), join(env.ws, "src/env-link"));
  await Deno.symlink("/etc", join(env.ws, "src/etc"));
  const pid = await launch(env, [...USER_CAPS, sh("grep"), sh("cp")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, [
    "grep",
    "-R",
    "-e",
    "OUTSIDE",
    "-e",
    "TOKEN",
    "-e",
    "root:",
    "src",
  ]);
  assert.ok(!r.stdout.includes(OUTSIDE) && !r.stdout.includes(SECRET), r.stdout);
  // A link to /etc shows the system entries every command sees, never the secrets.
  for (const f of ["shadow", "gshadow", "sudoers", "ssh/"]) {
    assert.ok(!r.stdout.includes(`src/etc/${f}`), `/etc/${f} through a link`);
  }
  // Copying through the links into a writable directory copies nothing from outside.
  await run(env, pid, ["cp", "-rL", "src", "out/copy"]);
  const copied = await run(env, pid, ["grep", "-R", "-e", "OUTSIDE", "-e", "TOKEN", "out"]);
  assert.equal(copied.stdout, "");
});

// ---------------------------------------------------------------- controls

Deno.test("shell sandbox: granted work still works (cp into a writable path, wc, grep, git status)", async () => {
  await using env = await userEnv();
  await repo(join(env.ws, "src"));
  const pid = await launch(env, [...USER_CAPS, ...["cp", "wc", "grep", "git", "ls"].map(sh)], {
    policy: { shell: "always_allow" },
  });
  const cp = await run(env, pid, ["cp", "src/a.txt", "out/a.txt"]);
  assert.equal(cp.code, 0, cp.stderr);
  assert.equal(await Deno.readTextFile(join(env.ws, "out/a.txt")), "alpha\nbeta\n");
  const wc = await run(env, pid, ["wc", "-l", "src/a.txt", "out/a.txt"]);
  assert.equal(wc.code, 0, wc.stderr);
  assert.match(wc.stdout, /4 total/);
  const grep = await run(env, pid, ["grep", "-rn", "beta", "src", "out"]);
  assert.equal(grep.code, 0, grep.stderr);
  assert.match(grep.stdout, /src\/a\.txt:2:beta/);
  await env.rt.syscall(pid, "process.chdir", { path: "src" });
  const status = await run(env, pid, ["git", "status", "--short", "--branch"]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /## main/);
  assert.deepEqual(status.writes, [], "git status in a read-only repository writes nothing");
});

// ---------------------------------------------------------------- the write audit

Deno.test("shell sandbox: what a command created, changed and deleted is audited with size and sha256", async () => {
  await using env = await userEnv();
  await Deno.writeTextFile(join(env.ws, "out/keep.txt"), "same\n");
  const pid = await launch(env, [...USER_CAPS, sh("sh"), sh("cp")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["cp", "src/a.txt", "out/new.txt"]);
  assert.equal(r.code, 0, r.stderr);
  const sha = (await import("../runtime/canonical.ts")).sha256;
  assert.deepEqual(r.writes, [
    {
      path: "out/new.txt",
      change: "created",
      kind: "file",
      size: 11,
      sha256: sha("alpha\nbeta\n"),
      label: "normal",
    },
  ]);
  // A shell script file, run by a granted sh without inline code.
  await Deno.writeTextFile(
    join(env.ws, "src/edit.sh"),
    "echo more >> out/old.txt\nrm out/new.txt\nmkdir out/d\necho hi > out/d/f\n",
  );
  const e = await run(env, pid, ["sh", "src/edit.sh"]);
  assert.equal(e.code, 0, e.stderr);
  const byPath = Object.fromEntries(e.writes.map((w) => [w.path, w]));
  assert.equal(byPath["out/old.txt"].change, "changed");
  assert.equal(byPath["out/old.txt"].sha256, sha("old\nmore\n"));
  assert.equal(byPath["out/new.txt"].change, "deleted");
  assert.equal(byPath["out/new.txt"].sha256, null);
  assert.equal(byPath["out/d"].change, "created");
  assert.equal(byPath["out/d"].kind, "dir");
  assert.equal(byPath["out/d/f"].sha256, sha("hi\n"));
  assert.equal(byPath["out/keep.txt"], undefined, "an untouched file is not listed");
  // The audit and the effect ledger both have them.
  const rows = await env.rt.kernel.store.listAudit({ action: "shell.wrote" });
  assert.equal(rows.length, 2);
  const listed = rows[1].input_refs as { total: number; changes: Change[] };
  assert.equal(listed.total, 4);
  assert.deepEqual(listed.changes.map((c) => c.path).sort(), [
    "out/d",
    "out/d/f",
    "out/new.txt",
    "out/old.txt",
  ]);
  const fx = (await env.rt.kernel.store.listEffects()).filter((x) => x.syscall === "shell.run");
  const outcome = fx.at(-1)!.outcome as { writes: { total: number; changes: Change[] } };
  assert.equal(outcome.writes.total, 4);
  assert.equal(outcome.writes.changes.find((c) => c.path === "out/old.txt")?.size, 9);
});

// ---------------------------------------------------------------- labels

Deno.test("shell sandbox: files labelled above normal are masked, so output never carries them", async () => {
  await using env = await makeEnv({
    files: {
      "notes.txt": "plain notes\n",
      "keys/id.txt": "SECRET-KEY-9999\n",
      "conf.txt": "CONF-7777\n",
    },
  });
  const pid = await launch(env, [fsCap("*", "read", "write"), sh("grep"), sh("cat")], {
    policy: { shell: "always_allow", labels: { "keys/*": "secret", "conf.txt": "confidential" } },
  });
  const r = await run(env, pid, ["grep", "-r", "-e", "SECRET", "-e", "CONF", "-e", "plain", "."]);
  assert.match(r.stdout, /plain notes/);
  assert.ok(!r.stdout.includes("SECRET-KEY-9999") && !r.stdout.includes("CONF-7777"), r.stdout);
  // Naming one is refused before anything runs (argv checks, one layer up).
  await rejectsCode(run(env, pid, ["cat", "conf.txt"]), "EPERM");
  const stored = await storeText(env);
  assert.ok(!stored.includes("SECRET-KEY-9999") && !stored.includes("CONF-7777"));
  // The output is normal data: the process is tainted normal, never higher.
  assert.equal((await env.rt.process(pid)).taint, "normal");
});

Deno.test("shell sandbox: a directory labelled below normal is bound read-only (no write down)", async () => {
  await using env = await makeEnv({ files: { "pub/readme.txt": "public\n", "work/a.txt": "a\n" } });
  const pid = await launch(env, [fsCap("*", "read", "write"), sh("touch")], {
    policy: { shell: "always_allow", labels: { "pub/*": "public" } },
  });
  assert.notEqual((await run(env, pid, ["touch", "pub/new.txt"])).code, 0);
  assert.equal(await exists(join(env.ws, "pub/new.txt")), false);
  assert.equal((await run(env, pid, ["touch", "work/new.txt"])).code, 0);
  assert.equal(await exists(join(env.ws, "work/new.txt")), true);
});

Deno.test("shell sandbox: a DENY on a path that does not exist yet keeps it from being created", async () => {
  await using env = await makeEnv({ files: { "sub/a.txt": "a\n" } });
  const pid = await launch(
    env,
    [fsCap("*", "read", "write"), deny(".env", "write"), deny("sub/hook", "write"), sh("touch")],
    { policy: { shell: "always_allow" } },
  );
  for (const f of [".env", "sub/hook"]) {
    assert.notEqual((await run(env, pid, ["touch", f])).code, 0, f);
    assert.equal(await exists(join(env.ws, f)), false, f);
  }
  // Existing entries next to it stay writable, and what is written there is audited.
  const r = await run(env, pid, ["touch", "sub/a.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.writes.map((w) => [w.path, w.change]), [["sub/a.txt", "changed"]]);
  // The same one level down only: the root stays writable, the sealed directory is
  // read-only inside a read-write mount, and its entries are audited all the same.
  const deep = await launch(
    env,
    [fsCap("*", "read", "write"), deny("sub/hook", "write"), sh("sh")],
    {
      policy: { shell: "always_allow" },
    },
  );
  await Deno.writeTextFile(
    join(env.ws, "edit.sh"),
    "echo b >> sub/a.txt\ntouch top.txt\ntouch sub/hook\n",
  );
  const d = await run(env, deep, ["sh", "edit.sh"]);
  assert.equal(await exists(join(env.ws, "sub/hook")), false);
  assert.deepEqual(d.writes.map((w) => [w.path, w.change]), [
    ["sub/a.txt", "changed"],
    ["top.txt", "created"],
  ]);
});

Deno.test("shell sandbox: mounts at paths with spaces, tabs, newlines and backslashes pass the mount check", async () => {
  // Capabilities cannot name control characters, but a directory they grant may hold them,
  // and masks (labels recorded on real paths) can land there: mountinfo escapes them.
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-odd-" }));
  try {
    const ws = join(root, "ws");
    const odd = ["with space", "tab\there", "new\nline", "back\\slash"];
    for (const n of odd) {
      await Deno.mkdir(join(ws, n), { recursive: true });
      await Deno.writeTextFile(join(ws, n, "ok.txt"), `ok ${n}\n`);
      await Deno.writeTextFile(join(ws, n, "no.txt"), SECRET);
    }
    const options = directOptions(ws, "filesystem:workspace:*", ["read", "write"], {
      view: { hide: odd.map((n) => join(ws, n, "no.txt")), readOnly: [join(ws, odd[1])] },
    });
    const shell = new HostShell();
    for (const n of odd) {
      const r = await shell.run(["cat", `${n}/ok.txt`, `${n}/no.txt`], options);
      assert.notEqual(r.code, MOUNT_CHECK_FAILED, `${JSON.stringify(n)}: ${r.stderr}`);
      assert.equal(r.stdout, `ok ${n}\n`, JSON.stringify(n));
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------- limits

Deno.test("shell sandbox: a memory bomb is stopped by the address-space limit", async () => {
  await using env = await makeEnv({
    files: { "bomb.py": "import mmap\nm = mmap.mmap(-1, 8 * 1024**3)\nprint('mapped')\n" },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("python3")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["python3", "bomb.py"]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /Cannot allocate memory|MemoryError/);
});

Deno.test("shell sandbox: files in /tmp, /dev/shm and /dev cannot fill the host's memory", async () => {
  // The sandbox's writable mounts outside the workspace are RAM-backed; unsized, a tmpfs
  // takes up to half of the host's memory, one file under RLIMIT_FSIZE at a time.
  const mib = SANDBOX_TMP_BYTES / 1024 ** 2;
  const part = Math.ceil(mib * 0.6);
  await using env = await makeEnv({
    files: {
      "fill.sh": [
        `for i in 1 2 3; do head -c ${part}M /dev/zero > /tmp/f$i 2>/dev/null || echo tmp-full-$i; done`,
        `head -c ${
          SANDBOX_SHM_BYTES / 1024 ** 2 + 1
        }M /dev/zero > /dev/shm/a 2>/dev/null || echo shm-full`,
        "touch /dev/x 2>/dev/null || echo dev-read-only",
        "du -sk /tmp | cut -f1",
      ].join("\n"),
    },
  });
  const pid = await launch(env, [fsCap("*", "read"), sh("sh")], {
    policy: { shell: "always_allow" },
  });
  const r = await run(env, pid, ["sh", "fill.sh"], { timeout_ms: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.deepEqual(lines.slice(0, -1), ["tmp-full-2", "tmp-full-3", "shm-full", "dev-read-only"]);
  // (du counts the directory too: a few KiB over the files.)
  assert.ok(Number(lines.at(-1)) <= mib * 1024 + 64, `${lines.at(-1)} KiB in /tmp`);
});

Deno.test("shell sandbox: a command's processes together stay within its memory limit", async () => {
  // Each process alone is far under its address-space limit; together they are over the
  // command's memory, which only a memory cgroup holds (without one, all three hold on).
  if (commandLimitKinds().memory !== "cgroup") return; // nothing here can hold it
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-mem-" }));
  try {
    const hold = "import time\nb = b'x' * (150 * 1024 * 1024)\ntime.sleep(2)\nprint('held')\n";
    await Deno.writeTextFile(join(root, "hold.py"), hold);
    await Deno.writeTextFile(
      join(root, "three.sh"),
      "for i in 1 2 3; do python3 hold.py & done\nwait\n",
    );
    const options = (memoryBytes: number) =>
      directOptions(root, "filesystem:workspace:*", ["read"], {
        limits: { memoryBytes },
        timeoutMs: 20_000,
      });
    const shell = new HostShell();
    // Control: with room for all three, all three hold their 150 MiB.
    const roomy = await shell.run(["sh", "three.sh"], options(1024 ** 3));
    assert.equal(roomy.stdout, "held\nheld\nheld\n", roomy.stderr);
    assert.equal(roomy.limits?.memory, "cgroup");
    const tight = await shell.run(["sh", "three.sh"], options(256 * 1024 ** 2));
    const held = tight.stdout.split("\n").filter((l) => l === "held").length;
    assert.ok(held < 2, `${held} of 3 processes held 150 MiB each within 256 MiB`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------- races and the host

Deno.test("shell sandbox: a directory swapped for a symlink after derivation is refused before the command runs", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-swap-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(join(ws, "sub"), { recursive: true });
    await Deno.writeTextFile(join(ws, "sub/f.txt"), "inside\n");
    await Deno.mkdir(join(root, "elsewhere"));
    await Deno.writeTextFile(join(root, "elsewhere/f.txt"), OUTSIDE);
    const options = directOptions(ws, "filesystem:workspace:sub/*", ["read"]);
    const view = options.sandbox.view;
    const shell = new HostShell();
    // Control: as derived, the granted file is there.
    assert.equal((await shell.run(["cat", "sub/f.txt"], options)).stdout, "inside\n");
    // The mounts are planned, then a concurrent writer swaps the granted directory for a
    // link out before bwrap mounts it: bwrap would follow the link on the host.
    const plan = planSandbox(view, ws);
    await Deno.rename(join(ws, "sub"), join(ws, "sub-old"));
    await Deno.symlink(join(root, "elsewhere"), join(ws, "sub"));
    const raced = await new Deno.Command("bwrap", {
      args: [...plan.args, "--", ...checkedCommand(plan, ["cat", "sub/f.txt"])],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(raced.code, MOUNT_CHECK_FAILED, dec.decode(raced.stderr));
    assert.match(dec.decode(raced.stderr), /not the path derived for this call; nothing ran/);
    assert.ok(!dec.decode(raced.stdout).includes(OUTSIDE));
    // Through the provider (planning after the swap) the link is never mounted either.
    const r = await shell.run(["cat", "sub/f.txt"], options);
    assert.notEqual(r.code, 0);
    assert.ok(!r.stdout.includes(OUTSIDE), r.stdout);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("shell sandbox: without bubblewrap a command is ENOSYS naming the package, unless the policy says none", async () => {
  const shell = new HostShell({ bwrap: null });
  await using env = await makeEnv({ providers: { shell } });
  const pid = await launch(env, [fsCap("*", "read"), sh("touch"), sh("python3")], {
    policy: { shell: "always_allow" },
  });
  const e = await rejectsCode(run(env, pid, ["touch", "made"]), "ENOSYS");
  assert.match(e.message, /bubblewrap/);
  assert.match(e.message, /shell_sandbox/);
  // Refused before anyone is asked or anything is recorded as an effect.
  await rejectsCode(run(env, pid, ["python3", "-c", "print(1)"]), "ENOSYS");
  assert.equal(env.human.asked.length, 0);
  assert.equal((await env.rt.kernel.store.listEffects()).length, 0);
  assert.equal(await exists(join(env.ws, "made")), false);
  // The host may choose to run unconfined: then a granted touch writes without a write
  // capability, which is exactly why "none" is unsafe (and shown as such).
  const unsafe = await launch(env, [sh("touch")], {
    policy: { shell: "always_allow", shell_sandbox: "none" },
  });
  const r = await run(env, unsafe, ["touch", "made"]);
  assert.equal(r.code, 0);
  assert.equal(r.writes, null, "no sandbox, no write audit");
  assert.equal(await exists(join(env.ws, "made")), true);
  const fx = (await env.rt.kernel.store.listEffects()).at(-1)!;
  assert.equal((fx.outcome as { sandbox: string }).sandbox, "none");
});

Deno.test("shell sandbox: a bad shell_sandbox policy names the field", async () => {
  await using env = await makeEnv();
  for (const bad of ["off", "", 0, null, "BWRAP"]) {
    const e = await rejectsCode(
      launch(env, [], { policy: { shell: "always_allow", shell_sandbox: bad } }),
      "EINVAL",
    );
    assert.match(e.message, /policy\.shell_sandbox/);
  }
});

Deno.test("shell sandbox: ps and the console show which processes run commands unsandboxed", async () => {
  await using env = await makeEnv();
  await launch(env, [], { policy: { shell: "always_allow" } });
  await launch(env, [], { policy: { shell: "always_allow", shell_sandbox: "none" } });
  const json = JSON.parse((await libos(["ps", "--store", env.storePath, "--json"])).stdout);
  assert.deepEqual(json.map((p: { shell_sandbox: string }) => p.shell_sandbox), ["bwrap", "none"]);
  const text = (await libos(["ps", "--store", env.storePath])).stdout.split("\n");
  assert.match(text[1], /\tshell=bwrap$/);
  assert.match(text[2], /\tshell=none\(UNSAFE\)$/);
  const token = "t".repeat(32);
  const app = createApp(env.rt, { token });
  const res = await app.request("/api/processes", {
    headers: { Authorization: `Bearer ${token}` },
  });
  const { processes } = await res.json();
  assert.deepEqual(processes.map((p: { shell_sandbox: string }) => p.shell_sandbox), [
    "bwrap",
    "none",
  ]);
  const js = await Deno.readTextFile(new URL("../server/console/console.js", import.meta.url));
  assert.match(js, /shell_sandbox === "none"/, "the console marks unsandboxed processes");
});

// ---------------------------------------------------------------- renaming what a rule names

Deno.test("shell sandbox: a directory above a DENY'd, labelled or read-only path cannot be renamed away from its rule", async () => {
  await using env = await makeEnv({
    files: {
      "config/.env": "TOKEN=SECRET-4711\n",
      "config/app.json": "{}\n",
      "keys/id.txt": "SECRET-KEY-9999\n",
      "a/b/key.pem": "PRIVATE-KEY-777\n",
      ".github/workflows/ci.yml": "run: tests\n",
      "src/app.py": "print('orig')\n",
      "free/x.txt": "x\n",
    },
  });
  const pid = await launch(env, [
    fsCap("*", "read", "write", "delete"),
    deny("config/.env", "read", "write", "delete"),
    deny("a/b/*", "read", "write", "delete"),
    deny(".github/workflows/*", "write", "delete"),
    deny("src/app.py", "write", "delete"),
    sh("mv"),
    sh("cat"),
    sh("sh"),
  ], { policy: { shell: "always_allow", labels: { "keys/id.txt": "secret" } } });
  // Each rename would carry a protected path out from under the path its rule names.
  for (
    const [from, to] of [["config", "moved"], ["keys", "k2"], ["a", "a2"], [".github", ".old"]]
  ) {
    const r = await run(env, pid, ["mv", from, to]);
    assert.notEqual(r.code, 0, `mv ${from} ${to} succeeded`);
    assert.match(r.stderr, /busy/i, r.stderr);
    assert.ok(await exists(join(env.ws, from)) && !(await exists(join(env.ws, to))));
  }
  // In one command: move the parent, then write the protected path anew.
  await Deno.writeTextFile(
    join(env.ws, "swap.sh"),
    "mv src .old-src && mkdir src && echo 'evil()' > src/app.py\n" +
      "mv .github .old-github && mkdir -p .github/workflows && echo evil > .github/workflows/ci.yml\n",
  );
  const r = await run(env, pid, ["sh", "swap.sh"]);
  assert.notEqual(r.code, 0);
  assert.equal(await Deno.readTextFile(join(env.ws, "src/app.py")), "print('orig')\n");
  assert.equal(await Deno.readTextFile(join(env.ws, ".github/workflows/ci.yml")), "run: tests\n");
  // Nothing protected was read, and the process read nothing labelled.
  for (const path of ["config/.env", "keys/id.txt", "a/b/key.pem"]) {
    const c = await run(env, pid, ["cat", path]).catch((e) => ({ stdout: String(e.code) }));
    assert.ok(!/SECRET|PRIVATE/.test(c.stdout), `${path}: ${c.stdout}`);
  }
  // (Commands carry normal data: nothing above it came through.)
  assert.equal((await env.rt.process(pid)).taint, "normal");
  // A directory holding nothing protected still renames.
  const free = await run(env, pid, ["mv", "free", "free2"]);
  assert.equal(free.code, 0, free.stderr);
});

// ---------------------------------------------------------------- what the write audit sees

/** A process with read on the workspace, read+write on out/*, and the given programs. */
async function auditEnv(files: Record<string, string>, programs: string[]) {
  const env = await makeEnv({ files: { "out/.keep": "", ...files } });
  const caps = [
    fsCap("*", "read"),
    fsCap("out/*", "read", "write"),
    ...programs.map(sh),
  ];
  const pid = await launch(env, caps, { policy: { shell: "always_allow" } });
  return Object.assign(env, { pid, caps });
}

Deno.test("shell sandbox: the write audit sees past PATH_MAX, says when a name is not UTF-8, and catches a same-size edit with its mtime put back", async () => {
  await using env = await auditEnv({
    "deep.py": "import os\nos.chdir('out')\nfor i in range(24):\n" +
      "    os.mkdir('d' * 200); os.chdir('d' * 200)\nopen('payload.txt', 'w').write('DEEP')\n",
    "bytes.py": "import os\nos.chdir(b'out')\nopen(b'\\xff.txt', 'wb').write(b'HIDDEN')\n",
    "src/a.txt": "amount=100\n",
    "edit.sh":
      "cp -p out/r.txt /tmp/ref\nprintf 'amount=999\\n' > out/r.txt\ntouch -r /tmp/ref out/r.txt\n",
  }, ["python3", "cp", "sh", "rm"]);
  // 24 levels of 200 characters: 4,800 characters of path, past the host's 4,096.
  const deep = await run(env, env.pid, ["python3", "deep.py"]);
  assert.equal(deep.code, 0, deep.stderr);
  assert.ok(deep.writes_complete);
  const payload = deep.writes.find((w) => w.path.endsWith("/payload.txt"));
  assert.ok(payload, `payload.txt is not in the audit (${deep.writes.length} entries)`);
  assert.equal(payload.size, 4);
  assert.ok(payload.path.length > 4096);
  // The host hands over no name that is not UTF-8: the audit says it is incomplete.
  const bytes = await run(env, env.pid, ["python3", "bytes.py"]);
  assert.equal(bytes.code, 0, bytes.stderr);
  assert.equal(bytes.writes_complete, false, JSON.stringify(bytes.writes));
  // A later command still runs; its audit says the same.
  const later = await run(env, env.pid, ["cp", "src/a.txt", "out/r.txt"]);
  assert.equal(later.code, 0, later.stderr);
  assert.equal(later.writes_complete, false);
  await Deno.remove(join(env.ws, "out", "\uFFFD.txt")).catch(() => {});
  await new Deno.Command("python3", {
    args: ["-c", "import os; os.remove(b'out/\\xff.txt')"],
    cwd: env.ws,
  }).output();
  // Within one second of the last change, a same-size edit with its mtime put back
  // (the host reports change times in whole seconds).
  while (Date.now() % 1000 > 200) await new Promise((r) => setTimeout(r, 5));
  const copied = await run(env, env.pid, ["cp", "src/a.txt", "out/r.txt"]);
  assert.ok(copied.writes_complete);
  const edit = await run(env, env.pid, ["sh", "edit.sh"]);
  assert.equal(edit.code, 0, edit.stderr);
  assert.equal(await Deno.readTextFile(join(env.ws, "out/r.txt")), "amount=999\n");
  const seen = edit.writes.find((w) => w.path === "out/r.txt");
  assert.ok(seen, `the edit is not in the audit: ${JSON.stringify(edit.writes)}`);
  assert.equal(seen.change, "changed");
});

Deno.test("shell sandbox: a link swapped in by a concurrent command leads the write audit nowhere", async () => {
  // Another process of the agent exchanges a directory with a link to a host directory,
  // and a file with a link to /dev/zero, as fast as it can.
  const SWAP = `import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("out")
os.mkdir("a")
open("f", "w").write("f")
os.symlink(open("../host.txt").read(), "s")
os.symlink("/dev/zero", "z")
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    libc.renameat2(-100, b"a", -100, b"s", 2)
    libc.renameat2(-100, b"f", -100, b"z", 2)
`;
  await using env = await auditEnv({ "swap.py": SWAP }, ["python3", "true"]);
  const host = join(env.root, "host-dir");
  await Deno.mkdir(host);
  await Deno.writeTextFile(join(host, "canary-host-file"), "HOST-CONTENT");
  const other = await launch(env, env.caps, { policy: { shell: "always_allow" } });
  // (The agent could write where the link points with filesystem.write.)
  await Deno.writeTextFile(join(env.ws, "host.txt"), host);
  const swapper = run(env, other, ["python3", "swap.py", "4"], { timeout_ms: 20_000 });
  await new Promise((r) => setTimeout(r, 800));
  const seen: string[] = [];
  let runs = 0;
  let slowest = 0;
  const until = Date.now() + 2_500;
  while (Date.now() < until) {
    const t0 = performance.now();
    const r = await Promise.race([
      run(env, env.pid, ["true"]),
      new Promise<null>((ok) => setTimeout(() => ok(null), 10_000)),
    ]);
    slowest = Math.max(slowest, performance.now() - t0);
    assert.ok(r, "a command's write audit never returned (it followed a link to /dev/zero)");
    runs++;
    for (const w of r.writes) if (/canary|^out\/[as]\//.test(w.path)) seen.push(w.path);
  }
  const mine = await swapper;
  assert.equal(mine.code, 0, mine.stderr);
  for (const w of mine.writes) if (/canary|^out\/[as]\//.test(w.path)) seen.push(w.path);
  assert.ok(runs >= 3, `${runs} commands ran`);
  assert.deepEqual(seen, [], `the audit walked through the link into the host directory`);
  const all = JSON.stringify(await env.rt.kernel.store.listEffects());
  assert.ok(!all.includes("canary-host-file"));
});

Deno.test("shell sandbox: file descriptors the runtime inherited never reach a command", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-fds-" }));
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const secret = join(root, "host-secret.txt");
    const log = join(root, "host-log.txt");
    await Deno.writeTextFile(secret, "HOST-SECRET-FD-0042\n");
    await Deno.writeTextFile(log, "");
    // The runtime starts with a host file open for reading on 7 and for appending on
    // 12 and 251 (a harness's pipes look like that), none of them close-on-exec.
    const out = await new Deno.Command("/bin/bash", {
      args: [
        "-c",
        'exec "$0" run -A "$1" "$2" "$3" 7<"$4" 12>>"$5" 251>>"$5"',
        Deno.execPath(),
        SHELL_RUN_FIXTURE,
        ws,
        "ls /proc/self/fd\ncat <&7\necho appended-by-sandbox >&12\necho again >&251\n",
        secret,
        log,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(text.slice(text.indexOf("{")));
    assert.ok(!r.stdout.includes("HOST-SECRET"), r.stdout);
    assert.equal(await Deno.readTextFile(log), "", "a command wrote to a descriptor of the host's");
    // Only the command's own standard streams (and ls's own directory).
    const fds = r.stdout.split("\n").filter((l: string) => /^\d+$/.test(l)).map(Number);
    assert.deepEqual(fds.filter((n: number) => n > 3), [], r.stdout);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
