/**
 * Checkpoints as data: the snapshot document of a process subtree, its
 * canonical form and sha256, reading a subtree from the store, and diffs.
 * Pure data and store reads: what a restore or a fork may give back (the
 * authority questions) is decided in `primitives/checkpoint.ts`.
 *
 * A checkpoint is plain JSON. It holds, for every process of the subtree:
 * the process record, its model input, its model log (the conversation), its
 * step index, the objects of its namespace with their payloads and the links
 * leaving them, its capabilities and its mailbox; and for the whole, where the
 * effect and model-call ledgers stood. It is stored as its canonical JSON text
 * (keys sorted at every depth) with the sha256 of that text; reading it back
 * checks the hash before anything else and parses JSON, nothing more: no code
 * is ever reconstructed from a stored checkpoint.
 * @module
 */
import { canonicalJson, canonicalJsonWith, hashValue, sha256 } from "./canonical.ts";
import { LibosError } from "./errors.ts";
import type { LedgerMark, LedgerSince, Store } from "./store/store.ts";
import type {
  Capability,
  CheckpointRecord,
  MailMessage,
  MemoryObject,
  ObjectLink,
  ProcessRecord,
} from "./types.ts";

/** Format tag of a checkpoint document. */
export const CHECKPOINT_FORMAT = "libos-checkpoint/1";

/** One process of a checkpoint: everything restore or fork puts back. */
export interface ProcessSnapshot {
  /** The process record as it stood (usage is recorded, never given back). */
  record: ProcessRecord;
  /** Its immutable model input (a script, a model config), or null. */
  model_input: unknown;
  /** Its model log: the conversation, in order. */
  model_log: unknown[];
  /** Its step index: step number -> oid of the `tool_result` object. */
  steps: { step: number; oid: string }[];
  /** The objects of its namespace, with payloads. */
  objects: MemoryObject[];
  /** Links leaving those objects. */
  links: ObjectLink[];
  /** Its capabilities, every status. */
  capabilities: Capability[];
  /** Messages waiting for it. */
  mailbox: MailMessage[];
}

/** A checkpoint document. */
export interface CheckpointDoc {
  /** {@link CHECKPOINT_FORMAT}. */
  format: string;
  /** Its id. */
  checkpoint_id: string;
  /** The subtree's root pid. */
  root: number;
  /** The caller's label. */
  label: string | null;
  /** ISO time. */
  created_at: string;
  /** `pid:<n>` or `host`. */
  created_by: string;
  /** Where the effect and model-call ledgers stood. */
  ledger: LedgerMark;
  /** Every process of the subtree, root first, then in pid order. */
  processes: ProcessSnapshot[];
}

/**
 * A process snapshot as a checkpoint is written: its objects kept as their
 * canonical JSON texts (as the store holds them), spliced into the document
 * rather than parsed and serialized again.
 */
export interface ProcessSnapshotText extends Omit<ProcessSnapshot, "objects"> {
  /** The canonical JSON text of each object of its namespace. */
  objects: string[];
}

/** The stored form of `doc`: its canonical JSON and that text's sha256. */
export function encodeCheckpoint(doc: CheckpointDoc): { body: string; sha256: string } {
  const { processes, ...head } = doc;
  return encodeCheckpointText(
    head,
    processes.map((p) => ({ ...p, objects: p.objects.map((o) => canonicalJson(o)) })),
  );
}

/**
 * The stored form of a checkpoint whose processes hold their objects as
 * canonical texts: the same text and hash {@link encodeCheckpoint} gives for
 * the document with those objects parsed in.
 */
export function encodeCheckpointText(
  head: Omit<CheckpointDoc, "processes">,
  processes: ProcessSnapshotText[],
): { body: string; sha256: string } {
  const texts = processes.map(({ objects, ...rest }) =>
    canonicalJsonWith(rest, { objects: `[${objects.join(",")}]` })
  );
  const body = canonicalJsonWith(head, { processes: `[${texts.join(",")}]` });
  return { body, sha256: sha256(body) };
}

