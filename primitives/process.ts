/**
 * process.* primitives: spawn, fork, exec, wait, signal, exit, send, recv,
 * self, chdir. A child never inherits authority implicitly: spawn gives it
 * nothing, fork delegates narrowed copies, and every delegation carries the
 * parent's DENY and ASK capabilities along. Signals reach direct children only.
 * @module
 */
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import {
  BUDGET_NAMES,
  type BudgetName,
  carveBudgets,
  returnBudgets,
  storeBytes,
  unusedBudgets,
} from "../runtime/budgets.ts";
import { maxLabel } from "../runtime/labels.ts";
import { isLive, parseCapabilitySpec, resourceCovers } from "../runtime/capabilities.ts";
import { parseScript } from "../runtime/providers/scripted.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type {
  AgentImage,
  Budgets,
  Capability,
  CapabilitySpec,
  JitToolRef,
  Label,
  ModelState,
  ProcessRecord,
  Right,
} from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import {
  type Call,
  chargeStore,
  fitsStore,
  optInt,
  optStr,
  pidArg,
  type Primitive,
  str,
} from "./call.ts";
import { delegate, findDelegable, propagateRestrictions } from "./capability.ts";
import { resolvePath, taint } from "./filesystem.ts";

/** Fork modes. */
export const FORK_MODES = ["copy", "restricted", "speculative", "worker"] as const;
type ForkMode = typeof FORK_MODES[number];
const READ_ONLY: Right[] = ["read", "diff"];
/** Largest message body. */
export const MAX_MESSAGE_CHARS = 64 * 1024;

/** The image-shaped view of a running process (what a fork copies). */
function _imageOf(p: ProcessRecord): AgentImage {
  return {
    name: p.image,
    description: "",
    system_prompt: p.system_prompt,
    tools: p.tools,
    capabilities: [],
    policy: p.policy,
    required_capabilities: [],
    budgets: p.budgets,
  };
}

/** A child's model: its own script (stored once as its input), or the parent's kind from scratch. */
function _childModel(call: Call): { model: ModelState | null; modelInput?: unknown } {
  if (call.args.script !== undefined) {
    const steps = parseScript(call.args.script);
    return { model: { kind: "scripted", state: { position: 0 } }, modelInput: { steps } };
  }
  return { model: call.proc.model ? { kind: call.proc.model.kind, state: {} } : null };
}

async function _putGoal(
  k: Kernel,
  child: ProcessRecord,
  goal: string,
  label: Label,
): Promise<void> {
  await k.insertObject({
    namespace: child.namespace,
    kind: "goal",
    name: "goal",
    label,
    payload: { text: goal },
    created_by: child.ppid ?? child.pid,
  });
}

async function _copyMemory(call: Call, k: Kernel, to: ProcessRecord): Promise<void> {
  const from = call.proc;
  for (const o of await k.store.listObjects(from.namespace)) {
    if (o.kind === "goal" && o.name === "goal") continue;
    // A copy is stored anew: the forking process pays for it.
    chargeStore(call, storeBytes(JSON.stringify(o.payload) ?? ""));
    await k.insertObject({
      namespace: to.namespace,
      kind: o.kind,
      // Step records are named step-<n> by the scheduler; the child numbers its own.
      name: o.kind === "tool_result" ? null : o.name,
      label: o.label,
      payload: o.payload,
      derived_from: [o.oid],
      created_by: o.created_by,
    });
  }
}

function _capList(call: Call): CapabilitySpec[] {
  const v = call.args.capabilities ?? [];
  if (!Array.isArray(v)) throw invalid(`${call.name}.capabilities`, "must be an array");
  return v.map((c, i) => parseCapabilitySpec(c, `${call.name}.capabilities[${i}]`));
}

