/**
 * jit.* primitives: the lifecycle of just-in-time tools (propose -> validate
 * -> register -> call), and sandbox.access, the broker's door: every direct
 * file access a JIT subprocess makes under its derived flags is decided and
 * audited here by the same capability and label checks as a syscall.
 * @module
 */
import { isAbsolute } from "node:path";
import { canonicalJson } from "../runtime/canonical.ts";
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import {
  accessFlags,
  denoAccess,
  type DerivedAccess,
  deriveGrants,
  within,
} from "../runtime/sandbox/flags.ts";
import { DEFAULT_LIMITS, type SandboxLimits } from "../runtime/sandbox/launcher.ts";
import { MAX_TOOL_SOURCE } from "../runtime/sandbox/provider.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { guardText } from "../runtime/labels.ts";
import type { JitToolRef, MemoryObject } from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { storeBytes } from "../runtime/budgets.ts";
import { type Call, chargeStore, optInt, type Primitive, str } from "./call.ts";
import { checkFlow, fileLabel, labelledPaths, resolvePath, taint } from "./filesystem.ts";
import { authorizeObject } from "./memory.ts";

/** Hard ceilings a caller can raise a call's limits to. */
export const JIT_MAX = { timeoutMs: 60_000, syscalls: 100_000, tests: 32 };

const _NAME = /^[a-z][a-z0-9_]{0,63}$/;
// Derived access of the JIT calls in flight, by correlation id (for sandbox.access).
const _inFlight = new Map<string, DerivedAccess>();

/** A tool's own test, run against mocked syscalls during validation. */
export interface ToolTest {
  /** Label. */
  name: string;
  /** Arguments for `run`. */
  args: Record<string, unknown>;
  /** Expected syscalls in order, each with the mocked result or error. */
  syscalls: { name: string; result?: unknown; error?: { code: string; message: string } }[];
  /** Expected return value (compared as canonical JSON). */
  expect?: unknown;
  /** Expected error code instead of a value. */
  expect_error?: string;
}

/**
 * Refuse, and audit, a syscall no JIT tool may make (`jit.*`, `sandbox.*`,
 * `model.*`). The name is the tool's text: audited by its family, shown as the
 * process's taint allows (a tool once carried a secret into the audit in it).
 */
async function _refuseInside(
  k: Kernel,
  pid: number,
  tool: string,
  sys: string,
  correlationId: string,
): Promise<never> {
  const family = sys.slice(0, sys.indexOf("."));
  const taint = (await k.process(pid)).taint;
  const refusal = denied(
    `${guardText(taint, sys.slice(0, 128))} is not available inside a JIT tool`,
  );
  await k.audit({
    actor: `pid:${pid}`,
    action: `${family}.*`,
    target: `tool:${tool}`,
    input_refs: null,
    output_refs: { error: "EPERM" },
    capability_refs: [],
    decision: "deny",
    reason: refusal.message,
    correlation_id: correlationId,
    parent_record_id: null,
  });
  throw refusal;
}

function _toolName(call: Call): string {
  const name = str(call, "name", 64);
  if (!_NAME.test(name)) throw invalid(`${call.name}.name`, "must be a lowercase identifier");
  if (call.k.toolNames.includes(name)) {
    throw invalid(`${call.name}.name`, `'${name}' is a builtin tool`);
  }
  return name;
}

function _obj(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw invalid(field, "must be an object");
  }
  return v as Record<string, unknown>;
}

function _tests(call: Call): ToolTest[] {
  const raw = call.args.tests ?? [];
  if (!Array.isArray(raw) || raw.length > JIT_MAX.tests) {
    throw invalid(`${call.name}.tests`, `must be an array of at most ${JIT_MAX.tests} tests`);
  }
  return raw.map((t, i) => {
    const f = `${call.name}.tests[${i}]`;
    const o = _obj(t, f);
    for (const k of Object.keys(o)) {
      if (!["name", "args", "syscalls", "expect", "expect_error"].includes(k)) {
        throw invalid(`${f}.${k}`, "unknown field");
      }
    }
    const syscalls = (o.syscalls ?? []) as unknown[];
    if (!Array.isArray(syscalls)) throw invalid(`${f}.syscalls`, "must be an array");
    return {
      name: typeof o.name === "string" ? o.name : `test ${i}`,
      args: _obj(o.args ?? {}, `${f}.args`),
      syscalls: syscalls.map((s, j) => {
        const so = _obj(s, `${f}.syscalls[${j}]`);
        if (typeof so.name !== "string") {
          throw invalid(`${f}.syscalls[${j}].name`, "must be a string");
        }
        return so as ToolTest["syscalls"][number];
      }),
      expect: o.expect,
      expect_error: typeof o.expect_error === "string" ? o.expect_error : undefined,
    };
  });
}

