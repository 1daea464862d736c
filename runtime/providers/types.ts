/**
 * The Resource Provider Substrate: every external effect (files, shell, clock,
 * human channel, model) goes through one of these interfaces. Only primitives
 * call providers, so swapping in a deterministic provider changes what happens,
 * never who is allowed to make it happen.
 * @module
 */
import type { HumanRequestRecord, StepResult } from "../types.ts";
import type { SandboxProvider } from "../sandbox/provider.ts";
import type { ChatFactory } from "./chat_host.ts";
import type { CommandLimits, ShellView } from "../sandbox/bwrap.ts";
import type { CommandLimitKinds } from "../sandbox/cgroups.ts";

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
  /** Metadata without following a final symlink (what path checks look at). */
  lstat(path: string): Promise<FileStat>;
  /**
   * Metadata of the entry at `path`, a checked real path, without following a
   * final symlink: what a primitive reports, read so that no link swapped in
   * since the check leads elsewhere.
   */
  statEntry(path: string): Promise<FileStat>;
}

/** What a command did to one path. */
export interface FileChange {
  /** Real path. */
  path: string;
  /** Created, changed (content, type or mode) or deleted. */
  change: "created" | "changed" | "deleted";
  /** Kind after the change (before it, for a deletion). */
  kind: EntryKind;
  /** Size in bytes after the change (a symlink: its target's length); null when deleted. */
  size: number | null;
  /** sha256 of the content (a symlink: of its target); null for deletions, directories, or over the hash budget. */
  sha256: string | null;
}

/** The OS sandbox of one shell run. */
export interface ShellSandbox {
  /** What the command may see and write (real paths, derived at the call). */
  view: ShellView;
  /** CPU, memory, file-size and task limits. */
  limits: CommandLimits;
  /** Most entries the write audit walks under the writable mounts (more: ELIMIT before running). */
  maxWritableEntries: number;
}

/** Options for a shell run. */
export interface ShellRunOptions {
  /** Absolute, authorized working directory. */
  cwd: string;
  /** Kill after this many milliseconds. */
  timeoutMs: number;
  /**
   * Epoch ms (the real clock) past which the command never runs, enforced
   * outside the runtime: the sandbox kills it there even if the runtime has
   * stalled, and one started later runs nothing. Absent: the timeout alone.
   */
  deadline?: number;
  /** Aborts when the command must end now (its reason is the call's error). */
  signal?: AbortSignal;
  /** Keep at most this many bytes of each output stream. */
  maxOutputBytes: number;
  /**
   * The OS sandbox, or null to run with the runtime's own OS permissions (the
   * unsafe policy `shell_sandbox: "none"`).
   */
  sandbox: ShellSandbox | null;
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
  /** What the command created, changed or deleted under its writable mounts; null unsandboxed. */
  writes: FileChange[] | null;
  /** False when the write audit's walk hit its limit after the command (the list is partial). */
  writes_complete: boolean;
  /** What capped the command's tasks and memory as a whole (`none`: nothing could here); null unsandboxed. */
  limits: CommandLimitKinds | null;
}

/** Runs an argv (never a shell string). */
export interface ShellProvider {
  /** Run `argv` with an empty environment apart from a fixed PATH and HOME. */
  run(argv: string[], options: ShellRunOptions): Promise<ShellResult>;
  /** Whether sandboxed runs are possible here (bubblewrap is installed). */
  sandboxAvailable(): boolean;
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

/** A human's answer to an outcome request: the effect happened (`done`) or did not (`failed`). */
export type OutcomeAnswer = "done" | "failed";

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
  | {
    type: "tool";
    tool: string;
    args: Record<string, unknown>;
    /**
     * The call cannot run as given (its arguments were not a JSON object): the
     * step records this error as its result without running anything, so it
     * goes back to the model as a tool error.
     */
    error?: { code: string; message: string };
  }
  | { type: "exit"; code: number; result?: string };

/**
 * What a model sees of its process: a narrow, read-only view the scheduler
 * builds for each model step. Everything that grows with the process's history
 * is read by index, so a step costs the same on the first turn and the
 * ten-thousandth: the immutable input (stored once at launch), the results of
 * tool steps (by step number), and the model's own append-only log (by
 * position). A provider that keeps a conversation in memory reads only what is
 * new; after a restart it rebuilds it from the same calls.
 */
export interface ModelContext {
  /** The process. */
  readonly pid: number;
  /** Provider kind the process runs. */
  readonly kind: string;
  /** The cursor the last model step returned (`{}` at first). */
  readonly cursor: Readonly<Record<string, unknown>>;
  /** The process's goal. */
  readonly goal: string;
  /** The system prompt from its image. */
  readonly systemPrompt: string;
  /** Builtin tool names the process may call. */
  readonly tools: readonly string[];
  /** The immutable input stored at launch (the script; later a prompt, tool schemas), or null. */
  input(): Promise<unknown>;
  /** How many tool steps have a recorded result. */
  stepCount(): Promise<number>;
  /** The result of tool step `n` (0-based), or null if there is none. */
  result(n: number): Promise<StepResult | null>;
  /** How many entries the model log holds. */
  logLength(): Promise<number>;
  /** Model log entries from `from` up to (not including) `to` (default: the end). */
  log(from: number, to?: number): Promise<unknown[]>;
}

/** A model's decision: the next step, its new cursor, and what to add to its log. */
export interface ModelDecision {
  /** The next step. */
  step: ModelStep;
  /** The new cursor (small: it is rewritten every step; see `MAX_CURSOR_CHARS`). */
  cursor: Record<string, unknown>;
  /** Entries appended to the model log, durable together with the decision. */
  log?: unknown[];
}

/** A model: given a view of its process, decide the next step. */
export interface ModelProvider {
  /**
   * True when `next` reaches nothing outside the runtime (a script): the
   * scheduler may then run it while earlier results are still being committed.
   * Otherwise (a model API) everything is committed before it is called.
   */
  readonly pure?: boolean;
  /** Decide the next step; nothing is durable until the scheduler stores the decision. */
  next(ctx: ModelContext): Promise<ModelDecision>;
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
  /** Chat model endpoints (`openai`, `anthropic`) for model-driven processes. */
  chat: ChatFactory;
}
