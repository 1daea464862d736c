/**
 * The write audit of a sandboxed command: a snapshot (kind, size, mtime,
 * ctime, inode, mode) of everything under the writable mounts before the
 * command, the same after, and a sha256 of what was created or changed.
 * Symlinks are recorded, never followed. The walk is bounded: a snapshot that
 * would exceed its entry limit says so instead of silently skipping.
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { EntryKind, FileChange } from "../providers/types.ts";

/** One entry's metadata, enough to tell a change without reading it. */
interface _State {
  kind: EntryKind;
  size: number;
  mtime: number | null;
  ctime: number | null;
  ino: number | null;
  mode: number | null;
  link: string | null;
}

/** Entries under the writable mounts, by real path. */
export interface Snapshot {
  /** Entries seen. */
  entries: Map<string, _State>;
  /** False when the walk stopped at its entry limit. */
  complete: boolean;
}

/** Most bytes hashed after one command; later files are listed with a null sha256. */
export const HASH_BUDGET_BYTES = 256 * 1024 * 1024;

function _kind(i: Deno.FileInfo): EntryKind {
  return i.isSymlink ? "symlink" : i.isFile ? "file" : i.isDirectory ? "dir" : "other";
}

function _state(path: string, i: Deno.FileInfo): _State {
  const kind = _kind(i);
  let link: string | null = null;
  if (kind === "symlink") {
    try {
      link = Deno.readLinkSync(path);
    } catch { /* gone meanwhile */ }
  }
  return {
    kind,
    size: link === null ? i.size : new TextEncoder().encode(link).length,
    mtime: i.mtime?.getTime() ?? null,
    ctime: i.ctime?.getTime() ?? null,
    ino: i.ino ?? null,
    mode: i.mode ?? null,
    link,
  };
}

/**
 * Walk `roots` (real paths) without following symlinks, never entering an
 * `excluded` path other than the root being walked, and stop after `limit`
 * entries (then `complete` is false). A directory root is walked, not listed
 * itself (it is a mount point: it can be neither created nor deleted); a file
 * root is listed.
 */
export function snapshot(roots: string[], excluded: string[], limit: number): Snapshot {
  const entries = new Map<string, _State>();
  const skip = new Set(excluded);
  let complete = true;
  const stack: string[] = [];
  for (const root of roots) {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(root);
    } catch {
      continue;
    }
    if (info.isDirectory) stack.push(root);
    else entries.set(root, _state(root, info));
  }
  while (stack.length && complete) {
    const dir = stack.pop()!;
    let names: string[];
    try {
      names = [...Deno.readDirSync(dir)].map((e) => e.name);
    } catch {
      continue; // gone, or unreadable: nothing a command could have written through it
    }
    for (const name of names.sort()) {
      const p = join(dir, name);
      if (skip.has(p)) continue;
      if (entries.size >= limit) {
        complete = false;
        break;
      }
      let info: Deno.FileInfo;
      try {
        info = Deno.lstatSync(p);
      } catch {
        continue;
      }
      entries.set(p, _state(p, info));
      if (info.isDirectory) stack.push(p);
    }
  }
  return { entries, complete };
}

function _same(a: _State, b: _State): boolean {
  if (a.kind !== b.kind || a.mode !== b.mode || a.link !== b.link) return false;
  // A directory's times move with its entries, which are listed themselves.
  if (a.kind === "dir") return true;
  return a.size === b.size && a.mtime === b.mtime && a.ctime === b.ctime && a.ino === b.ino;
}

async function _hashFile(path: string): Promise<{ sha256: string; bytes: number } | null> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch {
    return null;
  }
  try {
    const h = createHash("sha256");
    let bytes = 0;
    for await (const chunk of f.readable) {
      h.update(chunk);
      bytes += chunk.length;
    }
    return { sha256: h.digest("hex"), bytes };
  } catch {
    return null;
  }
}

/** What changed between two snapshots, sorted by path, with content hashes. */
export async function diffSnapshots(before: Snapshot, after: Snapshot): Promise<FileChange[]> {
  const out: FileChange[] = [];
  let budget = HASH_BUDGET_BYTES;
  const paths = new Set([...before.entries.keys(), ...after.entries.keys()]);
  for (const path of [...paths].sort()) {
    const a = before.entries.get(path);
    const b = after.entries.get(path);
    if (a && b && _same(a, b)) continue;
    if (a && !b) {
      // Past the limit of an incomplete walk, "not seen" is not "deleted".
      if (!after.complete) continue;
      out.push({ path, change: "deleted", kind: a.kind, size: null, sha256: null });
      continue;
    }
    const s = b!;
    let sha: string | null = null;
    if (s.kind === "symlink" && s.link !== null) {
      sha = createHash("sha256").update(s.link).digest("hex");
    } else if (s.kind === "file" && s.size <= budget) {
      const h = await _hashFile(path);
      if (h) {
        sha = h.sha256;
        budget -= h.bytes;
      }
    }
    out.push({ path, change: a ? "changed" : "created", kind: s.kind, size: s.size, sha256: sha });
  }
  return out;
}
