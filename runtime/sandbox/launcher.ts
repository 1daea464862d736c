/**
 * Launches one JIT tool call in its own Deno subprocess and speaks the NDJSON
 * frame protocol with it. The subprocess gets: `Deno.execPath()` under
 * `prlimit --cpu`, `--no-config --no-remote --no-npm --cached-only
 * --no-prompt`, an empty environment, a private HOME/DENO_DIR, a V8 heap cap,
 * an RSS watchdog, a wall-clock limit, syscall/stdout/stderr/frame caps, and
 * SIGKILL the moment anything is off or the result is in. Its permission
 * checks go to the runtime's broker. Every frame is validated here; a hostile
 * tool can only make its own call fail, never the host.
 * @module
 */
import { MAX_JSON_DEPTH, nestsDeeper } from "../canonical.ts";
import { LibosError } from "../errors.ts";
import type { ErrorCode } from "../errors.ts";
import type { PermissionBroker, PermissionHandler } from "./broker.ts";
import { PRLIMIT, type ShellView } from "./bwrap.ts";

/** Limits of one call. */
export interface SandboxLimits {
  /** Wall clock, ms. */
  timeoutMs: number;
  /** CPU seconds (prlimit). */
  cpuSeconds: number;
  /** V8 old-space cap, MB. */
  heapMb: number;
  /** Resident set cap, MB (watchdog). */
  rssMb: number;
  /** Most syscalls. */
  maxSyscalls: number;
  /** Most stdout bytes (frames included). */
  maxStdout: number;
  /** Most stderr bytes kept before the tool is killed. */
  maxStderr: number;
}

/** Defaults (the prototype's: 5 s, 64 syscalls, 1 MB stdout, 100 KB stderr). */
export const DEFAULT_LIMITS: SandboxLimits = {
  timeoutMs: 5_000,
  cpuSeconds: 10,
  heapMb: 128,
  rssMb: 512,
  maxSyscalls: 64,
  maxStdout: 1024 * 1024,
  maxStderr: 100 * 1024,
};

/** One call. */
export interface SandboxRequest {
  /** Directory holding the validated `tool.ts` (and the runner's cache). */
  artifactDir: string;
  /** Absolute path of the tool module. */
  toolPath: string;
  /** Arguments for `run`. */
  args: unknown;
  /** Derived `--allow-*` / `--deny-*` flags. */
  flags: string[];
  /**
   * What the call may reach of its workspace, as a shell command's view; when it
   * grants any file, the call runs behind an OS wall derived from it too (see
   * `HostSandbox`), so a link swapped in after a check leads nowhere.
   */
  view?: ShellView;
  /** Host side of a syscall; throws LibosError to fail it. */
  onSyscall(name: string, args: Record<string, unknown>): Promise<unknown>;
  /** Permission checks of the child (through the broker); absent = deny all. */
  onPermission?: PermissionHandler;
  /** Limits. */
  limits: SandboxLimits;
  /** Aborts when the call must end now (its reason, a LibosError, is the call's error). */
  signal?: AbortSignal;
}

/**
 * The OS wall around one call: the command line that starts Deno inside
 * bubblewrap (mounts derived like a shell command's, a seccomp filter, its
 * own pid namespace), and what to undo when the call ends.
 */
export interface SandboxWall {
  /** The full command line for Deno's own argv (`deno run ...`). */
  command(deno: string[]): string[];
  /**
   * Deny every permission check of the call from now on and free its broker
   * socket (its result is in, it is being killed, or it ended).
   */
  revoke(): void;
}

/**
 * The whole environment of a tool's Deno: a private HOME and DENO_DIR in its
 * artifact, and the broker socket its permission checks go to (if any).
 */
export function toolEnv(artifactDir: string, brokerPath: string | null): Record<string, string> {
  return {
    HOME: `${artifactDir}/home`,
    DENO_DIR: `${artifactDir}/deno_dir`,
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
    ...(brokerPath === null ? {} : { DENO_PERMISSION_BROKER_PATH: brokerPath }),
  };
}

