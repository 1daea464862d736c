/**
 * checkpoint.* primitives: create, list, inspect, diff, restore, fork and
 * commit a checkpoint of a process subtree, on `checkpoint:process:<pid>`
 * (`write` to create, `read` to list, inspect and diff, `execute` to restore
 * and fork, `materialize` to commit to an image). A right over a process
 * covers its descendants, and a process acts only on itself and its
 * descendants, whatever it holds.
 *
 * What a checkpoint may give back is decided here:
 * - restore puts the subtree back in place (same pids): records, objects,
 *   links, step index, model log, mailboxes. It never gives back authority:
 *   capabilities keep their current status and uses (a revoked, expired or
 *   used-up capability stays so), ALLOW capabilities granted since are
 *   revoked, DENY and ASK capabilities granted since stay; labels and taint
 *   never go down; usage (budgets) is never given back. Processes made since
 *   are killed. External effects are not undone: the result reports them.
 * - fork copies the subtree under new pids and oids; each copy holds at most
 *   what its original still holds now, and only what a `process.fork` copy
 *   could be delegated (live, delegable, unlimited ALLOW), plus every DENY
 *   and ASK its original holds. Copies an agent makes run on its budgets
 *   (each gets a share of half of what it has left, and no more than its
 *   original had left); a host's keep their originals' limits.
 * - commit makes an image (tools, prompt, policy, budgets, required
 *   capabilities) and grants nothing.
 *
 * The exported operations are what the host calls too (the CLI, the
 * console): without a capability, audited as the host by `host/runtime.ts`.
 * @module
 */
import {
  capView,
  CHECKPOINT_FORMAT,
  type CheckpointDoc,
  decodeCheckpoint,
  diffSubtrees,
  type EffectsSince,
  effectsView,
  encodeCheckpointText,
  objectView,
  type ProcessDiff,
  type ProcessSnapshot,
  type ProcessSnapshotText,
  readSubtree,
  remapActor,
  remapResource,
  snapshotProcess,
  snapshotProcessText,
} from "../runtime/checkpoint.ts";
import { decide, isLive, MAX_DELEGATION_DEPTH } from "../runtime/capabilities.ts";
import { canonicalJson, payloadRef } from "../runtime/canonical.ts";
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import { parseImage } from "../runtime/images.ts";
import type { Kernel } from "../runtime/kernel.ts";
import { guardText, maxLabel, mayFlow } from "../runtime/labels.ts";
import { isTerminal } from "../runtime/lifecycle.ts";
import type { LedgerMark } from "../runtime/store/store.ts";
import { shareBudgets, spentBudgets, storeBytes } from "../runtime/budgets.ts";
import type {
  Budgets,
  Capability,
  CapabilitySpec,
  CheckpointMeta,
  CheckpointRecord,
  JitToolRef,
  Label,
  MemoryObject,
  ProcessRecord,
  ProcessStatus,
  Right,
} from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { type Call, chargeStore, optStr, pidArg, type Primitive, str } from "./call.ts";
import { propagateRestrictions } from "./capability.ts";
import { checkFlow } from "./filesystem.ts";
import { newOid } from "../runtime/oids.ts";

/** What creating a checkpoint returns. */
export interface CheckpointSummary {
  /** Its id. */
  checkpoint_id: string;
  /** The subtree's root. */
  pid: number;
  /** Its label. */
  label: string | null;
  /** Processes in it. */
  processes: number;
  /** Objects in it. */
  objects: number;
  /** sha256 of its canonical JSON. */
  sha256: string;
}

/** What a restore returns. */
export interface RestoreResult {
  /** The checkpoint. */
  checkpoint_id: string;
  /** The subtree's root. */
  pid: number;
  /** Processes put back as they were. */
  restored: number[];
  /** Processes made after the checkpoint, killed. */
  killed: number[];
  /** ALLOW capabilities granted after the checkpoint, revoked (with what was delegated from them). */
  revoked: string[];
  /** What happened outside since the checkpoint: not undone. */
  effects_since: EffectsSince;
}

/** What a fork returns. */
export interface ForkResult {
  /** The checkpoint. */
  checkpoint_id: string;
  /** The new subtree's root. */
  pid: number;
  /** Each original pid's copy. */
  pids: Record<string, number>;
  /** Capabilities copied, and those left out with why. */
  capabilities: { copied: number; dropped: { pid: number; cap_id: string; why: string }[] };
}

/** A diff of a checkpoint against another, or against now. */
export interface CheckpointDiff {
  /** The checkpoint compared. */
  checkpoint_id: string;
  /** The other checkpoint, or null for the subtree as it is now. */
  other: string | null;
  /** The subtree's root. */
  pid: number;
  /** Per process, `checkpoint_id` -> `other` (or now). */
  processes: ProcessDiff[];
  /** Ledger entries between the two (since the checkpoint, against now). */
  effects_since: EffectsSince;
}

const _ID = /^ckpt_[A-Za-z0-9-]{1,64}$/;

/** A checkpoint row, or ENOENT naming `field`. */
async function _row(k: Kernel, id: string, field = "checkpoint_id"): Promise<CheckpointRecord> {
  const row = _ID.test(id) ? await k.store.getCheckpoint(id) : null;
  if (!row) throw new LibosError("ENOENT", `${field}: no checkpoint ${id}`);
  return row;
}

