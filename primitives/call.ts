/**
 * The state of one syscall while it runs, and argument validators that name
 * the offending field.
 * @module
 */
import { invalid, LibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type { Label, ProcessRecord } from "../runtime/types.ts";

/** One in-flight syscall. */
export interface Call {
  /** Kernel services. */
  k: Kernel;
  /** The caller, as loaded when the call began. */
  proc: ProcessRecord;
  /** Syscall name. */
  name: string;
  /** Arguments as given (a plain object). */
  args: Record<string, unknown>;
  /** sha256 of the canonical arguments (what approvals bind to). */
  argsHash: string;
  /** Correlates audit records and events of this call. */
  correlationId: string;
  /** Resource the call acted on (set by the primitive, for audit). */
  target: string;
  /** Capabilities that decided (for audit). */
  capRefs: string[];
  /** Label of the result, so audit redacts its preview. */
  resultLabel: Label;
  /**
   * Label of what the arguments carry (content bound for a labelled file or
   * object), so audit redacts their preview as it would the same data read back.
   */
  argsLabel: Label;
  /**
   * What the allowed call did beyond the effect its target names, for the
   * allow record's reason (`model.call`: the content it held back from the
   * endpoint). Never content: labels, hashes, sizes.
   */
  note?: string;
  /**
   * Set when the failure the call ends with is a sandboxed tool's own report
   * (its code is the tool's word, not the runtime's): audited as an error, never
   * as a refusal.
   */
  toolFailed?: boolean;
}

/** A primitive: the only code that may ask a provider for an effect. */
export interface Primitive {
  /** Argument names it accepts; anything else is EINVAL. */
  fields: readonly string[];
  /** Validate, authorize, perform, return. */
  run(call: Call): Promise<unknown>;
}

/** Reject argument names the primitive does not know. */
export function checkFields(call: Call, allowed: readonly string[]): void {
  for (const k of Object.keys(call.args)) {
    if (!allowed.includes(k)) throw invalid(`${call.name}.${k}`, "unknown argument");
  }
}

/** A required string argument. */
export function str(call: Call, field: string, max = 1_000_000): string {
  const v = call.args[field];
  if (typeof v !== "string") throw invalid(`${call.name}.${field}`, "must be a string");
  if (v.length > max) throw invalid(`${call.name}.${field}`, `longer than ${max} characters`);
  if (v.includes("\u0000")) throw invalid(`${call.name}.${field}`, "contains a NUL character");
  return v;
}

/** An optional string argument. */
export function optStr(call: Call, field: string, max = 1_000_000): string | undefined {
  return call.args[field] === undefined ? undefined : str(call, field, max);
}

/** A required integer argument within bounds. */
export function int(call: Call, field: string, min: number, max: number): number {
  const v = call.args[field];
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) {
    throw invalid(`${call.name}.${field}`, `must be an integer from ${min} to ${max}`);
  }
  return v as number;
}

/** An optional integer argument. */
export function optInt(call: Call, field: string, min: number, max: number): number | undefined {
  return call.args[field] === undefined ? undefined : int(call, field, min, max);
}

/** An optional boolean argument. */
export function optBool(call: Call, field: string): boolean | undefined {
  const v = call.args[field];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw invalid(`${call.name}.${field}`, "must be a boolean");
  return v;
}

/** A required pid argument. */
export function pidArg(call: Call, field = "pid"): number {
  return int(call, field, 1, Number.MAX_SAFE_INTEGER);
}

/**
 * Count `bytes` this call adds to the store against the process's
 * `max_store_bytes`: ELIMIT, before anything is written, when they would go
 * past it. Counted at once (no await between the check and the count), so
 * calls in flight together cannot each slip under it.
 */
export function chargeStore(call: Call, bytes: number): void {
  const u = call.k.usage(call.proc);
  if (!fitsStore(call, bytes)) {
    throw new LibosError(
      "ELIMIT",
      `${call.name}: budget max_store_bytes ${
        call.k.budgets(call.proc).max_store_bytes
      }: ${bytes} more bytes would pass it (${u.store_bytes ?? 0} used)`,
    );
  }
  u.store_bytes = (u.store_bytes ?? 0) + bytes;
}

/** Whether `bytes` more fit the process's `max_store_bytes`. */
export function fitsStore(call: Call, bytes: number): boolean {
  const max = call.k.budgets(call.proc).max_store_bytes;
  return max === null || max === undefined ||
    (call.k.usage(call.proc).store_bytes ?? 0) + bytes <= max;
}
