/**
 * human.output: showing text to a human is an effect, and a sink with a label
 * (the policy's `human_clearance`): data above it never reaches the human.
 * @module
 */
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import type { HumanAnswer } from "../runtime/providers/types.ts";
import type { HumanRequestStatus, Label } from "../runtime/types.ts";
import { maxLabel } from "../runtime/labels.ts";
import { applyDecision, authorize } from "./authorize.ts";
import { type Call, optStr, type Primitive, str } from "./call.ts";
import { withEffect } from "./effects.ts";
import { checkFlow, taint } from "./filesystem.ts";

const _ANSWERS = ["allow_once", "always_allow", "deny", "always_deny"] as const;

/** Forks of forks followed at most this far back (deeper counts as related). */
const _MAX_FORK_CHAIN = 64;

/**
 * The root of a process's tree: the host-launched process it descends from.
 * A copy made from a checkpoint is the same agent: its tree is the tree of
 * the process the checkpoint was taken of, followed back through forks of
 * forks. (Null when the chain is too long to follow.)
 */
async function _root(
  k: Call["k"],
  p: { pid: number; lineage: number[]; origin: string },
): Promise<number | null> {
  let cur = p;
  for (let hops = 0; hops <= _MAX_FORK_CHAIN; hops++) {
    const pid = cur.lineage[0] ?? cur.pid;
    const root = pid === cur.pid ? cur : await k.store.getProcess(pid);
    if (!root?.origin.startsWith("checkpoint:")) return pid;
    const ck = await k.store.getCheckpoint(root.origin.slice("checkpoint:".length));
    const taken = ck ? await k.store.getProcess(ck.root_pid) : null;
    if (!taken) return pid;
    cur = taken;
  }
  return null;
}

/** Whether two processes are of one tree (or cannot be told apart: then they count as one). */
async function _related(
  k: Call["k"],
  a: { pid: number; lineage: number[]; origin: string },
  b: { pid: number; lineage: number[]; origin: string },
): Promise<boolean> {
  const [ra, rb] = [await _root(k, a), await _root(k, b)];
  return ra === null || rb === null || ra === rb;
}

/**
 * May the caller decide `requester`'s requests? Never one of its own tree:
 * not its own, not a descendant's (a child acts with authority its parent
 * passed down), not an ancestor's or a sibling's (the approving authority
 * came down the same tree), not a checkpoint copy's or its original's (one
 * agent, copied). Any of those would let a tree mint authority for itself
 * from authority it already holds; only an unrelated process may.
 */
async function _assertNotSelfDealing(call: Call, requester: number): Promise<void> {
  const r = await call.k.store.getProcess(requester);
  if (!r || await _related(call.k, r, call.proc)) {
    throw denied(
      `${call.name}: process ${call.proc.pid} cannot decide requests of a process in its own tree`,
    );
  }
}

/** The human family. */
export const HUMAN: Record<string, Primitive> = {
  "human.requests": {
    fields: ["status"],
    async run(call) {
      call.target = "human:owner";
      await authorize(call, { resource: call.target, right: "approve" });
      const status = (optStr(call, "status", 32) ?? "pending") as HumanRequestStatus;
      // Only requests the caller could decide: none of its own tree's.
      const out = [];
      for (const r of await call.k.store.listHumanRequests({ status })) {
        // What happened to an effect is for the host's human to say, not a process.
        if (r.kind === "outcome") continue;
        const p = await call.k.store.getProcess(r.pid);
        if (p && !(await _related(call.k, p, call.proc))) out.push(r);
      }
      // The requests' arguments carry their asking processes' data: its labels come along.
      await taint(call, maxLabel(...out.flatMap((r): Label[] => r.labels)));
      return out;
    },
  },
  "human.decide": {
    fields: ["request_id", "decision"],
    async run(call) {
      const id = str(call, "request_id", 128);
      const decision = call.args.decision as HumanAnswer;
      if (!(_ANSWERS as readonly string[]).includes(decision as string)) {
        throw invalid(`${call.name}.decision`, `must be one of ${_ANSWERS.join(", ")}`);
      }
      call.target = "human:owner";
      // Authority first: without approve, a caller learns nothing about which ids exist.
      await authorize(call, { resource: call.target, right: "approve" });
      const r = await call.k.store.getHumanRequest(id);
      if (!r) throw new LibosError("ENOENT", `${call.name}.request_id: no request ${id}`);
      if (r.kind === "outcome") {
        throw denied(`${call.name}: ${id} asks what happened; only the host's human answers it`);
      }
      await _assertNotSelfDealing(call, r.pid);
      const done = await applyDecision(call.k, id, decision, `pid:${call.proc.pid}`);
      return { request_id: id, status: done.status };
    },
  },
  "human.output": {
    fields: ["text", "to"],
    async run(call) {
      const text = str(call, "text", 100_000);
      const to = optStr(call, "to", 64) ?? "owner";
      if (!/^[a-z][a-z0-9_-]{0,63}$/.test(to)) throw invalid(`${call.name}.to`, "malformed name");
      call.target = `human:${to}`;
      await authorize(call, { resource: call.target, right: "write" });
      await checkFlow(call, call.proc.policy.human_clearance, call.target);
      await withEffect(call, call.target, () => call.k.providers.human.output(call.proc.pid, text));
      await call.k.emit("human.output", `pid:${call.proc.pid}`, call.target, {
        chars: text.length,
      }, call.correlationId);
      return { shown: true };
    },
  },
};