/** A checkpoint's document, its hash checked first (EINTEGRITY when altered). */
export async function loadCheckpoint(
  k: Kernel,
  id: string,
  field?: string,
): Promise<CheckpointDoc> {
  return decodeCheckpoint(await _row(k, id, field));
}

/** A status as it is put back: a parked process retries its action (nothing waits on a lost wakeup). */
function _resumedStatus(r: ProcessRecord): ProcessStatus {
  if (r.status === "running") return "runnable";
  if (r.status.startsWith("waiting_") && r.pending) return "runnable";
  return r.status;
}

/** Processes of `pids` with a step under way elsewhere (another runtime, or a crash not recovered). */
function _running(procs: ProcessRecord[], except: number | null): ProcessRecord | undefined {
  return procs.find((p) => p.status === "running" && p.pid !== except);
}

function _busy(p: ProcessRecord): LibosError {
  return new LibosError(
    "EBUSY",
    `checkpoint: process ${p.pid} is running a step; a checkpoint is taken or restored between quanta`,
  );
}

// ---- create

/** Options of {@link createCheckpoint}. */
export interface CreateOptions {
  /** A label to find it by. */
  label: string | null;
  /** Who asks: `pid:<n>` or `host`. */
  by: string;
  /**
   * The root itself asks, from its own `checkpoint_create` tool step: it is
   * recorded as it will be when that step ends, with this call's result as
   * the step's result.
   */
  self?: { pid: number; tool: string } | null;
  /** Count the checkpoint's size before it is stored (throws to refuse it: nothing is kept). */
  charge?: (bytes: number) => void;
}

/**
 * Checkpoint the subtree rooted at `root` at a quiescent point: every process
 * of it between quanta (the scheduler holds them there while the snapshot is
 * read), parked, paused or ended.
 */
export async function createCheckpoint(
  k: Kernel,
  root: number,
  opts: CreateOptions,
): Promise<CheckpointSummary> {
  const pids = await k.store.subtreePids(root);
  if (pids.length === 0) throw new LibosError("ENOENT", `pid: no process ${root}`);
  const self = opts.self ?? null;
  const release = await k.quiesce(pids, self?.pid ?? null);
  try {
    return await k.atomically(async (tx) => {
      const procs = await readSubtree(tx.store, root);
      const busy = _running(procs, self?.pid ?? null);
      if (busy) throw _busy(busy);
      const id = `ckpt_${crypto.randomUUID()}`;
      const at = tx.now();
      // Objects as the store's canonical texts, spliced in: never parsed here.
      const processes: ProcessSnapshotText[] = [];
      for (const p of procs) processes.push(await snapshotProcessText(tx.store, p));
      let objects = processes.reduce((n, p) => n + p.objects.length, 0);
      if (self) objects++;
      const summary = { checkpoint_id: id, pid: root, label: opts.label, processes: procs.length };
      const value = { ...summary, objects };
      if (self) await _asAfterStep(tx, processes[0], self.tool, value, at);
      const head: Omit<CheckpointDoc, "processes"> = {
        format: CHECKPOINT_FORMAT,
        checkpoint_id: id,
        root,
        label: opts.label,
        created_at: at,
        created_by: opts.by,
        ledger: await tx.store.ledgerMark(),
      };
      const { body, sha256 } = encodeCheckpointText(head, processes);
      opts.charge?.(storeBytes(body));
      await tx.store.insertCheckpoint({
        checkpoint_id: id,
        root_pid: root,
        label: opts.label,
        created_at: at,
        created_by: opts.by,
        sha256,
        size: body.length,
        processes: procs.length,
        objects,
        body,
      });
      await tx.emit("checkpoint.created", opts.by, `checkpoint:process:${root}`, {
        checkpoint_id: id,
        sha256,
        processes: procs.length,
        objects,
      });
      return { ...value, sha256 };
    });
  } finally {
    await release();
  }
}

/**
 * The root takes its own checkpoint inside its step: record it as it will be
 * once the step ends (runnable, no pending action) with the step's result,
 * this call's value without the hash (the document cannot hold its own hash).
 */
async function _asAfterStep(
  k: Kernel,
  s: ProcessSnapshotText,
  tool: string,
  value: unknown,
  at: string,
): Promise<void> {
  const r = s.record;
  const step = await k.store.stepCount(r.pid);
  const result: MemoryObject = {
    oid: newOid(),
    namespace: r.namespace,
    kind: "tool_result",
    name: `step-${step}`,
    version: 1,
    label: r.taint,
    payload: { step, tool, ok: true, value },
    derived_from: [],
    created_by: r.pid,
    created_at: at,
    updated_at: at,
  };
  s.objects.push(canonicalJson(result));
  s.steps.push({ step, oid: result.oid });
  s.record = { ...r, status: "runnable", pending: null };
}

// ---- restore

/** Options of {@link restoreCheckpoint}. */
export interface RestoreOptions {
  /** Who asks: `pid:<n>` or `host`. */
  by: string;
  /** The calling process (it may not be in the subtree), or null for the host. */
  caller: number | null;
  /** Count the bytes the restore stores anew (objects put back as new versions); throws to refuse. */
  charge?: (bytes: number) => void;
}

/**
 * Put the subtree of checkpoint `id` back as it was, in place, at a quiescent
 * point. See the module notes for what is never given back.
 */
