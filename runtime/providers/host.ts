/**
 * Host-backed providers: the real file system, real subprocesses, the real
 * clock. These are the only code that touches the host on a primitive's behalf.
 * @module
 */
import * as nodeFs from "node:fs";
import { basename, dirname, join } from "node:path";
import { LibosError } from "../errors.ts";
import { canNameOpenFiles, entryKind, openChecked, openNoFollow } from "../open_files.ts";
import {
  BWRAP_PATHS,
  checkedCommand,
  firstFile,
  noSandbox,
  planSandbox,
  PRLIMIT,
  SANDBOX_PATH,
} from "../sandbox/bwrap.ts";
import {
  type CommandGroup,
  commandLimitKinds,
  endCommandGroup,
  hasCommandGroups,
  newCommandGroup,
  nprocLimit,
  sweepOrphanGroups,
} from "../sandbox/cgroups.ts";
import { noSetIdFilter } from "../sandbox/seccomp.ts";
import { diffSnapshots, snapshot } from "../sandbox/writes.ts";
import type {
  ClockProvider,
  EntryKind,
  FileStat,
  FileSystemProvider,
  ShellProvider,
  ShellResult,
  ShellRunOptions,
} from "./types.ts";

function _fileStat(info: Deno.FileInfo): FileStat {
  return { kind: entryKind(info), size: info.size, mtime: info.mtime?.getTime() ?? null };
}

const _decoder = new TextDecoder();

/**
 * What a file read may open: a regular file within `maxBytes` (`known` is its
 * stat if taken). Opening a FIFO would block the whole runtime, and a huge file
 * would fill memory: anything else is refused before reading.
 */
function _readable(path: string, maxBytes: number, known?: FileStat): FileStat {
  const info = known ?? _fileStat(Deno.statSync(path));
  if (info.kind !== "file") throw new LibosError("EINVAL", `path: not a regular file`);
  if (info.size > maxBytes) {
    throw new LibosError("ELIMIT", `path: file is ${info.size} bytes, limit ${maxBytes}`);
  }
  return info;
}

