/**
 * shell.run: argv only, never a shell string. A command runs only when the
 * caller holds `execute` on `shell:<executable>` AND the image's shell policy
 * consents. Destructive commands are refused under every policy; wrappers that
 * would run another program are refused (authority would be checked on the
 * wrong name); inline interpreter code always needs a human. Those checks are
 * defence in depth: the wall is the OS. Every command runs in a bubblewrap
 * sandbox derived here, at the call, from the process's capabilities (the same
 * derivation as the JIT tools' flags) and its labels; approving a command is
 * consent to run it, never authority beyond the process's capabilities. What
 * it wrote is audited.
 * @module
 */
import { dirname, isAbsolute, join, normalize, relative, sep } from "node:path";
import { hashValue, payloadRef } from "../runtime/canonical.ts";
import { denied, invalid } from "../runtime/errors.ts";
import { guardText, labelRank, maxLabel, mayFlow, redactionFor } from "../runtime/labels.ts";
import type { FileChange, ShellResult, ShellSandbox } from "../runtime/providers/types.ts";
import { noSandbox, type ShellView } from "../runtime/sandbox/bwrap.ts";
import { deriveGrants } from "../runtime/sandbox/flags.ts";
import type { Effect, Label } from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { type Call, optInt, type Primitive } from "./call.ts";
import { withEffect } from "./effects.ts";
import { checkFlow, fileLabel, labelledPaths, resolvePath, taint } from "./filesystem.ts";

/** Default and largest timeout of a shell command. */
export const SHELL_TIMEOUT_MS = { default: 30_000, max: 300_000 };
/**
 * A command's hard deadline comes this long after its timeout would (ms): time
 * to set up its sandbox. The runtime's own timer fires first; the sandbox's
 * timer holds when the runtime has stalled.
 */
export const SHELL_DEADLINE_GRACE_MS = 5_000;
/** Output kept per stream. */
export const SHELL_MAX_OUTPUT = 1024 * 1024;
/** Address space (RLIMIT_AS) and largest file (RLIMIT_FSIZE) of every sandboxed process; tasks and memory of a command. */
export const SHELL_LIMITS = {
  addressSpaceBytes: 4 * 1024 ** 3,
  fileSizeBytes: 1024 ** 3,
  // Tasks, threads included: a build or a test run fits; a fork bomb stops here.
  processes: 256,
  // All of a command's processes together, and what it keeps in its RAM-backed mounts.
  memoryBytes: 4 * 1024 ** 3,
};
/** Most entries under a call's writable mounts; more is refused before the command runs. */
export const SHELL_MAX_WRITABLE_ENTRIES = 20_000;
/** Most changes listed in the result, the audit and the ledger (the rest: counted and hashed). */
export const SHELL_WRITES_LISTED = 100;
/**
 * The one label every command runs at. A command's sinks are its output, its
 * writable mounts and, between commands running at once, FIFOs and unix
 * sockets in the workspace (a read-only mount does not stop those). So files
 * labelled above it are masked, paths labelled below it are read-only, and a
 * process holding data above it runs no command at all.
 */
export const SHELL_LABEL: Label = "normal";

/** Programs whose job is to run another program. */
const WRAPPERS = new Set([
  "env",
  "nice",
  "nohup",
  "setsid",
  "stdbuf",
  "timeout",
  "xargs",
  "sudo",
  "doas",
  "su",
  "runuser",
  "chroot",
  "time",
  "watch",
  "strace",
  "ltrace",
  "nsenter",
  "unshare",
  "busybox",
  "command",
  "exec",
  "flock",
  "ionice",
  "taskset",
  "chrt",
  "script",
  "parallel",
  "firejail",
  "bwrap",
  "systemd-run",
]);

/** Interpreters and the flags that take inline code. */
const INLINE_CODE: Record<string, string[]> = {
  sh: ["-c"],
  bash: ["-c"],
  dash: ["-c"],
  zsh: ["-c"],
  ksh: ["-c"],
  fish: ["-c"],
  python: ["-c"],
  python3: ["-c"],
  node: ["-e", "--eval", "-p", "--print"],
  perl: ["-e", "-E"],
  ruby: ["-e"],
  php: ["-r"],
  deno: ["eval"],
  lua: ["-e"],
  // An awk program is always inline code (and can call system()).
  awk: [],
  gawk: [],
  mawk: [],
};

/**
 * Why a command is destructive, or null. Checked before capabilities and
 * policy, and no capability or policy can override it.
 */