/** Plan which delegations a fork makes, checking all of them before anything is created. */
function _plan(
  call: Call,
  mode: ForkMode,
  caps: Capability[],
): { parent: Capability; spec: CapabilitySpec }[] {
  const now = call.k.providers.clock.now();
  const ownNs = `object_namespace:${call.proc.namespace}`;
  if (mode === "restricted" || mode === "worker") {
    const unchecked = call.k.ablated("no-delegation-narrowing");
    return _capList(call).map((spec) => {
      const { cap, why } = findDelegable(caps, spec, now);
      // Benchmark ablation only: delegate as asked, from any live allow the caller holds.
      const any = unchecked ? caps.find((c) => c.effect === "allow" && isLive(c, now)) : null;
      if (!cap && !any) throw denied(`${call.name}: cannot delegate ${spec.resource}: ${why}`);
      return { parent: (cap ?? any)!, spec };
    });
  }
  const plan: { parent: Capability; spec: CapabilitySpec }[] = [];
  for (const c of caps) {
    if (!isLive(c, now) || c.effect !== "allow" || !c.delegable || c.constraints.binding) continue;
    if (c.uses_remaining !== null || c.resource === ownNs) continue;
    const rights = mode === "speculative"
      ? c.rights.filter((r) => READ_ONLY.includes(r))
      : c.rights;
    if (rights.length === 0) continue;
    plan.push({
      parent: c,
      spec: { resource: c.resource, rights, expires_at: c.expires_at, delegable: c.delegable },
    });
  }
  return plan;
}

async function _newChild(
  call: Call,
  k: Kernel,
  origin: string,
  goal: string,
  tools: string[],
): Promise<ProcessRecord> {
  // What the child is given to store (its goal, its script) counts as the
  // parent's; then the child's budgets come out of what the parent has left
  // (see runtime/budgets.ts), taken at once from the limits as they stand now:
  // spawns in flight together each take from what the others left.
  const asked = _budgetsArg(call);
  chargeStore(call, storeBytes(goal) + storeBytes(JSON.stringify(call.args.script) ?? ""));
  const { child, parent } = carveBudgets(
    k.budgets(call.proc),
    k.usage(call.proc),
    asked,
    `${call.name}.budgets`,
  );
  await k.setBudgets(call.proc, parent);
  return await k.createProcess({
    ppid: call.proc.pid,
    image: { ..._imageOf(call.proc), budgets: child },
    workspace: call.proc.workspace,
    cwd: call.proc.cwd,
    goal,
    taint: call.proc.taint,
    tools,
    jit_tools: _jitToolsArg(call),
    ...(await _inheritModel(call, k, _childModel(call))),
    origin,
  });
}

/**
 * A child of a model-driven parent runs the same model, chosen by the host
 * for the parent (its stored input), with a conversation of its own that
 * starts from its goal.
 */
async function _inheritModel(
  call: Call,
  k: Kernel,
  child: { model: ModelState | null; modelInput?: unknown },
): Promise<{ model: ModelState | null; modelInput?: unknown }> {
  if (child.modelInput !== undefined || !child.model || child.model.kind === "scripted") {
    return child;
  }
  const input = await k.store.getModelInput(call.proc.pid);
  return input === null ? child : { ...child, modelInput: input };
}

/** JIT tools the parent delegates by name (none unless listed). */
function _jitToolsArg(call: Call): Record<string, JitToolRef> {
  const v = call.args.jit_tools;
  if (v === undefined) return {};
  if (!Array.isArray(v)) throw invalid(`${call.name}.jit_tools`, "must be an array of tool names");
  const out: Record<string, JitToolRef> = {};
  v.forEach((t, i) => {
    if (typeof t !== "string" || !Object.hasOwn(call.proc.jit_tools ?? {}, t)) {
      throw invalid(
        `${call.name}.jit_tools[${i}]`,
        `'${String(t)}' is not in the caller's JIT tools`,
      );
    }
    out[t] = call.proc.jit_tools[t];
  });
  return out;
}

