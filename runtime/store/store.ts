/**
 * The store interface: every piece of durable kernel state goes through it.
 * Methods are async so a networked backend (PostgreSQL) can implement the same
 * interface; the SQLite backend answers synchronously underneath.
 * @module
 */
import type {
  AgentImage,
  AuditRecord,
  Capability,
  CapabilityStatus,
  CheckpointMeta,
  CheckpointRecord,
  EffectRecord,
  EffectStatus,
  HumanRequestRecord,
  HumanRequestStatus,
  Label,
  LibosEvent,
  MailMessage,
  MemoryObject,
  ModelCallRecord,
  ModelRelease,
  ObjectLink,
  ProcessRecord,
  ProcessStatus,
} from "../types.ts";
import type { LibosError } from "../errors.ts";

/** An audit record before the store numbers and chains it. */
export type AuditDraft = Omit<AuditRecord, "seq" | "record_id" | "prev_hash" | "hash">;

/** An event before the store numbers it. */
export type EventDraft = Omit<LibosEvent, "event_id">;

/** Filter for {@link Store.listAudit}. */
export interface AuditFilter {
  /** Only this actor. */
  actor?: string;
  /** Only this action. */
  action?: string;
  /** Only this decision. */
  decision?: string;
  /** Only records with seq greater than this. */
  afterSeq?: number;
  /** At most this many. */
  limit?: number;
}

/** Result of {@link Store.verifyAudit}. */
export interface AuditVerification {
  /** True when the whole chain checks out. */
  ok: boolean;
  /** Records checked. */
  count: number;
  /** Hash of the last record (the chain head). */
  head: string;
  /** The first bad record and what is wrong with it. */
  firstBad?: { seq: number; record_id: string; problem: string };
}

/** Which version of an object is current, and its label (see {@link Store.listObjectVersions}). */
export interface ObjectVersion {
  /** The object. */
  oid: string;
  /** Its current version. */
  version: number;
  /** Its current label. */
  label: Label;
}

/** Options of {@link Store.transaction}. */
export interface TransactionOptions {
  /**
   * The transaction's writes may be committed later, together with others: at
   * the latest with the next write that is not deferred, by {@link Store.flush},
   * or shortly after the event loop is free. For writes that no effect depends
   * on yet (a scheduler's decision or step result): any write that may precede
   * an effect is not deferred, so it commits whatever was deferred before it.
   * Reads on this store see deferred writes at once.
   */
  defer?: boolean;
}

/**
 * A worker's lease on one process. Every write a worker makes on the
 * process's behalf (through {@link LeaseStore.fenced}) commits only while the
 * lease still holds: same worker, same token, not expired.
 */
export interface Fence {
  /** The process. */
  pid: number;
  /** The worker holding the lease. */
  worker: string;
  /** The lease's generation: every claim bumps it, so an older holder's token never matches again. */
  token: number;
  /**
   * The lease's length in ms, when the holder renews it every third of that:
   * an external effect then starts only while the lease surely holds.
   */
  leaseMs?: number;
}

/** A process a worker claimed. */
export interface Claim extends Fence {
  /** Its status when claimed: `runnable`, or `running` when a dead worker left it mid-step. */
  status: ProcessStatus;
  /**
   * Left by a runtime that stopped: the previous lease expired without being
   * released (its worker died or stalled), or the process is caught mid-step.
   * Recover it before it runs.
   */
  takenOver: boolean;
}

/** What is left to run in a store, for deciding a fleet is idle. */
export interface StoreActivity {
  /** Processes runnable (claimed or not). */
  runnable: number;
  /** Processes inside a tool step. */
  running: number;
  /** Processes a worker could claim now (runnable or running, with no live lease). */
  claimable: number;
  /** Milliseconds until the next live lease expires (null: none held). */
  nextExpiryMs: number | null;
}

/**
 * Leases for several workers running processes from one store (PostgreSQL).
 * A worker claims runnable processes, least recently run first, renews its
 * leases while it runs them, and releases each after its quantum.
 */