export async function restoreCheckpoint(
  k: Kernel,
  id: string,
  opts: RestoreOptions,
): Promise<RestoreResult> {
  const doc = await loadCheckpoint(k, id);
  const snapPids = doc.processes.map((p) => p.record.pid);
  const all = [...new Set([...snapPids, ...await k.store.subtreePids(doc.root)])].sort((a, b) =>
    a - b
  );
  if (opts.caller !== null && all.includes(opts.caller)) {
    throw new LibosError(
      "ESTATE",
      `checkpoint_id: process ${opts.caller} is in the subtree of ${id}; a subtree is restored by an ancestor or the host, never from inside`,
    );
  }
  const release = await k.quiesce(all, null);
  try {
    return await k.atomically(async (tx) => {
      const procs: ProcessRecord[] = [];
      for (const pid of all) procs.push(await tx.process(pid));
      const busy = _running(procs, null);
      if (busy) throw _busy(busy);
      const since = effectsView(await tx.store.ledgerSince(doc.ledger, all));
      const at = tx.now();
      const snap = new Set(snapPids);
      const killed = await _killNewcomers(tx, procs.filter((p) => !snap.has(p.pid)), id);
      const revoked = await _revokeNewAllows(tx, doc, all, opts.by);
      for (const s of doc.processes) await _restoreProcess(tx, s, at, opts.charge);
      await _closeNewRequests(tx, snapPids, doc.created_at, id);
      await tx.emit("checkpoint.restored", opts.by, `checkpoint:process:${doc.root}`, {
        checkpoint_id: id,
        restored: snapPids.length,
        killed: killed.length,
        revoked: revoked.length,
        effects_since: since.effects_total,
        model_calls_since: since.model_calls_total,
      });
      return {
        checkpoint_id: id,
        pid: doc.root,
        restored: snapPids,
        killed,
        revoked,
        effects_since: since,
      };
    });
  } finally {
    await release();
  }
}

/** Processes made after the checkpoint end: the restored subtree never had them. */
async function _killNewcomers(k: Kernel, procs: ProcessRecord[], id: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of procs) {
    if (isTerminal(p.status)) continue;
    await k.transition(p.pid, "killed", {
      exit_reason: `restored to ${id}: made after the checkpoint`,
    }, "checkpoint");
    out.push(p.pid);
  }
  return out;
}

/**
 * ALLOW capabilities the subtree's processes got after the checkpoint are
 * revoked (cascading to what was delegated from them); every capability in
 * the checkpoint keeps its current status and uses; DENY and ASK
 * capabilities got since stay.
 */
async function _revokeNewAllows(
  k: Kernel,
  doc: CheckpointDoc,
  pids: number[],
  by: string,
): Promise<string[]> {
  const had = new Set(doc.processes.flatMap((p) => p.capabilities.map((c) => c.cap_id)));
  const out: string[] = [];
  for (const pid of pids) {
    for (const c of await k.store.capabilitiesOf(pid)) {
      if (had.has(c.cap_id) || c.effect !== "allow" || c.status !== "active") continue;
      for (const rid of await k.store.revokeCascade(c.cap_id)) {
        out.push(rid);
        await k.emit("capability.revoked", by, rid, {
          root: c.cap_id,
          checkpoint: doc.checkpoint_id,
        });
      }
    }
  }
  return out;
}

/** Put one process back: its objects, links, steps, model log, mailbox and record. */
async function _restoreProcess(
  k: Kernel,
  s: ProcessSnapshot,
  at: string,
  charge?: (bytes: number) => void,
): Promise<void> {
  const pid = s.record.pid;
  const cur = await k.process(pid);
  await _restoreObjects(k, s, cur.namespace, at, charge);
  await _restoreSteps(k, pid, s.steps);
  await _restoreLog(k, pid, s.model_log);
  await _restoreMailbox(k, s);
  const r = s.record;
  const patch: Partial<ProcessRecord> = {
    status: _resumedStatus(r),
    image: r.image,
    cwd: r.cwd,
    tools: r.tools,
    jit_tools: r.jit_tools,
    system_prompt: r.system_prompt,
    goal: r.goal,
    // Labels never go down: what the process read since stays read.
    taint: maxLabel(r.taint, cur.taint),
    model: r.model,
    pending: r.pending,
    exit_code: r.exit_code,
    exit_reason: r.exit_reason,
    cancel_requested: r.cancel_requested,
    updated_at: at,
  };
  // Budgets are never given back: a process whose parent already got back
  // what it left (it waited for it) has nothing left to spend.
  if (cur.budgets_returned) patch.budgets = spentBudgets(cur.budgets, cur.usage);
  const now = await k.process(pid);
  if (!(await k.store.updateProcess(pid, patch, now.status))) {
    throw new LibosError("ESTATE", `checkpoint: process ${pid} changed while it was restored`);
  }
  k.dropConversation(pid);
  k.dropBudgets(pid);
}