/** An `EINTEGRITY` error for checkpoint `id`. */
function _tampered(id: string, why: string): LibosError {
  return new LibosError("EINTEGRITY", `checkpoint_id: ${id} ${why}; refused`);
}

/**
 * The document of a stored checkpoint, once its text hashes to its recorded
 * sha256 and parses into the shape this format has (`EINTEGRITY` otherwise).
 */
export function decodeCheckpoint(row: CheckpointRecord): CheckpointDoc {
  const id = row.checkpoint_id;
  if (sha256(row.body) !== row.sha256) {
    throw _tampered(id, "does not match its sha256 (the stored checkpoint was altered)");
  }
  let doc: CheckpointDoc;
  try {
    doc = JSON.parse(row.body);
  } catch {
    throw _tampered(id, "is not valid JSON");
  }
  const why = _shapeProblem(doc, row);
  if (why) throw _tampered(id, why);
  return doc;
}

function _isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** What is wrong with a parsed document's shape, or null. */
function _shapeProblem(doc: unknown, row: CheckpointRecord): string | null {
  if (!_isObj(doc) || doc.format !== CHECKPOINT_FORMAT) return `is not a ${CHECKPOINT_FORMAT}`;
  if (doc.checkpoint_id !== row.checkpoint_id || doc.root !== row.root_pid) {
    return "names another checkpoint or root than its row";
  }
  const ledger = doc.ledger as Record<string, unknown> | undefined;
  if (
    !_isObj(ledger) || !Number.isInteger(ledger.effects) || !Number.isInteger(ledger.model_calls)
  ) {
    return "has no ledger mark";
  }
  if (!Array.isArray(doc.processes) || doc.processes.length === 0) return "holds no process";
  for (const [i, p] of (doc.processes as unknown[]).entries()) {
    if (!_isObj(p) || !_isObj(p.record) || !Number.isInteger(p.record.pid)) {
      return `process ${i} has no record`;
    }
    for (const k of ["model_log", "steps", "objects", "links", "capabilities", "mailbox"]) {
      if (!Array.isArray(p[k])) return `process ${i} has no ${k} list`;
    }
  }
  if ((doc.processes as ProcessSnapshot[])[0].record.pid !== doc.root) {
    return "does not start with its root";
  }
  return null;
}

/** A process snapshot read from the store as it is now. */
export async function snapshotProcess(store: Store, proc: ProcessRecord): Promise<ProcessSnapshot> {
  const s = await snapshotProcessText(store, proc);
  return { ...s, objects: s.objects.map((text) => JSON.parse(text) as MemoryObject) };
}

/**
 * The same, with the objects as the store's canonical texts (what a
 * checkpoint is written from: nothing parsed and serialized again).
 */
export async function snapshotProcessText(
  store: Store,
  proc: ProcessRecord,
): Promise<ProcessSnapshotText> {
  const pid = proc.pid;
  return {
    record: { ...proc },
    model_input: await store.getModelInput(pid),
    model_log: await store.readModelLog(pid, 0),
    steps: await store.stepIndex(pid),
    objects: await store.listObjectTexts(proc.namespace),
    links: await store.linksFromNamespace(proc.namespace),
    capabilities: await store.capabilitiesOf(pid),
    mailbox: await store.listMessages(pid),
  };
}

/** The processes of the subtree rooted at `root` as they are now (root first). */
export async function readSubtree(store: Store, root: number): Promise<ProcessRecord[]> {
  const out: ProcessRecord[] = [];
  for (const pid of await store.subtreePids(root)) {
    const p = await store.getProcess(pid);
    if (p) out.push(p);
  }
  // Root first, then pid order: a parent always has a lower pid than its children.
  out.sort((a, b) => (a.pid === root ? -1 : b.pid === root ? 1 : a.pid - b.pid));
  return out;
}

// ---- diffs

/** An object as a diff shows it: identity and content hash, never the payload. */
export interface ObjectView {
  /** Oid. */
  oid: string;
  /** Kind. */
  kind: string;
  /** Name (null if none). */
  name: string | null;
  /** Version. */
  version: number;
  /** Label. */
  label: string;
  /** sha256 of the canonical payload. */
  sha256: string;
}

