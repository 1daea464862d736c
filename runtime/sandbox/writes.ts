/**
 * The write audit of a sandboxed command: a snapshot (kind, size, mtime,
 * ctime, inode, mode) of everything under the writable mounts before the
 * command, the same after, and a sha256 of what was created or changed.
 *
 * Commands running at the same time can rename, swap and relink what the
 * walk is looking at, so the walk never goes by name: each directory is
 * opened without following a link and proven to be the one listed, and each
 * entry is looked at, and hashed, through its open directory
 * (`/proc/self/fd/N/name`), never through a symlink swapped in meanwhile. A
 * file is hashed only if what is open is a regular file, and never past the
 * hash budget. The walk is bounded: a snapshot that would exceed its entry
 * limit, or that meets an entry it cannot name, look into or reach (a name
 * that is not UTF-8, a directory it may not read, nesting past
 * {@link MAX_WALK_DEPTH}), says it is incomplete instead of silently
 * skipping.
 * @module
 */
import { createHash } from "node:crypto";
import * as nodeFs from "node:fs";
import { join } from "node:path";
import { canNameOpenFiles, entryKind, openChecked } from "../open_files.ts";
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
  /** Content hash: taken after a change, or before one for a file changed just now. */
  sha256?: string | null;
}

/** Entries under the writable mounts, by real path. */
export interface Snapshot {
  /** Entries seen. */
  entries: Map<string, _State>;
  /** False when the walk stopped at its entry limit or met what it could not see. */
  complete: boolean;
  /** Why it is incomplete (the first cause), or null. */
  why: string | null;
  /** Whether it stopped at its entry limit (the rest was not walked at all). */
  overLimit: boolean;
}

/** Most bytes hashed after one command; later files are listed with a null sha256. */
export const HASH_BUDGET_BYTES = 256 * 1024 * 1024;

/** Deepest directory nesting walked; deeper makes the snapshot incomplete. */
export const MAX_WALK_DEPTH = 256;

/**
 * Files whose status changed this recently before a command are hashed before
 * it too: the host reports a change time in whole seconds, so a same-size edit
 * in that second with its mtime put back would otherwise look unchanged.
 */
const _HOT_MS = 2_000;

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = nodeFs.constants;

