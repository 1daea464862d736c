/**
 * Core data types of the kernel: processes, capabilities, objects, audit
 * records, events and effect-ledger entries. Plain data only: no behaviour.
 * @module
 */

/** The ten lifecycle states of an AgentProcess. */
export const PROCESS_STATUSES = [
  "created",
  "runnable",
  "running",
  "waiting_event",
  "waiting_tool",
  "waiting_human",
  "paused",
  "exited",
  "failed",
  "killed",
] as const;
/** A lifecycle state. */
export type ProcessStatus = typeof PROCESS_STATUSES[number];

/** Per-process limits the scheduler enforces. `null` means unlimited. */
export interface Budgets {
  /** Most quanta (model steps + tool steps) the process may use. */
  max_quanta: number | null;
  /** Most wall-clock milliseconds spent inside the process's quanta. */
  max_wall_ms: number | null;
  /** Most syscalls the process may issue. */
  max_syscalls: number | null;
  /** Most model calls (each attempt of a turn or a summary counts once per call). */
  max_model_calls?: number | null;
  /** Most input tokens over all model calls, as the provider counted them. */
  max_input_tokens?: number | null;
  /** Most output tokens over all model calls. */
  max_output_tokens?: number | null;
  /**
   * Most bytes the process may add to the store: Object Memory payloads (each
   * version), messages it sends, checkpoints it takes, scripts and goals of
   * children it starts, memory a fork copies.
   */
  max_store_bytes?: number | null;
}

/** What the process has used so far, checked against its {@link Budgets}. */
export interface Usage {
  /** Quanta consumed. */
  quanta: number;
  /** Wall-clock milliseconds consumed inside quanta. */
  wall_ms: number;
  /** Syscalls issued. */
  syscalls: number;
  /** Model calls made. */
  model_calls?: number;
  /** Input tokens the provider counted over all calls. */
  input_tokens?: number;
  /** Output tokens the provider counted over all calls. */
  output_tokens?: number;
  /** Bytes added to the store (see {@link Budgets.max_store_bytes}). */
  store_bytes?: number;
}

/** The shell policy of an image (see the README's policy table). */
export type ShellPolicyMode =
  | "always_deny"
  | "allowlist_auto_else_ask"
  | "blocklist_ask_else_auto"
  | "always_allow";

/**
 * How shell commands are confined: `bwrap` (default) runs each under a
 * bubblewrap sandbox derived from the process's capabilities; `none` runs them
 * with the runtime's own OS permissions (unsafe, shown in `ps` and the console).
 */
export type ShellSandboxMode = "bwrap" | "none";

/** Data labels, lowest to highest. */
export const LABELS = ["public", "normal", "confidential", "restricted", "secret"] as const;
/** A data label. */
export type Label = typeof LABELS[number];

/** Policy attached to a process by its image. */
export interface Policy {
  /** Shell consent mode. */
  shell: ShellPolicyMode;
  /** Executables run without asking under `allowlist_auto_else_ask`. */
  shell_allowlist: string[];
  /** Executables that ask under `blocklist_ask_else_auto`. */
  shell_blocklist: string[];
  /** OS confinement of shell commands (absent in records made before it existed: `bwrap`). */
  shell_sandbox: ShellSandboxMode;
  /** Labels of workspace paths: pattern (`filesystem:workspace:<path>` or `<path>`) -> label. */
  labels: Record<string, Label>;
  /** Highest label that may flow to `human.output`. */
  human_clearance: Label;
  /**
   * Highest label that may flow to a model endpoint in a request: one label,
   * or per provider name / base URL (with `default`). Above it, content goes
   * in as `[redacted:<label>]` unless a human released exactly that content.
   */
  model_clearance?: Label | Record<string, Label>;
}

/** A model a process is driven by, chosen by the host (never changeable by an agent). */
export interface ModelConfig {
  /** `openai` or `anthropic`. */
  provider: "openai" | "anthropic";
  /** Model name at the provider. */
  name: string;
  /** Base URL (null: the provider's own endpoint). */
  base_url: string | null;
  /** Context window in tokens (compaction keeps requests under `compact_at` of it). */
  context_window: number;
  /** Fraction of the context window that triggers compaction. */
  compact_at: number;
  /** Most output tokens per call. */
  max_output_tokens: number;
  /** Stream replies (SSE). */
  stream: boolean;
  /** Longest tool result put in the conversation, in characters (the rest is cut, with a note). */
  max_tool_result_chars: number;
  /** Timeout of one attempt, ms. */
  timeout_ms: number;
  /** Most attempts of one call (429/5xx/connection/timeout are retried). */
  max_attempts: number;
}

