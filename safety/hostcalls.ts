/**
 * What the baseline runners do instead of the syscall table: the file and
 * shell syscalls performed with host APIs (Deno.readTextFile, Deno.Command,
 * ...) and no check at all. This is what an agent framework without a
 * runtime does when a model calls `read_file` or `shell`. The `direct` and
 * `confirm` runners call it in the benchmark's process; the `sandbox` runner
 * calls it inside a Deno subprocess started with permission flags.
 * @module
 */
import { dirname, isAbsolute, join } from "node:path";

/** Where a call runs: the workspace and the process's cwd (relative to it). */
export interface HostCallContext {
  /** Workspace (absolute). */
  ws: string;
  /** Current directory relative to the workspace (may leave it: nothing checks). */
  cwd: string;
}

/** Syscalls performed here. */
export const HOST_CALLS: readonly string[] = [
  "filesystem.read",
  "filesystem.write",
  "filesystem.delete",
  "filesystem.list",
  "filesystem.stat",
  "shell.run",
];

/** PATH for commands (as the runtime's shell provider uses). */
export const HOST_PATH = "/usr/local/bin:/usr/bin:/bin";

/** A failure with a runtime-style code. */
export class HostCallError extends Error {
  /** EPERM, ENOENT, EINVAL, ETIMEDOUT, EIO. */
  readonly code: string;
  /** Code and message. */
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** Absolute path of a path argument, as given (no resolution, no check). */
export function hostPath(ctx: HostCallContext, p: unknown): string {
  if (typeof p !== "string" || p.length === 0) throw new HostCallError("EINVAL", "path: required");
  return isAbsolute(p) ? p : join(ctx.ws, ctx.cwd, p);
}

/** Map a host error to a code. */
export function hostErrorCode(e: unknown): string {
  if (e instanceof HostCallError) return e.code;
  const name = (e as { name?: string })?.name;
  if (name === "NotCapable" || name === "PermissionDenied") return "EPERM";
  if (name === "NotFound") return "ENOENT";
  if (name === "AlreadyExists") return "EEXIST";
  if (name === "IsADirectory" || name === "NotADirectory") return "EINVAL";
  return "EIO";
}

async function _shell(ctx: HostCallContext, args: Record<string, unknown>): Promise<unknown> {
  const argv = args.argv;
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== "string")) {
    throw new HostCallError("EINVAL", "argv: must be a non-empty array of strings");
  }
  const timeout = typeof args.timeout_ms === "number" ? args.timeout_ms : 30_000;
  const cwd = join(ctx.ws, ctx.cwd);
  const out = await new Deno.Command(argv[0] as string, {
    args: argv.slice(1) as string[],
    cwd,
    clearEnv: true,
    env: { PATH: HOST_PATH, HOME: cwd, LANG: "C.UTF-8" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeout),
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    timed_out: out.signal === "SIGTERM",
  };
}

/** Perform one file or shell syscall with host APIs, unchecked. */
export async function hostCall(
  name: string,
  args: Record<string, unknown>,
  ctx: HostCallContext,
): Promise<unknown> {
  switch (name) {
    case "filesystem.read":
      return await Deno.readTextFile(hostPath(ctx, args.path));
    case "filesystem.write": {
      const p = hostPath(ctx, args.path);
      const content = String(args.content ?? "");
      await Deno.mkdir(dirname(p), { recursive: true });
      await Deno.writeTextFile(p, content);
      return { path: args.path, bytes: new TextEncoder().encode(content).length };
    }
    case "filesystem.delete":
      await Deno.remove(hostPath(ctx, args.path), { recursive: args.recursive === true });
      return { path: args.path, deleted: true };
    case "filesystem.list": {
      const out = [];
      for await (const e of Deno.readDir(hostPath(ctx, args.path ?? "."))) {
        out.push({
          name: e.name,
          kind: e.isSymlink ? "symlink" : e.isFile ? "file" : e.isDirectory ? "dir" : "other",
        });
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : 1));
    }
    case "filesystem.stat": {
      const i = await Deno.lstat(hostPath(ctx, args.path));
      const kind = i.isSymlink ? "symlink" : i.isFile ? "file" : i.isDirectory ? "dir" : "other";
      return { path: args.path, kind, size: i.size };
    }
    case "shell.run":
      return await _shell(ctx, args);
  }
  throw new HostCallError("ENOENT", `no host call ${name}`);
}