async function _restoreObjects(
  k: Kernel,
  s: ProcessSnapshot,
  namespace: string,
  at: string,
  charge?: (bytes: number) => void,
): Promise<void> {
  const current = await k.store.listObjectVersions(namespace);
  const want = new Set(s.objects.map((o) => o.oid));
  await k.store.removeObjects(current.filter((o) => !want.has(o.oid)).map((o) => o.oid));
  const have = new Map(current.map((o) => [o.oid, o]));
  const back: MemoryObject[] = [];
  for (const o of s.objects) {
    const c = have.get(o.oid);
    // A version is never reused for other content: the same version is the same object.
    if (c && c.version === o.version) continue;
    back.push({ ...o, label: c ? maxLabel(o.label, c.label) : o.label, updated_at: at });
  }
  // Each is stored as a new version (versions are kept).
  if (charge && back.length) charge(storeBytes(JSON.stringify(back.map((o) => o.payload))));
  await k.store.restoreObjects(back, have);
  const key = (l: { from_oid: string; to_oid: string; relation: string }) =>
    `${l.from_oid}\u0000${l.to_oid}\u0000${l.relation}`;
  const links = await k.store.linksFromNamespace(namespace);
  const wantLinks = new Set(s.links.map(key));
  await k.store.removeLinks(links.filter((l) => !wantLinks.has(key(l))));
  const haveLinks = new Set(links.map(key));
  for (const l of s.links) if (!haveLinks.has(key(l))) await k.store.insertLink(l);
}

/** The step index as it was: what differs from the checkpoint on is dropped and put back. */
async function _restoreSteps(
  k: Kernel,
  pid: number,
  steps: { step: number; oid: string }[],
): Promise<void> {
  const idx = await k.store.stepIndex(pid);
  let i = 0;
  while (
    i < idx.length && i < steps.length && idx[i].step === steps[i].step &&
    idx[i].oid === steps[i].oid
  ) i++;
  if (i < idx.length) await k.store.truncateSteps(pid, idx[i].step);
  for (const st of steps.slice(i)) await k.store.insertStep(pid, st.step, st.oid);
}

/** The model log as it was: the common prefix stays, the rest is replaced. */
async function _restoreLog(k: Kernel, pid: number, entries: unknown[]): Promise<void> {
  const log = await k.store.readModelLog(pid, 0);
  let i = 0;
  while (
    i < log.length && i < entries.length && canonicalJson(log[i]) === canonicalJson(entries[i])
  ) i++;
  if (i < log.length) await k.store.truncateModelLog(pid, i);
  if (i < entries.length) await k.store.appendModelLog(pid, entries.slice(i));
}

async function _restoreMailbox(k: Kernel, s: ProcessSnapshot): Promise<void> {
  const pid = s.record.pid;
  const box = await k.store.listMessages(pid);
  const shape = (ms: typeof box) => canonicalJson(ms.map((m) => [m.msg_id, m.kind, m.body]));
  if (shape(box) === shape(s.mailbox)) return;
  if (box.length) await k.store.takeMessages(pid, box.length);
  for (const m of s.mailbox) {
    await k.store.insertMessage({
      from_pid: m.from_pid,
      to_pid: pid,
      kind: m.kind,
      body: m.body,
      created_at: m.created_at,
    });
  }
}

/** Permission requests the restored processes made after the checkpoint were never asked by them. */
async function _closeNewRequests(
  k: Kernel,
  pids: number[],
  since: string,
  id: string,
): Promise<void> {
  for (const pid of pids) {
    for (const r of await k.store.listHumanRequests({ pid, status: "pending" })) {
      if (r.kind === "outcome" || r.created_at <= since) continue;
      await k.store.updateHumanRequest(r.request_id, {
        status: "expired",
        decided_by: `checkpoint: restored to ${id}`,
        decided_at: k.now(),
      }, "pending");
    }
  }
}

// ---- fork

/** Options of {@link forkCheckpoint}. */
export interface ForkOptions {
  /** Who asks: `pid:<n>` or `host`. */
  by: string;
  /** The process the new subtree's root becomes a child of (null: a root of its own). */
  parent: number | null;
  /**
   * The copies' budgets, one per process of the checkpoint in its order
   * (called inside the fork's transaction, so it may charge the caller).
   * Absent: each copy keeps its original's limits (a host's fork).
   */
  budgets?: (tx: Kernel, originals: ProcessRecord[], bytes: number) => Promise<Budgets[]>;
}

/**
 * Copy the subtree of checkpoint `id` under new pids, oids and capability
 * ids. Copies of running or parked processes are runnable (a parked action
 * is retried, so it asks again for itself); each copy's authority is
 * described in the module notes.
 */
export async function forkCheckpoint(
  k: Kernel,
  id: string,
  opts: ForkOptions,
): Promise<ForkResult> {
  const doc = await loadCheckpoint(k, id);
  const out = await k.atomically(async (tx) => {
    const at = tx.now();
    const parent = opts.parent === null ? null : await tx.process(opts.parent);
    const pids = new Map<number, number>();
    const oids = new Map<string, string>();
    for (const s of doc.processes) {
      for (const o of s.objects) oids.set(o.oid, newOid());
    }
    const budgets = opts.budgets
      ? await opts.budgets(
        tx,
        doc.processes.map((s) => s.record),
        storeBytes(JSON.stringify(doc.processes)),
      )
      : undefined;
    const copies: ProcessRecord[] = [];
    for (const [i, s] of doc.processes.entries()) {
      copies.push(
        await _copyProcess(tx, doc, s, parent, pids, oids, at, budgets?.[i] ?? s.record.budgets),
      );
    }
    const caps = new Map<string, string>();
    const dropped: ForkResult["capabilities"]["dropped"] = [];
    let copied = 0;
    for (const [i, s] of doc.processes.entries()) {
      await _copyContents(tx, s, copies[i], pids, oids, at);
      copied += await _copyCaps(tx, s, copies[i], pids, oids, caps, dropped, at);
      if (parent) await propagateRestrictions(tx, parent.pid, copies[i].pid);
    }
    const root = pids.get(doc.root)!;
    await tx.emit("checkpoint.forked", opts.by, `checkpoint:process:${doc.root}`, {
      checkpoint_id: id,
      pid: root,
      processes: copies.length,
    });
    return {
      checkpoint_id: id,
      pid: root,
      pids: Object.fromEntries([...pids].map(([a, b]) => [String(a), b])),
      capabilities: { copied, dropped },
    };
  });
  for (const pid of Object.values(out.pids)) k.admit(pid);
  return out;
}