/**
 * A model's small mutable cursor, durable with the process and rewritten by
 * every model step. What grows with the process's history lives elsewhere: the
 * immutable model input (the script; later a prompt and tool schemas) is stored
 * once per process, and turns go to the process's append-only model log.
 */
export interface ModelState {
  /** Provider kind, e.g. `scripted`. */
  kind: string;
  /** Provider-specific cursor (for the scripted model: `{position}`), bounded in size. */
  state: Record<string, unknown>;
}

/** What a tool step produced (also stored as a `tool_result` object named `step-<n>`). */
export type StepResult =
  | { step: number; tool: string; ok: true; value: unknown }
  | { step: number; tool: string; ok: false; error: { code: string; message: string } };

/** One completed syscall of a pending action, replayed (not re-executed) on resume. */
export interface JournalEntry {
  /** Syscall name. */
  name: string;
  /** sha256 of its canonical arguments. */
  args_hash: string;
  /** Whether it succeeded. */
  ok: boolean;
  /** Its value, when ok. */
  value?: unknown;
  /** Its error, when not. */
  error?: { code: string; message: string };
}

/** An action a process has decided on but not finished (retried after a wait). */
export interface PendingAction {
  /** Builtin tool name. */
  tool: string;
  /** Tool arguments as the model gave them. */
  args: Record<string, unknown>;
  /** An error to record as the step's result instead of running it (malformed arguments). */
  error?: { code: string; message: string };
  /**
   * Syscalls of this action that already completed, by issue order; `null` keeps
   * the slot of one that had not (a `jit.call` whose nested syscalls follow it).
   */
  journal?: (JournalEntry | null)[];
  /**
   * The action was running when the runtime stopped and left these effects
   * `unknown`: it is never run again; its result is what a human answers
   * (did each effect happen?), asked by these requests.
   */
  outcome?: { effect_ids: string[]; request_ids: string[] };
}

/** Where a human request stands. */
export type HumanRequestStatus =
  | "pending"
  | "allowed_once"
  | "allowed_always"
  | "denied"
  | "denied_always"
  | "consumed"
  | "expired"
  | "done"
  | "failed";

/**
 * What a human request asks: `permission` (an ASK: may this call run?) or
 * `outcome` (an effect a crash left unknown: did it happen?).
 */
export type HumanRequestKind = "permission" | "outcome";

/** A durable request for a human decision (the human queue). */
export interface HumanRequestRecord {
  /** Request id. */
  request_id: string;
  /** Asking pid. */
  pid: number;
  /** Syscall (the effect) that asked. */
  effect: string;
  /** Canonical arguments (redacted when above the human's clearance). */
  args: unknown;
  /** sha256 of the canonical arguments: the decision binds to it. */
  args_hash: string;
  /** Resource at stake. */
  resource: string;
  /** Right at stake. */
  right: Right;
  /** Capability id (or `policy`) that asked. */
  rule: string;
  /** Plain-language summary. */
  summary: string;
  /** Data labels involved. */
  labels: Label[];
  /** Where it stands. */
  status: HumanRequestStatus;
  /** ISO creation time. */
  created_at: string;
  /** ISO expiry: after it, the request counts as denied. */
  expires_at: string;
  /** Who decided (`human:owner via cli`, `pid:7`, ...). */
  decided_by: string | null;
  /** ISO decision time. */
  decided_at: string | null;
  /** Correlation id of the call that asked (ties ask, decision and retry in the audit). */
  correlation_id: string | null;
  /** What it asks (absent in requests made before outcome requests existed: `permission`). */
  kind?: HumanRequestKind;
  /** For an `outcome` request: the effect-ledger entry whose outcome is asked. */
  effect_id?: string;
}

/** A registered JIT tool in a process's tool table. */
export interface JitToolRef {
  /** sha256 of the validated source. */
  sha256: string;
  /** Oid of the tool_artifact object. */
  artifact: string;
}