/** Budgets asked for the child (each at most what the parent has left); default half. */
function _budgetsArg(call: Call): Partial<Budgets> {
  const v = call.args.budgets;
  if (v === undefined) return {};
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw invalid(`${call.name}.budgets`, "must be an object");
  }
  const out: Partial<Record<BudgetName, number | null>> = {};
  for (const [name, n] of Object.entries(v)) {
    if (!(BUDGET_NAMES as string[]).includes(name)) {
      throw invalid(`${call.name}.budgets.${name.slice(0, 40)}`, "unknown budget");
    }
    if (n !== null && (!Number.isSafeInteger(n) || (n as number) < 1)) {
      throw invalid(`${call.name}.budgets.${name}`, "must be a positive integer or null");
    }
    out[name as BudgetName] = n as number | null;
  }
  return out as Partial<Budgets>;
}

function _toolsArg(call: Call): string[] {
  const v = call.args.tools;
  if (v === undefined) return [...call.proc.tools];
  if (!Array.isArray(v)) throw invalid(`${call.name}.tools`, "must be an array of tool names");
  return v.map((t, i) => {
    // A child's tool table can only be a subset of its parent's.
    if (typeof t !== "string" || !call.proc.tools.includes(t)) {
      throw invalid(`${call.name}.tools[${i}]`, `'${String(t)}' is not in the caller's tool table`);
    }
    return t;
  });
}

async function _direct(call: Call, pid: number): Promise<ProcessRecord> {
  const child = await call.k.store.getProcess(pid);
  if (!child || child.ppid !== call.proc.pid) {
    throw denied(`${call.name}: process ${pid} is not a direct child of ${call.proc.pid}`);
  }
  return child;
}

const spawn: Primitive = {
  fields: ["goal", "tools", "jit_tools", "script", "budgets"],
  async run(call) {
    const goal = str(call, "goal", 100_000);
    const tools = _toolsArg(call);
    _childModel(call);
    call.target = "process:spawn";
    await authorize(call, { resource: call.target, right: "execute" });
    // One budget change of this process at a time (see Kernel.withBudgets).
    const child = await call.k.withBudgets(call.proc.pid, () =>
      call.k.atomically(async (k) => {
        const child = await _newChild(call, k, "spawn", goal, tools);
        await _putGoal(k, child, goal, call.proc.taint);
        return child;
      }));
    return { pid: child.pid };
  },
};

const fork: Primitive = {
  fields: ["mode", "goal", "capabilities", "tools", "jit_tools", "script", "budgets"],
  async run(call) {
    const mode = call.args.mode as ForkMode;
    if (!FORK_MODES.includes(mode)) {
      throw invalid(`${call.name}.mode`, `must be one of ${FORK_MODES.join(", ")}`);
    }
    const goal = optStr(call, "goal", 100_000) ?? call.proc.goal;
    const tools = _toolsArg(call);
    _childModel(call);
    if ((mode === "copy" || mode === "speculative") && call.args.capabilities !== undefined) {
      throw invalid(`${call.name}.capabilities`, `not used in ${mode} mode`);
    }
    call.target = "process:spawn";
    await authorize(call, { resource: call.target, right: "execute" });
    const plan = _plan(call, mode, await call.k.store.capabilitiesOf(call.proc.pid));
    // All or nothing: a failed delegation leaves no half-made child behind.
    const child = await call.k.withBudgets(call.proc.pid, () =>
      call.k.atomically(async (k) => {
        const child = await _newChild(call, k, `fork:${mode}`, goal, tools);
        await _putGoal(k, child, goal, call.proc.taint);
        if (mode !== "worker") await _copyMemory(call, k, child);
        for (const { parent, spec } of plan) await delegate(k, parent, child.pid, spec);
        await propagateRestrictions(k, call.proc.pid, child.pid);
        return child;
      }));
    return { pid: child.pid, mode, delegated: plan.length };
  },
};

