/**
 * How many processes one shell command may run at once. A fork bomb inside
 * the sandbox is otherwise bounded only by the host's pid space, and the
 * runtime shares that space: its JIT tools, its shell commands and everything
 * else on the machine stop forking until the command's timeout.
 *
 * Two kernel mechanisms, picked once per runtime:
 * - `cgroup`: each command gets a pids cgroup of its own, a child of the
 *   runtime's (`pids.max`); its launcher joins the group before it execs
 *   `prlimit`, so every process of the command is counted from its first
 *   fork. This is the one that holds for root, whom RLIMIT_NPROC does not
 *   bind.
 * - `rlimit`: RLIMIT_NPROC (`prlimit --nproc`), for a runtime that is not
 *   root and cannot make pids cgroups. The kernel counts it against every task
 *   of the runtime's user (the command's user namespace included), so it is
 *   set to what that user runs now plus the command's share.
 * - `none`: root with no pids cgroup it can create. The command runs with its
 *   other limits (CPU, memory, timeout) and no process limit; the effect's
 *   record says so.
 * @module
 */

/** What caps a command's processes on this host. */
export type ProcessLimitKind = "cgroup" | "rlimit" | "none";

/** A pids cgroup made for one command. */
export interface CommandGroup {
  /** The cgroup's directory. */
  dir: string;
  /** Its `cgroup.procs`: the launcher writes its own pid here before it execs. */
  procs: string;
}

let _chosen: { kind: ProcessLimitKind; parent: string | null } | undefined;

/** The mechanism this host offers (probed once: a pids cgroup made and removed). */
export function processLimitKind(): ProcessLimitKind {
  return _choose().kind;
}

/** A fresh pids cgroup for one command, at most `max` tasks (processes and threads). */
export function newCommandGroup(max: number): CommandGroup {
  const parent = _choose().parent;
  if (parent === null) throw new Error("no pids cgroup on this host");
  const dir = `${parent}/libos-cmd-${crypto.randomUUID()}`;
  Deno.mkdirSync(dir);
  try {
    Deno.writeTextFileSync(`${dir}/pids.max`, String(max));
  } catch (e) {
    _removeGroupDir(dir);
    throw e;
  }
  return { dir, procs: `${dir}/cgroup.procs` };
}

/**
 * The RLIMIT_NPROC that leaves a command `max` more tasks: those the runtime's
 * user runs now (threads included) plus `max`. A bound, not an exact share:
 * the user's other processes may start or end while the command runs.
 */
export function nprocLimit(max: number): number {
  const uid = Deno.uid();
  let tasks = 0;
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const status = Deno.readTextFileSync(`/proc/${e.name}/status`);
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid) continue;
      tasks += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1);
    } catch { /* gone */ }
  }
  return tasks + max;
}

/**
 * End a command's group: SIGKILL what is still in it (a pid namespace's last
 * members may be dying after its init), then remove it once it is empty.
 * Resolves when the group is gone, or after `waitMs` with it left in place.
 */
export async function endCommandGroup(group: CommandGroup, waitMs = 2_000): Promise<boolean> {
  for (const until = Date.now() + waitMs;;) {
    for (const pid of _members(group)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone already */ }
    }
    if (_removeGroupDir(group.dir)) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
}

function _members(group: CommandGroup): number[] {
  try {
    return Deno.readTextFileSync(group.procs).split("\n").filter((l) => l !== "").map(Number);
  } catch {
    return [];
  }
}

/** rmdir (a cgroup directory is removed as an empty directory, its control files included). */
function _removeGroupDir(dir: string): boolean {
  try {
    Deno.removeSync(dir);
    return true;
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
}

function _choose(): { kind: ProcessLimitKind; parent: string | null } {
  if (_chosen) return _chosen;
  const parent = _ownPidsCgroups().find(_canMakeGroups) ?? null;
  const kind: ProcessLimitKind = parent !== null ? "cgroup" : _isRoot() ? "none" : "rlimit";
  return _chosen = { kind, parent };
}

/**
 * The runtime's own cgroup directories that may hold a pids controller: the
 * v1 `pids` hierarchy's, then the unified (v2) one's.
 */
function _ownPidsCgroups(): string[] {
  let lines: string[];
  try {
    lines = Deno.readTextFileSync("/proc/self/cgroup").split("\n");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of lines) {
    // `hierarchy-id:controllers:path`; the path itself may hold colons.
    const a = line.indexOf(":");
    const b = line.indexOf(":", a + 1);
    if (a < 0 || b < 0) continue;
    const controllers = line.slice(a + 1, b);
    const path = line.slice(b + 1);
    const sub = path === "/" ? "" : path;
    if (controllers.split(",").includes("pids")) out.unshift(`/sys/fs/cgroup/pids${sub}`);
    else if (controllers === "") out.push(`/sys/fs/cgroup${sub}`);
  }
  return out;
}

/** Whether a child made under `parent` is a pids cgroup (v2: only where the parent enables pids). */
function _canMakeGroups(parent: string): boolean {
  const probe = `${parent}/libos-probe-${crypto.randomUUID()}`;
  try {
    Deno.mkdirSync(probe);
  } catch {
    return false;
  }
  try {
    return Deno.statSync(`${probe}/pids.max`).isFile;
  } catch {
    return false;
  } finally {
    _removeGroupDir(probe);
  }
}

function _isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    // Without leave to ask (--allow-sys), assume the strictest case.
    return true;
  }
}