export interface LeaseStore {
  /**
   * Claim up to `max` processes nobody holds (runnable ones, and running ones
   * whose lease expired), each for `leaseMs`: those never run first, newest
   * first (a newcomer is served next, as the SQLite scheduler admits it ahead
   * of the rest of its round), then the least recently run.
   * With `only.pid`, only that process; with `only.abandoned`, only those a
   * stopped runtime left to recover (caught mid-step, or whose lease ran out).
   */
  claim(
    worker: string,
    max: number,
    leaseMs: number,
    only?: { pid?: number; abandoned?: boolean },
  ): Promise<Claim[]>;
  /**
   * Extend the leases still held to `leaseMs` from now. Says which were
   * renewed and which are lost; one whose row another transaction holds
   * locked is neither (its lease stands as it was: try again soon).
   */
  renew(fences: readonly Fence[], leaseMs: number): Promise<Renewal>;
  /**
   * Hold processes whatever their status (a checkpoint's quiescent point):
   * each one nobody holds is leased to `worker` for `leaseMs`, so no worker
   * claims it until released. Returns the ones held now.
   */
  hold(worker: string, pids: readonly number[], leaseMs: number): Promise<Claim[]>;
  /**
   * Give processes back, stamping their last run (the next claim order)
   * unless `stamp` is false (a hold gave them no quantum).
   */
  release(fences: readonly Fence[], stamp?: boolean): Promise<void>;
  /** A view of the store whose writes commit only while `fence` holds (`EFENCED` otherwise). */
  fenced(fence: Fence): Store;
  /** Runnable and running processes in the whole store. */
  activity(): Promise<StoreActivity>;
  /**
   * Call `fn` when a process becomes runnable from outside a quantum (a
   * decision, a wake, a new process); returns a function that stops it.
   */
  onRunnable(fn: () => void): Promise<() => Promise<void>>;
}

/** What {@link LeaseStore.renew} did. */
export interface Renewal {
  /** Extended. */
  renewed: Fence[];
  /** Expired or taken by another worker: this runtime may write nothing more for them. */
  lost: Fence[];
}

/**
 * A position in the effect ledger and the LLM call ledger: everything
 * recorded so far lies at or before it, everything recorded later after it.
 * Opaque to callers beyond comparison by {@link Store.ledgerSince}.
 */
export interface LedgerMark {
  /** Position in the effect ledger. */
  effects: number;
  /** Position in the model-call ledger. */
  model_calls: number;
}

/** Ledger entries of some processes recorded after a {@link LedgerMark}. */
export interface LedgerSince {
  /** Effects, oldest first (at most the limit asked for). */
  effects: EffectRecord[];
  /** Model calls, oldest first (at most the limit asked for). */
  model_calls: ModelCallRecord[];
  /** How many effects there are in all. */
  effects_total: number;
  /** How many model calls there are in all. */
  model_calls_total: number;
}