async function _copyProcess(
  k: Kernel,
  doc: CheckpointDoc,
  s: ProcessSnapshot,
  parent: ProcessRecord | null,
  pids: Map<number, number>,
  oids: Map<string, string>,
  at: string,
  budgets: Budgets,
): Promise<ProcessRecord> {
  const r = s.record;
  const isRoot = r.pid === doc.root;
  const rootLineage = parent ? [...parent.lineage, parent.pid] : [];
  const lineage = isRoot ? rootLineage : [
    ...rootLineage,
    ...r.lineage.slice(r.lineage.indexOf(doc.root)).map((p) => pids.get(p)!),
  ];
  const jit: Record<string, JitToolRef> = {};
  for (const [name, ref] of Object.entries(r.jit_tools ?? {})) {
    jit[name] = { sha256: ref.sha256, artifact: oids.get(ref.artifact) ?? ref.artifact };
  }
  const rec = await k.store.insertProcess({
    ppid: isRoot ? parent?.pid ?? null : pids.get(r.ppid!)!,
    lineage,
    image: r.image,
    status: _resumedStatus(r),
    workspace: r.workspace,
    cwd: r.cwd,
    namespace: "",
    tools: [...r.tools],
    jit_tools: jit,
    system_prompt: r.system_prompt,
    goal: r.goal,
    policy: r.policy,
    taint: r.taint,
    budgets,
    usage: { quanta: 0, wall_ms: 0, syscalls: 0 },
    model: r.model,
    pending: _copiedAction(r),
    exit_code: r.exit_code,
    exit_reason: r.exit_reason,
    origin: `checkpoint:${doc.checkpoint_id}`,
    cancel_requested: false,
    created_at: at,
    updated_at: at,
  });
  pids.set(r.pid, rec.pid);
  const namespace = `proc:${rec.pid}`;
  await k.store.updateProcess(rec.pid, { namespace });
  // A copy owns its namespace of copies, as any new process owns its own.
  await k.grant(rec.pid, {
    resource: `object_namespace:${namespace}`,
    rights: ["read", "write", "link", "delete"],
    delegable: true,
  }, "kernel");
  await k.emit("process.created", "checkpoint", `pid:${rec.pid}`, {
    ppid: rec.ppid,
    image: r.image,
    origin: rec.origin,
    copy_of: r.pid,
  });
  return { ...rec, namespace };
}

/**
 * A copy's pending action. One whose outcome a human is asked about (a crash
 * caught it) is its original's question: the copy records its step as
 * unknown instead, and nothing is run again.
 */
function _copiedAction(r: ProcessRecord): ProcessRecord["pending"] {
  if (!r.pending?.outcome) return r.pending;
  const { outcome: _asked, journal: _done, ...action } = r.pending;
  return {
    ...action,
    error: {
      code: "EIO",
      message: "copied while its outcome was unknown (the runtime stopped in it); not run again",
    },
  };
}

/** Objects, links, steps, model input and log, mailbox of a copy. */
async function _copyContents(
  k: Kernel,
  s: ProcessSnapshot,
  copy: ProcessRecord,
  pids: Map<number, number>,
  oids: Map<string, string>,
  at: string,
): Promise<void> {
  const oid = (o: string) => oids.get(o) ?? o;
  for (const o of s.objects) {
    await k.store.insertObject({
      ...o,
      oid: oid(o.oid),
      namespace: copy.namespace,
      version: 1,
      derived_from: o.derived_from.map(oid),
      created_by: pids.get(o.created_by) ?? o.created_by,
      created_at: at,
      updated_at: at,
    });
  }
  for (const l of s.links) {
    await k.store.insertLink({
      from_oid: oid(l.from_oid),
      to_oid: oid(l.to_oid),
      relation: l.relation,
    });
  }
  for (const st of s.steps) await k.store.insertStep(copy.pid, st.step, oid(st.oid));
  if (s.model_input !== null && s.model_input !== undefined) {
    await k.store.putModelInput(copy.pid, s.model_input);
  }
  if (s.model_log.length) {
    await k.store.appendModelLog(
      copy.pid,
      s.model_log.map((e) => {
        const entry = e as { oid?: unknown };
        return typeof entry?.oid === "string" ? { ...entry, oid: oid(entry.oid) } : e;
      }),
    );
  }
  for (const m of s.mailbox) {
    await k.store.insertMessage({
      from_pid: m.from_pid === null ? null : pids.get(m.from_pid) ?? m.from_pid,
      to_pid: copy.pid,
      kind: m.kind,
      body: m.body,
      created_at: m.created_at,
    });
  }
}