/** What a call came to. */
export type SandboxOutcome =
  | { ok: true; value: unknown; syscalls: number; stderr: string }
  | { ok: false; error: { code: ErrorCode; message: string }; syscalls: number; stderr: string };

/** The runner every tool subprocess runs (its main module). */
export const RUNNER = new URL("./runner.ts", import.meta.url).pathname;
const _TOOL_CODES = ["EPERM", "ENOENT", "EINVAL", "EEXIST", "ECONFLICT", "ESTATE", "EAGAIN", "EIO"];
const FRAME_KEYS: Record<string, string[]> = {
  syscall: ["type", "id", "name", "args"],
  result: ["type", "value"],
  error: ["type", "message", "code"],
};
/** Longest frame (one stdout line), in characters; longer is a protocol violation. */
export const MAX_FRAME_CHARS = 512 * 1024;

class _Violation extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

function _isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Validate one stdout line as a frame; throws _Violation. */
function _parseFrame(line: string): Record<string, unknown> {
  if (line.length > MAX_FRAME_CHARS) {
    throw new _Violation("EPROTO", `frame longer than ${MAX_FRAME_CHARS} characters`);
  }
  let frame: unknown;
  try {
    frame = JSON.parse(line);
  } catch {
    throw new _Violation("EPROTO", `garbage on stdout: ${JSON.stringify(line.slice(0, 60))}`);
  }
  if (!_isObject(frame) || typeof frame.type !== "string" || !FRAME_KEYS[frame.type]) {
    throw new _Violation("EPROTO", "frame has no known type");
  }
  const allowed = FRAME_KEYS[frame.type];
  for (const k of Object.keys(frame)) {
    if (!allowed.includes(k)) {
      throw new _Violation("EPROTO", `${frame.type} frame: unknown field '${k}'`);
    }
  }
  if (frame.type === "syscall") {
    if (!Number.isSafeInteger(frame.id) || (frame.id as number) < 1) {
      throw new _Violation("EPROTO", "syscall frame: id must be a positive integer");
    }
    if (typeof frame.name !== "string" || frame.name.length > 128) {
      throw new _Violation("EPROTO", "syscall frame: name must be a string");
    }
    if (!_isObject(frame.args)) {
      throw new _Violation("EPROTO", "syscall frame: args must be an object");
    }
  } else if (frame.type === "error") {
    if (typeof frame.message !== "string") {
      throw new _Violation("EPROTO", "error frame: message must be a string");
    }
    if (frame.code !== undefined && frame.code !== null && typeof frame.code !== "string") {
      throw new _Violation("EPROTO", "error frame: code must be a string");
    }
  } else if (!("value" in frame)) {
    throw new _Violation("EPROTO", "result frame: value is required");
  }
  if (nestsDeeper(frame.type === "syscall" ? frame.args : frame.value)) {
    throw new _Violation(
      "EPROTO",
      `${frame.type} frame nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  return frame;
}

// Answers one line per request with the resident pages of process $1 (-1 once it is gone).
// `read < file` is a shell builtin: no fork per answer.
const RSS_HELPER =
  'while read -r _; do rss=-1; read -r _ rss _ < "/proc/$1/statm" 2>/dev/null; echo "$rss"; done';

// Same, for any pid: one line in (a pid), one line out; one shell serves every call.
const RSS_PROBE =
  'while read -r pid; do rss=-1; case "$pid" in ""|*[!0-9]*) ;; *) read -r _ rss _ < "/proc/$pid/statm" 2>/dev/null;; esac; echo "$rss"; done';

/**
 * A long-lived helper shell that reads resident pages of any pid, shared by
 * all calls of a host (starting a shell per call costs a few ms of every
 * call). Started at the first question; {@link close} stops it (a later
 * question starts a new one).
 */
export class RssProbe {
  #helper: Deno.ChildProcess | null = null;
  #out: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #inp: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #buf = "";
  #turn: Promise<unknown> = Promise.resolve();

  /** Resident pages of `pid` (-1 when it is gone). Questions are answered in order. */
  pages(pid: number): Promise<number> {
    const answer = this.#turn.then(() => this.#ask(pid));
    this.#turn = answer.catch(() => {});
    return answer;
  }

  async #ask(pid: number): Promise<number> {
    if (!this.#helper) {
      this.#helper = new Deno.Command("/bin/sh", {
        args: ["-c", RSS_PROBE],
        clearEnv: true,
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      // Never keeps the host alive; its stdin closes with the host and it exits.
      this.#helper.unref();
      this.#out = this.#helper.stdout.getReader();
      this.#inp = this.#helper.stdin.getWriter();
      this.#buf = "";
    }
    try {
      await this.#inp!.write(new TextEncoder().encode(`${pid}\n`));
      const decoder = new TextDecoder();
      while (!this.#buf.includes("\n")) {
        const { value, done } = await this.#out!.read();
        if (done) throw new Error("rss probe exited");
        this.#buf += decoder.decode(value);
      }
    } catch {
      // The helper died: the next question starts a new one.
      await this.#stop();
      return -1;
    }
    const nl = this.#buf.indexOf("\n");
    const line = this.#buf.slice(0, nl);
    this.#buf = this.#buf.slice(nl + 1);
    return Number(line);
  }

  /** Stop the helper (after answering the questions already asked). */
  async close(): Promise<void> {
    await this.#turn;
    await this.#stop();
  }

  async #stop(): Promise<void> {
    const helper = this.#helper;
    if (!helper) return;
    this.#helper = null;
    try {
      helper.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#out!.cancel().catch(() => {});
    await this.#inp!.close().catch(() => {});
    helper.ref();
    await helper.status;
  }
}

/**
 * Resident pages of `pid`. Deno refuses /proc to a runtime without
 * --allow-all (the CLI and test tasks grant only read/write/run/...), so the
 * reads then go through `shared` if given, else one helper shell of this
 * call, started at the first read.
 */
function _rssReader(
  pid: number,
  shared?: RssProbe,
): { pages(): Promise<number>; close(): Promise<void> } {
  let helper: Deno.ChildProcess | null = null;
  let out: ReadableStreamDefaultReader<string> | null = null;
  let inp: WritableStreamDefaultWriter<Uint8Array> | null = null;
  let buf = "";
  return {
    async pages() {
      if (!helper) {
        try {
          return Number(Deno.readTextFileSync(`/proc/${pid}/statm`).split(" ")[1]);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotCapable)) return -1;
        }
        if (shared) return await shared.pages(pid);
        helper = new Deno.Command("/bin/sh", {
          args: ["-c", RSS_HELPER, "sh", String(pid)],
          stdin: "piped",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        out = helper.stdout.pipeThrough(new TextDecoderStream()).getReader();
        inp = helper.stdin.getWriter();
      }
      await inp!.write(new TextEncoder().encode("\n"));
      while (!buf.includes("\n")) {
        const { value, done } = await out!.read();
        if (done) return -1;
        buf += value;
      }
      const line = buf.slice(0, buf.indexOf("\n"));
      buf = buf.slice(buf.indexOf("\n") + 1);
      return Number(line);
    },
    async close() {
      if (!helper) return;
      try {
        helper.kill("SIGKILL");
      } catch { /* gone */ }
      await out!.cancel().catch(() => {});
      await inp!.close().catch(() => {});
      await helper.status;
    },
  };
}

/** The one child of `pid` (bwrap's sandboxed process), or null before it exists. */
function _onlyChild(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotCapable)) return null;
    // Deno refuses /proc to a runtime without --allow-all: the same mount namespace's cat may read it.
    const out = new Deno.Command("/bin/cat", {
      args: [`/proc/${pid}/task/${pid}/children`],
      clearEnv: true,
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    text = new TextDecoder().decode(out.stdout);
  }
  const first = Number(text.trim().split(/\s+/)[0]);
  return Number.isSafeInteger(first) && first > 0 ? first : null;
}

/** Resident pages of the process bwrap (`pid`) runs, found at the first read that sees it. */
function _walledRss(
  pid: number,
  shared?: RssProbe,
): { pages(): Promise<number>; close(): Promise<void> } {
  let inner: ReturnType<typeof _rssReader> | null = null;
  return {
    pages() {
      if (!inner) {
        const deno = _onlyChild(pid);
        if (deno === null) return Promise.resolve(0);
        inner = _rssReader(deno, shared);
      }
      return inner.pages();
    },
    close: () => inner?.close() ?? Promise.resolve(),
  };
}

/** Why a call was stopped by its signal: the reason it was given, or EIO. */
function _stopped(signal: AbortSignal): LibosError {
  const why = signal.reason;
  return why instanceof LibosError ? why : new LibosError("EIO", "the call was stopped");
}

/** Run one call. Never throws for anything the tool does; returns the outcome. */
export async function runInSandbox(
  broker: PermissionBroker | null,
  req: SandboxRequest,
  rssProbe?: RssProbe,
  wall?: SandboxWall,
): Promise<SandboxOutcome> {
  const { limits } = req;
  if (req.signal?.aborted) {
    const { code, message } = _stopped(req.signal);
    return { ok: false, error: { code, message }, syscalls: 0, stderr: "" };
  }
  const denoArgs = [
    "run",
    "--no-config",
    "--no-remote",
    "--no-npm",
    "--cached-only",
    "--no-prompt",
    "--no-lock",
    `--v8-flags=--max-old-space-size=${limits.heapMb}`,
    // Without a broker no direct access could be audited, so the derived
    // flags are given up: the tool may read its own module and nothing else.
    ...(broker ? req.flags : [`--allow-read=${req.toolPath}`]),
    RUNNER,
  ];
  const env = toolEnv(req.artifactDir, broker?.path ?? null);
  // Walled, the environment is set inside the sandbox (bwrap clears it) and the
  // broker socket is the call's own.
  const [cmd, ...args] = wall
    ? wall.command([Deno.execPath(), ...denoArgs])
    : PRLIMIT
    ? [PRLIMIT, `--cpu=${limits.cpuSeconds}`, "--", Deno.execPath(), ...denoArgs]
    : [Deno.execPath(), ...denoArgs];
  const child = new Deno.Command(cmd, {
    args,
    cwd: wall ? "/" : req.artifactDir,
    clearEnv: true,
    env: wall ? {} : env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const denyAll: PermissionHandler = () => Promise.resolve(false);
  if (!wall) broker?.attach(child.pid, req.onPermission ?? denyAll);

  let syscalls = 0;
  let stderr = "";
  let stdoutBytes = 0;
  let outcome: SandboxOutcome | null = null;
  let killed = false;
  const kill = () => {
    if (killed) return;
    killed = true;
    // From now on every permission check of the child is denied.
    broker?.release(child.pid);
    wall?.revoke();
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  const finish = (o: SandboxOutcome) => {
    outcome ??= o;
    kill();
  };
  const fail = (code: ErrorCode, message: string) =>
    finish({ ok: false, error: { code, message }, syscalls, stderr });

  // Syscalls the tool started: the call is not over until they are.
  const inflight = new Set<Promise<void>>();
  const writer = child.stdin.getWriter();
  // Frames queued while a write is in flight go out together, in order, in
  // the next write (pipelined syscalls: one pipe write per batch, not per frame).
  let queued = "";
  let writing = false;
  const encoder = new TextEncoder();
  const flush = async () => {
    writing = true;
    while (queued) {
      const chunk = queued;
      queued = "";
      try {
        await writer.write(encoder.encode(chunk));
      } catch {
        queued = ""; // child gone
      }
    }
    writing = false;
  };
  const write = (frame: unknown) => {
    queued += JSON.stringify(frame) + "\n";
    if (!writing) flush();
  };

  const timer = setTimeout(
    () => fail("ETIMEDOUT", `tool ran longer than ${limits.timeoutMs} ms`),
    limits.timeoutMs,
  );
  const stop = () => {
    const why = _stopped(req.signal!);
    fail(why.code, why.message);
  };
  req.signal?.addEventListener("abort", stop);
  if (req.signal?.aborted) stop();
  // Walled, Deno is bwrap's child (the pid spawned is bwrap's): its pid is found once it exists.
  const rss = wall ? _walledRss(child.pid, rssProbe) : _rssReader(child.pid, rssProbe);
  let probing = false;
  const watchdog = setInterval(async () => {
    if (probing || killed) return;
    probing = true;
    try {
      const pages = await rss.pages();
      if (pages * 4096 > limits.rssMb * 1024 * 1024) {
        fail("ELIMIT", `tool used more than ${limits.rssMb} MB of memory`);
      }
    } catch {
      /* exited */
    } finally {
      probing = false;
    }
  }, 20);

  const onFrame = (frame: Record<string, unknown>) => {
    if (outcome) throw new _Violation("EPROTO", `${frame.type} frame after the call ended`);
    if (frame.type === "result") return finish({ ok: true, value: frame.value, syscalls, stderr });
    if (frame.type === "error") {
      // A tool may pass on a code a syscall gave it, not claim the runtime's own verdicts.
      const code = typeof frame.code === "string" && _TOOL_CODES.includes(frame.code)
        ? frame.code as ErrorCode
        : "EIO";
      return finish({
        ok: false,
        error: { code, message: `tool failed: ${frame.message}` },
        syscalls,
        stderr,
      });
    }
    if (++syscalls > limits.maxSyscalls) {
      throw new _Violation("ELIMIT", `more than ${limits.maxSyscalls} syscalls`);
    }
    const id = frame.id as number;
    const settled = req.onSyscall(frame.name as string, frame.args as Record<string, unknown>).then(
      (payload) => write({ type: "syscall_result", id, ok: true, payload: payload ?? null }),
      (e) => {
        const err = e instanceof LibosError ? e : new LibosError("EIO", String(e));
        write({ type: "syscall_result", id, ok: false, error: err.toJSON() });
      },
    );
    inflight.add(settled);
    settled.finally(() => inflight.delete(settled));
  };

  const readStdout = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout) {
      stdoutBytes += chunk.length;
      if (stdoutBytes > limits.maxStdout) {
        fail("ELIMIT", `tool wrote more than ${limits.maxStdout} bytes to stdout`);
        break;
      }
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          onFrame(_parseFrame(line));
        } catch (e) {
          if (e instanceof _Violation) {
            // A violation after a clean result still taints the call: report it.
            outcome = null;
            fail(e.code, e.message);
          } else throw e;
        }
      }
      if (buf.length > MAX_FRAME_CHARS) {
        outcome = null;
        fail("EPROTO", `frame longer than ${MAX_FRAME_CHARS} characters`);
        break;
      }
    }
  })().catch(() => {});
  const readStderr = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += decoder.decode(chunk, { stream: true });
      if (stderr.length > limits.maxStderr) {
        stderr = stderr.slice(0, limits.maxStderr);
        fail("ELIMIT", `tool wrote more than ${limits.maxStderr} bytes to stderr`);
        break;
      }
    }
  })().catch(() => {});

  write({ type: "run", tool: new URL(`file://${req.toolPath}`).href, args: req.args });
  const status = await child.status;
  clearTimeout(timer);
  req.signal?.removeEventListener("abort", stop);
  clearInterval(watchdog);
  await rss.close();
  broker?.release(child.pid);
  await Promise.all([readStdout, readStderr]);
  while (inflight.size) await Promise.allSettled([...inflight]);
  try {
    await writer.close();
  } catch { /* child gone */ }
  if (outcome) return outcome;
  // Ended on its own without a result: say why in words a user can act on.
  const sig = status.signal;
  if (status.code === 133 || sig === "SIGTRAP") {
    return {
      ok: false,
      error: { code: "ELIMIT", message: `tool exceeded the ${limits.heapMb} MB heap` },
      syscalls,
      stderr,
    };
  }
  if (sig === "SIGXCPU" || sig === "SIGKILL" || status.code === 137 || status.code === 152) {
    return {
      ok: false,
      error: { code: "ELIMIT", message: `tool exceeded its CPU limit (${limits.cpuSeconds} s)` },
      syscalls,
      stderr,
    };
  }
  const tail = stderr.trim().split("\n").slice(-3).join(" | ").slice(0, 300);
  return {
    ok: false,
    error: {
      code: "EIO",
      message: `tool exited (code ${status.code}) without a result${tail ? `: ${tail}` : ""}`,
    },
    syscalls,
    stderr,
  };
}
