/**
 * The OS wall around shell commands: a bubblewrap (`bwrap`) mount namespace
 * rendered from the same derived grants as the JIT tools' Deno flags
 * (`flags.ts`), at the moment of each call. What a command sees:
 *
 * - system directories (`/usr`, the `/bin`, `/lib*`, `/sbin` links, a fixed
 *   list of `/etc` entries) read-only;
 * - workspace paths under an unconditional ALLOW `read` read-only, under
 *   `read` and `write` read-write, at their real paths;
 * - DENY'd, ASK'd and label-hidden paths masked inside a visible directory
 *   (an empty, unopenable entry of the same name: `/dev/null` on a `nodev`
 *   mount for a file, an empty mode-000 read-only tmpfs for a directory), and
 *   everything else in the workspace and outside it absent;
 * - a fresh, read-only `/proc`, a minimal read-only `/dev` with a 64 MiB
 *   `/dev/shm`, a private 1 GiB `/tmp` (HOME), no network, no capabilities, no
 *   new user namespaces, its own pid namespace.
 *
 * bwrap resolves a bind source when it mounts it, so a concurrent writer that
 * swaps a granted directory for a symlink could otherwise widen a mount: a
 * check run inside the sandbox compares every workspace mount in
 * `/proc/self/mountinfo` with the source derived here, and refuses to run the
 * command on any difference.
 * @module
 */
import { dirname, isAbsolute, join, relative, sep } from "node:path";
import { LibosError } from "../errors.ts";
import type { DerivedGrants } from "./flags.ts";

/** What one shell call may see and write, on real paths, derived at the call. */
export interface ShellView {
  /** Real path of the workspace root. */
  workspace: string;
  /** Grants and denies derived from the process's capabilities. */
  grants: DerivedGrants;
  /** Further real paths to hide (data labelled above what a command may carry). */
  hide: string[];
  /** Further real paths to keep read-only (labelled below what a command writes). */
  readOnly: string[];
  /** Real paths of files authorized for reading for this call only (named in argv). */
  callRead: string[];
}

/** Resource limits of one command (`prlimit`, and a pids cgroup). */
export interface CommandLimits {
  /** CPU seconds per process (RLIMIT_CPU). */
  cpuSeconds: number;
  /** Address space per process, bytes (RLIMIT_AS). */
  addressSpaceBytes: number;
  /** Largest file a process may write, bytes (RLIMIT_FSIZE). */
  fileSizeBytes: number;
  /** Most processes and threads of the command at once (see `cgroups.ts`). */
  processes: number;
  /** Memory of all the command's processes together, bytes (a memory cgroup; see `cgroups.ts`). */
  memoryBytes: number;
}

/** One mount the plan makes inside the workspace. */
export interface WorkspaceMount {
  /** Where (a real path: the sandbox shows workspace paths where the host has them). */
  path: string;
  /** `ro`/`rw` bind of the same host path, or a mask, or the workspace skeleton. */
  kind: "ro" | "rw" | "mask-file" | "mask-dir" | "skeleton";
}

/** A rendered sandbox: bwrap's options and what the write audit must watch. */
export interface BwrapPlan {
  /** bwrap options (everything before the command). */
  args: string[];
  /** Workspace mounts, parents before children. */
  mounts: WorkspaceMount[];
  /** The read-write mounts (the write audit walks each). */
  writable: string[];
  /** Every mount point: a walk stops at any but its own root. */
  excluded: string[];
}

/** What a sandbox needs besides the workspace and the system (a JIT tool's: Deno, its runner, its artifact). */
export interface PlanExtras {
  /** Host paths bound at the same path (outside the workspace), after everything else. */
  binds?: { path: string; kind: "ro" | "rw" }[];
  /** Environment of the sandboxed program over PATH, HOME and LANG (null: unset). */
  env?: Record<string, string | null>;
  /** Whether the listed `/etc` entries are there (default true; a JIT tool's Deno needs none). */
  etc?: boolean;
}