/** A directory's entries by name, with their kinds. */
function _listing(entries: Iterable<Deno.DirEntry>): { name: string; kind: EntryKind }[] {
  return [...entries].map((e) => ({ name: e.name, kind: entryKind(e) }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The host file system. Small synchronous calls: cheaper than a thread-pool hop
 * for 4 KB files. Every effect goes through the directory that holds its
 * entry, opened and proven to be the checked real path: a link or directory
 * another process swaps in after the check leads nowhere (see {@link _inDir}).
 */
export class HostFileSystem implements FileSystemProvider {
  realPath(path: string): Promise<string> {
    return Promise.resolve(Deno.realPathSync(path));
  }
  readText(path: string, maxBytes: number, known?: FileStat): Promise<string> {
    const info = _readable(path, maxBytes, known);
    // Non-blocking, should a FIFO have been swapped in since; no fstat (a Node Stats
    // object costs more than the read): the size is checked as the bytes arrive.
    const fd = _openEntry(path, O_RDONLY | O_NONBLOCK);
    try {
      let buf = new Uint8Array(Math.min(info.size, maxBytes) + 1);
      let off = 0;
      for (;;) {
        const want = buf.length - off;
        const n = nodeFs.readSync(fd, buf, off, want, null);
        off += n;
        if (off > maxBytes) {
          throw new LibosError("ELIMIT", `path: file is over ${maxBytes} bytes, the limit`);
        }
        // A regular file reads short only at its end (the buffer holds one byte more
        // than the size it had: it grew if that byte came too).
        if (n < want) break;
        if (off === buf.length) {
          const grown = new Uint8Array(Math.min(buf.length * 2, maxBytes + 1));
          grown.set(buf);
          buf = grown;
        }
      }
      return Promise.resolve(_decoder.decode(buf.subarray(0, off)));
    } finally {
      nodeFs.closeSync(fd);
    }
  }
  writeText(path: string, content: string): Promise<void> {
    // Created inside the proven directory, and never through a final link.
    const fd = _openEntry(path, O_WRONLY | O_CREAT);
    try {
      nodeFs.ftruncateSync(fd, 0);
      const bytes = new TextEncoder().encode(content);
      for (let off = 0; off < bytes.length;) {
        off += nodeFs.writeSync(fd, bytes, off, bytes.length - off, off);
      }
    } finally {
      nodeFs.closeSync(fd);
    }
    return Promise.resolve();
  }
  mkdir(path: string): Promise<void> {
    // From the deepest directory that exists, each missing one is made inside the
    // one before, held open: none can land where a swapped-in link points.
    const missing: string[] = [];
    let base = path;
    while (!_isEntry(base)) {
      missing.unshift(basename(base));
      base = dirname(base);
    }
    let fd = openChecked(base, O_RDONLY | O_DIRECTORY);
    try {
      for (const name of missing) {
        const at = _at(fd, base, name);
        _hostNamed(fd, base, () => {
          try {
            Deno.mkdirSync(at);
          } catch (e) {
            if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
          }
        });
        base = join(base, name);
        const next = canNameOpenFiles()
          ? openNoFollow(at, O_RDONLY | O_DIRECTORY, base)
          : openChecked(base, O_RDONLY | O_DIRECTORY);
        nodeFs.closeSync(fd);
        fd = next;
      }
    } finally {
      nodeFs.closeSync(fd);
    }
    return Promise.resolve();
  }
  remove(path: string, recursive: boolean): Promise<void> {
    // A recursive removal below the open directory never follows a link (Rust's
    // remove_dir_all works through open directories itself).
    _inDir(dirname(path), (at) => Deno.removeSync(at(basename(path)), { recursive }));
    return Promise.resolve();
  }
  list(path: string): Promise<{ name: string; kind: EntryKind }[]> {
    const fd = openChecked(path, O_RDONLY | O_DIRECTORY);
    try {
      return Promise.resolve(
        _listing(Deno.readDirSync(canNameOpenFiles() ? `/proc/self/fd/${fd}` : path)),
      );
    } finally {
      nodeFs.closeSync(fd);
    }
  }
  lstat(path: string): Promise<FileStat> {
    return Promise.resolve(_fileStat(Deno.lstatSync(path)));
  }
  statEntry(path: string): Promise<FileStat> {
    return Promise.resolve(
      _inDir(dirname(path), (at) => _fileStat(Deno.lstatSync(at(basename(path))))),
    );
  }
}

/**
 * The file system as a runtime that never resolves real paths has it: every
 * effect acts on the path by name, following any link on the way. For the
 * safety benchmark's `no-realpath` ablation only (together with lexical path
 * checks in the primitives): it shows what checking real paths is worth.
 */
export class ByNameFileSystem extends HostFileSystem {
  override readText(path: string, maxBytes: number, known?: FileStat): Promise<string> {
    _readable(path, maxBytes, known);
    return Promise.resolve(Deno.readTextFileSync(path));
  }
  override writeText(path: string, content: string): Promise<void> {
    Deno.writeTextFileSync(path, content);
    return Promise.resolve();
  }
  override mkdir(path: string): Promise<void> {
    Deno.mkdirSync(path, { recursive: true });
    return Promise.resolve();
  }
  override remove(path: string, recursive: boolean): Promise<void> {
    Deno.removeSync(path, { recursive });
    return Promise.resolve();
  }
  override list(path: string): Promise<{ name: string; kind: EntryKind }[]> {
    return Promise.resolve(_listing(Deno.readDirSync(path)));
  }
  override statEntry(path: string): Promise<FileStat> {
    return this.lstat(path);
  }
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_NONBLOCK, O_DIRECTORY } = nodeFs.constants;

/**
 * Run `use` with the directory `dir` (a checked real path) held open and proven
 * to be `dir` itself. `at(name)` names an entry inside the open directory, so
 * what `use` does lands there whatever another process renames meanwhile.
 * Without `/proc/self/fd`, `at` names the path (a narrower guarantee).
 */
function _inDir<T>(dir: string, use: (at: (name: string) => string) => T): T {
  const fd = openChecked(dir, O_RDONLY | O_DIRECTORY);
  try {
    return _hostNamed(fd, dir, () => use((name) => _at(fd, dir, name)));
  } finally {
    nodeFs.closeSync(fd);
  }
}

/** The name of entry `name` inside open directory `fd` (which is `dir`). */
function _at(fd: number, dir: string, name: string): string {
  return canNameOpenFiles() ? `/proc/self/fd/${fd}/${name}` : join(dir, name);
}

/** Run `act`, its host errors naming `dir` rather than its open file's `/proc` name. */
function _hostNamed<T>(fd: number, dir: string, act: () => T): T {
  try {
    return act();
  } catch (e) {
    const prefix = `/proc/self/fd/${fd}`;
    if (!(e instanceof Error) || !e.message.includes(prefix)) throw e;
    const Same = e.constructor as new (message: string) => Error;
    throw new Same(e.message.replaceAll(prefix, dir));
  }
}

/** Open the entry at `path` (a checked real path) through its proven directory, never through a final link. */
function _openEntry(path: string, flags: number): number {
  const dir = dirname(path);
  return _inDir(
    dir,
    (at) =>
      canNameOpenFiles() ? openNoFollow(at(basename(path)), flags, path) : openChecked(path, flags),
  );
}

/** Whether anything is at `path` (a link counts). */
function _isEntry(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Fixed PATH for shell commands: the host's environment never leaks in. */
export const SHELL_PATH = SANDBOX_PATH;

/** Options for {@link HostShell}. */
export interface HostShellOptions {
  /**
   * The bwrap executable; null when there is none (sandboxed runs then fail
   * with ENOSYS). Default: `/usr/bin/bwrap` or `/bin/bwrap` if present.
   */
  bwrap?: string | null;
}

/**
 * Real subprocesses: argv only, cleared environment, timeout, output caps.
 * Sandboxed runs (the default) go through bubblewrap under `prlimit`, with the
 * writable mounts snapshotted before and after for the write audit.
 */
export class HostShell implements ShellProvider {
  readonly #bwrap: string | null;
  /** A shell runner; see {@link HostShellOptions}. */
  constructor(options: HostShellOptions = {}) {
    this.#bwrap = options.bwrap === undefined ? firstFile([...BWRAP_PATHS]) : options.bwrap;
    // At the runtime's start: end what a runtime killed mid-command left behind.
    if (this.sandboxAvailable()) sweepOrphanGroups().catch(() => {});
  }

  sandboxAvailable(): boolean {
    return this.#bwrap !== null && PRLIMIT !== null && SECCOMP !== null && JOIN_SH !== null;
  }

  async run(argv: string[], o: ShellRunOptions): Promise<ShellResult> {
    if (o.signal?.aborted) throw _aborted(o.signal);
    if (!_onPath(argv[0])) {
      throw new LibosError("ENOENT", `argv[0]: executable '${argv[0]}' not found`);
    }
    if (o.sandbox === null) return await this.#runUnsandboxed(argv, o);
    if (!this.sandboxAvailable()) throw noSandbox();
    const sb = o.sandbox;
    const plan = planSandbox(sb.view, o.cwd);
    const before = snapshot(plan.writable, plan.excluded, sb.maxWritableEntries);
    // Past its entry limit the walk saw nothing of the rest: no diff could be trusted.
    // (Other gaps, a name that is not UTF-8 say, leave the rest audited: the result
    // then says its write audit is incomplete.)
    if (before.overLimit) {
      throw new LibosError(
        "ELIMIT",
        `shell.run: the writable paths hold more than ${sb.maxWritableEntries} entries, ` +
          "too many for the write audit; grant write on narrower paths",
      );
    }
    const l = sb.limits;
    const kinds = commandLimitKinds();
    const prlimit = [
      PRLIMIT!,
      `--cpu=${l.cpuSeconds}`,
      `--as=${l.addressSpaceBytes}`,
      `--fsize=${l.fileSizeBytes}`,
      ...(kinds.processes === "rlimit" ? [`--nproc=${nprocLimit(l.processes)}`] : []),
      "--",
      this.#bwrap!,
      // The filter arrives on stdin, which then ends: the command reads end of file.
      "--seccomp",
      "0",
      ...plan.args,
      "--",
      ...checkedCommand(plan, argv, o.deadline),
    ];
    await sweepOrphanGroups().catch(() => {});
    const group = hasCommandGroups() ? _commandGroup(l.processes, l.memoryBytes) : null;
    try {
      // The launcher joins the command's cgroups, then execs prlimit (which execs bwrap):
      // the groups hold every process from the first fork. If it cannot join, nothing runs.
      const launch = group
        ? [JOIN_SH!, "-c", _JOIN_THEN_EXEC, "sh", ...group.procs, "--", ...prlimit]
        : prlimit;
      const cmd = new Deno.Command(launch[0], {
        args: launch.slice(1),
        cwd: "/",
        clearEnv: true,
        env: {},
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
      const child = cmd.spawn();
      const stdin = child.stdin.getWriter();
      await stdin.write(SECCOMP!).catch(() => {});
      await stdin.close().catch(() => {});
      // The launcher execs bwrap in place: killing this pid kills bwrap, and bwrap's
      // death (--die-with-parent) ends the sandbox's pid namespace, every process in it.
      const out = await _collect(child, o, (c) => _kill(c));
      if (o.signal?.aborted) throw _aborted(o.signal);
      const after = snapshot(plan.writable, plan.excluded, 2 * sb.maxWritableEntries, before);
      return {
        ...out,
        writes: await diffSnapshots(before, after),
        writes_complete: before.complete && after.complete,
        limits: kinds,
      };
    } finally {
      if (group) await endCommandGroup(group);
    }
  }

  /** The unsafe mode: the runtime's own OS permissions, its own process group. */
  async #runUnsandboxed(argv: string[], o: ShellRunOptions): Promise<ShellResult> {
    // The command leads a process group of its own (setsid execs it in place),
    // so the timeout, and its end, take everything it started with it.
    // The deadline holds without the runtime too: `timeout` kills the command there.
    const left = o.deadline === undefined ? null : (o.deadline - Date.now()) / 1000;
    if (left !== null && left <= 0) {
      throw new LibosError(
        "ETIMEDOUT",
        "shell.run: its deadline passed before it started; nothing ran",
      );
    }
    const cmd = new Deno.Command(SETSID, {
      args: left === null ? argv : [TIMEOUT, "-s", "KILL", left.toFixed(3), ...argv],
      cwd: o.cwd,
      clearEnv: true,
      env: { PATH: SHELL_PATH, HOME: o.cwd, LANG: "C.UTF-8" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
    let child: Deno.ChildProcess;
    try {
      child = cmd.spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new LibosError("ENOENT", `argv[0]: executable '${argv[0]}' not found`);
      }
      throw e;
    }
    const out = await _collect(child, o, _killGroup);
    if (o.signal?.aborted) throw _aborted(o.signal);
    return { ...out, writes: null, writes_complete: false, limits: null };
  }
}

const SECCOMP = noSetIdFilter();
/** Runs the launcher that joins a command's cgroups. */
const JOIN_SH = firstFile(["/bin/sh", "/usr/bin/sh"]);
/** Arguments: each group's `cgroup.procs`, `--`, the command. Join each, then become the command. */
const _JOIN_THEN_EXEC =
  'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"';

/** The command's cgroups; without them nothing runs (EIO, naming the cause). */
function _commandGroup(processes: number, memoryBytes: number): CommandGroup {
  try {
    return newCommandGroup(processes, memoryBytes);
  } catch (e) {
    throw new LibosError(
      "EIO",
      `shell.run: could not make the command's cgroups (${(e as Error).message})`,
    );
  }
}

/** Read both streams (capped), enforce the timeout, end the child's processes. */
async function _collect(
  child: Deno.ChildProcess,
  o: ShellRunOptions,
  kill: (child: Deno.ChildProcess) => void,
): Promise<Omit<ShellResult, "writes" | "writes_complete" | "limits">> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    kill(child);
  }, o.timeoutMs);
  const stop = () => kill(child);
  o.signal?.addEventListener("abort", stop);
  if (o.signal?.aborted) stop();
  try {
    const [stdout, stderr, status] = await Promise.all([
      _readCapped(child.stdout, o.maxOutputBytes),
      _readCapped(child.stderr, o.maxOutputBytes),
      // Background children left behind would hold the pipes open and outlive the call.
      child.status.then((s) => (kill(child), s)),
    ]);
    // Killed by the sandbox's own timer at the deadline (the runtime's fired late).
    const atDeadline = o.deadline !== undefined && status.code === 137 &&
      Date.now() >= o.deadline - 1000;
    return {
      code: status.code,
      stdout: stdout.text,
      stderr: stderr.text,
      timed_out: timedOut || atDeadline,
      truncated: stdout.truncated || stderr.truncated,
    };
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", stop);
  }
}

/** The error of a command ended by its signal: the reason it was given, or EIO. */
function _aborted(signal: AbortSignal): LibosError {
  const why = signal.reason;
  return why instanceof LibosError
    ? why
    : new LibosError("EIO", "shell.run: the command was stopped");
}

/** SIGKILL one process (bwrap: its sandbox dies with it). */
function _kill(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
}

/** Starts each command in a new session and process group (util-linux). */
const SETSID = "/usr/bin/setsid";
/** Kills a command at its deadline (coreutils). */
const TIMEOUT = "/usr/bin/timeout";

/** Whether `exe` is an executable file in one of SHELL_PATH's directories. */
function _onPath(exe: string): boolean {
  return SHELL_PATH.split(":").some((dir) => {
    try {
      const info = Deno.statSync(`${dir}/${exe}`);
      return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/**
 * SIGKILL the command's whole process group (its pid is the group id). After
 * the command was reaped its pid could in principle be reused, but a pid stays
 * taken while it names a live group, and reuse needs the pid counter to wrap.
 */
function _killGroup(child: Deno.ChildProcess): void {
  try {
    Deno.kill(-child.pid, "SIGKILL");
  } catch {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

async function _readCapped(
  stream: ReadableStream<Uint8Array>,
  max: number,
): Promise<{ text: string; truncated: boolean }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let seen = 0;
  for await (const chunk of stream) {
    seen += chunk.length;
    if (size < max) {
      const take = chunk.subarray(0, Math.min(chunk.length, max - size));
      chunks.push(take);
      size += take.length;
    }
  }
  const truncated = seen > max;
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) (all.set(c, off), off += c.length);
  return { text: new TextDecoder().decode(all), truncated };
}

/** The real clock. */
export class HostClock implements ClockProvider {
  now(): number {
    return Date.now();
  }
  sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
  }
}
