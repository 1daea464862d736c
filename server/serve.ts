/**
 * Serve the control plane on loopback: the API and console from `app.ts`, a
 * bearer token kept in a 0600 file next to the store, and a background
 * scheduler that resumes processes after each decision (one run at a time).
 * @module
 */
import { LibosError } from "../runtime/errors.ts";
import type { Runtime } from "../host/runtime.ts";
import { createApp } from "./app.ts";

/** How long stopping waits for responses under way before it goes on without them. */
export const SHUTDOWN_GRACE_MS = 2_000;

/** Options for {@link serve}. */
export interface ServeOptions {
  /** TCP port (0 picks a free one). */
  port: number;
  /** Loopback address to bind: `127.0.0.1` (default), `::1` or `localhost`. */
  hostname?: string;
  /**
   * Where the token lives (`<store>.token` by convention). Created with mode
   * 0600 at first start and reused afterwards. Without it a fresh token is
   * kept in memory only.
   */
  tokenFile?: string;
  /** Event-stream poll interval in milliseconds (default 200). */
  pollMs?: number;
  /** Event streams open at once (default `MAX_EVENT_STREAMS`, 64). */
  maxEventStreams?: number;
  /** Called when a background scheduler run throws (default: log to stderr). */
  onSchedulerError?: (e: unknown) => void;
}

/** A running control plane. */
export interface Served {
  /** The Deno HTTP server. */
  server: Deno.HttpServer<Deno.NetAddr>;
  /** Base URL (`http://127.0.0.1:PORT`), without the token. */
  url: string;
  /** The bearer token. */
  token: string;
  /** Path of the token file, when there is one. */
  tokenFile: string | null;
  /** Resolves when the background scheduler has nothing left to do. */
  idle(): Promise<void>;
  /** Run the scheduler now (coalesced with a run in progress). */
  kick(): void;
  /** Stop serving: end event streams, wait for the scheduler, close the listener. The runtime stays open. */
  close(): Promise<void>;
}

const _LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const _TOKEN = /^[0-9a-f]{64}$/;

/** A fresh token: 32 random bytes, hex. */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Read the token from `path`, or create the file (mode 0600, exclusively) with
 * a fresh one. A file readable by others is tightened to 0600; a file that does
 * not hold a token is an error, never silently replaced.
 */
export async function loadOrCreateToken(path: string): Promise<string> {
  try {
    const token = newToken();
    await Deno.writeTextFile(path, token + "\n", { createNew: true, mode: 0o600 });
    await Deno.chmod(path, 0o600); // whatever the umask
    return token;
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  const info = await Deno.lstat(path);
  if (!info.isFile) throw new LibosError("EINVAL", `tokenFile: '${path}' is not a regular file`);
  if (info.mode !== null && (info.mode & 0o077) !== 0) await Deno.chmod(path, 0o600);
  const token = (await Deno.readTextFile(path)).trim();
  if (!_TOKEN.test(token)) {
    throw new LibosError("EINVAL", `tokenFile: '${path}' does not hold a token (64 hex digits)`);
  }
  return token;
}

/**
 * Runs `rt.runUntilIdle()` in the background, never two at once: a kick while
 * a run is in progress schedules exactly one more run after it.
 */
export class SchedulerPump {
  #rt: Runtime;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;
  #onError: (e: unknown) => void;

  /** Pump for `rt`; one not `enabled` ignores kicks (`rt` schedules nothing). */
  constructor(rt: Runtime, onError: (e: unknown) => void, enabled = true) {
    this.#rt = rt;
    this.#onError = onError;
    this.#closed = !enabled;
  }

  /** Ask for a run. */
  kick(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop();
  }

  async #loop(): Promise<void> {
    for (;;) {
      this.#again = false;
      try {
        await this.#rt.runUntilIdle();
      } catch (e) {
        this.#onError(e);
      }
      // Decided synchronously after the run: a kick from now on starts a new loop.
      if (!this.#again || this.#closed) {
        this.#running = null;
        return;
      }
    }
  }

  /** Resolves when no run is in progress or scheduled. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** Stop accepting kicks and wait for the current run. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.idle();
  }
}

/** Serve the API and console for `rt` on a loopback address. */
export async function serve(rt: Runtime, options: ServeOptions): Promise<Served> {
  const hostname = options.hostname ?? "127.0.0.1";
  if (!_LOOPBACK.has(hostname)) {
    throw new LibosError("EINVAL", `hostname: '${hostname}' is not a loopback address`);
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new LibosError("EINVAL", "port: must be an integer from 0 to 65535");
  }
  const token = options.tokenFile ? await loadOrCreateToken(options.tokenFile) : newToken();
  // A client runtime (a console beside workers) schedules nothing: its pump never runs.
  const pump = new SchedulerPump(
    rt,
    options.onSchedulerError ?? ((e) => console.error("libos serve: scheduler:", e)),
    rt.role === "scheduler",
  );
  const stop = new AbortController();
  // The listener must exist before the app knows its origins: bind first, route after.
  let handler: (req: Request) => Response | Promise<Response> = () =>
    new Response("starting", { status: 503 });
  const server = Deno.serve(
    { port: options.port, hostname, onListen: () => {} },
    (req) => handler(req),
  );
  const port = server.addr.port;
  const host = hostname === "::1" ? "[::1]" : hostname;
  const origins = [
    `http://127.0.0.1:${port}`,
    `http://localhost:${port}`,
    `http://[::1]:${port}`,
  ];
  const app = createApp(rt, {
    token,
    origins,
    signal: stop.signal,
    pollMs: options.pollMs,
    maxEventStreams: options.maxEventStreams,
    onDecision: () => pump.kick(),
  });
  handler = (req) => app.fetch(req);
  pump.kick();
  // Decisions can also come from another process on the store (libos human
  // approve): look for runnable work now and then, not only after HTTP decisions.
  const poll = setInterval(() => pump.kick(), 1000) as unknown as number;
  Deno.unrefTimer(poll);
  let closed: Promise<void> | null = null;
  return {
    server,
    url: `http://${host}:${port}`,
    token,
    tokenFile: options.tokenFile ?? null,
    idle: () => pump.idle(),
    kick: () => pump.kick(),
    close() {
      closed ??= (async () => {
        stop.abort();
        clearInterval(poll);
        // A graceful shutdown waits for every response to be sent, and a client that
        // stops reading never lets one finish: after the grace period, go on without it
        // (the process's exit closes what is left).
        let grace: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          server.shutdown(),
          new Promise((r) => (grace = setTimeout(r, SHUTDOWN_GRACE_MS))),
        ]);
        clearTimeout(grace);
        await pump.close();
      })();
      return closed;
    },
  };
}