/** One row of the process table. */
export interface ProcessRecord {
  /** Process id, unique in the store. */
  pid: number;
  /** Parent pid, `null` for a root process started by the host. */
  ppid: number | null;
  /** Ancestors, root first. */
  lineage: number[];
  /** Image name this process runs. */
  image: string;
  /** Lifecycle state. */
  status: ProcessStatus;
  /** Real path of the workspace root. */
  workspace: string;
  /** Working directory relative to the workspace (`.` is the root). */
  cwd: string;
  /** Object Memory namespace owned by this process. */
  namespace: string;
  /** Builtin tool names this process may call (from its image). */
  tools: string[];
  /** Process-local JIT tools: name -> validated artifact. */
  jit_tools: Record<string, JitToolRef>;
  /** System prompt from the image. */
  system_prompt: string;
  /** Goal given at spawn. */
  goal: string;
  /** Image policy. */
  policy: Policy;
  /** Highest data label this process has read (labels follow data). */
  taint: Label;
  /** Limits. */
  budgets: Budgets;
  /** Usage so far. */
  usage: Usage;
  /** Durable model state (script position). */
  model: ModelState | null;
  /** Action to retry on the next quantum, if the last one blocked. */
  pending: PendingAction | null;
  /** Exit code once terminal. */
  exit_code: number | null;
  /** Exit result or failure reason once terminal. */
  exit_reason: string | null;
  /** How the process came to be: root, spawn or a fork mode. */
  origin: string;
  /** Set once its parent, waiting for it, got back what it left of its budgets. */
  budgets_returned?: boolean;
  /** Set by a `cancel` signal: the process ends at its next quantum boundary. */
  cancel_requested: boolean;
  /** ISO time of creation. */
  created_at: string;
  /** ISO time of the last change. */
  updated_at: string;
}

/** The eleven rights a capability can carry. */
export const RIGHTS = [
  "read",
  "write",
  "delete",
  "execute",
  "materialize",
  "link",
  "diff",
  "grant",
  "revoke",
  "approve",
  "admin",
] as const;
/** A right. */
export type Right = typeof RIGHTS[number];

/** What a matching capability says. */
export type Effect = "allow" | "deny" | "ask";

/** Lifecycle of a capability row. */
export type CapabilityStatus = "active" | "revoked" | "exhausted";

/** An exact one-shot binding: the capability only matches this syscall with these arguments. */
export interface Binding {
  /** Syscall name. */
  syscall: string;
  /** sha256 of the canonical arguments. */
  args_hash: string;
}

/** A capability: explicit, attributable authority of one subject over one resource. */
export interface Capability {
  /** Unique id. */
  cap_id: string;
  /** Holder pid. */
  subject: number;
  /** Resource pattern (`filesystem:workspace:src/*`, `shell:git`, ...). */
  resource: string;
  /** Rights granted (or denied, or asked). */
  rights: Right[];
  /**
   * Extra conditions; `binding` makes it an exact one-shot approval;
   * `human_request` marks an always-allow minted by a human decision (whoever relayed it).
   */
  constraints: { binding?: Binding; human_request?: string; [key: string]: unknown };
  /** Issuer: `host`, `human:<name>`, or `pid:<n>`. */
  issued_by: string;
  /** ISO expiry, or `null`. */
  expires_at: string | null;
  /** May the holder delegate it (narrowed) to a child? */
  delegable: boolean;
  /** May the issuer revoke it? */
  revocable: boolean;
  /** allow, deny or ask. */
  effect: Effect;
  /** The capability this one was delegated from. */
  parent_cap_id: string | null;
  /** 0 for a host grant, parent's depth + 1 for a delegation. */
  delegation_depth: number;
  /** Remaining uses, or `null` for unlimited. */
  uses_remaining: number | null;
  /** active, revoked or exhausted. */
  status: CapabilityStatus;
  /** ISO creation time. */
  created_at: string;
}

/** The 24 kinds of typed Object Memory. */
export const OBJECT_KINDS = [
  "task",
  "goal",
  "plan",
  "step",
  "constraint",
  "message",
  "human_decision",
  "human_request",
  "tool_result",
  "observation",
  "error_trace",
  "code_patch",
  "test_result",
  "evidence",
  "claim",
  "summary",
  "skill",
  "tool_spec",
  "tool_candidate",
  "tool_artifact",
  "checkpoint",
  "process_state",
  "external_ref",
  "artifact",
] as const;
/** An object kind. */
export type ObjectKind = typeof OBJECT_KINDS[number];

/** A versioned, labelled object in Object Memory. */
export interface MemoryObject {
  /** Object id. */
  oid: string;
  /** Namespace the object lives in. */
  namespace: string;
  /** Typed kind. */
  kind: ObjectKind;
  /** Optional name, unique per namespace when set. */
  name: string | null;
  /** Version, starting at 1; every update increments it. */
  version: number;
  /** Data label. */
  label: Label;
  /** JSON payload. */
  payload: unknown;
  /** Oids this object was derived from. */
  derived_from: string[];
  /** Pid that created it. */
  created_by: number;
  /** ISO creation time. */
  created_at: string;
  /** ISO time of the last version. */
  updated_at: string;
}