/** Why an ALLOW capability of the checkpoint is not copied to a fork, or null. */
function _notCopied(c: Capability | undefined, nowMs: number): string | null {
  if (!c || !isLive(c, nowMs)) return "no longer live (revoked, expired or used up)";
  if (c.constraints.binding) return "a one-shot approval belongs to its process";
  if (c.uses_remaining !== null) return "use-limited: a use is never given twice";
  if (!c.delegable) return "not delegable";
  if (c.delegation_depth + 1 > MAX_DELEGATION_DEPTH) return "delegation depth";
  return null;
}

/**
 * A copy's capabilities: each ALLOW of the checkpoint its original still
 * holds live now and a `process.fork` copy could be delegated, under the
 * original (revoking the original revokes the copy), or under the copy of
 * the capability it was delegated from inside the subtree; and every live
 * DENY and ASK the original holds now. Returns how many were copied.
 */
async function _copyCaps(
  k: Kernel,
  s: ProcessSnapshot,
  copy: ProcessRecord,
  pids: Map<number, number>,
  oids: Map<string, string>,
  caps: Map<string, string>,
  dropped: ForkResult["capabilities"]["dropped"],
  at: string,
): Promise<number> {
  const orig = s.record;
  const nowMs = k.providers.clock.now();
  const current = new Map((await k.store.capabilitiesOf(orig.pid)).map((c) => [c.cap_id, c]));
  const ownNs = `object_namespace:${orig.namespace}`;
  let n = 0;
  const put = async (c: Capability, extra: Partial<Capability>) => {
    const cap: Capability = {
      ...c,
      cap_id: k.newId("cap"),
      subject: copy.pid,
      resource: remapResource(c.resource, pids, oids),
      constraints: { ...c.constraints },
      issued_by: remapActor(c.issued_by, pids),
      parent_cap_id: caps.get(c.parent_cap_id ?? "") ?? c.cap_id,
      delegation_depth: c.delegation_depth + 1,
      status: "active",
      created_at: at,
      ...extra,
    };
    await k.store.insertCapability(cap);
    caps.set(c.cap_id, cap.cap_id);
    n++;
  };
  for (const snap of s.capabilities) {
    if (snap.effect !== "allow" || snap.resource === ownNs) continue;
    const cur = current.get(snap.cap_id);
    const why = _notCopied(cur, nowMs);
    if (why) {
      if (snap.status === "active") dropped.push({ pid: orig.pid, cap_id: snap.cap_id, why });
      continue;
    }
    await put(cur!, { uses_remaining: null, revocable: true });
  }
  for (const c of current.values()) {
    if (c.effect === "allow" || !isLive(c, nowMs)) continue;
    await put(c, { revocable: false, parent_cap_id: c.cap_id });
  }
  if (n > 0) {
    await k.emit("capability.granted", "checkpoint", `pid:${copy.pid}`, { copied: n });
  }
  return n;
}

// ---- commit

/**
 * Turn checkpoint `id` into the image `name`: the root's tools, prompt,
 * policy, budgets and model, with the ALLOW capabilities it held as
 * required capabilities (what a process must already hold to exec into it).
 * An image grants nothing.
 */
export async function commitCheckpoint(
  k: Kernel,
  id: string,
  name: string,
  by: string,
  charge?: (bytes: number) => void,
): Promise<{ checkpoint_id: string; image: string; tools: string[]; granted: [] }> {
  const doc = await loadCheckpoint(k, id);
  const root = doc.processes[0];
  const r = root.record;
  const nowMs = k.providers.clock.now();
  const required: CapabilitySpec[] = [];
  for (const c of root.capabilities) {
    if (c.effect !== "allow" || !isLive(c, nowMs) || c.constraints.binding) continue;
    // Authority over one process or object is not something an image can ask for.
    if (/^(object|object_namespace|process|checkpoint):/.test(c.resource)) continue;
    if (c.resource === "process:spawn") continue;
    required.push({ resource: c.resource, rights: [...c.rights] });
  }
  const input = root.model_input as { config?: unknown } | null;
  const image = parseImage({
    name,
    description: `committed from checkpoint ${id} of process ${r.pid}` +
      (doc.label ? ` (${doc.label})` : ""),
    system_prompt: r.system_prompt,
    tools: r.tools.filter((t) => k.toolNames.includes(t)),
    capabilities: [],
    policy: r.policy,
    required_capabilities: required,
    budgets: r.budgets,
    ...(input && typeof input === "object" && input.config ? { model: input.config } : {}),
  }, k.toolNames);
  charge?.(storeBytes(JSON.stringify(image)));
  await k.store.putImage(image, by);
  await k.emit("checkpoint.committed", by, `image:${name}`, { checkpoint_id: id });
  return { checkpoint_id: id, image: name, tools: image.tools, granted: [] };
}

// ---- reading

/** Checkpoints of the subtree rooted at `pid` (metadata). */
export async function listCheckpoints(k: Kernel, pid: number): Promise<CheckpointMeta[]> {
  return await k.store.listCheckpoints(pid);
}

/** A name shown only when its object's label lets it out (as the console does). */
function _name(name: string | null, label: Label): string | null {
  return name === null ? null : guardText(label, name);
}

