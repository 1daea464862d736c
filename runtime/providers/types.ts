/**
 * The Resource Provider Substrate: every external effect (files, shell, clock,
 * human channel, model) goes through one of these interfaces. Only primitives
 * call providers, so swapping in a deterministic provider changes what happens,
 * never who is allowed to make it happen.
 * @module
 */
import type { HumanRequestRecord, ProcessRecord } from "../types.ts";
import type { SandboxProvider } from "../sandbox/provider.ts";

/** Kind of a directory entry. */
export type EntryKind = "file" | "dir" | "symlink" | "other";

/** File metadata. */
export interface FileStat {
  /** Kind. */
  kind: EntryKind;
  /** Size in bytes. */
  size: number;
  /** Modification time in ms, or null. */
  mtime: number | null;
}

/** Host files. Paths are absolute and already authorized. */
export interface FileSystemProvider {
  /** Canonical path with every symlink resolved; throws NotFound. */
  realPath(path: string): Promise<string>;
  /**
   * Read a regular file as UTF-8 text, refusing anything else and files
   * larger than `maxBytes`. `known` is the file's {@link lstat} taken just
   * before (not a symlink), which spares a second stat.
   */
  readText(path: string, maxBytes: number, known?: FileStat): Promise<string>;
  /** Write (create or truncate) a file. */
  writeText(path: string, content: string): Promise<void>;
  /** Create a directory (and parents). */
  mkdir(path: string): Promise<void>;
  /** Remove a file or an empty directory (or a tree when `recursive`). */
  remove(path: string, recursive: boolean): Promise<void>;
  /** List a directory. */
  list(path: string): Promise<{ name: string; kind: EntryKind }[]>;
  /** Metadata without following a final symlink. */
  lstat(path: string): Promise<FileStat>;
}

/** Options for a shell run. */
export interface ShellRunOptions {
  /** Absolute, authorized working directory. */
  cwd: string;
  /** Kill after this many milliseconds. */
  timeoutMs: number;
  /** Keep at most this many bytes of each output stream. */
  maxOutputBytes: number;
}

/** Result of a shell run. */
export interface ShellResult {
  /** Exit code (137 when killed). */
  code: number;
  /** Captured stdout (truncated to the cap). */
  stdout: string;
  /** Captured stderr (truncated to the cap). */
  stderr: string;
  /** True when killed by the timeout. */
  timed_out: boolean;
  /** True when output was cut at the cap. */
  truncated: boolean;
}

/** Runs an argv (never a shell string). */
export interface ShellProvider {
  /** Run `argv` with an empty environment apart from a fixed PATH. */
  run(argv: string[], options: ShellRunOptions): Promise<ShellResult>;
}

/** Time. */
export interface ClockProvider {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Wait. */
  sleep(ms: number): Promise<void>;
}

/** A request for a human decision (the durable record the queue holds). */
export type HumanRequest = HumanRequestRecord;

/** A human's answer. */
export type HumanAnswer = "allow_once" | "always_allow" | "deny" | "always_deny";

/** What a human channel replies: an answer now, or `defer` (queue it; the process waits). */
export type HumanReply = HumanAnswer | "defer";

/** The human channel. */
export interface HumanProvider {
  /** Show text to the human. */
  output(pid: number, text: string): Promise<void>;
  /** Ask for a decision; `defer` leaves the request pending in the queue. */
  decide(request: HumanRequest): Promise<HumanReply>;
}

/** One step a model decides on. */
export type ModelStep =
  | { type: "tool"; tool: string; args: Record<string, unknown> }
  | { type: "exit"; code: number; result?: string };

/** A model: given the process (with its durable model state), decide the next step. */
export interface ModelProvider {
  /** The next step and the model's new durable state. */
  next(
    proc: ProcessRecord,
    lastResult: unknown,
  ): Promise<{ step: ModelStep; state: Record<string, unknown> }>;
}

/** All providers a kernel uses. */
export interface Providers {
  /** Files. */
  fs: FileSystemProvider;
  /** Shell. */
  shell: ShellProvider;
  /** Clock. */
  clock: ClockProvider;
  /** Human channel. */
  human: HumanProvider;
  /** Models by kind (`scripted`, ...). */
  models: Record<string, ModelProvider>;
  /** JIT tool validation and sandboxed calls. */
  sandbox: SandboxProvider;
}
