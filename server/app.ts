/**
 * The HTTP control plane: a JSON API over one runtime and the web console that
 * uses it. A person watches processes, audit and events, and answers the
 * runtime's human requests here; every decision goes through `rt.decide` and is
 * audited as `human:owner via http`.
 *
 * Security design (loopback only, see `serve.ts`):
 * - every `/api` route needs `Authorization: Bearer <token>`, compared in
 *   constant time; the token is never put in a cookie or a URL the server sees,
 *   so a foreign page cannot ride on the browser's credentials (no CSRF);
 * - a request whose `Origin` header is present and not one of the server's own
 *   origins is refused (403), and so is one whose `Host` is not (DNS rebinding);
 * - POST bodies must be `application/json` (415 otherwise), which a plain HTML
 *   form cannot send;
 * - the console is static: no inline script, a strict Content-Security-Policy,
 *   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and all
 *   agent-controlled text is rendered as text, never as HTML.
 * @module
 */
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { createTwoFilesPatch } from "diff";
import { createHash, timingSafeEqual } from "node:crypto";
import { isAbsolute, join, relative, sep } from "node:path";
import type { Runtime } from "../host/runtime.ts";
import { LibosError } from "../runtime/errors.ts";
import { guardText, maxLabel, mayFlow, objectMetadata, redactionFor } from "../runtime/labels.ts";
import { payloadRef, sha256 } from "../runtime/canonical.ts";
import { resourceMatches } from "../runtime/capabilities.ts";
import type { HumanAnswer, OutcomeAnswer } from "../runtime/providers/types.ts";
import type { ConvEntry } from "../runtime/conversation.ts";
import type {
  HumanRequestRecord,
  HumanRequestStatus,
  Label,
  LibosEvent,
  ModelConfig,
  ProcessRecord,
} from "../runtime/types.ts";

/** Options for {@link createApp}. */
export interface AppOptions {
  /** The bearer token every `/api` request must carry. */
  token: string;
  /**
   * The server's own origins (`http://127.0.0.1:8471`, ...). When given, a
   * request whose Host is not one of them is refused, and so is a present
   * Origin that is not one of them. Without it (in-process tests), the
   * request URL's own origin is the only one accepted.
   */
  origins?: string[];
  /** Called after every decision (the server kicks its scheduler here). */
  onDecision?: (request: HumanRequestRecord) => void;
  /** Ends open event streams when aborted (server shutdown). */
  signal?: AbortSignal;
  /** Event-stream poll interval in milliseconds (default 200). */
  pollMs?: number;
  /**
   * Event streams open at once (default {@link MAX_EVENT_STREAMS}); one more is
   * a 503 `ELIMIT` with `Retry-After`. Each polls the store while it waits.
   */
  maxEventStreams?: number;
  /** Who the audit names as the decider (default `human:owner via http`). */
  decidedBy?: string;
}

/** Event streams a console serves at once, by default: a few humans' tabs, not a fleet. */
export const MAX_EVENT_STREAMS = 64;

/** Who decisions made over HTTP are attributed to. */
export const HTTP_DECIDER = "human:owner via http";

const _ANSWERS: readonly (HumanAnswer | OutcomeAnswer)[] = [
  "allow_once",
  "always_allow",
  "deny",
  "always_deny",
  "done",
  "failed",
];
const _STATUSES: readonly HumanRequestStatus[] = [
  "pending",
  "allowed_once",
  "allowed_always",
  "denied",
  "denied_always",
  "consumed",
  "expired",
  "done",
  "failed",
];
/** Largest POST body accepted. */
const _MAX_BODY = 4096;
/** Files and contents larger than this are not diffed (hashes and sizes only). */
export const MAX_DIFF_CHARS = 256 * 1024;

/** Longest a write preview's diff may compute (on the server's one thread) before it is given up. */
export const DIFF_TIMEOUT_MS = 250;

const _CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

type _Err = { status: number; code: string; message: string; field?: string };