/** A capability as a diff shows it. */
export interface CapView {
  /** Id. */
  cap_id: string;
  /** allow, deny or ask. */
  effect: string;
  /** Resource. */
  resource: string;
  /** Rights. */
  rights: string[];
  /** Status. */
  status: string;
  /** Remaining uses. */
  uses_remaining: number | null;
}

/** How one process differs between two states (`before` -> `after`). */
export interface ProcessDiff {
  /** The pid. */
  pid: number;
  /** added (only after), removed (only before), changed or same. */
  change: "added" | "removed" | "changed" | "same";
  /** Fields of the record that differ: name -> [before, after]. */
  fields: Record<string, [unknown, unknown]>;
  /** Objects added, removed, changed (changed: both versions). */
  objects: { added: ObjectView[]; removed: ObjectView[]; changed: [ObjectView, ObjectView][] };
  /** Capabilities added, removed, changed. */
  capabilities: { added: CapView[]; removed: CapView[]; changed: [CapView, CapView][] };
  /** Lengths before and after: model log, steps, mailbox, links. */
  counts: Record<"model_log" | "steps" | "mailbox" | "links", [number, number]>;
}

/** Record fields a diff compares (usage is left out: it only grows, and is never restored). */
const _FIELDS = [
  "status",
  "ppid",
  "image",
  "cwd",
  "tools",
  "jit_tools",
  "system_prompt",
  "goal",
  "taint",
  "model",
  "pending",
  "exit_code",
  "exit_reason",
  "cancel_requested",
] as const;

/** What a checkpoint shows of an object: metadata and the payload's hash. */
export function objectView(o: MemoryObject): ObjectView {
  return {
    oid: o.oid,
    kind: o.kind,
    name: o.name,
    version: o.version,
    label: o.label,
    sha256: hashValue(o.payload),
  };
}

/** What a checkpoint shows of a capability. */
export function capView(c: Capability): CapView {
  return {
    cap_id: c.cap_id,
    effect: c.effect,
    resource: c.resource,
    rights: c.rights,
    status: c.status,
    uses_remaining: c.uses_remaining,
  };
}

/** Items keyed by `key` in `a` and `b`: only in a, only in b, in both and unequal under `same`. */
function _sets<T, V>(
  a: T[],
  b: T[],
  key: (t: T) => string,
  view: (t: T) => V,
  same: (x: V, y: V) => boolean,
): { added: V[]; removed: V[]; changed: [V, V][] } {
  const before = new Map(a.map((t) => [key(t), view(t)]));
  const after = new Map(b.map((t) => [key(t), view(t)]));
  const out = { added: [] as V[], removed: [] as V[], changed: [] as [V, V][] };
  for (const [k, v] of before) {
    const w = after.get(k);
    if (w === undefined) out.removed.push(v);
    else if (!same(v, w)) out.changed.push([v, w]);
  }
  for (const [k, w] of after) if (!before.has(k)) out.added.push(w);
  return out;
}

const _EMPTY: ProcessSnapshot = {
  record: null as unknown as ProcessRecord,
  model_input: null,
  model_log: [],
  steps: [],
  objects: [],
  links: [],
  capabilities: [],
  mailbox: [],
};

