/**
 * Error codes every primitive, tool and CLI command reports.
 *
 * A denied effect is always `EPERM`; bad input is always `EINVAL` and names the
 * field that was wrong.
 * @module
 */

/** The closed set of error codes the runtime reports. */
export type ErrorCode =
  | "EPERM" // denied by capability, policy or label
  | "ENOENT" // no such file, object, process, tool or image
  | "EINVAL" // malformed input; the message names the field
  | "EEXIST" // already exists
  | "ECONFLICT" // compare-and-swap on a stale version
  | "ESTATE" // illegal lifecycle transition
  | "ELIMIT" // budget or size limit exceeded
  | "EAGAIN" // the caller must wait (child not finished, human not answered)
  | "ETIMEDOUT" // an effect ran out of time
  | "EPROTO" // a sandboxed tool broke the frame protocol
  | "ENOSYS" // the host lacks what an effect needs (e.g. bubblewrap for shell commands)
  | "EBUSY" // busy: a process is inside a quantum, or another connection has held the store's write lock too long; try again
  | "EINTEGRITY" // stored state does not match its recorded hash (a tampered checkpoint)
  | "EIO" // a provider failed
  | "EFENCED"; // this runtime's lease on the process was lost: it may no longer write for it

/** An error carrying a stable code, safe to show to a model or a user. */
export class LibosError extends Error {
  /** The stable error code. */
  readonly code: ErrorCode;
  /** For EAGAIN: what the caller waits for (a child's end, or a human decision). */
  readonly wait?: "event" | "human";
  /** Create an error with a code and a message naming what was wrong. */
  constructor(code: ErrorCode, message: string, wait?: "event" | "human") {
    super(message);
    this.name = "LibosError";
    this.code = code;
    if (wait) this.wait = wait;
  }
  /** Plain form for JSON output. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Shorthand for an `EINVAL` naming the offending field. */
export function invalid(field: string, why: string): LibosError {
  return new LibosError("EINVAL", `${field}: ${why}`);
}

/** Shorthand for an `EPERM`. */
export function denied(message: string): LibosError {
  return new LibosError("EPERM", message);
}

/** Map any thrown value to a LibosError (host errors become ENOENT/EIO). */
export function toLibosError(e: unknown): LibosError {
  if (e instanceof LibosError) return e;
  if (e instanceof Deno.errors.NotFound) return new LibosError("ENOENT", e.message);
  if (e instanceof Deno.errors.AlreadyExists) return new LibosError("EEXIST", e.message);
  if (e instanceof Deno.errors.IsADirectory) return new LibosError("EINVAL", e.message);
  if (e instanceof Deno.errors.NotADirectory) return new LibosError("EINVAL", e.message);
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return new LibosError("EPERM", e.message);
  }
  if (e instanceof Deno.errors.TimedOut) return new LibosError("ETIMEDOUT", e.message);
  // ENAMETOOLONG has no class of its own: a path too long (or a name over 255 bytes) is bad input.
  if (e instanceof Error && /\(os error 36\)|ENAMETOOLONG/.test(e.message)) {
    return new LibosError("EINVAL", e.message);
  }
  return new LibosError("EIO", e instanceof Error ? e.message : String(e));
}