function _state(at: string, i: Deno.FileInfo): _State {
  const kind = entryKind(i);
  let link: string | null = null;
  if (kind === "symlink") {
    try {
      link = Deno.readLinkSync(at);
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
 * Open directory entry `at` (inside an open directory: it is that entry, or a
 * link refused) without following a link. Without `/proc/self/fd`, `at` is a
 * path: the open one must have the device and inode `listed`. Null when it
 * cannot be opened or is not what was listed.
 */
function _openChild(at: string, listed: Deno.FileInfo): number | null {
  let fd: number;
  try {
    fd = nodeFs.openSync(at, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch {
    return null;
  }
  if (canNameOpenFiles()) return fd;
  const open = nodeFs.fstatSync(fd);
  if (open.dev === listed.dev && open.ino === listed.ino) return fd;
  nodeFs.closeSync(fd);
  return null;
}

/** Open a walk's root, proven to be `root` itself (see `openChecked`); null if it is not. */
function _openRoot(root: string): number | null {
  try {
    return openChecked(root, O_RDONLY | O_DIRECTORY);
  } catch {
    return null;
  }
}

/** sha256 of the regular file at `at` (never through a link), at most `max` bytes; null otherwise. */
function _hash(at: string, max: number): { sha256: string; bytes: number } | null {
  let fd: number;
  try {
    fd = nodeFs.openSync(at, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    if (!nodeFs.fstatSync(fd).isFile()) return null;
    const h = createHash("sha256");
    const buf = new Uint8Array(64 * 1024);
    let bytes = 0;
    for (;;) {
      const n = nodeFs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      bytes += n;
      if (bytes > max) return null;
      h.update(buf.subarray(0, n));
    }
    return { sha256: h.digest("hex"), bytes };
  } catch {
    return null;
  } finally {
    nodeFs.closeSync(fd);
  }
}

function _same(a: _State, b: _State): boolean {
  if (a.kind !== b.kind || a.mode !== b.mode || a.link !== b.link) return false;
  // A directory's times move with its entries, which are listed themselves.
  if (a.kind === "dir") return true;
  return a.size === b.size && a.mtime === b.mtime && a.ctime === b.ctime && a.ino === b.ino;
}

/**
 * Walk `roots` (real paths) without following symlinks, never entering an
 * `excluded` path other than the root being walked, and stop after `limit`
 * entries (then `complete` is false). A directory root is walked, not listed
 * itself (it is a mount point: it can be neither created nor deleted); a file
 * root is listed. Given the snapshot taken `before` the command, what was
 * created or changed is hashed as it is seen (within {@link HASH_BUDGET_BYTES});
 * without it, files changed in the last seconds are hashed (see `_HOT_MS`).
 */
export function snapshot(
  roots: string[],
  excluded: string[],
  limit: number,
  before?: Snapshot,
): Snapshot {
  const entries = new Map<string, _State>();
  const skip = new Set(excluded);
  const hotSince = Date.now() - _HOT_MS;
  let complete = true;
  let overLimit = false;
  let why: string | null = null;
  const stop = (cause: string) => {
    complete = false;
    why ??= cause;
  };
  let budget = HASH_BUDGET_BYTES;

  const record = (path: string, at: string, info: Deno.FileInfo): void => {
    const s = _state(at, info);
    if (s.kind === "file") {
      const was = before?.entries.get(path);
      const hash = before
        ? !was || !_same(was, s) || was.sha256 !== undefined
        : s.ctime !== null && s.ctime >= hotSince;
      if (hash) {
        const h = s.size <= budget ? _hash(at, Math.min(budget, s.size)) : null;
        if (h) budget -= h.bytes;
        s.sha256 = h?.sha256 ?? null;
      }
    }
    entries.set(path, s);
  };

  const walk = (fd: number, dir: string, depth: number): void => {
    const base = canNameOpenFiles() ? `/proc/self/fd/${fd}` : dir;
    let listing: Iterable<Deno.DirEntry>;
    try {
      listing = Deno.readDirSync(base);
    } catch {
      stop(`${dir} cannot be read`);
      return;
    }
    for (const e of listing) {
      if (!complete) return;
      const path = join(dir, e.name);
      if (skip.has(path)) continue;
      if (entries.size >= limit) {
        overLimit = true;
        stop(`more than ${limit} entries`);
        return;
      }
      const at = `${base}/${e.name}`;
      let info: Deno.FileInfo;
      try {
        info = Deno.lstatSync(at);
      } catch (err) {
        // Gone meanwhile; or a name the host cannot hand over as text (not UTF-8).
        if (!(err instanceof Deno.errors.NotFound)) stop(`${path} cannot be looked at`);
        else if (e.name.includes("\uFFFD")) stop(`${path}: a name that is not UTF-8`);
        continue;
      }
      record(path, at, info);
      if (!info.isDirectory) continue;
      if (depth >= MAX_WALK_DEPTH) {
        stop(`directories nested deeper than ${MAX_WALK_DEPTH}`);
        return;
      }
      const child = _openChild(at, info);
      if (child === null) {
        stop(`${path} cannot be opened, or changed while it was listed`);
        continue;
      }
      try {
        walk(child, path, depth + 1);
      } finally {
        nodeFs.closeSync(child);
      }
    }
  };

  for (const root of roots) {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(root);
    } catch {
      continue;
    }
    if (!info.isDirectory) {
      record(root, root, info);
      continue;
    }
    const fd = _openRoot(root);
    if (fd === null) {
      stop(`${root} cannot be opened`);
      continue;
    }
    try {
      walk(fd, root, 1);
    } finally {
      nodeFs.closeSync(fd);
    }
    if (!complete) break;
  }
  return { entries, complete, why, overLimit };
}

/** What changed between two snapshots (the second taken with the first), sorted by path. */
export function diffSnapshots(before: Snapshot, after: Snapshot): Promise<FileChange[]> {
  const out: FileChange[] = [];
  const paths = new Set([...before.entries.keys(), ...after.entries.keys()]);
  for (const path of [...paths].sort()) {
    const a = before.entries.get(path);
    const b = after.entries.get(path);
    // Same metadata, and (for a file hashed before) the same content.
    if (a && b && _same(a, b) && (a.sha256 === undefined || a.sha256 === b.sha256)) continue;
    if (a && !b) {
      // Past the limit of an incomplete walk, "not seen" is not "deleted".
      if (!after.complete) continue;
      out.push({ path, change: "deleted", kind: a.kind, size: null, sha256: null });
      continue;
    }
    const s = b!;
    const sha = s.kind === "symlink" && s.link !== null
      ? createHash("sha256").update(s.link).digest("hex")
      : s.sha256 ?? null;
    out.push({ path, change: a ? "changed" : "created", kind: s.kind, size: s.size, sha256: sha });
  }
  return Promise.resolve(out);
}
