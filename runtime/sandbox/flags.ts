/**
 * Deriving direct OS access from a process's capabilities: one derivation
 * ({@link deriveGrants}) rendered two ways, as a JIT subprocess's Deno
 * permission flags ({@link accessFlags}) and as a shell command's bubblewrap
 * mounts (`bwrap.ts`). Only unconditional filesystem ALLOW capabilities grant
 * (no ASK, no one-shot, no constraints, no use limit, no expiry before the
 * call's deadline), on real paths, never wider than the capability. DENY and
 * ASK capabilities deny. Network, subprocesses, environment, FFI and system
 * info are never granted: no capability family maps to them, so they stay
 * behind syscalls.
 * @module
 */
import { basename, dirname, isAbsolute, join, relative, sep } from "node:path";
import { isLive } from "../capabilities.ts";
import type { Capability } from "../types.ts";

/** Paths the child may touch directly, by permission. */
export interface DerivedAccess {
  /** Real paths readable directly (a directory covers its subtree). */
  read: string[];
  /** Real paths writable directly. */
  write: string[];
  /** Real paths never readable directly. */
  denyRead: string[];
  /** Real paths never writable directly. */
  denyWrite: string[];
}

/** No direct access at all. */
export const NO_ACCESS: DerivedAccess = { read: [], write: [], denyRead: [], denyWrite: [] };

function _inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || !(rel === ".." || rel.startsWith(".." + sep) || isAbsolute(rel));
}

function _real(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

/**
 * How much a {@link PathGrant} covers: `tree` a path and everything below it
 * (the whole workspace), `below` everything strictly below a directory
 * (`dir/*`), `file` one existing non-directory, `new` one missing file (write
 * only: there is nothing to open yet).
 */
export type GrantScope = "tree" | "below" | "file" | "new";

/** One real path an unconditional ALLOW capability grants directly. */
export interface PathGrant {
  /** Real path inside the workspace (for `new`: the real parent plus the name). */
  path: string;
  /** What it covers. */
  scope: GrantScope;
}

/**
 * Direct access derived from capabilities, before it is rendered as Deno
 * flags ({@link denoAccess}) or as bubblewrap mounts (`bwrap.ts`).
 */
export interface DerivedGrants {
  /** What may be read directly. */
  read: PathGrant[];
  /** What may be written directly. */
  write: PathGrant[];
  /** Real paths (a directory covers its subtree) never readable directly: DENY or ASK on read. */
  denyRead: string[];
  /** Real paths never writable directly: DENY or ASK on write or delete. */
  denyWrite: string[];
}

/** The grant a filesystem resource denotes, on real paths, never wider; null if none. */
function _grant(workspace: string, resource: string, forWrite: boolean): PathGrant | null {
  const rel = resource.slice("filesystem:workspace:".length);
  if (rel === "*") return { path: workspace, scope: "tree" };
  if (rel.endsWith("/*")) {
    // Access is authorized on real paths, so a capability naming a symlinked
    // directory covers nothing below it.
    const dir = _real(join(workspace, rel.slice(0, -2)));
    if (!dir || dir !== join(workspace, rel.slice(0, -2)) || !_inside(workspace, dir)) return null;
    try {
      return Deno.statSync(dir).isDirectory ? { path: dir, scope: "below" } : null;
    } catch {
      return null;
    }
  }
  const full = join(workspace, rel);
  const real = _real(full);
  if (real) {
    // A symlink: the capability names the link, but access is authorized on its target.
    if (real !== full) return null;
    // An exact capability on a directory grants listing it, not its subtree.
    try {
      if (Deno.statSync(real).isDirectory) return null;
    } catch {
      return null;
    }
    return _inside(workspace, real) ? { path: real, scope: "file" } : null;
  }
  if (!forWrite) return null;
  const parent = _real(join(full, ".."));
  if (!parent || parent !== join(full, "..") || !_inside(workspace, parent)) return null;
  return { path: join(parent, full.slice(full.lastIndexOf("/") + 1)), scope: "new" };
}

/**
 * Turn capabilities into direct access on real paths for a call that must end
 * by `deadlineMs`: the one derivation behind both the JIT tools' Deno flags and
 * the shell's bubblewrap mounts. Only live, unconditional filesystem ALLOWs
 * grant; any live DENY or ASK denies (write and delete both count as writing:
 * an OS cannot let a program write a path and not delete it).
 */
export function deriveGrants(
  caps: readonly Capability[],
  workspace: string,
  now: number,
  deadlineMs: number,
): DerivedGrants {
  const out: DerivedGrants = { read: [], write: [], denyRead: [], denyWrite: [] };
  for (const c of caps) {
    if (!isLive(c, now) || !c.resource.startsWith("filesystem:workspace:")) continue;
    const read = c.rights.includes("read");
    const write = c.rights.includes("write");
    if (c.effect !== "allow") {
      if (read) out.denyRead.push(_denyPath(workspace, c.resource));
      if (write || c.rights.includes("delete")) {
        out.denyWrite.push(_denyPath(workspace, c.resource));
      }
      continue;
    }
    const unconditional = !c.constraints.binding && Object.keys(c.constraints).length === 0 &&
      c.uses_remaining === null && (c.expires_at === null || Date.parse(c.expires_at) > deadlineMs);
    if (!unconditional) continue;
    const r = read ? _grant(workspace, c.resource, false) : null;
    const w = write ? _grant(workspace, c.resource, true) : null;
    if (r) out.read.push(r);
    if (w) out.write.push(w);
  }
  const grants = (xs: PathGrant[]) => {
    const seen = new Map<string, PathGrant>();
    for (const g of xs) seen.set(`${g.scope}:${g.path}`, g);
    return [...seen.values()].sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  };
  return {
    read: grants(out.read),
    write: grants(out.write),
    denyRead: [...new Set(out.denyRead)].sort(),
    denyWrite: [...new Set(out.denyWrite)].sort(),
  };
}

/** Real paths a grant stands for as Deno flag paths: `dir/*` is dir's current children. */
function _denoPaths(g: PathGrant): string[] {
  if (g.scope !== "below") return [g.path];
  // A Deno flag on `dir` would also cover `dir` itself.
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(g.path)) {
      const p = _real(join(g.path, e.name));
      // A child that is a symlink out of `dir` is not below `dir`.
      if (p && _inside(g.path, p) && p !== g.path) out.push(p);
    }
  } catch { /* gone meanwhile */ }
  return out;
}

