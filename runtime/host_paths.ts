/**
 * Hiding host paths from what agents and the audit see. Errors from the host
 * (file systems, checkers, a JIT tool's stack trace) name absolute paths: the
 * workspace root, the store's directory, the JIT cache, the runtime's own
 * checkout. An agent is told workspace paths relative to its workspace and
 * the others as placeholders; none of them is stored in the audit.
 * @module
 */
import { dirname, resolve } from "node:path";

/** An absolute host directory and the placeholder that replaces it. */
export interface HostRoot {
  /** Absolute path (no trailing slash). */
  path: string;
  /** What is shown instead (`<store>`, `<jit-cache>`, `<libos>`). */
  name: string;
}

/** The directory this runtime's code lives in (the checkout or the package). */
export const CODE_ROOT: string = resolve(dirname(new URL(import.meta.url).pathname), "..");

/**
 * The roots to hide for `paths` (each with its real path too, since host
 * errors may name either), longest first so a nested root wins.
 */
export function hostRoots(paths: { path: string; name: string }[]): HostRoot[] {
  const out: HostRoot[] = [];
  for (const { path, name } of paths) {
    const abs = resolve(path);
    for (const p of new Set([abs, _real(abs)])) {
      // The file system root (or a one-segment path like /tmp) would match every path.
      if (p && p.split("/").filter(Boolean).length >= 2) out.push({ path: p, name });
    }
  }
  return out.sort((a, b) => b.path.length - a.path.length);
}

function _real(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

/**
 * Replace every host root in `text`: the workspace becomes relative (`ws/a`
 * -> `a`, `ws` -> `.`), other roots their placeholder. `file://` URLs of
 * those paths lose the scheme.
 */
export function hideHostPaths(
  text: string,
  roots: readonly HostRoot[],
  workspace?: string,
): string {
  if (!text.includes("/")) return text;
  let out = text;
  let wsDone = !workspace;
  // Longest first, the workspace in its place: a workspace inside the store's
  // directory becomes relative, not `<store>/ws/...`.
  for (const r of roots) {
    if (!wsDone && workspace!.length >= r.path.length) {
      out = _relative(out, workspace!);
      wsDone = true;
    }
    if (out.includes(r.path)) out = _replaceRoot(out, r.path, r.name);
  }
  return wsDone ? out : _relative(out, workspace!);
}

/** Characters that may end a path inside a message (besides `/` and the end of the text). */
const _END = `(?=$|[/\\s"'\`:,;)\\]}>])`;

function _escape(path: string): string {
  return path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Replace `root` where it names that directory or something below it, never
 * where it is only the prefix of a longer name (`/w/ws` inside `/w/ws-backup`).
 */
function _replaceRoot(text: string, root: string, name: string): string {
  return text.replace(new RegExp(`(?:file://)?${_escape(root)}${_END}`, "g"), name);
}

function _relative(text: string, workspace: string): string {
  if (!text.includes(workspace)) return text;
  const ws = _escape(workspace);
  return text.replace(new RegExp(`(?:file://)?${ws}/`, "g"), "")
    .replace(new RegExp(`(?:file://)?${ws}${_END}`, "g"), ".");
}