/** Durable kernel state. One interface, several backends. */
export interface Store {
  /** Worker leases when several runtimes may run this store's processes at once (PostgreSQL), else null. */
  readonly leases: LeaseStore | null;
  /** A printable name of the store (a path, or a URL without its password). */
  readonly name: string;
  /** Run `fn` atomically: either everything it wrote lands or nothing does. */
  transaction<T>(fn: (tx: Store) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Commit deferred writes now (see {@link TransactionOptions.defer}). */
  flush(): Promise<void>;
  /**
   * Commit deferred writes once the event loop's next task runs: every caller
   * until then shares that one commit (quanta in flight marking their steps
   * `running`). Settles when the commit is done; rejects if it failed. Only a
   * store whose deferred writes are durable once committed has it (SQLite;
   * PostgreSQL commits a deferred transaction asynchronously, so a write that
   * must be durable there is not deferred).
   */
  commitSoon?(): Promise<void>;
  /**
   * Make the deferred writes so far durable before an effect, as
   * {@link commitSoon} does, or, when the store keeps a journal of them (a
   * SQLite file store's step journal), by writing that journal: they are then
   * replayed if the store stops before its next commit. Settles once they are
   * durable either way.
   */
  makeDurable?(): Promise<void>;
  /**
   * Write only while the store's scheduler lease names `id` (a store with one
   * scheduler; `null` ends the check): see `SqliteStore.writeUnderLease`.
   */
  writeUnderLease?(id: string | null): void;
  /**
   * Set once a commit failed after deferred writes were acknowledged (their
   * callers acted on them): the store then refuses every call that reads or
   * writes its tables with this error (audit records still reach its log), and
   * only a reopen recovers. Absent or null while it works.
   */
  readonly stopped?: LibosError | null;
  /** Close the backend (committing deferred writes). */
  close(): Promise<void>;

  /** Insert a process; the store assigns the pid. */
  insertProcess(p: Omit<ProcessRecord, "pid">): Promise<ProcessRecord>;
  /** One process, or `null`. */
  getProcess(pid: number): Promise<ProcessRecord | null>;
  /** All processes in pid order. */
  listProcesses(): Promise<ProcessRecord[]>;
  /**
   * Update fields of a process. When `expectStatus` is given the update only
   * lands if the stored status still equals it, or one of them when it is a
   * list (returns false otherwise). A patch of the small per-step fields only
   * (`status, pending, model, usage, updated_at`) writes those and nothing else.
   */
  updateProcess(
    pid: number,
    patch: Partial<Omit<ProcessRecord, "pid">>,
    expectStatus?: ProcessStatus | readonly ProcessStatus[],
  ): Promise<boolean>;
  /**
   * Pids of the processes whose status is `status`, in pid order (ended ones
   * are never scanned); with `after`, only pids above it.
   */
  pidsWithStatus(status: ProcessStatus, after?: number): Promise<number[]>;
  /**
   * `root` and every process descended from it (children, their children,
   * ...), in pid order; empty when `root` does not exist.
   */
  subtreePids(root: number): Promise<number[]>;

  /** Store a process's immutable model input (once, when the process is created). */
  putModelInput(pid: number, input: unknown): Promise<void>;
  /** A process's model input, or `null`. The value is shared and frozen: do not modify it. */
  getModelInput(pid: number): Promise<unknown>;
  /** Append entries to a process's model log; returns its new length. */
  appendModelLog(pid: number, entries: unknown[]): Promise<number>;
  /** Model log entries of a process from `from` up to (not including) `to` (default: the end). */
  readModelLog(pid: number, from: number, to?: number): Promise<unknown[]>;
  /** How many entries a process's model log holds. */
  modelLogLength(pid: number): Promise<number>;
  /**
   * Drop a process's model log entries from position `length` on (a
   * checkpoint restore: the conversation is process state). Nothing else
   * ever shortens a model log.
   */
  truncateModelLog(pid: number, length: number): Promise<void>;

  /** Index step `step` of a process: its result is the `tool_result` object `oid`. */
  insertStep(pid: number, step: number, oid: string): Promise<void>;
  /** How many steps of a process are recorded (the next step's number). */
  stepCount(pid: number): Promise<number>;
  /** The `tool_result` object of step `step` of a process, or `null`. */
  getStep(pid: number, step: number): Promise<MemoryObject | null>;
  /** The `tool_result` objects of a process's steps, in step order. */
  listSteps(pid: number): Promise<MemoryObject[]>;
  /** A process's step index: each recorded step and the oid of its result, in step order. */
  stepIndex(pid: number): Promise<{ step: number; oid: string }[]>;
  /** Drop a process's step index from step `from` on (a checkpoint restore). */
  truncateSteps(pid: number, from: number): Promise<void>;

  /** Insert a capability. */
  insertCapability(c: Capability): Promise<void>;
  /** One capability, or `null`. */
  getCapability(capId: string): Promise<Capability | null>;
  /** Every capability of a subject (all statuses). */
  capabilitiesOf(subject: number): Promise<Capability[]>;
  /** Atomically take one use; false if none was left. Marks it exhausted at zero. */
  consumeCapability(capId: string): Promise<boolean>;
  /** Atomically take `n` uses (for delegating part of a limited grant). */
  reserveUses(capId: string, n: number): Promise<boolean>;
  /** Set status on a capability and, transitively, all capabilities delegated from it. Returns the ids changed. */
  revokeCascade(capId: string): Promise<string[]>;

  /** Insert a new object (version 1). */
  insertObject(o: MemoryObject): Promise<void>;
  /** One object, or `null`. */
  getObject(oid: string): Promise<MemoryObject | null>;
  /** Object by name inside a namespace. */
  getObjectByName(namespace: string, name: string): Promise<MemoryObject | null>;
  /** Objects of a namespace. */
  listObjects(namespace: string): Promise<MemoryObject[]>;
  /**
   * The objects of a namespace (as {@link listObjects}, same order) as their
   * canonical JSON texts (`canonicalJson`: keys sorted at every depth), what a
   * checkpoint splices in. A store that keeps objects in canonical form hands
   * its stored text over unparsed.
   */
  listObjectTexts(namespace: string): Promise<string[]>;
  /**
   * The oid, version and label of each object in `namespace`, in insertion
   * order: what a restore compares, without reading payloads.
   */
  listObjectVersions(namespace: string): Promise<ObjectVersion[]>;
  /** Compare-and-swap update: lands only if the version still equals `expectVersion`. */
  updateObject(
    oid: string,
    expectVersion: number,
    patch: { payload: unknown; label: Label; updated_at: string },
  ): Promise<MemoryObject | null>;
  /**
   * Make each of `objects` the current version of its oid again (a
   * checkpoint restore), in its namespace: its row is replaced by the given
   * kind, name, payload and label at a version after every version the oid
   * ever had (or the given one, for an oid never stored), so versions never
   * go back; the version it replaces is kept (the version history and the
   * current rows together hold every version an oid had). `current` may
   * give the rows the caller read in the same transaction
   * ({@link Store.listObjectVersions}, by oid): no version of an oid is
   * later than its row's, so the store need not look those up.
   */
  restoreObjects(
    objects: MemoryObject[],
    current?: ReadonlyMap<string, ObjectVersion>,
  ): Promise<void>;
  /**
   * Take objects out of their namespaces (a checkpoint restore drops what was
   * made after it), with the links from and to them. Their version history
   * stays.
   */
  removeObjects(oids: string[]): Promise<void>;
  /** Add a link (idempotent). */
  insertLink(link: ObjectLink): Promise<void>;
  /** Links leaving an object. */
  linksFrom(oid: string): Promise<ObjectLink[]>;
  /** Links leaving any object of a namespace. */
  linksFromNamespace(namespace: string): Promise<ObjectLink[]>;
  /** Remove links (those that do not exist are ignored). */
  removeLinks(links: ObjectLink[]): Promise<void>;

  /** Queue a message. */
  insertMessage(m: Omit<MailMessage, "msg_id">): Promise<MailMessage>;
  /** Remove and return up to `limit` messages, interrupts first. */
  takeMessages(pid: number, limit: number): Promise<MailMessage[]>;
  /** The messages waiting for a process, in delivery order, without taking them. */
  listMessages(pid: number): Promise<MailMessage[]>;

  /** Store a registered image (replacing one with the same name). */
  putImage(image: AgentImage, registeredBy: string): Promise<void>;
  /** One image, or `null`. */
  getImage(name: string): Promise<AgentImage | null>;
  /** All images. */
  listImages(): Promise<AgentImage[]>;

  /** Label recorded for a workspace file (real path), or `null`. */
  getFileLabel(realPath: string): Promise<Label | null>;
  /** Record a file's label. */
  setFileLabel(realPath: string, label: Label): Promise<void>;
  /** Every recorded label of a path strictly below directory `dir` (a real path). */
  fileLabelsUnder(dir: string): Promise<{ path: string; label: Label }[]>;

  /** Append an audit record durably; the store numbers and chains it. */
  appendAudit(draft: AuditDraft): Promise<void>;
  /**
   * Settles once every audit record appended so far can be read from the
   * store by anyone (a backend that commits appends at once settles at once).
   */
  auditIndexed(): Promise<void>;
  /** Audit records in order. */
  listAudit(filter?: AuditFilter): Promise<AuditRecord[]>;
  /** Recompute the hash chain; name the first record that does not check out. */
  verifyAudit(): Promise<AuditVerification>;

  /** Append an event. */
  appendEvent(e: EventDraft): Promise<LibosEvent>;
  /** Events after an id. */
  listEvents(afterId?: number, limit?: number): Promise<LibosEvent[]>;

  /** Record the intent of an external effect (status pending). */
  insertEffect(e: EffectRecord): Promise<void>;
  /** Record the outcome of an effect. */
  finishEffect(effectId: string, status: EffectStatus, outcome: unknown, at: string): Promise<void>;
  /** Effects, newest last. */
  listEffects(status?: EffectStatus): Promise<EffectRecord[]>;
  /**
   * Recovery: mark every pending effect unknown (never replayed), or only
   * those of process `pid`. Returns how many.
   */
  markPendingEffectsUnknown(at: string, pid?: number): Promise<number>;
  /** One effect, or `null`. */
  getEffect(effectId: string): Promise<EffectRecord | null>;
  /** Where the effect and model-call ledgers are now. */
  ledgerMark(): Promise<LedgerMark>;
  /**
   * Effects and model calls of the processes `pids` recorded after `mark`
   * (and at or before `until`, if given), oldest first, at most `limit` of
   * each (default 1000), with their totals.
   */
  ledgerSince(
    mark: LedgerMark,
    pids: readonly number[],
    options?: { until?: LedgerMark; limit?: number },
  ): Promise<LedgerSince>;

  /** Record a model call before its request leaves. */
  insertModelCall(c: ModelCallRecord): Promise<void>;
  /** Update fields of a recorded model call. */
  updateModelCall(
    callId: string,
    patch: Partial<Omit<ModelCallRecord, "call_id" | "pid">>,
  ): Promise<void>;
  /** One model call, or null. */
  getModelCall(callId: string): Promise<ModelCallRecord | null>;
  /** Model calls, oldest first (of one process, if given). */
  listModelCalls(filter?: { pid?: number }): Promise<ModelCallRecord[]>;
  /** After a crash: calls still pending (of process `pid`, if given) become `unknown`. Returns how many. */
  markPendingModelCallsUnknown(at: string, pid?: number): Promise<number>;
  /** Record a human's release of held-back content to a model endpoint. */
  insertModelRelease(r: ModelRelease): Promise<void>;
  /** Releases for a process. */
  listModelReleases(pid: number): Promise<ModelRelease[]>;

  /** Queue a human request. */
  insertHumanRequest(r: HumanRequestRecord): Promise<void>;
  /** One request, or `null`. */
  getHumanRequest(id: string): Promise<HumanRequestRecord | null>;
  /** Requests, oldest first, optionally by status and pid. */
  listHumanRequests(
    filter?: { status?: HumanRequestStatus; pid?: number },
  ): Promise<HumanRequestRecord[]>;
  /**
   * Update a request only if its status is still `expectStatus` (so two
   * deciders can never both decide it). Returns whether it landed.
   */
  updateHumanRequest(
    id: string,
    patch: Partial<HumanRequestRecord>,
    expectStatus: HumanRequestStatus,
  ): Promise<boolean>;

  /** Store a checkpoint (its id must be new). */
  insertCheckpoint(c: CheckpointRecord): Promise<void>;
  /** One checkpoint with its body, or `null`. */
  getCheckpoint(id: string): Promise<CheckpointRecord | null>;
  /** Checkpoints without their bodies, oldest first (of the subtree rooted at `rootPid`, if given). */
  listCheckpoints(rootPid?: number): Promise<CheckpointMeta[]>;

  /** Raw key/value metadata. */
  getMeta(key: string): Promise<string | null>;
  /** Set metadata. */
  setMeta(key: string, value: string): Promise<void>;
}

/** The cap status values, re-exported for backends. */
export type { CapabilityStatus };