function _fail(c: Context, e: _Err): Response {
  const error: Record<string, string> = { code: e.code, message: e.message };
  if (e.field) error.field = e.field;
  return c.json({ error }, e.status as 400);
}

function _invalid(c: Context, field: string, message: string, status = 400): Response {
  return _fail(c, { status, code: "EINVAL", field, message: `${field}: ${message}` });
}

const _HTTP_STATUS: Record<string, number> = {
  EINVAL: 400,
  EPERM: 403,
  ENOENT: 404,
  ESTATE: 409,
  ECONFLICT: 409,
  EBUSY: 409,
  EINTEGRITY: 409,
};

function _fromLibos(c: Context, e: LibosError): Response {
  const m = /^([A-Za-z_][\w.\-\[\]]*): /.exec(e.message);
  return _fail(c, {
    status: _HTTP_STATUS[e.code] ?? 500,
    code: e.code,
    message: e.message,
    field: e.code === "EINVAL" && m ? m[1] : undefined,
  });
}

function _digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Constant-time check of an `Authorization` header against the token. */
export function bearerMatches(header: string | undefined | null, token: string): boolean {
  const m = /^Bearer ([^\s]+)$/.exec(header ?? "");
  // Compare fixed-length digests: no early exit on the first differing byte, no length leak.
  const given = _digest(m ? m[1] : "");
  const ok = timingSafeEqual(given, _digest(token));
  return ok && m !== null && token.length > 0;
}

function _int(
  c: Context,
  name: string,
  min: number,
  max: number,
): number | undefined | Response {
  const raw = c.req.query(name);
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,15}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    return _invalid(c, name, `must be an integer from ${min} to ${max}`);
  }
  return Number(raw);
}

/** The `:pid` in a path: a process id written plainly (no sign, base, exponent or leading zero), or a 400. */
function _pidParam(c: Context): number | Response {
  const raw = c.req.param("pid") ?? "";
  if (!/^[1-9]\d{0,14}$/.test(raw)) return _invalid(c, "pid", "must be a process id");
  return Number(raw);
}

/** A registered JIT tool as shown: its name, hash, the checks it passed and its warnings. */
interface _JitToolView {
  name: string;
  sha256: string;
  checks: string[];
  warnings: { rule: string; message: string; line: number }[];
}

/** The JIT tools of `p`, with the validation result stored in each artifact. */
async function _jitTools(store: Runtime["kernel"]["store"], p: ProcessRecord) {
  const out: _JitToolView[] = [];
  for (const [name, ref] of Object.entries(p.jit_tools)) {
    const art = await store.getObject(ref.artifact);
    const payload = (art?.payload ?? {}) as Partial<_JitToolView>;
    // Warnings quote the tool's source: shown only when its label is within `normal`.
    const shown = art !== null && mayFlow(art.label, "normal");
    out.push({
      name,
      sha256: ref.sha256,
      checks: payload.checks ?? [],
      warnings: shown ? payload.warnings ?? [] : [],
    });
  }
  return out;
}

/** The model a process runs (the host's choice), if any. */
async function _modelOf(store: Runtime["kernel"]["store"], pid: number) {
  const input = await store.getModelInput(pid) as { config?: ModelConfig } | null;
  const cfg = input?.config;
  return cfg ? { provider: cfg.provider, name: cfg.name, base_url: cfg.base_url } : null;
}

/**
 * A conversation entry as the human sees it: content above the process's
 * human clearance is shown as its label, hash and size only.
 */
function _convEntry(e: ConvEntry, index: number, clearance: Label): Record<string, unknown> {
  const hidden = !mayFlow(e.label, clearance);
  const base = { index, kind: e.kind, label: e.label, sha256: e.sha256, size: e.size, hidden };
  const text = (t: string) => hidden ? `[redacted:${e.label}]` : t;
  switch (e.kind) {
    case "goal":
      return { ...base, text: text(e.text) };
    case "summary":
      return { ...base, text: text(e.text), covers: e.covers };
    case "assistant":
      return {
        ...base,
        turn: e.turn,
        text: text(e.text),
        tool_calls: hidden ? [] : e.tool_calls,
      };
    case "tool":
      return {
        ...base,
        call_id: e.call_id,
        name: e.name,
        step: e.step,
        is_error: e.is_error,
        content: text(e.content),
      };
  }
}

