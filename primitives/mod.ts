/**
 * The syscall table: one dispatch table, one file per family (xv6 style).
 * {@link syscall} is the single entry into authority: it checks the caller is a
 * live process within budget, validates the argument names, runs the
 * primitive, and writes exactly one audit record for the call whether it was
 * allowed, denied or failed, naming the capabilities that decided.
 * @module
 */
import { MAX_JSON_DEPTH, nestsDeeper, type PayloadRef, payloadRef } from "../runtime/canonical.ts";
import { type ErrorCode, invalid, LibosError, toLibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { guardText, maxLabel, redactionFor } from "../runtime/labels.ts";
import type { Decision, ProcessRecord } from "../runtime/types.ts";
import { type Call, checkFields, type Primitive } from "./call.ts";
import { CAPABILITY } from "./capability.ts";
import { CHECKPOINT } from "./checkpoint.ts";
import { CLOCK } from "./clock.ts";
import { FILESYSTEM } from "./filesystem.ts";
import { HUMAN } from "./human.ts";
import { IMAGE } from "./image.ts";
import { JIT } from "./jit.ts";
import { MEMORY } from "./memory.ts";
import { MODEL } from "./model.ts";
import { PROCESS } from "./process.ts";
import { SHELL } from "./shell.ts";

/** Every syscall, by name. */
export const SYSCALLS: Readonly<Record<string, Primitive>> = Object.freeze({
  ...FILESYSTEM,
  ...MEMORY,
  ...CLOCK,
  ...PROCESS,
  ...CAPABILITY,
  ...SHELL,
  ...IMAGE,
  ...HUMAN,
  ...JIT,
  ...MODEL,
  ...CHECKPOINT,
});

/** Names of every syscall. */
export const SYSCALL_NAMES: readonly string[] = Object.keys(SYSCALLS);

/** Largest canonical-JSON size of one call's arguments. */
export const MAX_ARGS_CHARS = 16 * 1024 * 1024;

const _LIVE = new Set(["running", "runnable"]);

function _decision(e: LibosError): Decision {
  return e.code === "EPERM" ? "deny" : e.code === "EAGAIN" ? "info" : "error";
}

/** Optional call settings. */
export interface SyscallOptions {
  /** Correlation id tying this call to a larger operation. */
  correlationId?: string;
}

/**
 * Issue syscall `name` with `args` on behalf of process `pid`. The pid comes
 * from the runtime (the scheduler or the JIT broker), never from a tool.
 */
export async function syscall(
  k: Kernel,
  pid: number,
  name: string,
  args: unknown,
  options: SyscallOptions = {},
): Promise<unknown> {
  const correlationId = options.correlationId ?? k.newId("c");
  const call: Call = {
    k,
    proc: undefined as unknown as ProcessRecord,
    name: typeof name === "string" ? name.slice(0, 128) : "?",
    args: {},
    argsHash: "",
    correlationId,
    target: "",
    capRefs: [],
    resultLabel: "public",
    argsLabel: "public",
  };
  let inputRef: PayloadRef | null = null;
  const journal = k.journal(pid);
  let slot = -1;
  let replayed = false;
  try {
    const prim = typeof name === "string" && Object.hasOwn(SYSCALLS, name) ? SYSCALLS[name] : null;
    // A call refused before it could run still costs a syscall (its audit record is
    // stored): a tool looping over bad calls runs out of budget like any other.
    if (!prim) {
      // The name is the caller's text: audited as a kind, shown only as its taint allows.
      call.proc = await k.process(pid);
      call.name = UNKNOWN_SYSCALL;
      await _count(k, call, String(name).slice(0, 128));
      throw new LibosError(
        "ENOENT",
        `syscall: no syscall named '${_guard(call, String(name).slice(0, 128))}'`,
      );
    }
    call.proc = await k.process(pid);
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      await _count(k, call, name);
      throw invalid(`${name}`, "arguments must be a JSON object");
    }
    // Hashing, auditing and storing the arguments recurse through them.
    if (nestsDeeper(args)) {
      await _count(k, call, name);
      throw invalid(`${name}`, `arguments nest deeper than ${MAX_JSON_DEPTH} levels`);
    }
    if (!_LIVE.has(call.proc.status)) {
      throw new LibosError("ESTATE", `${name}: process ${pid} is ${call.proc.status}`);
    }
    const ref = _hidePreview(call, payloadRef(args, redactionFor(call.proc.taint)));
    inputRef = ref;
    if (ref.size > MAX_ARGS_CHARS) {
      await _count(k, call, name);
      throw invalid(name, `arguments larger than ${MAX_ARGS_CHARS} bytes`);
    }
    call.args = args as Record<string, unknown>;
    // The ref already hashed the canonical arguments: same value as hashValue(args).
    call.argsHash = ref.sha256;
    // Resuming an action: a syscall it already completed is answered from the
    // journal, not executed (or audited) again.
    if (journal) {
      slot = journal.cursor++;
      const e = journal.entries[slot];
      if (e && journal.replaying && e.name === name && e.args_hash === call.argsHash) {
        if (e.ok) return e.value;
        replayed = true;
        throw new LibosError(e.error!.code as ErrorCode, e.error!.message);
      }
      if (e) {
        // Diverged from the earlier attempt: from here on everything runs for real.
        journal.replaying = false;
        journal.entries.length = slot;
      }
    }
    await _count(k, call, name);
    checkFields(call, prim.fields);
    const value = await prim.run(call);
    if (journal) journal.entries[slot] = { name, args_hash: call.argsHash, ok: true, value };
    await k.audit({
      actor: `pid:${pid}`,
      action: name,
      target: _guard(call, call.target),
      input_refs: _labelledInput(call, inputRef),
      output_refs: _hidePreview(call, payloadRef(value, redactionFor(call.resultLabel))),
      capability_refs: call.capRefs,
      decision: "allow",
      reason:
        (call.capRefs.length ? `allowed by ${call.capRefs.join(", ")}` : "no capability needed") +
        (call.note ? `; ${call.note}` : ""),
      correlation_id: correlationId,
      parent_record_id: null,
    });
    return value;
  } catch (e) {
    const err = _hideHostPaths(call, toLibosError(e));
    if (replayed) throw err;
    if (journal && slot >= 0 && err.code !== "EAGAIN") {
      journal.entries[slot] = {
        name: call.name,
        args_hash: call.argsHash,
        ok: false,
        error: err.toJSON(),
      };
    }
    const decision = call.toolFailed ? "error" : _decision(err);
    await k.audit({
      actor: `pid:${pid}`,
      action: call.name,
      target: _guard(call, call.target),
      input_refs: _labelledInput(call, inputRef),
      output_refs: { error: err.code },
      capability_refs: call.capRefs,
      decision,
      reason: _guard(call, `${err.code}: ${err.message}`),
      correlation_id: correlationId,
      parent_record_id: null,
    });
    if (decision === "deny") {
      await k.emit("syscall.denied", `pid:${pid}`, _guard(call, call.target), {
        syscall: call.name,
        message: _guard(call, err.message),
      }, correlationId);
    }
    throw err;
  }
}