/** Render derived grants as Deno permission paths. */
export function denoAccess(g: DerivedGrants): DerivedAccess {
  // Deno flag lists are comma-separated: a path with a comma cannot be named safely.
  const clean = (xs: string[]) => [...new Set(xs)].filter((p) => !p.includes(",")).sort();
  return {
    read: clean(g.read.flatMap(_denoPaths)),
    write: clean(g.write.flatMap(_denoPaths)),
    denyRead: clean(g.denyRead),
    denyWrite: clean(g.denyWrite),
  };
}

/** Compute direct access (as Deno permission paths) for a call that must end by `deadlineMs`. */
export function deriveAccess(
  caps: readonly Capability[],
  workspace: string,
  now: number,
  deadlineMs: number,
): DerivedAccess {
  return denoAccess(deriveGrants(caps, workspace, now, deadlineMs));
}

// A deny may be wider than asked (safe): `dir/*` denies `dir`.
function _denyPath(workspace: string, resource: string): string {
  const rel = resource.slice("filesystem:workspace:".length);
  const base = rel === "*" ? "." : rel.endsWith("/*") ? rel.slice(0, -2) : rel;
  return canonicalPath(join(workspace, base));
}

/**
 * The real path of `path`, or for a missing one its deepest existing
 * ancestor's real path plus the rest: where it would be created.
 */
export function canonicalPath(path: string): string {
  const tail: string[] = [];
  let head = path;
  for (;;) {
    const real = _real(head);
    if (real) return tail.length ? join(real, ...tail) : real;
    const parent = dirname(head);
    if (parent === head) return path;
    tail.unshift(basename(head));
    head = parent;
  }
}

/** The command-line flags for derived access. */
export function accessFlags(a: DerivedAccess): string[] {
  const flags: string[] = [];
  if (a.read.length) flags.push(`--allow-read=${a.read.join(",")}`);
  if (a.write.length) flags.push(`--allow-write=${a.write.join(",")}`);
  if (a.denyRead.length) flags.push(`--deny-read=${a.denyRead.join(",")}`);
  if (a.denyWrite.length) flags.push(`--deny-write=${a.denyWrite.join(",")}`);
  return flags;
}

/** Is `path` (real) inside one of `roots`? */
export function within(roots: readonly string[], path: string): boolean {
  return roots.some((r) => _inside(r, path));
}
