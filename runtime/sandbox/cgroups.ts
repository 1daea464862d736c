/**
 * Limits on a shell command as a whole: how many tasks it runs at once and how
 * much memory all of them hold together. `prlimit` bounds each process alone,
 * so without these a fork bomb takes the host's pid space, and a few
 * processes of 4 GiB each (or files in the sandbox's RAM-backed mounts) take
 * its memory, until the command's timeout; the runtime, its store and every
 * other program on the machine share both.
 *
 * Each command gets cgroups of its own, children of the runtime's, in every
 * hierarchy that offers the controller (cgroup v1: `pids` and `memory`; v2:
 * one group, where the runtime's cgroup enables the controllers for its
 * children). The command's launcher writes its own pid into each group before
 * it execs `prlimit`, so the groups hold the command from its first fork, and
 * if it cannot join, nothing runs.
 *
 * A group's name holds the pid of the runtime that made it, so a runtime that
 * starts can end what runtimes now gone left behind (`sweepOrphanGroups`).
 *
 * Where no pids cgroup can be made, a runtime that is not root falls back to
 * RLIMIT_NPROC (`prlimit --nproc`); root is not bound by it, so a root runtime
 * without pids cgroups runs commands with no process limit. Without a memory
 * cgroup only the per-process limits hold. Each command's effect record says
 * which held.
 * @module
 */

/** What caps a command's tasks here: its own pids cgroup, RLIMIT_NPROC, or nothing. */
export type ProcessLimitKind = "cgroup" | "rlimit" | "none";

/** What caps a command's memory as a whole here: its own memory cgroup, or nothing. */
export type MemoryLimitKind = "cgroup" | "none";

/** The mechanisms this host offers (see the module doc). */
export interface CommandLimitKinds {
  /** Tasks (processes and threads) of the command at once. */
  processes: ProcessLimitKind;
  /** Memory of all its processes together (and what it keeps in RAM-backed mounts). */
  memory: MemoryLimitKind;
}

/** The cgroups made for one command. */
export interface CommandGroup {
  /** One directory per hierarchy. */
  dirs: string[];
  /** Their `cgroup.procs` files: the launcher writes its own pid into each before it execs. */
  procs: string[];
}

type _Controller = "pids" | "memory";

/** A parent cgroup directory and the controllers its children get. */
interface _Parent {
  dir: string;
  controllers: _Controller[];
  /** Unified hierarchy (cgroup v2): its control files are named differently. */
  v2: boolean;
}

/** The control file each controller's limit is written to, by cgroup version. */
const _LIMIT_FILE: Record<_Controller, { v1: string; v2: string }> = {
  pids: { v1: "pids.max", v2: "pids.max" },
  memory: { v1: "memory.limit_in_bytes", v2: "memory.max" },
};

/** A command group's name: this prefix, the pid of the runtime that made it, a UUID. */
const _GROUP_PREFIX = "libos-cmd-";

let _probed: { kinds: CommandLimitKinds; parents: _Parent[] } | undefined;

/** The mechanisms this host offers (probed once: a cgroup made and removed per hierarchy). */
export function commandLimitKinds(): CommandLimitKinds {
  return _probe().kinds;
}

/** Whether this host gives commands cgroups of their own (for processes, memory or both). */
export function hasCommandGroups(): boolean {
  return _probe().parents.length > 0;
}

/**
 * Fresh cgroups for one command: at most `processes` tasks and `memoryBytes`
 * of memory together, under each controller the host offers. Throws when a
 * group cannot be made or limited (nothing is left behind).
 */
export function newCommandGroup(processes: number, memoryBytes: number): CommandGroup {
  const limits: Record<_Controller, number> = { pids: processes, memory: memoryBytes };
  const group: CommandGroup = { dirs: [], procs: [] };
  const name = `${_GROUP_PREFIX}${Deno.pid}-${crypto.randomUUID()}`;
  try {
    for (const parent of _probe().parents) {
      const dir = `${parent.dir}/${name}`;
      Deno.mkdirSync(dir);
      group.dirs.push(dir);
      group.procs.push(`${dir}/cgroup.procs`);
      for (const c of parent.controllers) {
        Deno.writeTextFileSync(`${dir}/${_limitFile(parent, c)}`, String(limits[c]));
      }
    }
  } catch (e) {
    for (const dir of group.dirs) _removeGroupDir(dir);
    throw e;
  }
  return group;
}

/**
 * End a command's groups: SIGKILL what is still in them (a pid namespace's
 * last members may be dying after its init), then remove them once empty.
 * Resolves true when all are gone, false after `waitMs` with some left.
 */
