/**
 * Opening host files so that the open file is the one a check found: never
 * through a final link, and, for a path named whole, proven by the kernel's
 * own name for the open file (`/proc/self/fd/N`). Shared by the file system
 * provider and the shell's write audit.
 * @module
 */
import * as nodeFs from "node:fs";
import { LibosError } from "./errors.ts";
import type { EntryKind } from "./providers/types.ts";

const { O_DIRECTORY, O_NOFOLLOW } = nodeFs.constants;

/** An entry's kind, from a file's info or a directory entry (a link is never followed). */
export function entryKind(
  i: { isSymlink: boolean; isFile: boolean; isDirectory: boolean },
): EntryKind {
  return i.isSymlink ? "symlink" : i.isFile ? "file" : i.isDirectory ? "dir" : "other";
}

let _procFds: boolean | null = null;

/**
 * Whether this runtime may name its open files as `/proc/self/fd/N` (Deno
 * gives `/proc` only to a runtime with --allow-all). Asked once.
 */
export function canNameOpenFiles(): boolean {
  if (_procFds === null) {
    try {
      Deno.readLinkSync("/proc/self");
      _procFds = true;
    } catch (e) {
      _procFds = !(e instanceof Deno.errors.NotCapable ||
        e instanceof Deno.errors.PermissionDenied);
    }
  }
  return _procFds;
}

const _DENO_ERRORS: Record<string, new (message: string) => Error> = {
  ENOENT: Deno.errors.NotFound,
  EISDIR: Deno.errors.IsADirectory,
  ENOTDIR: Deno.errors.NotADirectory,
  EACCES: Deno.errors.PermissionDenied,
  EPERM: Deno.errors.PermissionDenied,
  EEXIST: Deno.errors.AlreadyExists,
};

function _isLink(path: string): boolean {
  try {
    return Deno.lstatSync(path).isSymlink;
  } catch {
    return false;
  }
}

/** The EPERM of an open that found something else at `path` than the check did. */
export function swapped(path: string): LibosError {
  return new LibosError(
    "EPERM",
    `path: '${path}' changed while it was opened (a symlink or directory swapped in); nothing was read or written`,
  );
}

/**
 * `openSync` of `at` without following a final link; errors as Deno's own
 * calls report them (the primitives map those to error codes), naming `path`.
 */
export function openNoFollow(at: string, flags: number, path: string): number {
  try {
    return nodeFs.openSync(at, flags | O_NOFOLLOW, 0o666);
  } catch (e) {
    const code = (e as { code?: string }).code;
    // A final link refused: ELOOP, or ENOTDIR where a directory was asked for.
    if (code === "ELOOP" || (code === "ENOTDIR" && flags & O_DIRECTORY && _isLink(at))) {
      throw swapped(path);
    }
    const As = code ? _DENO_ERRORS[code] : undefined;
    throw As ? new As((e as Error).message.replaceAll(at, path)) : e;
  }
}

/**
 * Open `path` (a real path, checked by the caller) without following a final
 * symlink, and make sure the open file is the one at `path`: a symlink or a
 * directory swapped in since the check (by another process) would otherwise
 * lead the open outside what was authorized. The kernel's own name for the
 * open file (`/proc/self/fd`) must be `path` itself. EPERM otherwise.
 */
export function openChecked(path: string, flags: number): number {
  const fd = openNoFollow(path, flags, path);
  let same: boolean;
  if (canNameOpenFiles()) {
    same = Deno.readLinkSync(`/proc/self/fd/${fd}`) === path;
  } else {
    // Without /proc/self: compare the open file with what `path` names now (a
    // narrower check: a swap undone in between passes).
    const open = nodeFs.fstatSync(fd);
    const named = Deno.lstatSync(path);
    same = open.dev === named.dev && open.ino === named.ino && Deno.realPathSync(path) === path;
  }
  if (!same) {
    nodeFs.closeSync(fd);
    throw swapped(path);
  }
  return fd;
}