/** The first of `paths` that is a file, or null. */
export function firstFile(paths: string[]): string | null {
  return paths.find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  }) ?? null;
}

/** Where bubblewrap is looked for. */
export const BWRAP_PATHS: readonly string[] = ["/usr/bin/bwrap", "/bin/bwrap"];

/** util-linux's prlimit (CPU, address space and file size limits of a command), or null. */
export const PRLIMIT: string | null = firstFile(["/usr/bin/prlimit", "/bin/prlimit"]);

/** Most workspace mounts one call may need; more is refused (ELIMIT) rather than cut. */
export const MAX_WORKSPACE_MOUNTS = 256;

/** Exit code of the in-sandbox mount check when a mount is not what was derived. */
export const MOUNT_CHECK_FAILED = 125;

/** `PATH` inside the sandbox: the host's environment never leaks in. */
export const SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin";

/** Size of the sandbox's private `/tmp` (RAM-backed): what a command may keep there. */
export const SANDBOX_TMP_BYTES = 1024 ** 3;

/** Size of the sandbox's `/dev/shm` (RAM-backed; `/dev` itself is read-only). */
export const SANDBOX_SHM_BYTES = 64 * 1024 ** 2;

/** HOME inside the sandbox: the private tmpfs, gone with the call. */
export const SANDBOX_HOME = "/tmp";

/**
 * `/etc` entries a command can see. Everything else in `/etc` (shadow,
 * gshadow, ssh host keys, sudoers, ssl private keys, npmrc, pip.conf, the
 * system gitconfig, ...) is absent: a list of what programs need, not a list
 * of secrets to hide.
 */
export const ETC_ENTRIES: readonly string[] = [
  "passwd",
  "group",
  "nsswitch.conf",
  "host.conf",
  "hosts",
  "hostname",
  "localtime",
  "timezone",
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "alternatives",
  "locale.alias",
  "mime.types",
  "magic",
  "magic.mime",
  "terminfo",
  "shells",
  "os-release",
  "debian_version",
  "perl",
  "python3",
  "python3.11",
  "python3.12",
  "protocols",
  "services",
];

/** Host directories a program loader needs besides /usr (links on a merged-/usr system). */
const _ROOT_LINKS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/** Host paths no workspace may be, hold, or be inside: the sandbox's own system mounts. */
const _SYSTEM = ["/usr", "/etc", "/proc", "/dev", "/sys", ..._ROOT_LINKS.map((d) => `/${d}`)];

function _inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || !(rel === ".." || rel.startsWith(".." + sep) || isAbsolute(rel));
}

function _strictlyInside(root: string, path: string): boolean {
  return root !== path && _inside(root, path);
}

type Mode = "none" | "ro" | "rw";

/** Who sees what: the mode of any real path inside the workspace under a view. */
class _Modes {
  readonly #v: ShellView;
  readonly #hide: string[];
  readonly #ro: string[];
  constructor(view: ShellView) {
    this.#v = view;
    this.#hide = [...view.grants.denyRead, ...view.hide];
    this.#ro = [...view.grants.denyWrite, ...view.readOnly];
  }

