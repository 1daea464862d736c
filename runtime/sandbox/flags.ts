/**
 * Deriving a JIT subprocess's Deno permission flags from its process's
 * capabilities. Only unconditional filesystem ALLOW capabilities become
 * `--allow-read`/`--allow-write` (no ASK, no one-shot, no constraints, no
 * use limit, no expiry before the call's deadline), on real paths, never wider
 * than the capability. DENY and ASK capabilities become `--deny-*`. Network,
 * subprocesses, environment, FFI and system info are never granted: no
 * capability family maps to them, so they stay behind syscalls.
 * @module
 */
import { isAbsolute, join, relative, sep } from "node:path";
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

/** Real paths a filesystem resource denotes, as Deno flag paths (never wider). */
function _paths(workspace: string, resource: string, forWrite: boolean): string[] {
  const rel = resource.slice("filesystem:workspace:".length);
  if (rel === "*") return [workspace];
  if (rel.endsWith("/*")) {
    // `dir/*` is everything strictly below dir: list its children, since a Deno
    // flag on `dir` would also cover `dir` itself.
    // Access is authorized on real paths, so a capability naming a symlinked
    // directory covers nothing below it.
    const dir = _real(join(workspace, rel.slice(0, -2)));
    if (!dir || dir !== join(workspace, rel.slice(0, -2)) || !_inside(workspace, dir)) return [];
    const out: string[] = [];
    try {
      for (const e of Deno.readDirSync(dir)) {
        const p = _real(join(dir, e.name));
        // A child that is a symlink out of `dir` is not below `dir`.
        if (p && _inside(dir, p) && p !== dir) out.push(p);
      }
    } catch { /* not a directory */ }
    return out;
  }
  const full = join(workspace, rel);
  const real = _real(full);
  if (real) {
    // A symlink: the capability names the link, but access is authorized on its target.
    if (real !== full) return [];
    // An exact capability on a directory grants listing it, not its subtree.
    try {
      if (Deno.statSync(real).isDirectory) return [];
    } catch {
      return [];
    }
    return _inside(workspace, real) ? [real] : [];
  }
  if (!forWrite) return [];
  const parent = _real(join(full, ".."));
  if (!parent || parent !== join(full, "..") || !_inside(workspace, parent)) return [];
  return [join(parent, full.slice(full.lastIndexOf("/") + 1))];
}

/** Compute direct access for a process whose call must end by `deadlineMs`. */
export function deriveAccess(
  caps: readonly Capability[],
  workspace: string,
  now: number,
  deadlineMs: number,
): DerivedAccess {
  const out: DerivedAccess = { read: [], write: [], denyRead: [], denyWrite: [] };
  for (const c of caps) {
    if (!isLive(c, now) || !c.resource.startsWith("filesystem:workspace:")) continue;
    const read = c.rights.includes("read");
    const write = c.rights.includes("write");
    if (c.effect !== "allow") {
      if (read) out.denyRead.push(..._denyPaths(workspace, c.resource));
      if (write) out.denyWrite.push(..._denyPaths(workspace, c.resource));
      continue;
    }
    const unconditional = !c.constraints.binding && Object.keys(c.constraints).length === 0 &&
      c.uses_remaining === null && (c.expires_at === null || Date.parse(c.expires_at) > deadlineMs);
    if (!unconditional) continue;
    if (read) out.read.push(..._paths(workspace, c.resource, false));
    if (write) out.write.push(..._paths(workspace, c.resource, true));
  }
  // Deno flag lists are comma-separated: a path with a comma cannot be named safely.
  const clean = (xs: string[]) => [...new Set(xs)].filter((p) => !p.includes(",")).sort();
  return {
    read: clean(out.read),
    write: clean(out.write),
    denyRead: clean(out.denyRead),
    denyWrite: clean(out.denyWrite),
  };
}

// A deny may be wider than asked (safe): `dir/*` denies `dir`.
function _denyPaths(workspace: string, resource: string): string[] {
  const rel = resource.slice("filesystem:workspace:".length);
  const base = rel === "*" ? "." : rel.endsWith("/*") ? rel.slice(0, -2) : rel;
  const real = _real(join(workspace, base));
  return [real ?? join(workspace, base)];
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