/**
 * A request body as text, or null when it is over `max` bytes: refused by its
 * declared length before anything is read, else counted as it arrives (a body
 * is never held whole before its size is known).
 */
async function _boundedText(req: Request, max: number): Promise<string | null> {
  const declared = req.headers.get("Content-Length");
  if (declared !== null && Number(declared) > max) return null;
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const ch of chunks) (all.set(ch, off), off += ch.byteLength);
  return new TextDecoder().decode(all);
}

/**
 * A POST body: `Content-Type: application/json` (an HTML form cannot send it),
 * bounded, an object with only `fields`. A Response (4xx) when it is not.
 */
async function _jsonBody(
  c: Context,
  fields: string[],
): Promise<Record<string, unknown> | Response> {
  const type = (c.req.header("Content-Type") ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json") {
    return _invalid(c, "content-type", "must be application/json", 415);
  }
  const text = await _boundedText(c.req.raw, _MAX_BODY);
  if (text === null) return _invalid(c, "body", `larger than ${_MAX_BODY} bytes`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return _invalid(c, "body", "is not valid JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return _invalid(
      c,
      "body",
      `must be an object {${fields.map((f) => `"${f}": ...`).join(", ")}}`,
    );
  }
  for (const k of Object.keys(body)) {
    if (!fields.includes(k)) return _invalid(c, k, "unknown field");
  }
  return body as Record<string, unknown>;
}

/** What the API shows of a process (no goal, prompt or pending arguments: they may be labelled). */
function _process(
  p: ProcessRecord,
  pending: number,
  jitTools: _JitToolView[] = [],
  model: Awaited<ReturnType<typeof _modelOf>> = null,
  checkpoints = 0,
): Record<string, unknown> {
  return {
    pid: p.pid,
    ppid: p.ppid,
    lineage: p.lineage,
    image: p.image,
    status: p.status,
    origin: p.origin,
    cwd: p.cwd,
    taint: p.taint,
    // "none": shell commands run with the runtime's own OS permissions (unsafe).
    shell_sandbox: p.policy.shell_sandbox ?? "bwrap",
    budgets: p.budgets,
    usage: p.usage,
    pending_tool: p.pending?.tool ?? null,
    pending_requests: pending,
    jit_tools: jitTools,
    model,
    checkpoints,
    exit_code: p.exit_code,
    exit_reason: p.exit_reason === null ? null : guardText(p.taint, p.exit_reason),
    created_at: p.created_at,
    updated_at: p.updated_at,
  };
}

/** Can the human see this request's details (labels within the asking process's clearance)? */
function _visible(r: HumanRequestRecord, proc: ProcessRecord | null): boolean {
  const clearance: Label = proc?.policy.human_clearance ?? "normal";
  return mayFlow(maxLabel(...r.labels), clearance);
}

/** A request as shown: the stored resource is real (decisions bind to it), so guard it. */
function _request(r: HumanRequestRecord, proc: ProcessRecord | null): Record<string, unknown> {
  const visible = _visible(r, proc);
  return {
    ...r,
    resource: visible ? r.resource : guardText(maxLabel(...r.labels), r.resource),
    redacted: !visible,
    process: proc ? { pid: proc.pid, image: proc.image, status: proc.status } : null,
  };
}

/** Label of a workspace file as the asking process's policy sees it. */
async function _fileLabel(rt: Runtime, proc: ProcessRecord, real: string, resource: string) {
  let label: Label = (await rt.kernel.store.getFileLabel(real)) ?? "normal";
  for (const [pattern, l] of Object.entries(proc.policy.labels)) {
    const full = pattern.startsWith("filesystem:") ? pattern : `filesystem:workspace:${pattern}`;
    if (resourceMatches(full, resource)) label = maxLabel(label, l);
  }
  return label;
}