async function _loadKind(call: Call, kind: string): Promise<MemoryObject> {
  const oid = str(call, "oid", 256);
  const obj = await call.k.store.getObject(oid);
  if (!obj) throw new LibosError("ENOENT", `${call.name}.oid: no object ${oid}`);
  await authorizeObject(call, obj, "read");
  if (obj.kind !== kind) throw invalid(`${call.name}.oid`, `is a ${obj.kind}, not a ${kind}`);
  return obj;
}

async function _runTests(
  call: Call,
  toolPath: string,
  dir: string,
  tests: ToolTest[],
): Promise<void> {
  for (const t of tests) {
    const queue = [...t.syscalls];
    let mismatch: string | null = null;
    const outcome = await call.k.providers.sandbox.run({
      artifactDir: dir,
      toolPath,
      args: t.args,
      flags: [],
      limits: DEFAULT_LIMITS,
      onSyscall: (name) => {
        const next = queue.shift();
        if (!next || next.name !== name) {
          mismatch ??= `expected ${
            next ? `syscall ${next.name}` : "no more syscalls"
          }, got ${name}`;
          return Promise.reject(new LibosError("EINVAL", mismatch));
        }
        if (next.error) {
          return Promise.reject(
            new LibosError((next.error.code ?? "EIO") as "EIO", next.error.message ?? ""),
          );
        }
        return Promise.resolve(next.result ?? null);
      },
    }, false);
    const fail = (why: string) =>
      new LibosError("EINVAL", `jit.validate: tests: '${t.name}' ${why}`);
    if (mismatch) throw fail(mismatch);
    if (t.expect_error !== undefined) {
      if (outcome.ok) throw fail(`expected error ${t.expect_error}, got a value`);
      if (outcome.error.code !== t.expect_error) {
        throw fail(`expected error ${t.expect_error}, got ${outcome.error.code}`);
      }
      continue;
    }
    if (!outcome.ok) throw fail(`failed: ${outcome.error.code} ${outcome.error.message}`);
    if ("expect" in t && canonicalJson(outcome.value) !== canonicalJson(t.expect)) {
      throw fail(
        `returned ${canonicalJson(outcome.value).slice(0, 200)}, expected ${
          canonicalJson(t.expect).slice(0, 200)
        }`,
      );
    }
    if (queue.length) throw fail(`did not make ${queue.length} expected syscall(s)`);
  }
}

/** Largest JSON Schema a tool spec may carry, in canonical JSON characters. */
export const MAX_TOOL_SCHEMA_CHARS = 16 * 1024;

/** A JIT tool's argument schema: what a model is offered (default: any object). */
function _parameters(call: Call): Record<string, unknown> {
  const raw = call.args.parameters;
  const field = `${call.name}.parameters`;
  if (raw === undefined) return { type: "object" };
  const o = _obj(raw, field);
  if (o.type !== "object") throw invalid(`${field}.type`, 'must be "object"');
  if (o.properties !== undefined) _obj(o.properties, `${field}.properties`);
  if (canonicalJson(o).length > MAX_TOOL_SCHEMA_CHARS) {
    throw invalid(field, `larger than ${MAX_TOOL_SCHEMA_CHARS} characters`);
  }
  return o;
}

const propose: Primitive = {
  fields: ["name", "source", "description", "tests", "parameters"],
  async run(call) {
    const name = _toolName(call);
    const source = str(call, "source", MAX_TOOL_SOURCE);
    const description = typeof call.args.description === "string"
      ? call.args.description.slice(0, 1000)
      : "";
    const tests = _tests(call);
    const parameters = _parameters(call);
    call.target = `tool:${name}`;
    await authorize(call, { resource: call.target, right: "write" });
    const payload = { name, source, description, tests, parameters };
    chargeStore(call, storeBytes(JSON.stringify(payload)));
    const { oid } = await call.k.insertObject({
      namespace: call.proc.namespace,
      kind: "tool_candidate",
      label: call.proc.taint,
      payload,
      created_by: call.proc.pid,
    });
    return { oid, name };
  },
};

