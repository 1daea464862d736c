/**
 * Legal lifecycle transitions of an AgentProcess. An illegal transition is an
 * `ESTATE` error, never a silent overwrite.
 * @module
 */
import { LibosError } from "./errors.ts";
import type { ProcessStatus } from "./types.ts";

const TERMINAL: readonly ProcessStatus[] = ["exited", "failed", "killed"];
const ENDINGS: ProcessStatus[] = ["exited", "failed", "killed"];
const WAITING: ProcessStatus[] = ["waiting_event", "waiting_tool", "waiting_human"];

/** Allowed next states for each state. */
export const TRANSITIONS: Record<ProcessStatus, readonly ProcessStatus[]> = {
  created: ["runnable", "paused", "failed", "killed"],
  runnable: ["running", "paused", ...ENDINGS],
  running: ["runnable", ...WAITING, "paused", ...ENDINGS],
  waiting_event: ["runnable", "paused", "failed", "killed"],
  waiting_tool: ["runnable", "paused", "failed", "killed"],
  waiting_human: ["runnable", "paused", "failed", "killed"],
  paused: ["runnable", "failed", "killed"],
  exited: [],
  failed: [],
  killed: [],
};

/** Is the status terminal (exited, failed, killed)? */
export function isTerminal(status: ProcessStatus): boolean {
  return TERMINAL.includes(status);
}

/** Throw ESTATE unless `from -> to` is legal. */
export function assertTransition(pid: number, from: ProcessStatus, to: ProcessStatus): void {
  if (!TRANSITIONS[from].includes(to)) {
    throw new LibosError("ESTATE", `process ${pid}: illegal transition ${from} -> ${to}`);
  }
}