/** The current file behind a `filesystem.write` request and a diff to the requested content. */
async function _writePreview(
  rt: Runtime,
  r: HumanRequestRecord,
  proc: ProcessRecord | null,
): Promise<Record<string, unknown>> {
  const prefix = "filesystem:workspace:";
  const args = r.args as { content?: unknown; label?: unknown };
  if (!proc || !r.resource.startsWith(prefix)) {
    return { available: false, reason: "the asking process or its workspace is gone" };
  }
  if (!_visible(r, proc)) {
    return {
      available: false,
      redacted: true,
      reason: `redacted: the request carries ${
        maxLabel(...r.labels)
      } data, above this process's human clearance (${proc.policy.human_clearance})`,
    };
  }
  const rel = r.resource.slice(prefix.length);
  const lexical = join(proc.workspace, rel);
  let real = lexical;
  let exists = true;
  try {
    real = await Deno.realPath(lexical);
  } catch {
    exists = false;
  }
  const inside = relative(proc.workspace, real);
  if (inside === ".." || inside.startsWith(".." + sep) || isAbsolute(inside)) {
    return { available: false, reason: "the file now resolves outside the workspace" };
  }
  const label = await _fileLabel(rt, proc, real, r.resource);
  if (!mayFlow(label, proc.policy.human_clearance)) {
    return {
      available: false,
      redacted: true,
      reason:
        `redacted: the current file is labelled ${label}, above this process's human clearance (${proc.policy.human_clearance})`,
      current: { exists, label },
    };
  }
  const requested = typeof args.content === "string" ? args.content : "";
  const reqInfo = { bytes: new TextEncoder().encode(requested).length, sha256: sha256(requested) };
  let current = "";
  if (exists) {
    const info = await Deno.stat(real);
    if (!info.isFile) {
      return { available: false, reason: "the path is not a regular file", requested: reqInfo };
    }
    if (info.size > MAX_DIFF_CHARS * 4) {
      return {
        available: false,
        reason: `too large to diff (over ${MAX_DIFF_CHARS} characters)`,
        current: { exists, label, bytes: info.size },
        requested: reqInfo,
      };
    }
    current = await Deno.readTextFile(real);
    // Swapped for a symlink while we read: show nothing rather than what it points to.
    if ((await Deno.realPath(lexical).catch(() => "")) !== real) {
      return { available: false, reason: "the file changed while it was read" };
    }
  }
  const curInfo = {
    exists,
    label,
    bytes: new TextEncoder().encode(current).length,
    sha256: sha256(current),
  };
  if (current.length > MAX_DIFF_CHARS || requested.length > MAX_DIFF_CHARS) {
    return {
      available: false,
      reason: `too large to diff (over ${MAX_DIFF_CHARS} characters)`,
      current: curInfo,
      requested: reqInfo,
    };
  }
  const diff = createTwoFilesPatch(
    exists ? `a/${rel}` : "/dev/null",
    `b/${rel}`,
    current,
    requested,
    exists ? "current" : "new file",
    "requested",
    // The diff runs on the server's one thread: bounded in time, not only in size
    // (12,000 changed lines of a 36 KB file took 23 s, and the whole server waited).
    { context: 3, timeout: DIFF_TIMEOUT_MS },
  );
  if (diff === undefined) {
    return {
      available: false,
      reason: `too different to diff within ${DIFF_TIMEOUT_MS} ms`,
      current: curInfo,
      requested: reqInfo,
    };
  }
  return {
    available: true,
    unchanged: current === requested,
    current: curInfo,
    requested: reqInfo,
    diff,
  };
}

