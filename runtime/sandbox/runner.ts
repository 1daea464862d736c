/**
 * The sandbox runner: the main module of every JIT tool subprocess. It has no
 * imports. It reads NDJSON frames from stdin, loads the tool through a
 * computed specifier (so the load is permission-checked, unlike a literal
 * import), gives it `libos.syscall`, and writes frames to stdout:
 *
 *   host -> runner  {"type":"run","tool":URL,"args":...}
 *   runner -> host  {"type":"syscall","id":N,"name":S,"args":{...}}
 *   host -> runner  {"type":"syscall_result","id":N,"ok":true,"payload":...} | {"ok":false,"error":{code,message}}
 *   runner -> host  {"type":"result","value":...} | {"type":"error","message":S}
 *
 * Nothing here is trusted by the host: every frame is validated there.
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Syscall frames issued in one synchronous run of the tool leave in one write.
let outbox = "";

function flush(): void {
  if (!outbox) return;
  const bytes = encoder.encode(outbox);
  outbox = "";
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

function queue(frame: unknown): void {
  const line = JSON.stringify(frame) + "\n";
  if (!outbox) queueMicrotask(flush);
  outbox += line;
}

function send(frame: unknown): void {
  queue(frame);
  flush();
}

// Tool logging goes to stderr so it can never be mistaken for a frame.
console.log = console.info = console.debug = (...a: unknown[]) => console.error(...a);

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
const pending = new Map<number, Pending>();
let nextId = 1;

class SyscallError extends Error {
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "SyscallError";
    this.code = code;
  }
}

const libos = Object.freeze({
  syscall(name: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      queue({ type: "syscall", id, name, args });
    });
  },
});

async function start(tool: string, args: unknown): Promise<void> {
  try {
    const mod = await import(tool);
    if (typeof mod.run !== "function") {
      throw Object.assign(new Error("tool has no run function export"), { code: "EINVAL" });
    }
    const value = await mod.run(args, libos);
    send({ type: "result", value: value === undefined ? null : value });
  } catch (e) {
    // A denial by the permission broker surfaces as NotCapable: report it as EPERM.
    const name = (e as { name?: string })?.name;
    const code = (e as { code?: string })?.code ??
      (name === "NotCapable" || name === "PermissionDenied" ? "EPERM" : undefined);
    send({
      type: "error",
      message: e instanceof Error ? e.message : String(e),
      code: code ?? null,
    });
  }
  Deno.exit(0);
}

let buffer = "";
let started = false;
for await (const chunk of Deno.stdin.readable) {
  buffer += decoder.decode(chunk, { stream: true });
  let nl: number;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const frame = JSON.parse(buffer.slice(0, nl));
    buffer = buffer.slice(nl + 1);
    if (frame.type === "run" && !started) {
      started = true;
      start(frame.tool, frame.args);
    } else if (frame.type === "syscall_result") {
      const p = pending.get(frame.id);
      if (!p) continue;
      pending.delete(frame.id);
      const error = frame.error ?? {};
      if (frame.ok) p.resolve(frame.payload);
      else p.reject(new SyscallError(error.code ?? "EIO", error.message ?? "syscall failed"));
    }
  }
  // Let the tool resume on the results and send its next syscall frames (a
  // few microtask turns) before the next stdin read is armed: arming it first
  // put ~40 us on every sequential round trip.
  for (let i = 0; i < 8; i++) await undefined;
}
// The host closed our stdin: it is gone or done with us.
Deno.exit(1);