/** A directed link between two objects. */
export interface ObjectLink {
  /** Source oid. */
  from_oid: string;
  /** Target oid. */
  to_oid: string;
  /** Relation name. */
  relation: string;
}

/** A message in a process mailbox. */
export interface MailMessage {
  /** Message id. */
  msg_id: number;
  /** Sender pid (`null` for the host). */
  from_pid: number | null;
  /** Recipient pid. */
  to_pid: number;
  /** normal or interrupt (interrupts are delivered first). */
  kind: "normal" | "interrupt";
  /** Message body. */
  body: unknown;
  /** ISO time. */
  created_at: string;
}

/** Decision recorded by an audit record. */
export type Decision = "allow" | "deny" | "ask" | "error" | "info";

/** One hash-chained audit record. */
export interface AuditRecord {
  /** Sequence number, 1-based and gap-free. */
  seq: number;
  /** Unique id. */
  record_id: string;
  /** ISO time. */
  timestamp: string;
  /** Who acted: `pid:<n>`, `host`, `human:<name>`. */
  actor: string;
  /** Syscall or operation name. */
  action: string;
  /** Resource acted on. */
  target: string;
  /** Bounded references to the inputs (preview, hash, size). */
  input_refs: unknown;
  /** Bounded references to the outputs. */
  output_refs: unknown;
  /** Capabilities that decided. */
  capability_refs: string[];
  /** allow, deny, ask, error or info. */
  decision: Decision;
  /** Why (error code and message, or the rule that decided). */
  reason: string;
  /** Groups records of one logical operation. */
  correlation_id: string | null;
  /** Record this one follows from. */
  parent_record_id: string | null;
  /** Hash of the previous record (`""` for the first). */
  prev_hash: string;
  /** sha256 over prev_hash and this record's canonical fields. */
  hash: string;
}

/** The event types the runtime emits. */
export const EVENT_TYPES = [
  "process.created",
  "process.status",
  "process.exited",
  "process.signal",
  "process.exec",
  "message.sent",
  "capability.granted",
  "capability.revoked",
  "capability.consumed",
  "syscall.denied",
  "human.asked",
  "human.decided",
  "human.output",
  "object.created",
  "object.updated",
  "object.linked",
  "file.written",
  "file.deleted",
  "shell.executed",
  "image.registered",
  "effect.intent",
  "effect.completed",
  "effect.unknown",
  "recovery.deferred",
  "budget.exhausted",
  "label.blocked",
  "model.request",
  "model.reply",
  "model.failed",
  "model.redacted",
  "model.compacted",
  "model.released",
  "effect.confirmed",
  "checkpoint.created",
  "checkpoint.restored",
  "checkpoint.forked",
  "checkpoint.committed",
] as const;
/** An event type. */
export type EventType = typeof EVENT_TYPES[number];

/** Event envelope. */
export interface LibosEvent {
  /** Sequence id. */
  event_id: number;
  /** Type. */
  type: EventType;
  /** Emitter (`pid:<n>`, `host`, `kernel`). */
  source: string;
  /** What the event is about. */
  target: string;
  /** Bounded payload. */
  payload: unknown;
  /** 0 normal, higher is more urgent. */
  priority: number;
  /** ISO time. */
  created_at: string;
  /** Correlates with audit records. */
  correlation_id: string | null;
}

/** State of an external effect in the ledger. */
export type EffectStatus = "pending" | "done" | "failed" | "unknown";

/** An effect-ledger entry: intent before the effect, outcome after. */
export interface EffectRecord {
  /** Id. */
  effect_id: string;
  /** Pid that caused it. */
  pid: number;
  /** Syscall name. */
  syscall: string;
  /** Resource touched. */
  resource: string;
  /** sha256 of the canonical arguments. */
  args_hash: string;
  /** pending, done, failed or unknown (crash between intent and outcome). */
  status: EffectStatus;
  /** Outcome summary (hash/size or error), set when finished. */
  outcome: unknown;
  /** ISO time of the intent. */
  created_at: string;
  /** ISO time of the outcome. */
  finished_at: string | null;
  /**
   * ISO time (the host's real clock) by which the effect has surely ended
   * whatever became of the runtime that started it: its OS-enforced deadline
   * (a shell command is killed at it by its sandbox, and never starts after
   * it). Absent for effects that end with the runtime's own steps. Another
   * runtime asks no human about it before then.
   */
  ends_by?: string;
}

