/**
 * Permission broker: Deno's experimental `DENO_PERMISSION_BROKER_PATH` hands
 * every permission check of a child to us over a unix socket (NDJSON, one
 * request per line, `{"v":1,"pid","id","datetime","permission","value"}` ->
 * `{"id","result":"allow"|"deny","reason"}`). It overrides the child's flags
 * and fails closed. One listener serves every sandbox of this runtime; each
 * request is routed by the child's OS pid to the handler of its call.
 * @module
 */
import { dirname, join } from "node:path";

/**
 * Longest request line a child may send, in characters. A request names one
 * path, host or variable; a tool asking for `Deno.env.get` of a 100 MB name
 * once grew the runtime by 1 GB (the line was buffered whole and rescanned per
 * chunk). Past it the connection is closed, and the child's checks fail closed.
 */
export const MAX_BROKER_LINE = 64 * 1024;

/** Decides one permission check of a sandboxed child. */
export type PermissionHandler = (permission: string, value: string | null) => Promise<boolean>;

/** A broker listening on a private unix socket. */
export class PermissionBroker {
  /** Socket path to hand to children. */
  readonly path: string;
  #listener: Deno.Listener;
  #handlers = new Map<number, PermissionHandler>();
  #conns = new Set<Deno.Conn>();

  private constructor(path: string, listener: Deno.Listener) {
    this.path = path;
    this.#listener = listener;
    this.#accept();
  }

  /** Listen on a fresh socket in a private (0700) temp directory. */
  static async start(): Promise<PermissionBroker> {
    const dir = await Deno.makeTempDir({ prefix: "libos-broker-" });
    await Deno.chmod(dir, 0o700);
    const path = join(dir, "broker.sock");
    return new PermissionBroker(path, Deno.listen({ transport: "unix", path }));
  }

  /** Route checks from OS process `osPid` to `handler` (until {@link release}). */
  attach(osPid: number, handler: PermissionHandler): void {
    this.#handlers.set(osPid, handler);
  }

  /** Stop routing checks from `osPid`; later checks from it are denied. */
  release(osPid: number): void {
    this.#handlers.delete(osPid);
  }

  /**
   * A socket of its own for one call, every check on it decided by `handler`
   * (until released): a child in a pid namespace of its own cannot be told
   * apart by the pid it reports.
   */
  listenFor(handler: PermissionHandler): { path: string; release(): void } {
    const path = join(dirname(this.path), `call-${crypto.randomUUID()}.sock`);
    const listener = Deno.listen({ transport: "unix", path });
    let live = true;
    (async () => {
      try {
        for await (const conn of listener) {
          this.#serve(conn as Deno.Conn, () => live ? handler : undefined);
        }
      } catch { /* listener closed */ }
    })();
    return {
      path,
      release: () => {
        live = false;
        try {
          listener.close();
        } catch { /* closed */ }
        Deno.remove(path).catch(() => {});
      },
    };
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.#serve(conn as Deno.Conn, (pid) => this.#handlers.get(pid));
      }
    } catch { /* listener closed */ }
  }

  async #serve(
    conn: Deno.Conn,
    route: (pid: number) => PermissionHandler | undefined,
  ): Promise<void> {
    this.#conns.add(conn);
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    let buf = "";
    try {
      for await (const chunk of conn.readable) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.length > MAX_BROKER_LINE) return;
          const reply = await this.#decide(line, route);
          await conn.write(encoder.encode(JSON.stringify(reply) + "\n"));
        }
        if (buf.length > MAX_BROKER_LINE) return;
      }
    } catch {
      /* child went away */
    } finally {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  async #decide(
    line: string,
    route: (pid: number) => PermissionHandler | undefined,
  ): Promise<{ id: unknown; result: "allow" | "deny"; reason: string }> {
    let req: { pid?: unknown; id?: unknown; permission?: unknown; value?: unknown };
    try {
      req = JSON.parse(line);
    } catch {
      return { id: null, result: "deny", reason: "malformed request" };
    }
    const handler = typeof req.pid === "number" ? route(req.pid) : undefined;
    if (!handler || typeof req.permission !== "string") {
      return { id: req.id, result: "deny", reason: "unknown sandbox" };
    }
    const value = typeof req.value === "string" ? req.value : null;
    try {
      const ok = await handler(req.permission, value);
      return {
        id: req.id,
        result: ok ? "allow" : "deny",
        reason: ok ? "allowed by libOS" : "denied by libOS",
      };
    } catch {
      return { id: req.id, result: "deny", reason: "denied by libOS" };
    }
  }

  /** Close the socket and every connection. */
  async close(): Promise<void> {
    this.#listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await Deno.remove(join(this.path, ".."), { recursive: true }).catch(() => {});
  }
}