/** How one process differs between `a` (before) and `b` (after); either may be missing. */
export function diffProcess(a: ProcessSnapshot | null, b: ProcessSnapshot | null): ProcessDiff {
  const x = a ?? _EMPTY;
  const y = b ?? _EMPTY;
  const fields: Record<string, [unknown, unknown]> = {};
  if (a && b) {
    for (const f of _FIELDS) {
      const va = a.record[f] ?? null;
      const vb = b.record[f] ?? null;
      if (canonicalJson(va) !== canonicalJson(vb)) fields[f] = [va, vb];
    }
  }
  const objects = _sets(
    x.objects,
    y.objects,
    (o) => o.oid,
    objectView,
    (p, q) => p.version === q.version && p.sha256 === q.sha256 && p.label === q.label,
  );
  const capabilities = _sets(
    x.capabilities,
    y.capabilities,
    (c) => c.cap_id,
    capView,
    (p, q) => p.status === q.status && p.uses_remaining === q.uses_remaining,
  );
  const counts = {
    model_log: [x.model_log.length, y.model_log.length] as [number, number],
    steps: [x.steps.length, y.steps.length] as [number, number],
    mailbox: [x.mailbox.length, y.mailbox.length] as [number, number],
    links: [x.links.length, y.links.length] as [number, number],
  };
  const pid = (a ?? b)!.record.pid;
  const moved = Object.keys(fields).length > 0 || objects.added.length > 0 ||
    objects.removed.length > 0 || objects.changed.length > 0 || capabilities.added.length > 0 ||
    capabilities.removed.length > 0 || capabilities.changed.length > 0 ||
    Object.values(counts).some(([p, q]) => p !== q);
  const change = !a ? "added" : !b ? "removed" : moved ? "changed" : "same";
  return { pid, change, fields, objects, capabilities, counts };
}

/** Per-process diffs of two states of a subtree, in pid order. */
export function diffSubtrees(a: ProcessSnapshot[], b: ProcessSnapshot[]): ProcessDiff[] {
  const before = new Map(a.map((p) => [p.record.pid, p]));
  const after = new Map(b.map((p) => [p.record.pid, p]));
  const pids = [...new Set([...before.keys(), ...after.keys()])].sort((p, q) => p - q);
  return pids.map((pid) => diffProcess(before.get(pid) ?? null, after.get(pid) ?? null));
}

/** The ledger entries a report shows: what happened outside, never undone by a restore. */
export interface EffectsSince {
  /** Effects (file writes and deletes, commands, human output), oldest first. */
  effects: {
    effect_id: string;
    pid: number;
    syscall: string;
    resource: string;
    status: string;
    created_at: string;
  }[];
  /** Model calls, oldest first. */
  model_calls: {
    call_id: string;
    pid: number;
    turn: number;
    purpose: string;
    status: string;
    created_at: string;
  }[];
  /** How many effects in all (the list stops at its limit). */
  effects_total: number;
  /** How many model calls in all. */
  model_calls_total: number;
}

/** A compact view of ledger entries. */
export function effectsView(s: LedgerSince): EffectsSince {
  return {
    effects: s.effects.map((e) => ({
      effect_id: e.effect_id,
      pid: e.pid,
      syscall: e.syscall,
      resource: e.resource,
      status: e.status,
      created_at: e.created_at,
    })),
    model_calls: s.model_calls.map((c) => ({
      call_id: c.call_id,
      pid: c.pid,
      turn: c.turn,
      purpose: c.purpose,
      status: c.status,
      created_at: c.created_at,
    })),
    effects_total: s.effects_total,
    model_calls_total: s.model_calls_total,
  };
}

// ---- remapping (fork)

/**
 * A resource with the pids and oids of a forked subtree replaced by their
 * copies' (`object_namespace:proc:<pid>`, `process:<pid>`,
 * `checkpoint:process:<pid>`, `object:<oid>`); anything else unchanged.
 */
export function remapResource(
  resource: string,
  pids: ReadonlyMap<number, number>,
  oids: ReadonlyMap<string, string>,
): string {
  const pid = (prefix: string) => {
    if (!resource.startsWith(prefix)) return null;
    const n = Number(resource.slice(prefix.length));
    const to = Number.isInteger(n) ? pids.get(n) : undefined;
    return to === undefined ? null : `${prefix}${to}`;
  };
  const mapped = pid("object_namespace:proc:") ?? pid("process:") ?? pid("checkpoint:process:");
  if (mapped) return mapped;
  if (resource.startsWith("object:")) {
    const to = oids.get(resource.slice(7));
    if (to) return `object:${to}`;
  }
  return resource;
}

/** `pid:<n>` of a subtree member as its copy's; anything else unchanged. */
export function remapActor(actor: string, pids: ReadonlyMap<number, number>): string {
  if (!actor.startsWith("pid:")) return actor;
  const to = pids.get(Number(actor.slice(4)));
  return to === undefined ? actor : `pid:${to}`;
}