const validate: Primitive = {
  fields: ["oid"],
  async run(call) {
    const cand = await _loadKind(call, "tool_candidate");
    const p = cand.payload as {
      name: string;
      source: string;
      description: string;
      tests: ToolTest[];
      parameters?: Record<string, unknown>;
    };
    call.target = `tool:${p.name}`;
    await authorize(call, { resource: call.target, right: "write" });
    const art = await call.k.providers.sandbox.prepare(p.source);
    await _runTests(call, art.toolPath, art.dir, p.tests);
    const checks = [...art.checks, ...(p.tests.length ? [`tests (${p.tests.length})`] : [])];
    // The artifact keeps the source again.
    chargeStore(call, storeBytes(p.source));
    const { oid } = await call.k.insertObject({
      namespace: call.proc.namespace,
      kind: "tool_artifact",
      label: cand.label,
      payload: {
        name: p.name,
        sha256: art.sha256,
        source: p.source,
        description: p.description,
        parameters: p.parameters ?? { type: "object" },
        checks,
        warnings: art.warnings,
      },
      derived_from: [cand.oid],
      created_by: call.proc.pid,
    });
    // Warnings (style lint findings) never refuse; they travel with the result.
    return { oid, name: p.name, sha256: art.sha256, checks, warnings: art.warnings };
  },
};

const register: Primitive = {
  fields: ["oid"],
  async run(call) {
    const art = await _loadKind(call, "tool_artifact");
    const p = art.payload as { name: string; sha256: string };
    call.target = `tool:${p.name}`;
    await authorize(call, { resource: call.target, right: "write" });
    // Only the registering process's table changes; children get it only by delegation.
    const ref: JitToolRef = { sha256: p.sha256, artifact: art.oid };
    // Read and write the table in one transaction: two registrations in flight
    // at once must both land (the snapshot taken when the call began may be stale).
    await call.k.atomically(async (k) => {
      const cur = await k.process(call.proc.pid);
      await k.saveProcess(call.proc.pid, { jit_tools: { ...cur.jit_tools, [p.name]: ref } });
    });
    return { name: p.name, sha256: p.sha256 };
  },
};

const jitCall: Primitive = {
  fields: ["name", "args", "timeout_ms", "max_syscalls"],
  async run(call) {
    const name = str(call, "name", 64);
    const args = _obj(call.args.args ?? {}, `${call.name}.args`);
    // Own entries only: `constructor` or `__proto__` is not a tool.
    const ref = Object.hasOwn(call.proc.jit_tools, name) ? call.proc.jit_tools[name] : undefined;
    call.target = `tool:${name}`;
    if (!ref) {
      throw new LibosError(
        "ENOENT",
        `${call.name}: '${name}' is not in process ${call.proc.pid}'s tool table`,
      );
    }
    const k = call.k;
    const artObj = await k.store.getObject(ref.artifact);
    if (!artObj) throw new LibosError("ENOENT", `${call.name}: artifact of '${name}' is gone`);
    const art = await k.providers.sandbox.prepare((artObj.payload as { source: string }).source);
    if (art.sha256 !== ref.sha256) {
      throw new LibosError("EIO", `${call.name}: artifact of '${name}' does not match`);
    }
    const timeoutMs = optInt(call, "timeout_ms", 1, JIT_MAX.timeoutMs) ?? DEFAULT_LIMITS.timeoutMs;
    const limits: SandboxLimits = {
      ...DEFAULT_LIMITS,
      timeoutMs,
      // The CPU limit also bounds a busy tool whose runtime died (no one left to SIGKILL it).
      cpuSeconds: Math.ceil(timeoutMs / 1000) + 1,
      maxSyscalls: optInt(call, "max_syscalls", 1, JIT_MAX.syscalls) ?? DEFAULT_LIMITS.maxSyscalls,
    };
    const now = k.providers.clock.now();
    const grants = deriveGrants(
      await k.store.capabilitiesOf(call.proc.pid),
      call.proc.workspace,
      now,
      now + limits.timeoutMs,
    );
    const access = denoAccess(grants);
    const pid = call.proc.pid;
    const correlationId = call.correlationId;
    const deferred: [string, Record<string, unknown>][] = [];
    let parked: LibosError | null = null;
    const outOfSyscalls = new AbortController();
    _inFlight.set(correlationId, access);
    let outcome;
    try {
      outcome = await k.providers.sandbox.run({
        artifactDir: art.dir,
        toolPath: art.toolPath,
        args,
        flags: accessFlags({ ...access, read: [...access.read, art.toolPath] }),
        // Labels are the broker's to apply, access by access: nothing is masked for them.
        view: { workspace: call.proc.workspace, grants, hide: [], readOnly: [], callRead: [] },
        limits,
        signal: _signals(k.effectSignal(pid), outOfSyscalls.signal),
        onSyscall: (sys, sysArgs) => {
          if (sys.startsWith("jit.") || sys.startsWith("sandbox.") || sys.startsWith("model.")) {
            return _refuseInside(k, pid, name, sys, correlationId);
          }
          // exit and exec change the caller's process: they wait until the tool returns.
          if (sys === "process.exit" || sys === "process.exec") {
            deferred.push([sys, sysArgs]);
            return Promise.resolve({ deferred: true });
          }
          return k.dispatch(pid, sys, sysArgs, { correlationId }).catch((e) => {
            if (e instanceof LibosError && e.wait === "human") parked ??= e;
            // Out of syscalls: the call ends (a tool looping over refused calls would
            // otherwise leave an audit record for each).
            const max = k.budgets(call.proc).max_syscalls;
            if (
              max !== null && k.usage(call.proc).syscalls >= max && !outOfSyscalls.signal.aborted
            ) {
              outOfSyscalls.abort(
                new LibosError("ELIMIT", `process ${pid} used its ${max} syscalls`),
              );
            }
            throw e;
          });
        },
        onPermission: async (permission, value) => {
          if (permission === "read" && value === art.toolPath) return true; // its own module
          try {
            await k.dispatch(pid, "sandbox.access", { permission, value }, { correlationId });
            return true;
          } catch {
            return false;
          }
        },
      }, true);
    } finally {
      _inFlight.delete(correlationId);
    }
    // A syscall inside the tool is waiting for a human: whatever the tool made of
    // that, the whole call is retried after the decision (completed syscalls replay).
    if (parked) throw parked;
    if (!outcome.ok) {
      call.toolFailed = true;
      throw new LibosError(outcome.error.code, `${call.name} ${name}: ${outcome.error.message}`);
    }
    for (const [sys, sysArgs] of deferred) await k.dispatch(pid, sys, sysArgs, { correlationId });
    return outcome.value;
  },
};