  /** Every path where the mode can change (a bwrap mount may be needed there). */
  points(): string[] {
    const v = this.#v;
    const grants = [...v.grants.read, ...v.grants.write].filter((g) => g.scope !== "new");
    return [...grants.map((g) => g.path), ...this.#hide, ...this.#ro, ...v.callRead]
      .filter((p) => _inside(v.workspace, p));
  }

  /** Paths that must not be created (a write DENY or read-only label on a missing path). */
  protectedMissing(): string[] {
    return this.#ro.filter((p) => _inside(this.#v.workspace, p) && !_lexists(p));
  }

  mode(x: string): Mode {
    const v = this.#v;
    const covers = (g: { path: string; scope: string }) =>
      g.scope === "file" ? g.path === x : g.scope !== "new" && _inside(g.path, x);
    // A file argv named and the call authorized is visible even under an ASK's mask.
    const lifted = v.callRead.some((c) => c === x);
    const hidden = !lifted && this.#hide.some((h) => _inside(h, x));
    const readable = lifted || v.grants.read.some(covers);
    if (hidden || !readable) return "none";
    // Writable needs readable too: a read-write mount can be read.
    const writable = v.grants.write.some(covers) && !this.#ro.some((r) => _inside(r, x));
    return writable ? "rw" : "ro";
  }
}

function _lstat(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

function _lexists(path: string): boolean {
  return _lstat(path) !== null;
}

/** The deepest existing ancestor of a missing path. */
function _existingAncestor(path: string): string {
  let p = dirname(path);
  while (!_lexists(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/**
 * Work out the workspace mounts for a view: DFS from the root, mounting only
 * where the mode changes, parents before children.
 */
function _workspaceMounts(view: ShellView): WorkspaceMount[] {
  const modes = new _Modes(view);
  const points = modes.points();
  // A directory holding a missing path that must not be created is mounted
  // read-only itself, with its existing entries mounted again in their own mode.
  const sealed = new Set(modes.protectedMissing().map(_existingAncestor));
  const out: WorkspaceMount[] = [];
  const push = (m: WorkspaceMount, at = out.length) => {
    out.splice(at, 0, m);
    if (out.length > MAX_WORKSPACE_MOUNTS) {
      throw new LibosError(
        "ELIMIT",
        `shell.run: the sandbox for this call needs more than ${MAX_WORKSPACE_MOUNTS} mounts; ` +
          "grant or deny fewer, broader paths",
      );
    }
  };
  const visit = (x: string, inherited: Mode) => {
    const st = _lstat(x);
    // Never bind through a symlink: bwrap would follow it on the host.
    if (!st || st.isSymlink) return;
    let m = modes.mode(x);
    const seal = st.isDirectory && m === "rw" && sealed.has(x);
    if (seal) m = "ro";
    if (m !== inherited) {
      if (m === "none") {
        if (inherited !== "none") {
          push({ path: x, kind: st.isDirectory ? "mask-dir" : "mask-file" });
        }
      } else push({ path: x, kind: m });
    }
    if (!st.isDirectory) return;
    // A writable directory above a mount is made a mount point itself (bound onto
    // itself): renaming it would carry the mount below it along and leave the host
    // path a rule names free, for this command and for every later one to fill.
    const at = out.length;
    visitBelow(x, m, seal);
    if (m === "rw" && inherited === "rw" && out.length > at) push({ path: x, kind: "rw" }, at);
  };
  const visitBelow = (x: string, m: Mode, seal: boolean) => {
    // Below, `m` is what an entry gets without a mount of its own (inside a mask
    // or the skeleton: nothing, it does not exist unless mounted).
    if (seal) {
      for (const e of Deno.readDirSync(x)) visit(join(x, e.name), m);
      return;
    }
    const next = new Set<string>();
    for (const p of points) {
      if (!_strictlyInside(x, p)) continue;
      next.add(join(x, relative(x, p).split(sep)[0]));
    }
    for (const c of [...next].sort()) visit(c, m);
  };
  const ws = view.workspace;
  if (modes.mode(ws) === "none") push({ path: ws, kind: "skeleton" });
  visit(ws, "none");
  return out;
}

/** Refuse a workspace the sandbox cannot separate from the system it mounts. */
function _checkWorkspace(ws: string): void {
  // The private /tmp is HOME: a workspace there would be shadowed or shared.
  if (ws === "/tmp" || _SYSTEM.some((s) => _inside(s, ws) || _inside(ws, s))) {
    throw new LibosError(
      "EINVAL",
      `workspace: ${ws} is or holds a system directory; shell commands cannot be sandboxed there`,
    );
  }
}

/** bwrap options for the system part of the sandbox (everything but the workspace). */
function _systemArgs(etc: boolean): string[] {
  const args = [
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    // The command itself is pid 1 of its namespace: when it ends, the kernel
    // kills everything it started (a reaper would wait for them instead).
    "--as-pid-1",
    "--new-session",
    "--clearenv",
    "--setenv",
    "PATH",
    SANDBOX_PATH,
    "--setenv",
    "HOME",
    SANDBOX_HOME,
    "--setenv",
    "LANG",
    "C.UTF-8",
    "--ro-bind",
    "/usr",
    "/usr",
  ];
  for (const d of _ROOT_LINKS) {
    const st = _lstat(`/${d}`);
    if (!st) continue;
    if (st.isSymlink) args.push("--symlink", Deno.readLinkSync(`/${d}`), `/${d}`);
    else if (st.isDirectory) args.push("--ro-bind", `/${d}`, `/${d}`);
  }
  if (etc) { for (const e of ETC_ENTRIES) args.push("--ro-bind-try", `/etc/${e}`, `/etc/${e}`); }
  // The command's uid is the runtime's own in a user namespace (root when the runtime is
  // root): with /proc writable it could set global sysctls (kernel.core_pattern runs a
  // program as host root) although it holds no capability. Read-only, /proc cannot.
  // /proc/keys would list the names of that uid's keys (the key syscalls are filtered).
  args.push("--proc", "/proc", "--ro-bind", "/dev/null", "/proc/keys", "--remount-ro", "/proc");
  // The sandbox's writable mounts outside the workspace live in RAM: each is sized,
  // so files cannot fill the host's memory (tmpfs takes half of RAM unless told).
  args.push("--dev", "/dev", "--size", String(SANDBOX_SHM_BYTES), "--tmpfs", "/dev/shm");
  args.push("--remount-ro", "/dev", "--size", String(SANDBOX_TMP_BYTES), "--tmpfs", "/tmp");
  return args;
}

/**
 * Render a view as a bwrap plan for a command running in `cwd` (real). Throws
 * EPERM when the cwd is hidden from commands, ELIMIT when the view needs too
 * many mounts, EINVAL when the workspace is a system directory.
 */
export function planSandbox(view: ShellView, cwd: string, extra: PlanExtras = {}): BwrapPlan {
  _checkWorkspace(view.workspace);
  const mounts = _workspaceMounts(view);
  const args = _systemArgs(extra.etc ?? true);
  for (const [k, v] of Object.entries(extra.env ?? {})) {
    args.push(...(v === null ? ["--unsetenv", k] : ["--setenv", k, v]));
  }
  const remountRo: string[] = [];
  for (const m of mounts) {
    if (m.kind === "skeleton") {
      args.push("--tmpfs", m.path);
      remountRo.push(m.path);
    } else if (m.kind === "mask-file") {
      args.push("--ro-bind", "/dev/null", m.path);
    } else if (m.kind === "mask-dir") {
      // Traversable (never listable) when something inside is mounted again.
      const through = mounts.some((o) => _strictlyInside(m.path, o.path));
      args.push("--perms", through ? "0111" : "0000", "--tmpfs", m.path);
      remountRo.push(m.path);
    } else {
      args.push(m.kind === "rw" ? "--bind" : "--ro-bind", m.path, m.path);
    }
  }
  // The cwd must exist: in the skeleton it is made; hidden inside a mount it is refused.
  const holder = mounts.filter((m) => _inside(m.path, cwd)).at(-1);
  if (holder && (holder.kind === "mask-dir" || holder.kind === "mask-file")) {
    throw new LibosError("EPERM", "shell.run: the process cwd is hidden from commands");
  }
  if (holder?.kind === "skeleton" && holder.path !== cwd) args.push("--dir", cwd);
  for (const b of extra.binds ?? []) {
    args.push(b.kind === "rw" ? "--bind" : "--ro-bind", b.path, b.path);
  }
  for (const p of remountRo) args.push("--remount-ro", p);
  args.push("--remount-ro", "/", "--chdir", cwd);
  // Every read-write mount is walked from its own root, and every walk stops at any
  // other mount (a mask, a read-only overlay, or a read-write mount walked by itself).
  const writable = mounts.filter((m) => m.kind === "rw").map((m) => m.path);
  return { args, mounts, writable, excluded: mounts.map((m) => m.path) };
}

/** The ENOSYS a sandboxed run gets on a host without bubblewrap (or prlimit, or a known arch). */
export function noSandbox(): LibosError {
  return new LibosError(
    "ENOSYS",
    "shell.run: no OS sandbox on this host: install the Debian package 'bubblewrap' " +
      "(and util-linux for prlimit; x86_64 or aarch64), or set the image policy " +
      '"shell_sandbox": "none" (unsafe: commands then run with the runtime\'s own OS permissions)',
  );
}

// ---------------------------------------------------------------- the in-sandbox mount check

interface _HostMount {
  root: string;
  point: string;
}

/** Undo mountinfo's octal escapes (space, tab, newline, backslash). */
function _unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Escape a path the way the kernel writes it in mountinfo. */
function _escape(s: string): string {
  return s.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

/** How long the host's mount table is reused: it changes rarely, and a stale one only refuses. */
const _HOST_MOUNTS_TTL_MS = 1000;
let _hostCache: { at: number; mounts: _HostMount[] } | null = null;

/**
 * The runtime's own mount table. Deno refuses `/proc` to a runtime without
 * --allow-all, so then a `cat` (same mount namespace) reads it. A table that
 * went stale can only make the in-sandbox check refuse, never pass wrongly.
 */
function _hostMounts(): _HostMount[] {
  const now = performance.now();
  if (_hostCache && now - _hostCache.at < _HOST_MOUNTS_TTL_MS) return _hostCache.mounts;
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) throw e;
    const out = new Deno.Command("/bin/cat", {
      args: ["/proc/self/mountinfo"],
      clearEnv: true,
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!out.success) throw new LibosError("EIO", "shell.run: cannot read the host's mount table");
    text = new TextDecoder().decode(out.stdout);
  }
  const mounts = text.split("\n").filter(Boolean).map((l) => {
    const f = l.split(" ");
    return { root: _unescape(f[3]), point: _unescape(f[4]) };
  });
  _hostCache = { at: now, mounts };
  return mounts;
}

/** The `root` field mountinfo shows for a bind of host path `src`: its path inside its file system. */
function _bindRoot(src: string, host: _HostMount[]): string {
  let best: _HostMount | null = null;
  for (const m of host) {
    if (!_inside(m.point, src)) continue;
    // The longest mount point wins; among equals, the last (it is mounted on top).
    if (!best || m.point.length >= best.point.length) best = m;
  }
  if (!best) return src;
  const rest = best.point === "/" ? src : src.slice(best.point.length);
  if (best.root === "/") return rest || "/";
  return rest ? best.root + rest : best.root;
}

/**
 * The command that runs inside the sandbox: a POSIX shell that checks every
 * workspace mount in `/proc/self/mountinfo` against what was derived (mount
 * point and source), then execs `argv` (no shell interpretation: `"$@"`).
 * With a `deadline` (epoch ms), `argv` runs under a timer of the sandbox's
 * own that kills it there, and not at all once it has passed.
 */
export function checkedCommand(plan: BwrapPlan, argv: string[], deadline?: number): string[] {
  const host = _hostMounts();
  const pairs: string[] = [];
  for (const m of plan.mounts) {
    const root = m.kind === "skeleton" || m.kind === "mask-dir"
      ? "/"
      : m.kind === "mask-file"
      ? _bindRoot("/dev/null", host)
      : _bindRoot(m.path, host);
    pairs.push(_escape(m.path), _escape(root));
  }
  return [
    "/bin/sh",
    "-c",
    _CHECK,
    "libos-mount-check",
    // The script again, for its one re-run under bash (see _CHECK).
    _CHECK,
    deadline === undefined ? "-" : _deadlineArg(deadline),
    String(plan.mounts.length),
    ...pairs,
    ...argv,
  ];
}

/**
 * A deadline (epoch ms) as the check reads it: whole seconds since boot
 * (`up:N`, compared with `/proc/uptime`, read without a fork), or whole
 * seconds of the epoch where this runtime may not read `/proc/uptime` (the
 * check then runs `date`).
 */
function _deadlineArg(deadline: number): string {
  try {
    const up = Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]);
    if (Number.isFinite(up)) return `up:${Math.floor(up + (deadline - Date.now()) / 1000)}`;
  } catch { /* no read permission on /proc: the epoch, and date */ }
  return String(Math.floor(deadline / 1000));
}

/**
 * Closes every descriptor above 2, then runs the check again with dash (its
 * one argument: the script). Only when dash met one it cannot name (above 9);
 * bash exports a SHLVL of its own to what it execs, hence `env -u`.
 */
const _CLOSE_ALL =
  'for f in /proc/self/fd/*; do fd=${f##*/}; case $fd in 0|1|2) ;; *) eval "exec $fd>&-" ;; esac; done; ' +
  'exec /usr/bin/env -u SHLVL LIBOS_FDS_CLOSED=1 /bin/sh -c "$1" libos-mount-check "$@"';

const _CHECK =
  `# Descriptors the runtime inherited without close-on-exec (a harness's pipes, files a
# parent left open) are the host's: none reaches the command. dash closes 3 to 9;
# above that only bash can, so the script runs once more under bash's closing.
script=$1; shift
high=
for f in /proc/self/fd/*; do
  fd=\${f##*/}
  case $fd in 0|1|2) ;; [3-9]) eval "exec $fd>&-" ;; *) high=1 ;; esac
done
if [ -n "$high" ] && [ -z "$LIBOS_FDS_CLOSED" ]; then
  exec /bin/bash -c '${_CLOSE_ALL}' libos-close-fds "$script" "$@"
fi
unset LIBOS_FDS_CLOSED
deadline=$1; shift
n=$1; shift
nl='
'
exp=$nl; i=0
while [ "$i" -lt "$n" ]; do exp="$exp$1 $2$nl"; shift 2; i=$((i + 1)); done
seen=0
while read -r _ _ _ root mnt _; do
  case $exp in
    *"$nl$mnt "*)
      case $exp in
        *"$nl$mnt $root$nl"*) seen=$((seen + 1)) ;;
        *) echo "libos: sandbox mount $mnt is not the path derived for this call; nothing ran" >&2
           exit ${MOUNT_CHECK_FAILED} ;;
      esac ;;
  esac
done < /proc/self/mountinfo
if [ "$seen" -ne "$n" ]; then
  echo "libos: $((n - seen)) sandbox mount(s) missing; nothing ran" >&2
  exit ${MOUNT_CHECK_FAILED}
fi
# The shell exports a PWD of its own; the command gets exactly the cleared environment.
unset PWD
# The deadline holds whatever becomes of the runtime (stalled, say): the command is
# killed there by the sandbox's own timer, and one started after it runs nothing.
# Whole seconds since boot (read without a fork), or of the epoch; one spare: the
# end comes no later than the deadline.
case $deadline in
  -) exec "$@" ;;
  up:*) read now _ < /proc/uptime || exit ${MOUNT_CHECK_FAILED}; now=\${now%.*}; deadline=\${deadline#up:} ;;
  *) now=$(/usr/bin/date +%s) || exit ${MOUNT_CHECK_FAILED} ;;
esac
left=$((deadline - now - 1))
if [ "$left" -le 0 ]; then
  echo "libos: the command's deadline passed before it started; nothing ran" >&2
  exit ${MOUNT_CHECK_FAILED}
fi
exec /usr/bin/timeout -s KILL "$left" "$@"`;