export function destructiveReason(argv: string[]): string | null {
  const [exe, ...rest] = argv;
  const flags = rest.filter((a) => a.startsWith("-"));
  const shortHas = (c: string) => flags.some((f) => /^-[A-Za-z]+$/.test(f) && f.includes(c));
  // GNU getopt and git accept any unambiguous prefix of a long option (`--rec`).
  const longHas = (name: string) =>
    flags.some((f) =>
      f.startsWith("--") && f.split("=")[0].length >= 3 && name.startsWith(f.split("=")[0])
    );
  switch (exe) {
    case "rm":
      if (shortHas("r") || shortHas("R") || longHas("--recursive")) return "recursive rm";
      if (longHas("--no-preserve-root")) return "rm --no-preserve-root";
      if (rest.some((a) => a === "/" || a === "/*" || a === "~")) return "rm of a root";
      return null;
    case "chmod":
    case "chown":
    case "chgrp":
      return shortHas("R") || longHas("--recursive") ? `recursive ${exe}` : null;
    case "dd":
    case "shred":
    case "wipefs":
    case "mkswap":
    case "fdisk":
    case "sfdisk":
    case "parted":
    case "shutdown":
    case "reboot":
    case "halt":
    case "poweroff":
    case "killall":
    case "pkill":
      return `${exe} is destructive`;
    case "git": {
      const sub = _gitSplit(rest).sub;
      if (
        sub === "push" &&
        (shortHas("f") || shortHas("d") || longHas("--force") || longHas("--mirror") ||
          longHas("--delete") ||
          rest.some((a) => /^(-f|--force.*|--mirror|--delete|-d)$/.test(a) || a.startsWith("+")))
      ) {
        return "forced or deleting git push";
      }
      if (sub === "reset" && longHas("--hard")) return "git reset --hard";
      // Uncommitted work is thrown away as surely by these (no reflog keeps it).
      if (
        sub === "checkout" &&
        (rest.includes("--") || rest.includes(".") || shortHas("f") || longHas("--force"))
      ) {
        return "git checkout discarding changes";
      }
      if (
        sub === "restore" &&
        (rest.some((a) => a === "--worktree" || a === "-W") ||
          !rest.some((a) => a === "--staged" || a === "-S"))
      ) {
        return "git restore discarding changes";
      }
      if (
        sub === "switch" && (longHas("--discard-changes") || shortHas("f") || longHas("--force"))
      ) {
        return "git switch discarding changes";
      }
      if (sub === "stash" && (rest.includes("drop") || rest.includes("clear"))) {
        return "git stash drop/clear";
      }
      if (sub === "clean" && (shortHas("f") || longHas("--force"))) return "git clean -f";
      if (sub === "filter-branch" || sub === "filter-repo") return `git ${sub}`;
      if (
        sub === "branch" &&
        (rest.includes("-D") || (rest.includes("-d") && rest.includes("--force")))
      ) {
        return "git branch -D";
      }
      if (sub === "reflog" && rest.includes("expire")) return "git reflog expire";
      return null;
    }
    case "find":
      return rest.includes("-delete") ? "find -delete" : null;
    case "kill":
      return rest.includes("-1") ? "kill of every process" : null;
  }
  if (exe.startsWith("mkfs")) return `${exe} formats a file system`;
  return null;
}

/** Git's global options that take the next argument as their value. */
const _GIT_VALUE_OPTS = ["-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env"];

/** Split a git argv (without `git`) into global options and the subcommand. */
function _gitSplit(rest: string[]): { globals: string[]; sub: string | undefined } {
  let i = 0;
  while (i < rest.length && rest[i].startsWith("-")) i += _GIT_VALUE_OPTS.includes(rest[i]) ? 2 : 1;
  return { globals: rest.slice(0, i), sub: rest[i] };
}

/** Is inline-code flag `flag` given by `arg`, also bundled (`-ec`) or attached (`-cCODE`, `--eval=`)? */
function _flagGiven(arg: string, flag: string): boolean {
  if (arg === flag) return true;
  if (flag.startsWith("--")) return arg.startsWith(`${flag}=`);
  if (/^-[A-Za-z]$/.test(flag)) return /^-[^-]/.test(arg) && arg.includes(flag[1]);
  return false;
}