/** One attempt of a model call (the ledger keeps every one). */
export interface ModelAttempt {
  /** 1-based. */
  attempt: number;
  /** `ok` or why it failed (`rate_limit`, `server`, `connection`, `timeout`, `client`, ...). */
  outcome: string;
  /** HTTP status, if any. */
  status: number | null;
  /** Milliseconds it took. */
  latency_ms: number;
  /** Wait before the next attempt, if one followed. */
  wait_ms: number | null;
  /** Error message (never a key). */
  error?: string;
}

/** A model call in the LLM call ledger: its request before, its reply after. */
export interface ModelCallRecord {
  /** Id. */
  call_id: string;
  /** The process it was made for. */
  pid: number;
  /** The conversation turn it answers (a summary call: the turn it was made before). */
  turn: number;
  /** `turn` (the agent's next move) or `summary` (context compaction). */
  purpose: "turn" | "summary";
  /** `openai` or `anthropic`. */
  provider: string;
  /** Model name. */
  model: string;
  /** Base URL (null: the provider's own). */
  base_url: string | null;
  /** pending (sent or about to be), done, failed, or unknown (a crash in between). */
  status: EffectStatus;
  /** What was sent, by hash and size: never the content itself. */
  request: {
    /** Messages in the request. */
    messages: number;
    /** Hash chain of the conversation entries sent (identifies the content). */
    messages_sha256: string;
    /** Tools offered. */
    tools: number;
    /** sha256 of the tool schemas. */
    tools_sha256: string;
    /** Estimated input tokens. */
    est_input_tokens: number;
    /** Content held back by the sink rule. */
    redactions: { label: Label; sha256: string; size: number }[];
  };
  /** Every attempt. */
  attempts: ModelAttempt[];
  /** Input tokens the provider counted. */
  input_tokens: number | null;
  /** Output tokens the provider counted. */
  output_tokens: number | null;
  /** Milliseconds of the successful attempt. */
  latency_ms: number | null;
  /** Normalised finish reason (`stop`, `tool_calls`, `length`, `refusal`, `other`). */
  finish_reason: string | null;
  /** The reply object (kind `message`, labelled with the process's taint). */
  reply_oid: string | null;
  /** Why it failed. */
  error: string | null;
  /** ISO time it was recorded (before the request left). */
  created_at: string;
  /** ISO time it ended. */
  finished_at: string | null;
}

/** A human's release of exactly one piece of held-back content to one model endpoint. */
export interface ModelRelease {
  /** The process whose conversation holds it. */
  pid: number;
  /** sha256 of the content. */
  sha256: string;
  /** `<provider> <base URL or default>`. */
  endpoint: string;
  /** Who released it. */
  decided_by: string;
  /** ISO time. */
  at: string;
}

/** A registered AgentImage (validated). */
export interface AgentImage {
  /** Unique name. */
  name: string;
  /** What it is for. */
  description: string;
  /** System prompt for the model. */
  system_prompt: string;
  /** Builtin tool names. */
  tools: string[];
  /** Capabilities the host grants when it launches this image (never by register or exec). */
  capabilities: CapabilitySpec[];
  /** Policy. */
  policy: Policy;
  /** Capabilities the process must already hold to exec into this image. */
  required_capabilities: CapabilitySpec[];
  /** Default budgets. */
  budgets: Budgets;
  /** The model that drives it, if the image names one (the host may override it at launch). */
  model?: ModelConfig | null;
}

/** A capability as written in an image or on the command line. */
export interface CapabilitySpec {
  /** Resource pattern. */
  resource: string;
  /** Rights. */
  rights: Right[];
  /** allow (default), deny or ask. */
  effect?: Effect;
  /** Limited uses. */
  uses_remaining?: number | null;
  /** ISO expiry. */
  expires_at?: string | null;
  /** Delegable to children (default true). */
  delegable?: boolean;
}

/**
 * A stored checkpoint of a process subtree: the snapshot as plain JSON (its
 * canonical form, see `runtime/checkpoint.ts`) and the sha256 of that text.
 * Restore and fork check the hash before reading anything else.
 */
export interface CheckpointRecord {
  /** Id (`ckpt_...`). */
  checkpoint_id: string;
  /** The subtree's root pid. */
  root_pid: number;
  /** A caller's label, if any. */
  label: string | null;
  /** ISO creation time. */
  created_at: string;
  /** Who made it: `pid:<n>` or `host`. */
  created_by: string;
  /** sha256 of `body`. */
  sha256: string;
  /** Characters of `body`. */
  size: number;
  /** Processes in the snapshot. */
  processes: number;
  /** Objects in the snapshot. */
  objects: number;
  /** The snapshot document as canonical JSON. */
  body: string;
}

/** A checkpoint without its body (what listings show). */
export type CheckpointMeta = Omit<CheckpointRecord, "body">;