const exec: Primitive = {
  fields: ["image"],
  async run(call) {
    const name = str(call, "image", 128);
    call.target = `image:${name}`;
    await authorize(call, { resource: call.target, right: "execute" });
    const image = await call.k.store.getImage(name);
    if (!image) throw new LibosError("ENOENT", `${call.name}.image: no image '${name}'`);
    // exec never grants: the process must already hold what the image requires.
    const caps = await call.k.store.capabilitiesOf(call.proc.pid);
    const now = call.k.providers.clock.now();
    for (const req of image.required_capabilities) {
      for (const right of req.rights) {
        const held = caps.some((c) =>
          isLive(c, now) && c.effect === "allow" && !c.constraints.binding &&
          c.rights.includes(right) && resourceCovers(c.resource, req.resource)
        );
        if (!held) {
          throw denied(
            `${call.name} ${name}: requires ${right} on ${req.resource}, which the process does not hold`,
          );
        }
      }
    }
    // Policy and budgets were set by the host at launch and stay: exec cannot loosen them.
    await call.k.saveProcess(call.proc.pid, {
      image: image.name,
      tools: image.tools,
      system_prompt: image.system_prompt,
    });
    await call.k.emit("process.exec", `pid:${call.proc.pid}`, call.target, {}, call.correlationId);
    return { pid: call.proc.pid, image: image.name };
  },
};

const wait: Primitive = {
  fields: ["pid"],
  async run(call) {
    const child = await _direct(call, pidArg(call));
    call.target = `process:${child.pid}`;
    if (!isTerminal(child.status)) {
      call.k.noteWaitTarget(call.proc.pid, child.pid);
      throw new LibosError("EAGAIN", `${call.name}: process ${child.pid} is ${child.status}`);
    }
    // The result (and the code) come from the child: its taint comes with them.
    await taint(call, child.taint);
    // What the child did not use of its budgets comes back, once (waits in flight
    // together: the first one claims it, at once).
    if (!child.budgets_returned && call.k.claimBudgetReturn(child.pid)) {
      // Added to the limits as they stand (a spawn may have taken some since this
      // call began), and stored with the child's mark.
      await call.k.withBudgets(call.proc.pid, () =>
        call.k.atomically(async (k) => {
          await k.saveProcess(child.pid, { budgets_returned: true });
          const mine = k.budgets(call.proc);
          await k.setBudgets(
            call.proc,
            returnBudgets(mine, unusedBudgets(child.budgets, child.usage)),
          );
        }));
    }
    return {
      pid: child.pid,
      status: child.status,
      exit_code: child.exit_code,
      result: child.exit_reason,
    };
  },
};

const signal: Primitive = {
  fields: ["pid", "signal"],
  async run(call) {
    const child = await _direct(call, pidArg(call));
    const sig = call.args.signal;
    call.target = `process:${child.pid}`;
    const source = `pid:${call.proc.pid}`;
    switch (sig) {
      case "pause":
        await call.k.transition(child.pid, "paused", {}, source);
        break;
      case "resume":
        await call.k.transition(child.pid, "runnable", {}, source);
        break;
      case "cancel":
        if (child.status === "running") {
          await call.k.saveProcess(child.pid, { cancel_requested: true });
        } else {
          await call.k.transition(child.pid, "killed", { exit_reason: "cancelled" }, source);
        }
        break;
      case "terminate":
        await call.k.transition(child.pid, "killed", { exit_reason: "terminated" }, source);
        break;
      default:
        throw invalid(`${call.name}.signal`, "must be pause, resume, cancel or terminate");
    }
    await call.k.emit("process.signal", source, call.target, { signal: sig }, call.correlationId);
    return { pid: child.pid, signal: sig };
  },
};

const exit: Primitive = {
  fields: ["code", "result"],
  async run(call) {
    const code = optInt(call, "code", 0, 255) ?? 0;
    let result = optStr(call, "result", 100_000) ?? null;
    call.target = `process:${call.proc.pid}`;
    // The result is stored: past max_store_bytes the process still ends, without it.
    const bytes = result === null ? 0 : storeBytes(result);
    if (fitsStore(call, bytes)) chargeStore(call, bytes);
    else result = `[a result of ${bytes} bytes was dropped: over max_store_bytes]`;
    await call.k.transition(call.proc.pid, "exited", { exit_code: code, exit_reason: result });
    await call.k.emit(
      "process.exited",
      `pid:${call.proc.pid}`,
      call.target,
      { code },
      call.correlationId,
    );
    return { pid: call.proc.pid, exit_code: code };
  },
};