export async function endCommandGroup(group: CommandGroup, waitMs = 2_000): Promise<boolean> {
  for (const until = Date.now() + waitMs;;) {
    for (const procs of group.procs) {
      for (const pid of _members(procs)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone already */ }
      }
    }
    if (group.dirs.map(_removeGroupDir).every(Boolean)) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * The RLIMIT_NPROC that leaves a command `max` more tasks: those the runtime's
 * user runs now (threads included) plus `max`. The kernel counts the limit
 * against every task of the user, the command's user namespace included, so a
 * plain `max` would leave a user who already runs many processes none. A
 * bound, not an exact share: the user's other processes may start or end
 * while the command runs.
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

function _members(procs: string): number[] {
  try {
    return Deno.readTextFileSync(procs).split("\n").filter((l) => l !== "").map(Number);
  } catch {
    return [];
  }
}

/** rmdir (a cgroup directory goes as an empty directory, its control files with it). */
function _removeGroupDir(dir: string): boolean {
  try {
    Deno.removeSync(dir);
    return true;
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
}

function _limitFile(parent: _Parent, c: _Controller): string {
  return _LIMIT_FILE[c][parent.v2 ? "v2" : "v1"];
}

function _probe(): { kinds: CommandLimitKinds; parents: _Parent[] } {
  if (_probed) return _probed;
  const parents: _Parent[] = [];
  for (const candidate of _ownCgroups()) {
    const controllers = candidate.controllers.filter((c) =>
      !parents.some((p) => p.controllers.includes(c))
    );
    const usable = controllers.length ? _usableControllers({ ...candidate, controllers }) : [];
    if (usable.length) parents.push({ ...candidate, controllers: usable });
  }
  const has = (c: _Controller) => parents.some((p) => p.controllers.includes(c));
  const kinds: CommandLimitKinds = {
    processes: has("pids") ? "cgroup" : _isRoot() ? "none" : "rlimit",
    memory: has("memory") ? "cgroup" : "none",
  };
  return _probed = { kinds, parents };
}

let _swept: Promise<void> | undefined;

/**
 * End the groups that runtimes now gone left behind, once per runtime (later
 * calls return the same promise). A runtime killed mid-command never removed
 * its groups; and one killed in the first milliseconds of a command, before
 * bwrap armed `--die-with-parent`, left the command running, orphaned but still
 * inside its sandbox and limits. Their members are SIGKILLed and the groups
 * removed. Groups of live runtimes are left alone.
 */
export function sweepOrphanGroups(): Promise<void> {
  return _swept ??= _sweep();
}

async function _sweep(): Promise<void> {
  for (const parent of _probe().parents) {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(parent.dir)];
    } catch {
      continue;
    }
    for (const e of entries) {
      const owner = new RegExp(`^${_GROUP_PREFIX}(\\d+)-`).exec(e.name)?.[1];
      if (!e.isDirectory || owner === undefined || _alive(Number(owner))) continue;
      const dir = `${parent.dir}/${e.name}`;
      await endCommandGroup({ dirs: [dir], procs: [`${dir}/cgroup.procs`] });
    }
  }
}

function _alive(pid: number): boolean {
  try {
    return pid === Deno.pid || Deno.statSync(`/proc/${pid}`).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The runtime's own cgroup directories that may give children the
 * controllers: v1's `pids` and `memory` hierarchies, then the unified (v2) one.
 */
function _ownCgroups(): _Parent[] {
  let lines: string[];
  try {
    lines = Deno.readTextFileSync("/proc/self/cgroup").split("\n");
  } catch {
    return [];
  }
  const v1: _Parent[] = [];
  const v2: _Parent[] = [];
  for (const line of lines) {
    // `hierarchy-id:controllers:path`; the path itself may hold colons.
    const a = line.indexOf(":");
    const b = line.indexOf(":", a + 1);
    if (a < 0 || b < 0) continue;
    const controllers = line.slice(a + 1, b).split(",");
    const path = line.slice(b + 1);
    const sub = path === "/" ? "" : path;
    for (const c of ["pids", "memory"] as const) {
      if (controllers.includes(c)) {
        v1.push({ dir: `/sys/fs/cgroup/${c}${sub}`, controllers: [c], v2: false });
      }
    }
    if (line.slice(a + 1, b) === "") {
      v2.push({ dir: `/sys/fs/cgroup${sub}`, controllers: ["pids", "memory"], v2: true });
    }
  }
  return [...v1, ...v2];
}

/** Which of its controllers a child made under `parent` gets (v2: those the parent enables). */
function _usableControllers(parent: _Parent): _Controller[] {
  const probe = `${parent.dir}/libos-probe-${crypto.randomUUID()}`;
  try {
    Deno.mkdirSync(probe);
  } catch {
    return [];
  }
  try {
    return parent.controllers.filter((c) => {
      try {
        return Deno.statSync(`${probe}/${_limitFile(parent, c)}`).isFile;
      } catch {
        return false;
      }
    });
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