/** A checkpoint's contents without payloads (hash checked). */
export async function inspectCheckpoint(k: Kernel, id: string): Promise<Record<string, unknown>> {
  const row = await _row(k, id);
  const doc = decodeCheckpoint(row);
  return {
    checkpoint_id: id,
    pid: doc.root,
    label: doc.label,
    created_at: doc.created_at,
    created_by: doc.created_by,
    sha256: row.sha256,
    size: row.size,
    verified: true,
    processes: doc.processes.map((s) => ({
      pid: s.record.pid,
      ppid: s.record.ppid,
      image: s.record.image,
      status: s.record.status,
      taint: s.record.taint,
      cwd: s.record.cwd,
      tools: s.record.tools,
      jit_tools: Object.keys(s.record.jit_tools ?? {}),
      pending_tool: s.record.pending?.tool ?? null,
      model_log: s.model_log.length,
      steps: s.steps.length,
      mailbox: s.mailbox.length,
      links: s.links.length,
      objects: s.objects.map((o) => ({ ...objectView(o), name: _name(o.name, o.label) })),
      capabilities: s.capabilities.map(capView),
    })),
  };
}

/** Record fields a diff may show as they are: the rest only for processes within `normal`. */
const _PLAIN_FIELDS = new Set(["status", "ppid", "image", "cwd", "tools", "jit_tools", "taint"]);

/** A diff as shown: names by label, values of a process holding data above `normal` by hash. */
function _guardDiff(d: ProcessDiff, taint: Label): ProcessDiff {
  const fields: Record<string, [unknown, unknown]> = {};
  for (const [f, [a, b]] of Object.entries(d.fields)) {
    const hide = !_PLAIN_FIELDS.has(f) && !mayFlow(taint, "normal");
    fields[f] = hide ? [payloadRef(a, taint).preview, payloadRef(b, taint).preview] : [a, b];
  }
  const obj = <T extends { name: string | null; label: string }>(o: T): T => ({
    ...o,
    name: _name(o.name, o.label as Label),
  });
  return {
    ...d,
    fields,
    objects: {
      added: d.objects.added.map(obj),
      removed: d.objects.removed.map(obj),
      changed: d.objects.changed.map(([a, b]) => [obj(a), obj(b)]),
    },
  };
}

/**
 * How the subtree of checkpoint `id` differs in checkpoint `other` (same
 * root), or now when `other` is null; with the ledger entries in between.
 */
export async function diffCheckpoint(
  k: Kernel,
  id: string,
  other: string | null,
): Promise<CheckpointDiff> {
  const a = await loadCheckpoint(k, id);
  let after: ProcessSnapshot[];
  let from: LedgerMark = a.ledger;
  let until: LedgerMark | undefined;
  if (other !== null) {
    const b = await loadCheckpoint(k, other, "other");
    if (b.root !== a.root) {
      throw invalid("other", `${other} is a checkpoint of process ${b.root}, not ${a.root}`);
    }
    after = b.processes;
    const older = b.ledger.effects + b.ledger.model_calls < a.ledger.effects + a.ledger.model_calls;
    [from, until] = older ? [b.ledger, a.ledger] : [a.ledger, b.ledger];
  } else {
    after = [];
    for (const p of await readSubtree(k.store, a.root)) {
      after.push(await snapshotProcess(k.store, p));
    }
  }
  const pids = [...new Set([...a.processes, ...after].map((p) => p.record.pid))];
  const taints = new Map<number, Label>();
  for (const p of [...a.processes, ...after]) {
    taints.set(p.record.pid, maxLabel(taints.get(p.record.pid) ?? "public", p.record.taint));
  }
  const since = await k.store.ledgerSince(from, pids, until ? { until } : {});
  return {
    checkpoint_id: id,
    other,
    pid: a.root,
    processes: diffSubtrees(a.processes, after).map((d) =>
      _guardDiff(d, taints.get(d.pid) ?? "public")
    ),
    effects_since: effectsView(since),
  };
}

// ---- the syscalls

/**
 * Authorize `right` over the checkpoints of process `pid` for the caller:
 * `pid` must be the caller or one of its descendants; a capability on
 * `checkpoint:process:<p>` for `pid` or any ancestor of it up to the caller
 * decides (a DENY on any of them wins). Returns the target process.
 */
async function _authorizeOver(call: Call, pid: number, right: Right): Promise<ProcessRecord> {
  call.target = `checkpoint:process:${pid}`;
  const me = call.proc.pid;
  const target = await call.k.store.getProcess(pid);
  if (!target || (pid !== me && !target.lineage.includes(me))) {
    throw denied(`${call.name}: process ${pid} is neither ${me} nor one of its descendants`);
  }
  // From the target up through its ancestors to the caller (lineage is root first).
  const chain = pid === me
    ? [pid]
    : [pid, ...target.lineage.slice(target.lineage.indexOf(me)).reverse()];
  const caps = await call.k.store.capabilitiesOf(me);
  const now = call.k.providers.clock.now();
  const binding = { syscall: call.name, args_hash: call.argsHash };
  const found = chain.map((p) => {
    const resource = `checkpoint:process:${p}`;
    return { resource, d: decide(caps, resource, right, binding, now) };
  });
  const chosen = found.find((f) => f.d.effect === "deny" && f.d.cap) ??
    found.find((f) => f.d.cap !== null);
  await authorize(call, { resource: chosen?.resource ?? call.target, right });
  // Every operation here covers the whole subtree: a DENY or ASK the caller holds on a
  // process below wins over its authority on the root, as if that process were named.
  for (const below of await call.k.store.subtreePids(pid)) {
    if (below === pid) continue;
    const resource = `checkpoint:process:${below}`;
    const d = decide(caps, resource, right, binding, now);
    if (d.cap && d.effect !== "allow") await authorize(call, { resource, right });
  }
  return target;
}