/** Create the Hono app for `rt`. Routes are documented in the README ("Watching and approving agents"). */
export function createApp(rt: Runtime, opts: AppOptions): Hono {
  if (!opts.token || opts.token.length < 16) {
    throw new LibosError("EINVAL", "token: must be at least 16 characters");
  }
  const store = rt.kernel.store;
  const decidedBy = opts.decidedBy ?? HTTP_DECIDER;
  const pollMs = opts.pollMs ?? 200;
  const app = new Hono();
  let tail = 0; // last event id known to exist, so new streams do not rescan from 0
  const maxStreams = opts.maxEventStreams ?? MAX_EVENT_STREAMS;
  let streams = 0; // event streams open now

  // Headers on every response, including errors.
  app.use("*", async (c, next) => {
    await next();
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Content-Security-Policy", _CSP);
    c.header("X-Frame-Options", "DENY");
    c.header("Cross-Origin-Opener-Policy", "same-origin");
    c.header("Cross-Origin-Resource-Policy", "same-origin");
    if (!c.res.headers.has("Cache-Control")) c.header("Cache-Control", "no-store");
  });

  // Host and Origin: only the server's own origins (no DNS rebinding, no cross-site requests).
  const origins: MiddlewareHandler = async (c, next) => {
    let own: string;
    try {
      own = new URL(c.req.url).origin;
    } catch {
      // A Host header no URL can hold: nobody's origin, and nothing to log.
      return _fail(c, { status: 400, code: "EINVAL", message: "host: not a host name" });
    }
    const allowed = opts.origins ?? [own];
    if (opts.origins && !opts.origins.includes(own)) {
      return _fail(c, { status: 403, code: "EPERM", message: `host: '${own}' is not this server` });
    }
    const origin = c.req.header("Origin");
    if (origin !== undefined && !allowed.includes(origin)) {
      return _fail(c, {
        status: 403,
        code: "EPERM",
        message: `origin: '${origin}' is not this server's origin`,
      });
    }
    if (c.req.path.startsWith("/api/") && c.req.header("Sec-Fetch-Site") === "cross-site") {
      return _fail(c, { status: 403, code: "EPERM", message: "origin: cross-site request" });
    }
    await next();
  };
  app.use("*", origins);

  app.use("/api/*", async (c, next) => {
    if (!bearerMatches(c.req.header("Authorization"), opts.token)) {
      c.header("WWW-Authenticate", 'Bearer realm="libos"');
      return _fail(c, {
        status: 401,
        code: "EAUTH",
        message: "authorization: send 'Authorization: Bearer <token>' (see the token file)",
      });
    }
    await next();
  });

  app.onError((e, c) => {
    if (e instanceof LibosError) return _fromLibos(c, e);
    console.error("libos serve:", e);
    return _fail(c, { status: 500, code: "EIO", message: "internal error" });
  });
  app.notFound((c) => _fail(c, { status: 404, code: "ENOENT", message: `no route ${c.req.path}` }));

  // ---- the console (static files, no inline script)
  app.get("/", async (c) => {
    c.header("Content-Type", "text/html; charset=utf-8");
    return c.body(await _asset("index.html"));
  });
  app.get("/console.js", async (c) => {
    c.header("Content-Type", "text/javascript; charset=utf-8");
    return c.body(await _asset("console.js"));
  });
  app.get("/console.css", async (c) => {
    c.header("Content-Type", "text/css; charset=utf-8");
    return c.body(await _asset("console.css"));
  });
  app.get("/favicon.svg", async (c) => {
    c.header("Content-Type", "image/svg+xml");
    return c.body(await _asset("favicon.svg"));
  });

  // ---- processes
  app.get("/api/processes", async (c) => {
    const procs = await store.listProcesses();
    const pending = new Map<number, number>();
    for (const r of await store.listHumanRequests({ status: "pending" })) {
      pending.set(r.pid, (pending.get(r.pid) ?? 0) + 1);
    }
    const checkpoints = new Map<number, number>();
    for (const k of await store.listCheckpoints()) {
      checkpoints.set(k.root_pid, (checkpoints.get(k.root_pid) ?? 0) + 1);
    }
    const shown = [];
    for (const p of procs) {
      shown.push(
        _process(
          p,
          pending.get(p.pid) ?? 0,
          await _jitTools(store, p),
          await _modelOf(store, p.pid),
          checkpoints.get(p.pid) ?? 0,
        ),
      );
    }
    return c.json({ processes: shown });
  });

  // ---- checkpoints: listed by the subtree's root, inspected and diffed (no payloads)
  app.get("/api/processes/:pid/checkpoints", async (c) => {
    const pid = _pidParam(c);
    if (pid instanceof Response) return pid;
    const proc = await store.getProcess(pid);
    if (!proc) return _fail(c, { status: 404, code: "ENOENT", message: "pid: no such process" });
    return c.json({ pid, checkpoints: await rt.listCheckpoints(pid, null) });
  });

  app.get("/api/checkpoints/:id", async (c) => {
    return c.json(await rt.inspectCheckpoint(_checkpointId(c.req.param("id"), "id"), null));
  });

  app.get("/api/checkpoints/:id/diff", async (c) => {
    const other = c.req.query("other");
    const id = _checkpointId(c.req.param("id"), "id");
    const against = other === undefined || other === "" ? null : _checkpointId(other, "other");
    const diff = await rt.diffCheckpoint(id, against, null);
    // Resources of effects are paths a process chose: shown as its label lets them out.
    const taints = new Map<number, Label>();
    for (const pid of new Set(diff.effects_since.effects.map((e) => e.pid))) {
      taints.set(pid, (await store.getProcess(pid))?.taint ?? "public");
    }
    return c.json({
      ...diff,
      effects_since: {
        ...diff.effects_since,
        effects: diff.effects_since.effects.map((e) => ({
          ...e,
          resource: guardText(taints.get(e.pid) ?? "public", e.resource),
        })),
      },
    });
  });

  // ---- a model-driven process's conversation, its calls and their token use
  app.get("/api/processes/:pid/conversation", async (c) => {
    const pid = _pidParam(c);
    if (pid instanceof Response) return pid;
    const proc = await store.getProcess(pid);
    if (!proc) return _fail(c, { status: 404, code: "ENOENT", message: "pid: no such process" });
    const clearance = proc.policy.human_clearance;
    const entries = (await store.readModelLog(pid, 0) as ConvEntry[])
      .filter((e) => e && typeof e === "object" && "kind" in e && "sha256" in e)
      .map((e, i) => _convEntry(e, i, clearance));
    return c.json({
      pid,
      model: await _modelOf(store, pid),
      usage: proc.usage,
      entries,
      calls: await store.listModelCalls({ pid }),
    });
  });

  app.get("/api/calls", async (c) => {
    const pid = _int(c, "pid", 1, Number.MAX_SAFE_INTEGER);
    if (pid instanceof Response) return pid;
    return c.json({ calls: await store.listModelCalls(pid === undefined ? {} : { pid }) });
  });

  // A human releases exactly one held-back item (by hash) to the process's model.
  app.post("/api/processes/:pid/release", async (c) => {
    const pid = _pidParam(c);
    if (pid instanceof Response) return pid;
    const body = await _jsonBody(c, ["sha256"]);
    if (body instanceof Response) return body;
    if (typeof body.sha256 !== "string") return _invalid(c, "sha256", "must be a string");
    await rt.releaseToModel(pid, body.sha256, decidedBy);
    return c.json({ released: body.sha256, pid });
  });

  // ---- human requests
  app.get("/api/human", async (c) => {
    const status = c.req.query("status") ?? "pending";
    if (status !== "all" && !(_STATUSES as readonly string[]).includes(status)) {
      return _invalid(c, "status", `must be all or one of ${_STATUSES.join(", ")}`);
    }
    const pid = _int(c, "pid", 1, Number.MAX_SAFE_INTEGER);
    if (pid instanceof Response) return pid;
    const limit = _int(c, "limit", 1, 100_000);
    if (limit instanceof Response) return limit;
    const order = c.req.query("order") ?? "asc";
    if (order !== "asc" && order !== "desc") return _invalid(c, "order", "must be asc or desc");
    const decided = c.req.query("decided");
    if (decided !== undefined && decided !== "1") return _invalid(c, "decided", "must be 1");
    const filter: { status?: HumanRequestStatus; pid?: number } = {};
    if (status !== "all") filter.status = status as HumanRequestStatus;
    if (pid !== undefined) filter.pid = pid;
    const procs = new Map((await store.listProcesses()).map((p) => [p.pid, p]));
    let reqs = await store.listHumanRequests(filter);
    // `decided=1`: only requests someone answered, by when they were answered.
    if (decided) {
      reqs = reqs.filter((r) => r.decided_at !== null)
        .sort((a, b) => a.decided_at!.localeCompare(b.decided_at!));
    }
    if (order === "desc") reqs.reverse();
    if (limit !== undefined) reqs = reqs.slice(0, limit);
    return c.json({ requests: reqs.map((r) => _request(r, procs.get(r.pid) ?? null)) });
  });

  app.get("/api/human/:id", async (c) => {
    const r = await store.getHumanRequest(c.req.param("id"));
    if (!r) {
      return _fail(c, { status: 404, code: "ENOENT", message: "request_id: no such request" });
    }
    const proc = await store.getProcess(r.pid);
    const out = _request(r, proc);
    if (r.effect === "filesystem.write") out.preview = await _writePreview(rt, r, proc);
    return c.json(out);
  });

  app.post("/api/human/:id/decide", async (c) => {
    const body = await _jsonBody(c, ["decision"]);
    if (body instanceof Response) return body;
    const decision = body.decision;
    if (typeof decision !== "string" || !(_ANSWERS as readonly string[]).includes(decision)) {
      return _invalid(c, "decision", `must be one of ${_ANSWERS.join(", ")}`);
    }
    const id = c.req.param("id");
    const decided = await rt.decide(id, decision as HumanAnswer | OutcomeAnswer, decidedBy);
    opts.onDecision?.(decided);
    return c.json(_request(decided, await store.getProcess(decided.pid)));
  });

  // ---- audit
  app.get("/api/audit", async (c) => {
    const after = _int(c, "after", 0, Number.MAX_SAFE_INTEGER);
    if (after instanceof Response) return after;
    const limit = _int(c, "limit", 1, 5000);
    if (limit instanceof Response) return limit;
    const order = c.req.query("order") ?? "asc";
    if (order !== "asc" && order !== "desc") return _invalid(c, "order", "must be asc or desc");
    const decision = c.req.query("decision") || undefined;
    if (decision && !["allow", "deny", "ask", "error", "info"].includes(decision)) {
      return _invalid(c, "decision", "must be allow, deny, ask, error or info");
    }
    const filter = {
      actor: c.req.query("actor") || undefined,
      action: c.req.query("action") || undefined,
      decision,
      afterSeq: after,
    };
    const n = limit ?? 500;
    if (order === "asc") return c.json({ records: await store.listAudit({ ...filter, limit: n }) });
    // Newest first: the store pages forward only, so take the tail of the filtered list.
    const all = await store.listAudit(filter);
    return c.json({ records: all.slice(-n).reverse() });
  });

  app.get("/api/audit/verify", async (c) => c.json(await store.verifyAudit()));

  // ---- objects
  app.get("/api/objects", async (c) => {
    const ns = c.req.query("namespace");
    const namespaces = ns ? [ns] : (await store.listProcesses()).map((p) => p.namespace);
    const objects: Record<string, unknown>[] = [];
    for (const n of namespaces) {
      for (const o of await store.listObjects(n)) objects.push(objectMetadata(o, false));
    }
    return c.json({ objects });
  });

  app.get("/api/objects/:oid", async (c) => {
    const o = await store.getObject(c.req.param("oid"));
    if (!o) return _fail(c, { status: 404, code: "ENOENT", message: "oid: no such object" });
    const redact = redactionFor(o.label);
    return c.json({
      ...objectMetadata(o, false),
      redacted: redact !== undefined,
      payload: redact ? payloadRef(o.payload, redact) : o.payload,
    });
  });

  // ---- events: Server-Sent Events, read by the console with fetch() so the header carries the token
  /** The newest event id in the store, scanning on from the last one known. */
  const newestEvent = async (): Promise<number> => {
    for (;;) {
      const page = await store.listEvents(tail, 5000);
      if (page.length === 0) return tail;
      tail = page[page.length - 1].event_id;
    }
  };
  const eventStreamHeaders = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
  };
  app.get("/api/events", async (c) => {
    // HEAD: the headers only (a stream nobody reads would still be polled).
    if (c.req.method === "HEAD") return new Response(null, { headers: eventStreamHeaders });
    const lastHeader = c.req.header("Last-Event-ID");
    const afterQuery = c.req.query("after");
    let after: number;
    if (lastHeader !== undefined && lastHeader !== "") {
      if (!/^\d{1,15}$/.test(lastHeader)) {
        return _invalid(c, "Last-Event-ID", "must be an event id");
      }
      after = Number(lastHeader);
    } else if (afterQuery !== undefined && afterQuery !== "") {
      if (!/^\d{1,15}$/.test(afterQuery)) return _invalid(c, "after", "must be an event id");
      after = Number(afterQuery);
    } else {
      // Live only: start at the current end (the client loads state through the API).
      after = await newestEvent();
    }
    // An id past the newest event (a store restarted smaller, or a made-up one) starts at the end.
    if (after > tail) after = Math.min(after, await newestEvent());
    if (streams >= maxStreams) {
      c.header("Retry-After", "5");
      return _fail(c, {
        status: 503,
        code: "ELIMIT",
        message: `events: ${maxStreams} event streams are open, the most this server keeps`,
      });
    }
    streams++;
    const enc = new TextEncoder();
    let ended = false;
    let quiet = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake: (() => void) | undefined;
    let out: ReadableStreamDefaultController<Uint8Array> | undefined;
    const end = () => {
      if (!ended) streams--;
      ended = true;
      clearTimeout(timer);
      wake?.();
    };
    const sleep = (ms: number) =>
      new Promise<void>((r) => {
        wake = r;
        timer = setTimeout(r, ms);
      });
    const finish = () => {
      end();
      opts.signal?.removeEventListener("abort", finish);
      try {
        out?.close();
      } catch { /* already ended */ }
    };
    // The server stopping ends the stream too (a client that does not read it is left
    // to the shutdown's grace period; see serve.ts).
    opts.signal?.addEventListener("abort", finish, { once: true });
    // Pulled: a page of events is read only when the client has taken the last one, so a
    // client that stops reading holds one page at most, and the store is not polled for it.
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        out = ctl;
        ctl.enqueue(enc.encode(`retry: 2000\nevent: ready\ndata: {"after":${after}}\n\n`));
      },
      async pull(ctl) {
        try {
          while (!ended && !opts.signal?.aborted) {
            const events: LibosEvent[] = await store.listEvents(after, 500);
            if (events.length) {
              for (const e of events) {
                ctl.enqueue(
                  enc.encode(`id: ${e.event_id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`),
                );
                after = e.event_id;
              }
              if (after > tail) tail = after;
              quiet = 0;
              return;
            }
            if (++quiet * pollMs >= 15000) {
              quiet = 0;
              ctl.enqueue(enc.encode(": keep-alive\n\n"));
              return;
            }
            await sleep(pollMs);
          }
        } catch {
          // The store closed: end the stream.
        }
        finish();
      },
      cancel() {
        finish();
      },
    });
    return new Response(body, { headers: eventStreamHeaders });
  });

  return app;
}

/** A checkpoint id from the URL, or EINVAL naming `field`. */
function _checkpointId(raw: string, field: string): string {
  if (!/^ckpt_[A-Za-z0-9-]{1,64}$/.test(raw)) {
    throw new LibosError("EINVAL", `${field}: must be a checkpoint id (ckpt_...)`);
  }
  return raw;
}

const _assets = new Map<string, string>();

async function _asset(name: string): Promise<string> {
  let text = _assets.get(name);
  if (text === undefined) {
    text = await Deno.readTextFile(new URL(`./console/${name}`, import.meta.url));
    _assets.set(name, text);
  }
  return text;
}
