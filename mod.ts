/**
 * Agent libOS: a Deno-native runtime for long-running LLM agents.
 *
 * An agent is an AgentProcess with identity, lineage, lifecycle state, a tool
 * table from its AgentImage, typed Object Memory, explicit capabilities and
 * audit records. Tools are libc-like wrappers; the primitives in `primitives/`
 * are the authority boundary: every effect is checked there and recorded.
 *
 * @example Run a scripted agent over a workspace
 * ```ts
 * import { Runtime } from "./mod.ts";
 *
 * const rt = await Runtime.open({ store: ":memory:" });
 * const proc = await rt.launch({
 *   image: { name: "reader", tools: ["read_file"] },
 *   workspace: ".",
 *   grants: [{ resource: "filesystem:workspace:README.md", rights: ["read"] }],
 *   script: { steps: [{ tool: "read_file", args: { path: "README.md" } }] },
 * });
 * await rt.runUntilIdle();
 * console.log((await rt.steps(proc.pid))[0].ok); // true
 * await rt.close();
 * ```
 * @module
 */
export { assertStoreOutside, hostProviders, Runtime } from "./host/runtime.ts";
export type { LaunchOptions, RuntimeOptions } from "./host/runtime.ts";
export { ABLATION_NAMES, ABLATIONS, parseAblations } from "./runtime/ablations.ts";
export type { Ablation, AblationSet } from "./runtime/ablations.ts";
export { Kernel, QUIESCE_TIMEOUT_MS } from "./runtime/kernel.ts";
export type {
  ActiveJournal,
  Dispatch,
  KernelOptions,
  ProcessSpec,
  ToolSpec,
} from "./runtime/kernel.ts";
export { DEFAULT_CONCURRENCY, Scheduler, YIELD_EVERY_MS } from "./host/scheduler.ts";
export type { QuantumDriver, RunReport, StepResult } from "./host/scheduler.ts";
export { WORKER_LEASE_MS, WORKER_POLL_MS, workerId, WorkerLoop } from "./host/worker.ts";
export type { RunOptions, WorkerOptions, WorkerStats } from "./host/worker.ts";
export { SqliteStore } from "./runtime/store/sqlite.ts";
export { PgStore } from "./runtime/store/postgres.ts";
export type { PgOptions } from "./runtime/store/postgres.ts";
export { isPostgresUrl, openStore, redactUrl } from "./runtime/store/open.ts";
export type {
  AuditDraft,
  AuditFilter,
  AuditVerification,
  Claim,
  EventDraft,
  Fence,
  LeaseStore,
  LedgerMark,
  LedgerSince,
  ObjectVersion,
  Renewal,
  Store,
  StoreActivity,
  TransactionOptions,
} from "./runtime/store/store.ts";
export { VERIFY_PARALLEL_ABOVE } from "./runtime/store/sqlite.ts";
export type { SqliteOptions } from "./runtime/store/sqlite.ts";
export {
  CHECKPOINT_FORMAT,
  decodeCheckpoint,
  diffProcess,
  diffSubtrees,
  encodeCheckpoint,
  remapActor,
  remapResource,
} from "./runtime/checkpoint.ts";
export type {
  CapView,
  CheckpointDoc,
  EffectsSince,
  ObjectView,
  ProcessDiff,
  ProcessSnapshot,
} from "./runtime/checkpoint.ts";
export {
  commitCheckpoint,
  createCheckpoint,
  diffCheckpoint,
  forkCheckpoint,
  inspectCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  restoreCheckpoint,
} from "./primitives/checkpoint.ts";
export type {
  CheckpointDiff,
  CheckpointSummary,
  CreateOptions,
  ForkOptions,
  ForkResult,
  RestoreOptions,
  RestoreResult,
} from "./primitives/checkpoint.ts";
export { MAX_CURSOR_CHARS, StoreModelContext } from "./runtime/model_context.ts";
export { LibosError } from "./runtime/errors.ts";
export type { ErrorCode } from "./runtime/errors.ts";
export {
  decide,
  parseCapabilitySpec,
  parseGrantFlag,
  parseResource,
  resourceCovers,
  resourceMatches,
} from "./runtime/capabilities.ts";
export type { CapDecision } from "./runtime/capabilities.ts";
export { parseImage, parsePolicy } from "./runtime/images.ts";
export type { ScriptInput, ScriptStep } from "./runtime/providers/scripted.ts";
export {
  ConsoleHuman,
  DenyingHuman,
  parseScript,
  QueueHuman,
  ScriptedHuman,
  ScriptedModel,
} from "./runtime/providers/scripted.ts";
export { HostClock, HostFileSystem, HostShell } from "./runtime/providers/host.ts";
export { HostSandbox, MAX_TOOL_SOURCE } from "./runtime/sandbox/provider.ts";
export type { Artifact, SandboxProvider, ValidationWarning } from "./runtime/sandbox/provider.ts";
export { DEFAULT_LIMITS } from "./runtime/sandbox/launcher.ts";
export type { SandboxLimits, SandboxOutcome, SandboxRequest } from "./runtime/sandbox/launcher.ts";
export type { PermissionHandler } from "./runtime/sandbox/broker.ts";
export { commandLimitKinds } from "./runtime/sandbox/cgroups.ts";
export type {
  CommandLimitKinds,
  MemoryLimitKind,
  ProcessLimitKind,
} from "./runtime/sandbox/cgroups.ts";
export { accessFlags, deriveAccess, deriveGrants } from "./runtime/sandbox/flags.ts";
export type {
  DerivedAccess,
  DerivedGrants,
  GrantScope,
  PathGrant,
} from "./runtime/sandbox/flags.ts";
export { planSandbox } from "./runtime/sandbox/bwrap.ts";
export type {
  BwrapPlan,
  CommandLimits,
  PlanExtras,
  ShellView,
  WorkspaceMount,
} from "./runtime/sandbox/bwrap.ts";
export type { Libos, ToolRun } from "./tools/jit/libos.ts";
export type * from "./runtime/providers/types.ts";
export type * from "./runtime/types.ts";
export { syscall, SYSCALL_NAMES } from "./primitives/mod.ts";
export { applyDecision, askOutcome, HUMAN_REQUEST_TTL_MS } from "./primitives/authorize.ts";
export type { SyscallOptions } from "./primitives/mod.ts";
export { BUILTIN_TOOL_NAMES, BUILTIN_TOOLS } from "./tools/builtin.ts";
export type { BuiltinTool, Sys, ToolParameters } from "./tools/builtin.ts";
export * from "./runtime/conversation.ts";
export * from "./runtime/providers/chat.ts";
export { hostChat } from "./runtime/providers/chat_host.ts";
export type { ChatFactory } from "./runtime/providers/chat_host.ts";
export { OPENAI_DEFAULT_BASE_URL, OpenAIChat } from "./runtime/providers/openai.ts";
export { ANTHROPIC_DEFAULT_BASE_URL, AnthropicChat } from "./runtime/providers/anthropic.ts";
export { ModelLoop } from "./host/model_loop.ts";
export { clearanceFor, endpointOf } from "./primitives/model.ts";
export type { LlmInput, ModelCallResult } from "./primitives/model.ts";
export { parseBaseUrl, parseModelConfig, parseModelFlag } from "./runtime/images.ts";