/** One signal for the call: the lease's, if any, and its own. */
function _signals(lease: AbortSignal | undefined, own: AbortSignal): AbortSignal {
  return lease ? AbortSignal.any([lease, own]) : own;
}

/**
 * Writing a directory (renaming, removing, changing its mode) moves what is
 * below it out from under the paths rules and labels name: refused when
 * anything below is denied, asked or labelled.
 */
async function _refuseAbove(call: Call, derived: DerivedAccess, real: string): Promise<void> {
  const below = (path: string) => path !== real && within([real], path);
  const ruled = [...derived.denyRead, ...derived.denyWrite].find(below) ??
    (await labelledPaths(call)).find((l) => below(l.path))?.path;
  if (ruled) {
    const rel = call.k.hidePaths(ruled, call.proc.workspace);
    throw denied(
      `${call.name}: writing ${call.target} would move ${rel}, which a rule or label names`,
    );
  }
}

const access: Primitive = {
  fields: ["permission", "value"],
  async run(call) {
    const derived = _inFlight.get(call.correlationId);
    const permission = str(call, "permission", 32);
    const value = call.args.value === null ? null : str(call, "value", 4096);
    call.target = `sandbox:${permission}${value ? `:${value}` : ""}`;
    if (!derived) {
      throw denied(`${call.name}: no JIT call of process ${call.proc.pid} is in flight`);
    }
    if (permission !== "read" && permission !== "write") {
      throw denied(
        `${call.name}: direct ${permission} access is never granted to a JIT tool; use syscalls`,
      );
    }
    if (!value || !isAbsolute(value)) {
      throw denied(`${call.name}: ${permission} of a relative path`);
    }
    const p = await resolvePath(call, value);
    call.target = p.resource;
    const allowed = permission === "read" ? derived.read : derived.write;
    const deny = permission === "read" ? derived.denyRead : derived.denyWrite;
    if (!within(allowed, p.real) || within(deny, p.real)) {
      throw denied(`${call.name} ${p.resource}: outside the derived --allow-${permission} flags`);
    }
    if (permission === "write") await _refuseAbove(call, derived, p.real);
    await authorize(call, { resource: p.resource, right: permission });
    const label = await fileLabel(call, p);
    if (permission === "read") await taint(call, label);
    else await checkFlow(call, label, p.resource);
    return { allowed: true };
  },
};

/** The jit family (and the broker's sandbox.access). */
export const JIT: Record<string, Primitive> = {
  "jit.propose": propose,
  "jit.validate": validate,
  "jit.register": register,
  "jit.call": jitCall,
  "sandbox.access": access,
};