/** Refuse destructive commands and wrappers that would run another program. */
function _refuseArgv(call: Call, argv: string[]): void {
  const destructive = destructiveReason(argv);
  if (destructive) throw denied(`${call.name} ${argv[0]}: ${destructive} is never run`);
  // Any argument to a wrapper may name a program (`env -S'cat .env'`, `xargs -a f`).
  const wraps = WRAPPERS.has(argv[0]) && argv.length > 1;
  // git's `-c`, `--config-env` and `--exec-path` define aliases, pagers, hooks: other programs.
  const gitRuns = argv[0] === "git" &&
    _gitSplit(argv.slice(1)).globals.some((a) => /^(-c|--config-env|--exec-path=)/.test(a));
  const findExec = argv[0] === "find" &&
    argv.some((a) => ["-exec", "-execdir", "-ok", "-okdir"].includes(a));
  if (wraps || findExec || gitRuns) {
    throw denied(`${call.name} ${argv[0]}: wrappers that run another program are refused`);
  }
}

function _policyEffect(
  call: Call,
  argv: string[],
  argvRules = true,
): { effect: Effect; reason: string } {
  const exe = argv[0];
  const p = call.proc.policy;
  const inline = INLINE_CODE[exe];
  const hasInline = inline !== undefined &&
    (inline.length === 0 || argv.slice(1).some((a) => inline.some((f) => _flagGiven(a, f))));
  let effect: Effect;
  let reason: string;
  switch (p.shell) {
    case "always_deny":
      return { effect: "deny", reason: "shell policy always_deny" };
    case "allowlist_auto_else_ask":
      effect = p.shell_allowlist.includes(exe) ? "allow" : "ask";
      reason = effect === "allow" ? "allowlisted" : `${exe} is not on the shell allowlist`;
      break;
    case "blocklist_ask_else_auto":
      effect = p.shell_blocklist.includes(exe) ? "ask" : "allow";
      reason = effect === "ask" ? `${exe} is on the shell blocklist` : "not blocklisted";
      break;
    default:
      effect = "allow";
      reason = "shell policy always_allow";
  }
  if (argvRules && hasInline && effect === "allow") {
    return { effect: "ask", reason: `${exe} with inline code always needs a human` };
  }
  return { effect, reason };
}

function _argv(call: Call): string[] {
  const v = call.args.argv;
  const f = `${call.name}.argv`;
  if (!Array.isArray(v) || v.length === 0) throw invalid(f, "must be a non-empty array of strings");
  if (v.length > 256) throw invalid(f, "more than 256 arguments");
  v.forEach((a, i) => {
    if (typeof a !== "string") throw invalid(`${f}[${i}]`, "must be a string");
    if (a.length > 8192) throw invalid(`${f}[${i}]`, "longer than 8192 characters");
    if (a.includes("\u0000")) throw invalid(`${f}[${i}]`, "contains a NUL character");
  });
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(v[0])) {
    throw invalid(`${f}[0]`, "must be a bare executable name (no path, no shell syntax)");
  }
  return v as string[];
}

/**
 * Path-like arguments must name workspace paths the caller may read: a granted
 * `cat` is not a way around filesystem capabilities. Returns the highest label
 * and the real paths of the files so authorized (visible to this call even
 * under an ASK the human answered).
 */
async function _checkPathArgs(
  call: Call,
  argv: string[],
): Promise<{ label: Label; files: string[] }> {
  let label: Label = "public";
  const files: string[] = [];
  const linkBase = await _symlinkBase(call, argv);
  for (const [i, arg] of argv.entries()) {
    if (i === 0) continue;
    let value = arg.startsWith("-") && arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : arg;
    // `ln -s TARGET LINK`: a relative target is a path from the link's directory, as
    // the kernel will follow it: from that directory's real path (a `..` after a
    // symlinked directory climbs from where the symlink leads, not lexically).
    if (linkBase && linkBase.targets.includes(i) && !isAbsolute(value)) {
      const dir = (await resolvePath(call, linkBase.dir, "argv")).real;
      value = relative(join(call.proc.workspace, call.proc.cwd), join(dir, value)) || ".";
    }
    // An option may carry its path attached (`-o/x`, `-t../dir`): check from where a path starts.
    if (value.startsWith("-") && value.includes("/")) {
      value = value.slice(value.slice(1).search(/[./~]/) + 1);
    }
    if (value === "" || (value.startsWith("-") && !value.includes("/"))) continue;
    const pathLike = isAbsolute(value) || value.split("/").includes("..") || value.startsWith("~");
    const lexical = isAbsolute(value)
      ? normalize(value)
      : join(call.proc.workspace, call.proc.cwd, value);
    let exists = false;
    try {
      await call.k.providers.fs.lstat(lexical);
      exists = true;
    } catch { /* not a path */ }
    if (value.startsWith("~")) throw denied(`${call.name}: '~' paths are outside the workspace`);
    if (!pathLike && !exists) continue;
    const p = await resolvePath(call, value, "argv");
    await authorize(call, { resource: p.resource, right: "read" });
    const l = await fileLabel(call, p);
    if (l !== "normal" && l !== "public") label = l;
    const st = p.stat ?? await call.k.providers.fs.lstat(p.real).catch(() => null);
    // A directory argument grants no subtree: its exact capability means listing it.
    if (st && st.kind !== "dir") files.push(p.real);
  }
  return { label, files };
}

