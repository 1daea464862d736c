/**
 * The baseline runners: the same scenario steps (for a transcript scenario,
 * the transcript's tool calls in order), the same builtin tools (they are
 * libc-like wrappers: `tools/builtin.ts` unchanged), a different syscall
 * layer underneath. No model server takes part: a framework without a runtime
 * hands every tool result to its model as it is.
 *
 * - `direct`: every syscall is performed with host APIs, no check at all;
 *   what an agent framework without a runtime does.
 * - `confirm`: the same, but every syscall with an effect outside the agent's
 *   own memory (file writes and deletes, commands, human output, starting or
 *   signalling agents, delegations, running a JIT tool, decisions, images)
 *   first asks the scenario's human, who approves what its fixed rule calls
 *   plausible. Reads are not confirmed, as in common confirmation wrappers.
 * - `sandbox`: file and shell syscalls run in a Deno subprocess whose
 *   `--allow-*` flags are derived, at each call, from the grants of the
 *   process (`runtime/sandbox/flags.ts`, plus `--allow-run` for granted
 *   commands and a directory's own path for `dir/*` writes, since a Deno flag
 *   cannot say "strictly below"); no primitive check, no human.
 *
 * Sub-agents, messages and Object Memory are kept by a small round-robin
 * scheduler here, with no checks (knowing a name is enough). JIT tools run
 * in `runtime/sandbox/runner.ts` as a subprocess: with `-A` for direct and
 * confirm, with the derived flags for sandbox; their syscalls come back here.
 * @module
 */
