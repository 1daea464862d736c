/**
 * A file of JSON lines that one store writes (the audit log, the step
 * journal): opened for appending under an exclusive advisory lock that the
 * store holds for its lifetime, and read back up to its last whole line.
 * @module
 */

/** Open `path` (created if missing) for appending under an exclusive lock; null if another holds it. */
export function openLocked(path: string): Deno.FsFile | null {
  const file = Deno.openSync(path, { read: true, append: true, create: true, mode: 0o600 });
  if (file.tryLockSync(true)) return file;
  file.close();
  return null;
}

/**
 * The file's bytes up to the end of its last whole line: a torn last line
 * was never acknowledged (or acted on) and is dropped.
 */
export function wholeLines(path: string): Uint8Array {
  const bytes = Deno.readFileSync(path);
  return bytes.subarray(0, bytes.lastIndexOf(0x0a) + 1);
}