/**
 * For `ln -s TARGET... LINK|DIR` (no `-r`, no `-t`): which argv entries are
 * targets and the directory (from the cwd) they are relative to, the link's
 * own: `ln -s ../src/a.py reports/a.py` names `src/a.py`, not `../src/a.py`.
 */
async function _symlinkBase(
  call: Call,
  argv: string[],
): Promise<{ dir: string; targets: number[] } | null> {
  if (argv[0] !== "ln") return null;
  const opts = argv.slice(1).filter((a) => a.startsWith("-") && a !== "-");
  const has = (short: string, long: string) =>
    opts.some((o) => o === long || (/^-[A-Za-z]+$/.test(o) && o.includes(short)));
  if (!has("s", "--symbolic") || has("r", "--relative") || has("t", "--target-directory")) {
    return null;
  }
  const operands = [...argv.entries()].filter(([i, a]) =>
    i > 0 && !(a.startsWith("-") && a !== "-")
  );
  if (operands.length < 2) return null;
  const last = operands[operands.length - 1][1];
  let lastIsDir = false;
  try {
    lastIsDir = (await call.k.providers.fs.lstat(join(call.proc.workspace, call.proc.cwd, last)))
      .kind === "dir";
  } catch { /* a new link name */ }
  const dir = operands.length === 2 && !lastIsDir ? dirname(last) : last;
  return { dir, targets: operands.slice(0, -1).map(([i]) => i) };
}

/** Real paths to mask and to keep read-only because of their labels (see {@link SHELL_LABEL}). */
async function _labelled(call: Call): Promise<{ hide: string[]; readOnly: string[] }> {
  const hide: string[] = [];
  const readOnly: string[] = [];
  for (const { path, label } of await labelledPaths(call)) {
    if (labelRank(label) > labelRank(SHELL_LABEL)) hide.push(path);
    else if (labelRank(label) < labelRank(SHELL_LABEL)) readOnly.push(path);
  }
  return { hide, readOnly };
}

/** The OS sandbox of this call: capabilities and labels as they are now. */
async function _sandbox(call: Call, files: string[], timeoutMs: number): Promise<ShellSandbox> {
  const k = call.k;
  const now = k.providers.clock.now();
  const ws = call.proc.workspace;
  const grants = deriveGrants(
    await k.store.capabilitiesOf(call.proc.pid),
    ws,
    now,
    now + timeoutMs,
  );
  const view: ShellView = { workspace: ws, grants, ...(await _labelled(call)), callRead: files };
  return {
    view,
    // CPU per process: the wall-clock timeout bounds the call, this bounds each process.
    limits: { cpuSeconds: Math.ceil(timeoutMs / 1000) + 1, ...SHELL_LIMITS },
    maxWritableEntries: SHELL_MAX_WRITABLE_ENTRIES,
  };
}

/** One change as an agent, the audit and the ledger see it: workspace-relative, labelled. */
interface _Change extends FileChange {
  label?: Label | null;
}

function _relChanges(call: Call, writes: FileChange[]): _Change[] {
  const ws = call.proc.workspace;
  return writes.map((w) => ({ ...w, path: relative(ws, w.path).split(sep).join("/") }));
}

/** A bounded listing: the first changes, how many in all, and a hash of all of them. */
function _listing(changes: _Change[], complete: boolean) {
  return {
    total: changes.length,
    complete,
    sha256: hashValue(changes),
    changes: changes.slice(0, SHELL_WRITES_LISTED),
  };
}

/**
 * Label what the command wrote like a `filesystem.write` of `data` (a file
 * never holds data above its label: raised if it would), and audit it.
 */