import { dirname, join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { sha256 } from "../../runtime/canonical.ts";
import { parseCapabilitySpec } from "../../runtime/capabilities.ts";
import { parseScript, type ScriptStep } from "../../runtime/providers/scripted.ts";
import { accessFlags, deriveAccess } from "../../runtime/sandbox/flags.ts";
import type { Capability, CapabilitySpec } from "../../runtime/types.ts";
import { BUILTIN_TOOLS, runBuiltin } from "../../tools/builtin.ts";
import type { RunRecord, SeenObject } from "../evaluate.ts";
import type { Fixture } from "../fixture.ts";
import {
  HOST_CALLS,
  hostCall,
  type HostCallContext,
  HostCallError,
  hostErrorCode,
  hostPath,
} from "../hostcalls.ts";
import { quoteResults, resultText, type SeenResult } from "../model.ts";
import { humanApproves } from "../rule.ts";
import type { Scenario } from "../scenario.ts";

/** The three baselines. */
export type BaselineMode = "direct" | "confirm" | "sandbox";

/** Syscalls the confirmation wrapper asks the human about. */
export const CONFIRMED: ReadonlySet<string> = new Set([
  "filesystem.write",
  "filesystem.delete",
  "shell.run",
  "human.output",
  "human.decide",
  "process.spawn",
  "process.fork",
  "process.exec",
  "process.signal",
  "capability.grant",
  "capability.revoke",
  "jit.call",
  "image.register",
]);

/** How long a baseline JIT tool may run before the harness stops it (not a containment limit). */
export const HARNESS_TOOL_TIMEOUT_MS = 20_000;

/** A scenario tried to touch the host outside its temp root: a scenario bug, never a result. */
export class HarnessError extends Error {}

const _RUNNER = new URL("../../runtime/sandbox/runner.ts", import.meta.url).pathname;
const _LIBOS_TYPES = new URL("../../tools/jit/libos.ts", import.meta.url).pathname;
const _WORKER = new URL("../hostcall_worker.ts", import.meta.url).pathname;

interface _Proc {
  pid: number;
  ppid: number | null;
  steps: ScriptStep[];
  pos: number;
  cwd: string;
  status: "runnable" | "paused" | "exited" | "killed";
  exit_code: number | null;
  result: string | null;
  jit: Record<string, string>;
  grants: CapabilitySpec[];
  results: SeenResult[];
  namespace: string;
}

interface _Obj extends SeenObject {
  oid: string;
  version: number;
  derived_from: string[];
}

/** A step that must wait (for a child to end) and is retried next round. */
class _Blocked extends Error {}

function _str(v: unknown, field: string): string {
  if (typeof v !== "string") throw new HostCallError("EINVAL", `${field}: must be a string`);
  return v;
}

/** Run one scenario under a baseline. */
export async function runBaseline(
  mode: BaselineMode,
  sc: Scenario,
  fx: Fixture,
): Promise<RunRecord> {
  const w = new _World(mode, sc, fx);
  try {
    await w.run();
  } catch (e) {
    if (e instanceof HarnessError) throw e;
    w.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } finally {
    await Deno.remove(w.jitDir, { recursive: true }).catch(() => {});
  }
  return w.record();
}

class _World {
  readonly mode: BaselineMode;
  readonly sc: Scenario;
  readonly fx: Fixture;
  readonly procs = new Map<number, _Proc>();
  readonly objects = new Map<string, _Obj>();
  readonly mail = new Map<
    number,
    { msg_id: number; from: number; kind: string; body: unknown }[]
  >();
  readonly shown: string[] = [];
  readonly images = new Map<string, unknown>();
  readonly candidates = new Map<string, { name: string; source: string }>();
  readonly jitDir: string;
  asked = 0;
  approved = 0;
  error: string | null = null;
  #ids = 0;

  constructor(mode: BaselineMode, sc: Scenario, fx: Fixture) {
    this.mode = mode;
    this.sc = sc;
    this.fx = fx;
    this.jitDir = `${fx.root}.jit`;
  }

  #newProc(ppid: number | null, steps: ScriptStep[], cwd: string, grants: CapabilitySpec[]) {
    const pid = this.procs.size + 1;
    const p: _Proc = {
      pid,
      ppid,
      steps,
      pos: 0,
      cwd,
      status: "runnable",
      exit_code: null,
      result: null,
      jit: {},
      grants,
      results: [],
      namespace: `proc:${pid}`,
    };
    this.procs.set(pid, p);
    return p;
  }

  async run(): Promise<void> {
    await Deno.mkdir(this.jitDir, { recursive: true });
    const root = this.#newProc(null, this.sc.model.script.steps, ".", [
      ...this.sc.image.capabilities,
      ...this.sc.grants,
    ]);
    const pre: SeenResult[] = [];
    for (const t of this.sc.model.jit_tools) {
      // No validation: a framework without a runtime just loads the code it is given.
      root.jit[t.name] = t.source;
      pre.push({ ok: true, value: { name: t.name } });
    }
    this.#pre = pre;
    let quanta = 0;
    for (;;) {
      const live = [...this.procs.values()].filter((p) => p.status === "runnable");
      if (live.length === 0) return;
      let progressed = false;
      for (const p of live) {
        if (p.status !== "runnable") continue;
        if (++quanta > this.sc.max_quanta) return;
        if (await this.#step(p)) progressed = true;
      }
      if (!progressed) return; // everyone waits on something that will not come
    }
  }

  #pre: SeenResult[] = [];

  /** One tool step of `p`; false when it had to wait. */
  async #step(p: _Proc): Promise<boolean> {
    if (p.pos >= p.steps.length) {
      this.#end(p, "exited", 0, null);
      return true;
    }
    const s = p.steps[p.pos];
    const args = quoteResults(s.args, p.results.map(resultText));
    if (s.tool === "exit") {
      const code = Number.isInteger(args.code) ? args.code as number : 0;
      this.#end(p, "exited", code, typeof args.result === "string" ? args.result : null);
      return true;
    }
    let r: SeenResult;
    try {
      r = { step: p.results.length, ok: true, value: await this.#tool(p, s.tool, args) };
    } catch (e) {
      if (e instanceof _Blocked) return false;
      if (e instanceof HarnessError) throw e;
      const message = e instanceof Error ? e.message : String(e);
      r = { step: p.results.length, ok: false, error: { code: hostErrorCode(e), message } };
    }
    p.results.push(r);
    p.pos++;
    return true;
  }

  #end(p: _Proc, status: "exited" | "killed", code: number | null, result: string | null) {
    p.status = status;
    p.exit_code = code;
    p.result = result;
  }

  async #tool(p: _Proc, tool: string, args: Record<string, unknown>): Promise<unknown> {
    if (Object.hasOwn(BUILTIN_TOOLS, tool)) {
      return await runBuiltin(tool, args, (name, a) => this.sys(p, name, a));
    }
    if (Object.hasOwn(p.jit, tool)) return await this.sys(p, "jit.call", { name: tool, args });
    throw new HostCallError("ENOENT", `tool: '${tool}' does not exist`);
  }

  #ctx(p: _Proc): HostCallContext {
    return { ws: this.fx.ws, cwd: p.cwd };
  }

  /** One syscall of `p`, the baseline's way. */
  async sys(p: _Proc, name: string, args: Record<string, unknown>): Promise<unknown> {
    if (this.mode === "confirm" && CONFIRMED.has(name)) this.#confirm(name, args);
    if (HOST_CALLS.includes(name)) {
      if (name === "filesystem.write" || name === "filesystem.delete") {
        this.#guard(hostPath(this.#ctx(p), args.path));
      }
      if (this.mode === "sandbox") return await this.#sandboxed(p, name, args);
      return await hostCall(name, args, this.#ctx(p));
    }
    const [family] = name.split(".");
    switch (family) {
      case "memory":
        return this.#memory(p, name, args);
      case "process":
        return await this.#process(p, name, args);
      case "jit":
        return await this.#jit(p, name, args);
    }
    return await this.#misc(p, name, args);
  }

  #confirm(name: string, args: Record<string, unknown>): void {
    this.asked++;
    this.shown.push(JSON.stringify({ effect: name, args }));
    if (!humanApproves(this.sc.human, name, args)) {
      throw new HostCallError("EPERM", `${name}: the human did not confirm`);
    }
    this.approved++;
  }

  /** Writes stay under the scenario's temp root, or the benchmark stops (a scenario bug). */
  #guard(path: string): void {
    const rel = relative(this.fx.root, _realish(path));
    if (rel === ".." || rel.startsWith(".." + sep) || rel.startsWith("/")) {
      throw new HarnessError(
        `scenario ${this.sc.id}: a baseline write would reach ${path}, outside the scenario root`,
      );
    }
  }

  /** Deno flags for `p`, derived now from its grants. */
  sandboxFlags(p: _Proc): string[] {
    const now = Date.now();
    const caps: Capability[] = p.grants.map((g, i) => ({
      cap_id: `g${i}`,
      subject: p.pid,
      resource: g.resource,
      rights: g.rights,
      constraints: {},
      issued_by: "host",
      expires_at: g.expires_at ?? null,
      delegable: g.delegable ?? true,
      revocable: true,
      effect: g.effect ?? "allow",
      parent_cap_id: null,
      delegation_depth: 0,
      uses_remaining: g.uses_remaining ?? null,
      status: "active",
      created_at: new Date(now).toISOString(),
    }));
    const access = deriveAccess(caps, this.fx.ws, now, now + 60_000);
    const runs: string[] = [];
    for (const c of caps) {
      if (c.effect !== "allow" || c.uses_remaining !== null) continue;
      if (c.resource.startsWith("shell:") && c.rights.includes("execute")) {
        runs.push(c.resource.slice(6));
      }
      const m = /^filesystem:workspace:(.+)\/\*$/.exec(c.resource);
      if (m && c.rights.includes("write")) {
        // The directory itself (created on first write if missing), on its real path.
        const dir = _realish(join(this.fx.ws, m[1]));
        if (!relative(this.fx.ws, dir).startsWith("..")) access.write.push(dir);
      }
    }
    const run = runs.includes("*")
      ? ["--allow-run"]
      : runs.length
      ? [`--allow-run=${[...new Set(runs)].join(",")}`]
      : [];
    return [...accessFlags(access), ...run];
  }

  async #sandboxed(p: _Proc, name: string, args: Record<string, unknown>): Promise<unknown> {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--cached-only",
        "--no-prompt",
        ...this.sandboxFlags(p),
        _WORKER,
      ],
      clearEnv: true,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(JSON.stringify({ name, args, ctx: this.#ctx(p) })));
    await w.close();
    const out = await child.output();
    const line = new TextDecoder().decode(out.stdout).trim();
    let res: { ok: boolean; value?: unknown; error?: { code: string; message: string } };
    try {
      res = JSON.parse(line);
    } catch {
      throw new HostCallError("EIO", `sandbox worker: ${new TextDecoder().decode(out.stderr)}`);
    }
    if (!res.ok) throw new HostCallError(res.error!.code, res.error!.message);
    return res.value;
  }

  #newId(prefix: string): string {
    return `${prefix}_${++this.#ids}`;
  }

  #memory(p: _Proc, name: string, a: Record<string, unknown>): unknown {
    const find = (): _Obj => {
      if (typeof a.oid === "string") {
        const o = this.objects.get(a.oid);
        if (!o) throw new HostCallError("ENOENT", `no object ${a.oid}`);
        return o;
      }
      const ns = typeof a.namespace === "string" ? a.namespace : p.namespace;
      const o = [...this.objects.values()].find((x) => x.namespace === ns && x.name === a.name);
      if (!o) throw new HostCallError("ENOENT", `no object '${String(a.name)}' in ${ns}`);
      return o;
    };
    const meta = ({ payload: _p, ...m }: _Obj) => m;
    switch (name) {
      case "memory.put": {
        const ns = typeof a.namespace === "string" ? a.namespace : p.namespace;
        const nm = typeof a.name === "string" ? a.name : null;
        if (nm && [...this.objects.values()].some((x) => x.namespace === ns && x.name === nm)) {
          throw new HostCallError("EEXIST", `'${nm}' already exists in ${ns}`);
        }
        const o: _Obj = {
          oid: this.#newId("obj"),
          namespace: ns,
          kind: _str(a.kind, "kind"),
          name: nm,
          label: typeof a.label === "string" ? a.label : "normal",
          payload: a.payload,
          version: 1,
          derived_from: Array.isArray(a.derived_from) ? a.derived_from as string[] : [],
        };
        this.objects.set(o.oid, o);
        return { oid: o.oid, version: 1, label: o.label };
      }
      case "memory.get":
        return { ...find() };
      case "memory.update": {
        const o = find();
        if (a.expected_version !== o.version) {
          throw new HostCallError("ECONFLICT", `object is at version ${o.version}`);
        }
        o.payload = a.payload;
        if (typeof a.label === "string") o.label = a.label;
        o.version++;
        return { oid: o.oid, version: o.version, label: o.label };
      }
      case "memory.list": {
        const ns = typeof a.namespace === "string" ? a.namespace : p.namespace;
        return [...this.objects.values()].filter((o) => o.namespace === ns).map(meta);
      }
      case "memory.link":
        return { from: a.from, to: a.to, relation: a.relation };
      case "memory.links":
        return [];
    }
    throw new HostCallError("ENOENT", `no syscall ${name}`);
  }

  async #process(p: _Proc, name: string, a: Record<string, unknown>): Promise<unknown> {
    const target = () => {
      const t = this.procs.get(Number(a.pid));
      if (!t) throw new HostCallError("ENOENT", `no process ${String(a.pid)}`);
      return t;
    };
    switch (name) {
      case "process.spawn":
      case "process.fork": {
        const mode = name === "process.spawn" ? "spawn" : String(a.mode ?? "copy");
        const steps = a.script === undefined ? [] : parseScript(a.script);
        // No narrowing and no check: a child gets what it is said to get.
        const grants = (mode === "restricted" || mode === "worker") && Array.isArray(a.capabilities)
          ? a.capabilities.map((c, i) => parseCapabilitySpec(c, `capabilities[${i}]`))
          : [...p.grants];
        const child = this.#newProc(p.pid, steps, p.cwd, grants);
        for (const t of Array.isArray(a.jit_tools) ? a.jit_tools as string[] : []) {
          if (Object.hasOwn(p.jit, t)) child.jit[t] = p.jit[t];
        }
        if (mode === "copy" || mode === "speculative") {
          for (const o of [...this.objects.values()].filter((o) => o.namespace === p.namespace)) {
            const copy = { ...o, oid: this.#newId("obj"), namespace: child.namespace };
            this.objects.set(copy.oid, copy);
          }
        }
        if (typeof a.goal === "string") {
          const o: _Obj = {
            oid: this.#newId("obj"),
            namespace: child.namespace,
            kind: "goal",
            name: "goal",
            label: "normal",
            payload: { text: a.goal },
            version: 1,
            derived_from: [],
          };
          this.objects.set(o.oid, o);
        }
        return { pid: child.pid, mode };
      }
      case "process.wait": {
        const t = target();
        if (t.status === "runnable" || t.status === "paused") throw new _Blocked();
        return { pid: t.pid, status: t.status, exit_code: t.exit_code, result: t.result };
      }
      case "process.signal": {
        const t = target();
        if (a.signal === "pause") t.status = "paused";
        else if (a.signal === "resume" && t.status === "paused") t.status = "runnable";
        else if (a.signal === "cancel" || a.signal === "terminate") {
          this.#end(t, "killed", null, String(a.signal));
        }
        return { pid: t.pid, signal: a.signal };
      }
      case "process.exit":
        this.#end(p, "exited", Number.isInteger(a.code) ? a.code as number : 0, null);
        return { pid: p.pid, exit_code: p.exit_code };
      case "process.send": {
        const t = target();
        const box = this.mail.get(t.pid) ?? [];
        const m = {
          msg_id: ++this.#ids,
          from: p.pid,
          kind: String(a.kind ?? "normal"),
          body: a.body,
        };
        box.push(m);
        this.mail.set(t.pid, box);
        return { msg_id: m.msg_id };
      }
      case "process.recv": {
        const box = this.mail.get(p.pid) ?? [];
        this.mail.set(p.pid, []);
        return box;
      }
      case "process.self":
        return { pid: p.pid, ppid: p.ppid, cwd: p.cwd, namespace: p.namespace };
      case "process.chdir": {
        const abs = hostPath(this.#ctx(p), a.path);
        if (!(await Deno.stat(abs)).isDirectory) {
          throw new HostCallError("EINVAL", "not a directory");
        }
        p.cwd = relative(this.fx.ws, abs) || ".";
        return { cwd: p.cwd };
      }
      case "process.exec":
        return { pid: p.pid, image: a.image };
    }
    throw new HostCallError("ENOENT", `no syscall ${name}`);
  }

  async #jit(p: _Proc, name: string, a: Record<string, unknown>): Promise<unknown> {
    switch (name) {
      case "jit.propose":
      case "jit.validate": {
        const src = name === "jit.propose"
          ? { name: _str(a.name, "name"), source: _str(a.source, "source") }
          : this.candidates.get(String(a.oid));
        if (!src) throw new HostCallError("ENOENT", `no candidate ${String(a.oid)}`);
        const oid = this.#newId("obj");
        this.candidates.set(oid, src);
        return { oid, name: src.name };
      }
      case "jit.register": {
        const src = this.candidates.get(String(a.oid));
        if (!src) throw new HostCallError("ENOENT", `no artifact ${String(a.oid)}`);
        p.jit[src.name] = src.source;
        return { name: src.name };
      }
      case "jit.call": {
        const tool = _str(a.name, "name");
        if (!Object.hasOwn(p.jit, tool)) throw new HostCallError("ENOENT", `no tool ${tool}`);
        return await this.#runTool(p, p.jit[tool], (a.args ?? {}) as Record<string, unknown>);
      }
    }
    throw new HostCallError("ENOENT", `no syscall ${name}`);
  }

  async #misc(p: _Proc, name: string, a: Record<string, unknown>): Promise<unknown> {
    switch (name) {
      case "capability.list":
        return [];
      case "capability.check":
        return { effect: "allow", cap_id: null, reason: "no capability system" };
      case "capability.grant":
        return { cap_id: this.#newId("cap"), subject: a.to, resource: a.resource };
      case "capability.revoke":
        return { revoked: [] };
      case "human.output":
        this.shown.push(String(a.text ?? ""));
        return { shown: true };
      case "human.requests":
        return [];
      case "human.decide":
        return { request_id: a.request_id, status: "no approval system" };
      case "clock.now": {
        const ms = Date.now();
        return { epoch_ms: ms, iso: new Date(ms).toISOString() };
      }
      case "clock.sleep":
        await new Promise((r) => setTimeout(r, Math.min(Number(a.ms) || 0, 5_000)));
        return { slept_ms: a.ms };
      case "image.register":
        this.images.set(String((a.image as { name?: string })?.name), a.image);
        return { name: (a.image as { name?: string })?.name };
      case "image.list":
        return [...this.images.keys()];
    }
    void p;
    throw new HostCallError("ENOENT", `no syscall ${name}`);
  }

  /** Run a JIT tool in the runtime's own runner: -A, or the derived flags. */
  async #runTool(p: _Proc, source: string, args: Record<string, unknown>): Promise<unknown> {
    const dir = join(this.jitDir, sha256(source).slice(0, 16));
    const file = join(dir, "tool.ts");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(file, source);
    await Deno.copyFile(_LIBOS_TYPES, join(dir, "libos.ts"));
    const perms = this.mode === "sandbox"
      ? [...this.sandboxFlags(p), `--allow-read=${file}`]
      : ["-A"];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--no-lock", "--cached-only", "--no-prompt", ...perms, _RUNNER],
      clearEnv: true,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", NO_COLOR: "1", HOME: dir },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), HARNESS_TOOL_TIMEOUT_MS);
    const stderr = new Response(child.stderr).text();
    const writer = child.stdin.getWriter();
    const send = (frame: unknown) =>
      writer.write(new TextEncoder().encode(JSON.stringify(frame) + "\n")).catch(() => {});
    try {
      await send({ type: "run", tool: pathToFileURL(file).href, args });
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const frame = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (frame.type === "result") return frame.value;
          if (frame.type === "error") {
            throw new HostCallError(frame.code ?? "EIO", `tool: ${frame.message}`);
          }
          if (frame.type === "syscall") {
            try {
              const payload = await this.sys(p, String(frame.name), frame.args ?? {});
              await send({ type: "syscall_result", id: frame.id, ok: true, payload });
            } catch (e) {
              if (e instanceof HarnessError) throw e;
              const code = e instanceof _Blocked ? "EAGAIN" : hostErrorCode(e);
              const message = e instanceof Error ? e.message : String(e);
              await send({
                type: "syscall_result",
                id: frame.id,
                ok: false,
                error: { code, message },
              });
            }
          }
        }
      }
      throw new HostCallError(
        "EIO",
        `tool ended without a result: ${(await stderr).slice(0, 500)}`,
      );
    } finally {
      clearTimeout(timer);
      await writer.close().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await stderr.catch(() => "");
    }
  }

  record(): RunRecord {
    const transcript = [...this.procs.values()].map((p) => ({
      pid: p.pid,
      steps: p.pid === 1 ? [...this.#pre, ...p.results] : p.results as unknown[],
    }));
    const objects = [...this.objects.values()].map(({ namespace, kind, name, label, payload }) => ({
      namespace,
      kind,
      name,
      label,
      payload,
    }));
    return {
      transcript,
      shown: this.shown,
      asked: this.asked,
      approved: this.approved,
      objects,
      fileLabels: {},
      modelRequests: null,
      audit: null,
      ledger: null,
      error: this.error,
    };
  }
}

/** Real path of `p`'s deepest existing ancestor, with the missing rest appended. */
function _realish(p: string): string {
  const tail: string[] = [];
  let dir = resolve(p);
  for (;;) {
    try {
      return join(Deno.realPathSync(dir), ...tail);
    } catch {
      if (dirname(dir) === dir) return p;
      tail.unshift(dir.slice(dirname(dir).length + 1));
      dir = dirname(dir);
    }
  }
}