function _idArg(call: Call, field = "checkpoint_id"): string {
  const id = str(call, field, 128);
  if (!_ID.test(id)) throw invalid(`${call.name}.${field}`, "is not a checkpoint id");
  return id;
}

/** The root of checkpoint `id`, authorized for `right`. */
async function _authorizeCheckpoint(call: Call, id: string, right: Right): Promise<number> {
  const row = await _row(call.k, id, `${call.name}.checkpoint_id`);
  await _authorizeOver(call, row.root_pid, right);
  return row.root_pid;
}

/**
 * The caller checkpoints itself: only as the one syscall of a builtin tool
 * step (the step's result is then known: it is this call's), or from the
 * host between quanta.
 */
function _selfStep(call: Call): { pid: number; tool: string } | null {
  const p = call.proc;
  if (p.status !== "running") return null;
  const j = call.k.journal(p.pid);
  if (!p.pending || Object.hasOwn(p.jit_tools ?? {}, p.pending.tool) || !j || j.cursor !== 1) {
    throw new LibosError(
      "EBUSY",
      `${call.name}: a process checkpoints itself from its checkpoint_create tool (that step's only call), not from inside a JIT tool or a longer step`,
    );
  }
  return { pid: p.pid, tool: p.pending.tool };
}

/** The checkpoint family. */
export const CHECKPOINT: Record<string, Primitive> = {
  "checkpoint.create": {
    fields: ["pid", "label"],
    async run(call) {
      const pid = call.args.pid === undefined ? call.proc.pid : pidArg(call);
      const label = optStr(call, "label", 200) ?? null;
      await _authorizeOver(call, pid, "write");
      // A label is text anyone listing the checkpoints reads: the caller's data may not go there.
      if (label !== null) await checkFlow(call, "normal", "checkpoint label");
      const self = pid === call.proc.pid ? _selfStep(call) : null;
      // A checkpoint copies the subtree's state: the caller's store budget pays for it.
      const out = await createCheckpoint(call.k, pid, {
        label,
        by: `pid:${call.proc.pid}`,
        self,
        charge: (bytes) => chargeStore(call, bytes),
      });
      // The step's result in the checkpoint is this value without its hash.
      return out;
    },
  },
  "checkpoint.list": {
    fields: ["pid"],
    async run(call) {
      const pid = call.args.pid === undefined ? call.proc.pid : pidArg(call);
      await _authorizeOver(call, pid, "read");
      return await listCheckpoints(call.k, pid);
    },
  },
  "checkpoint.inspect": {
    fields: ["checkpoint_id"],
    async run(call) {
      const id = _idArg(call);
      await _authorizeCheckpoint(call, id, "read");
      return await inspectCheckpoint(call.k, id);
    },
  },
  "checkpoint.diff": {
    fields: ["checkpoint_id", "other"],
    async run(call) {
      const id = _idArg(call);
      const other = call.args.other === undefined ? null : _idArg(call, "other");
      await _authorizeCheckpoint(call, id, "read");
      return await diffCheckpoint(call.k, id, other);
    },
  },
  "checkpoint.restore": {
    fields: ["checkpoint_id"],
    async run(call) {
      const id = _idArg(call);
      await _authorizeCheckpoint(call, id, "execute");
      return await restoreCheckpoint(call.k, id, {
        by: `pid:${call.proc.pid}`,
        caller: call.proc.pid,
        charge: (bytes) => chargeStore(call, bytes),
      });
    },
  },
  "checkpoint.fork": {
    fields: ["checkpoint_id"],
    async run(call) {
      const id = _idArg(call);
      const root = await _authorizeCheckpoint(call, id, "execute");
      // A fork makes processes: as for process.fork, the caller needs process:spawn.
      await authorize(call, { resource: "process:spawn", right: "execute" });
      call.target = `checkpoint:process:${root}`;
      return await call.k.withBudgets(call.proc.pid, () =>
        forkCheckpoint(call.k, id, {
          by: `pid:${call.proc.pid}`,
          parent: call.proc.pid,
          // The copies run on the caller's budgets, as children it forked would, and
          // what they are made of (objects, steps, logs, mailboxes) is stored anew
          // at its expense.
          budgets: async (tx, originals, bytes) => {
            chargeStore(call, bytes);
            const { copies, parent } = shareBudgets(
              tx.budgets(call.proc),
              tx.usage(call.proc),
              originals,
              `${call.name}.budgets`,
            );
            await tx.setBudgets(call.proc, parent);
            return copies;
          },
        }));
    },
  },
  "checkpoint.commit": {
    fields: ["checkpoint_id", "image"],
    async run(call) {
      const id = _idArg(call);
      const name = str(call, "image", 128);
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) {
        throw invalid(`${call.name}.image`, "must be letters, digits, '.', '_' or '-'");
      }
      const root = await _authorizeCheckpoint(call, id, "materialize");
      await authorize(call, { resource: `image:${name}`, right: "write" });
      call.target = `checkpoint:process:${root}`;
      return await commitCheckpoint(
        call.k,
        id,
        name,
        `pid:${call.proc.pid}`,
        (bytes) => chargeStore(call, bytes),
      );
    },
  },
};