const send: Primitive = {
  fields: ["pid", "body", "kind"],
  async run(call) {
    const to = pidArg(call);
    const kind = call.args.kind ?? "normal";
    if (kind !== "normal" && kind !== "interrupt") {
      throw invalid(`${call.name}.kind`, "must be normal or interrupt");
    }
    const json = JSON.stringify(call.args.body);
    if (json === undefined) throw invalid(`${call.name}.body`, "is required JSON");
    if (json.length > MAX_MESSAGE_CHARS) throw invalid(`${call.name}.body`, "message too large");
    const target = await call.k.store.getProcess(to);
    const related = target && (target.ppid === call.proc.pid || call.proc.ppid === to);
    if (!target || !related) {
      throw denied(`${call.name}: process ${to} is neither parent nor child of ${call.proc.pid}`);
    }
    if (isTerminal(target.status)) {
      throw new LibosError("ESTATE", `${call.name}: process ${to} has ended`);
    }
    call.target = `process:${to}`;
    chargeStore(call, storeBytes(json));
    const m = await call.k.store.insertMessage({
      from_pid: call.proc.pid,
      to_pid: to,
      kind,
      // Messages carry the sender's label: reading one raises the receiver's.
      body: { data: JSON.parse(json), label: call.proc.taint },
      created_at: call.k.now(),
    });
    await call.k.emit(
      "message.sent",
      `pid:${call.proc.pid}`,
      call.target,
      { msg_id: m.msg_id, kind },
      call.correlationId,
      kind === "interrupt" ? 2 : 0,
    );
    return { msg_id: m.msg_id };
  },
};

const recv: Primitive = {
  fields: ["limit"],
  async run(call) {
    const limit = optInt(call, "limit", 1, 1000) ?? 100;
    call.target = `process:${call.proc.pid}`;
    const msgs = await call.k.store.takeMessages(call.proc.pid, limit);
    const out = msgs.map((m) => {
      const b = m.body as { data: unknown; label: Label };
      return { msg_id: m.msg_id, from: m.from_pid, kind: m.kind, body: b.data, label: b.label };
    });
    // The result is labelled with the caller's taint too, as it always was.
    await taint(call, maxLabel(call.proc.taint, ...out.map((m) => m.label)));
    return out;
  },
};

const self: Primitive = {
  fields: [],
  run(call) {
    const p = call.proc;
    call.target = `process:${p.pid}`;
    return Promise.resolve({
      pid: p.pid,
      ppid: p.ppid,
      lineage: p.lineage,
      image: p.image,
      status: p.status,
      cwd: p.cwd,
      namespace: p.namespace,
      tools: p.tools,
      taint: p.taint,
      goal: p.goal,
    });
  },
};

const chdir: Primitive = {
  fields: ["path"],
  async run(call) {
    const raw = str(call, "path", 4096);
    call.target = `filesystem:workspace:${raw}`; // as asked, until resolved (a refusal names it)
    const p = await resolvePath(call, raw);
    call.target = p.resource;
    await authorize(call, { resource: p.resource, right: "read" });
    const s = await call.k.providers.fs.lstat(p.real);
    if (s.kind !== "dir") throw invalid(`${call.name}.path`, "is not a directory");
    await call.k.saveProcess(call.proc.pid, { cwd: p.rel });
    return { cwd: p.rel };
  },
};

/** The process family. */
export const PROCESS: Record<string, Primitive> = {
  "process.spawn": spawn,
  "process.fork": fork,
  "process.exec": exec,
  "process.wait": wait,
  "process.signal": signal,
  "process.exit": exit,
  "process.send": send,
  "process.recv": recv,
  "process.self": self,
  "process.chdir": chdir,
};
