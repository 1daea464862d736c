/**
 * shell.run: argv only, never a shell string. A command runs only when the
 * caller holds `execute` on `shell:<executable>` AND the image's shell policy
 * consents. Destructive commands are refused under every policy; wrappers that
 * would run another program are refused (authority would be checked on the
 * wrong name); inline interpreter code always needs a human.
 * @module
 */
import { isAbsolute, join, normalize } from "node:path";
import { denied, invalid } from "../runtime/errors.ts";
import type { Effect, Label } from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { type Call, optInt, type Primitive } from "./call.ts";
import { withEffect } from "./effects.ts";
import { checkFlow, fileLabel, resolvePath, taint } from "./filesystem.ts";
import { mayFlow } from "../runtime/labels.ts";

/** Default and largest timeout of a shell command. */
export const SHELL_TIMEOUT_MS = { default: 30_000, max: 300_000 };
/** Output kept per stream. */
export const SHELL_MAX_OUTPUT = 1024 * 1024;

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
 * `cat` is not a way around filesystem capabilities. Returns the highest label.
 */
async function _checkPathArgs(call: Call, argv: string[]): Promise<Label> {
  let label: Label = "public";
  for (const arg of argv.slice(1)) {
    let value = arg.startsWith("-") && arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : arg;
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
  }
  return label;
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
    const policy = _policyEffect(call, argv, argvRules);
    await authorize(call, {
      resource,
      right: "execute",
      policy: policy.effect,
      policyReason: policy.reason,
    });
    // A command's sinks are unknown (files, network, other programs), so the shell is a
    // `normal` sink: data labelled above that never flows into it, either from what the
    // process has read or from the files the command is given.
    await checkFlow(call, "normal", resource);
    const argLabel = argvRules ? await _checkPathArgs(call, argv) : "public";
    if (!mayFlow(argLabel, "normal") && !call.k.ablated("no-labels")) {
      throw denied(`${call.name} ${argv[0]}: ${argLabel} files may not flow into a shell command`);
    }
    const cwd = (await resolvePath(call, ".", "cwd")).real;
    const result = await withEffect(
      call,
      resource,
      () => call.k.providers.shell.run(argv, { cwd, timeoutMs, maxOutputBytes: SHELL_MAX_OUTPUT }),
      (r) => ({
        code: r.code,
        timed_out: r.timed_out,
        stdout_bytes: r.stdout.length,
        stderr_bytes: r.stderr.length,
      }),
    );
    await taint(call, argLabel);
    await call.k.emit("shell.executed", `pid:${call.proc.pid}`, resource, {
      code: result.code,
      timed_out: result.timed_out,
    }, call.correlationId);
    return result;
  },
};

/** The shell family. */
export const SHELL: Record<string, Primitive> = { "shell.run": run };