async function _recordWrites(
  call: Call,
  resource: string,
  r: ShellResult,
  data: Label,
): Promise<_Change[]> {
  const changes = _relChanges(call, r.writes ?? []);
  for (const c of changes) {
    if (c.change === "deleted") {
      c.label = null;
      continue;
    }
    const real = join(call.proc.workspace, c.path);
    const p = { real, rel: c.path, resource: `filesystem:workspace:${c.path}` };
    c.label = await fileLabel(call, p);
    if (!mayFlow(data, c.label)) {
      await call.k.store.setFileLabel(real, data);
      c.label = data;
    }
  }
  if (changes.length === 0 && r.writes_complete) return changes;
  const listing = _listing(changes, r.writes_complete);
  const redact = redactionFor(call.proc.taint);
  await call.k.audit({
    actor: `pid:${call.proc.pid}`,
    action: "shell.wrote",
    target: guardText(call.proc.taint, resource),
    input_refs: redact ? payloadRef(listing, redact) : listing,
    output_refs: null,
    capability_refs: [],
    decision: "info",
    reason: ["created", "changed", "deleted"]
      .map((k) => `${changes.filter((c) => c.change === k).length} ${k}`)
      .join(", ") +
      (r.writes_complete ? "" : " (the write audit could not see everything: list incomplete)"),
    correlation_id: call.correlationId,
    parent_record_id: null,
  });
  return changes;
}

const run: Primitive = {
  fields: ["argv", "timeout_ms"],
  async run(call) {
    const argv = _argv(call);
    const timeoutMs = optInt(call, "timeout_ms", 1, SHELL_TIMEOUT_MS.max) ??
      SHELL_TIMEOUT_MS.default;
    const resource = `shell:${argv[0]}`;
    call.target = resource;
    // The benchmark's `no-shell-policy` ablation switches the argv rules off.
    const argvRules = !call.k.ablated("no-shell-policy");
    if (argvRules) _refuseArgv(call, argv);
    // Without its OS wall the shell runs nothing, unless the host chose to run unconfined.
    const sandboxed = (call.proc.policy.shell_sandbox ?? "bwrap") !== "none";
    if (sandboxed && !call.k.providers.shell.sandboxAvailable()) throw noSandbox();
    const policy = _policyEffect(call, argv, argvRules);
    await authorize(call, {
      resource,
      right: "execute",
      policy: policy.effect,
      policyReason: policy.reason,
    });
    // Every command runs at SHELL_LABEL: data labelled above it never flows into one,
    // either from what the process has read or from the files the command is given.
    await checkFlow(call, SHELL_LABEL, resource);
    const args = argvRules
      ? await _checkPathArgs(call, argv)
      : { label: "public" as Label, files: [] };
    if (!mayFlow(args.label, SHELL_LABEL) && !call.k.ablated("no-labels")) {
      throw denied(
        `${call.name} ${argv[0]}: ${args.label} files may not flow into a shell command`,
      );
    }
    const cwd = (await resolvePath(call, ".", "cwd")).real;
    const sandbox = sandboxed ? await _sandbox(call, args.files, timeoutMs) : null;
    // Past this the command is dead whatever becomes of this runtime (see withEffect).
    const deadline = Date.now() + timeoutMs + SHELL_DEADLINE_GRACE_MS;
    const result = await withEffect(
      call,
      resource,
      () =>
        call.k.providers.shell.run(argv, {
          cwd,
          timeoutMs,
          deadline,
          signal: call.k.effectSignal(call.proc.pid),
          maxOutputBytes: SHELL_MAX_OUTPUT,
          sandbox,
        }),
      (r) => ({
        code: r.code,
        timed_out: r.timed_out,
        stdout_bytes: r.stdout.length,
        stderr_bytes: r.stderr.length,
        sandbox: sandboxed ? "bwrap" : "none",
        limits: r.limits,
        writes: r.writes ? _listing(_relChanges(call, r.writes), r.writes_complete) : null,
      }),
      deadline,
    );
    // Output is data: what the command could see (workspace files, at most SHELL_LABEL)
    // and what it was given (the caller's arguments) label it.
    const visible = sandbox === null || sandbox.view.grants.read.length > 0 ||
      args.files.length > 0;
    const outLabel = maxLabel(args.label, call.proc.taint, visible ? SHELL_LABEL : "public");
    const writes = result.writes ? await _recordWrites(call, resource, result, outLabel) : null;
    await taint(call, outLabel);
    await call.k.emit("shell.executed", `pid:${call.proc.pid}`, resource, {
      code: result.code,
      timed_out: result.timed_out,
      sandbox: sandboxed ? "bwrap" : "none",
      limits: result.limits,
      writes: writes?.length ?? null,
    }, call.correlationId);
    return {
      code: result.code,
      stdout: result.stdout,
      stderr: result.stderr,
      timed_out: result.timed_out,
      truncated: result.truncated,
      writes: writes?.slice(0, SHELL_WRITES_LISTED) ?? null,
      writes_total: writes?.length ?? null,
      writes_complete: writes ? result.writes_complete : null,
    };
  },
};

/** The shell family. */
export const SHELL: Record<string, Primitive> = { "shell.run": run };