/** Count one syscall of `call`'s process against `max_syscalls` (ELIMIT when none is left). */
async function _count(k: Kernel, call: Call, name: string): Promise<void> {
  const usage = k.usage(call.proc);
  const max = k.budgets(call.proc).max_syscalls;
  if (max !== null && usage.syscalls >= max) {
    const pid = call.proc.pid;
    await k.emit("budget.exhausted", "kernel", `pid:${pid}`, { budget: "max_syscalls", max });
    throw new LibosError(
      "ELIMIT",
      `${_guard(call, name)}: process ${pid} used its ${max} syscalls`,
    );
  }
  usage.syscalls++;
}

/** What the audit names a syscall that does not exist (its name is the caller's text). */
export const UNKNOWN_SYSCALL = "syscall.unknown";

/**
 * Text derived from a tainted caller's arguments (a target, an error message)
 * could carry what it read: above `normal` it is kept as a label and a hash only.
 */
function _guard(call: Call, text: string): string {
  const shown = call.k.hidePaths(text, call.proc?.workspace);
  return call.proc ? guardText(call.proc.taint, shown) : shown;
}

/**
 * The arguments' audit reference, redacted for the label of what they carry
 * when that is above the caller's taint (a secret written by an untainted
 * process). The hash and size were taken once, at the call: only the preview
 * changes.
 */
function _labelledInput(call: Call, ref: PayloadRef | null): PayloadRef | null {
  if (!call.proc || ref === null || call.argsLabel === "public") return ref;
  const redact = redactionFor(maxLabel(call.proc.taint, call.argsLabel));
  return redact ? { ...ref, preview: `[redacted:${redact}]` } : ref;
}

/**
 * Previews are audit text: host paths in them (an absolute path an agent
 * passed, a path a JIT tool's permission check named) are hidden too. The
 * hash and size stay those of the real payload.
 */
function _hidePreview<T extends { preview: string }>(call: Call, ref: T): T {
  const preview = call.k.hidePaths(ref.preview, call.proc?.workspace);
  return preview === ref.preview ? ref : { ...ref, preview };
}

/** Host errors name absolute paths; an agent sees workspace-relative ones and no other host path. */
function _hideHostPaths(call: Call, err: LibosError): LibosError {
  const message = call.k.hidePaths(err.message, call.proc?.workspace);
  return message === err.message ? err : new LibosError(err.code, message, err.wait);
}
