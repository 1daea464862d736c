/**
 * Builtin tools: libc-like wrappers. Each one only shapes its arguments and
 * calls syscalls through the `sys` function it is handed; none of them checks
 * or holds authority. Tool dispatch is never trusted: the primitives decide.
 * @module
 */

/** The syscall interface a tool sees: a name and JSON arguments. */
export type Sys = (name: string, args: Record<string, unknown>) => Promise<unknown>;

/** JSON Schema of a tool's arguments (an object schema), as offered to a model. */
export interface ToolParameters {
  /** Always `object`. */
  type: "object";
  /** Each argument's schema with a one-line description. */
  properties: Record<string, Record<string, unknown>>;
  /** Arguments that must be given. */
  required: string[];
  /** No other arguments. */
  additionalProperties: false;
}

/** A builtin tool. */
export interface BuiltinTool {
  /** One line for the model. */
  description: string;
  /** Argument names it accepts (the keys of `parameters.properties`). */
  args: readonly string[];
  /** JSON Schema of its arguments. */
  parameters: ToolParameters;
  /** Run it: call syscalls, return a JSON value. */
  run(args: Record<string, unknown>, sys: Sys): Promise<unknown>;
}

/** Error a tool raises for its own bad arguments (code EINVAL). */
export class ToolArgumentError extends Error {
  /** Always EINVAL. */
  readonly code = "EINVAL";
  /** Name the tool and argument. */
  constructor(message: string) {
    super(message);
    this.name = "ToolArgumentError";
  }
}

// ---- argument schemas (the primitives validate values; these tell a model what to send)

const _str = (description: string) => ({ type: "string", description });
const _int = (description: string, minimum?: number, maximum?: number) => ({
  type: "integer",
  description,
  ...(minimum !== undefined ? { minimum } : {}),
  ...(maximum !== undefined ? { maximum } : {}),
});
const _bool = (description: string) => ({ type: "boolean", description });
const _strs = (description: string) => ({ type: "array", items: { type: "string" }, description });
const _any = (description: string) => ({ description });
const _enum = (values: string[], description: string) => ({
  type: "string",
  enum: values,
  description,
});
const _LABEL = _enum(
  ["public", "normal", "confidential", "restricted", "secret"],
  "Data label (never lower than what the process has read)",
);
const _PATH = _str("Workspace path, relative to the working directory");
const _KIND = _str("Object kind (task, goal, plan, evidence, summary, artifact, ...)");
const _CKPT = _str("Checkpoint id (ckpt_...)");

function _params(
  properties: Record<string, Record<string, unknown>>,
  required: string[] = [],
): ToolParameters {
  return { type: "object", properties, required, additionalProperties: false };
}

function _tool(
  description: string,
  parameters: ToolParameters,
  run: (a: Record<string, unknown>, sys: Sys) => Promise<unknown>,
): BuiltinTool {
  return { description, args: Object.keys(parameters.properties), parameters, run };
}

function _wrap(
  description: string,
  syscall: string,
  parameters: ToolParameters,
  defaults: Record<string, unknown> = {},
): BuiltinTool {
  return _tool(description, parameters, (a, sys) => sys(syscall, { ...defaults, ...a }));
}

// Bridge tools: files <-> objects. Labels cross with the data because the
// primitives carry them: reading raises the caller's taint, which the next
// write inherits; writing an object out asks for the object's label on the file.
const createObjectFromFile = _tool(
  "Read a workspace file into a new object (label carried).",
  _params({ path: _PATH, kind: _KIND, name: _str("Object name"), label: _LABEL }, ["path"]),
  async (a, sys) => {
    const text = await sys("filesystem.read", { path: a.path });
    const put: Record<string, unknown> = {
      kind: a.kind ?? "artifact",
      payload: { path: a.path, text },
    };
    if (a.name !== undefined) put.name = a.name;
    if (a.label !== undefined) put.label = a.label;
    return await sys("memory.put", put);
  },
);

const writeObjectToFile = _tool(
  "Write an object's text (or JSON) to a workspace file (label carried).",
  _params({ oid: _str("Object id"), name: _str("Object name"), path: _PATH }, ["path"]),
  async (a, sys) => {
    const get: Record<string, unknown> = a.oid !== undefined ? { oid: a.oid } : { name: a.name };
    const obj = await sys("memory.get", get) as { payload: unknown; label: string };
    const p = obj.payload as { text?: unknown } | null;
    const content = p !== null && typeof p === "object" && typeof p.text === "string"
      ? p.text
      : JSON.stringify(obj.payload, null, 2);
    return await sys("filesystem.write", { path: a.path, content, label: obj.label });
  },
);

/** What a child's budgets argument means (they come out of the caller's). */
const _BUDGETS_DOC =
  'The child\'s budgets, e.g. {"max_syscalls": 50}: each comes out of what you have left ' +
  "(default half of it) and what the child leaves comes back when you wait for it";

const _CAPS = {
  type: "array",
  description: "Capabilities to delegate, each a narrowing of one this process holds",
  items: {
    type: "object",
    properties: {
      resource: _str("Resource, e.g. filesystem:workspace:logs/*"),
      rights: _strs("Rights, e.g. read, write"),
      expires_at: _str("ISO-8601 expiry"),
      uses_remaining: _int("Most uses", 1),
      delegable: _bool("May be delegated further"),
    },
    required: ["resource", "rights"],
  },
};

/** The builtin tool table. Images list tools by these names. */
export const BUILTIN_TOOLS: Readonly<Record<string, BuiltinTool>> = Object.freeze({
  read_file: _wrap(
    "Read a workspace file as text.",
    "filesystem.read",
    _params({ path: _PATH }, ["path"]),
  ),
  write_file: _wrap(
    "Write text to a workspace file (create or replace).",
    "filesystem.write",
    _params({ path: _PATH, content: _str("The whole new content"), label: _LABEL }, [
      "path",
      "content",
    ]),
  ),
  delete_file: _wrap(
    "Delete a workspace file.",
    "filesystem.delete",
    _params({ path: _PATH, recursive: _bool("Delete a directory and everything in it") }, ["path"]),
  ),
  list_dir: _wrap(
    "List a workspace directory.",
    "filesystem.list",
    _params({ path: _str("Directory (default: the working directory)") }),
    { path: "." },
  ),
  stat_file: _wrap(
    "Describe a workspace path (kind, size, label).",
    "filesystem.stat",
    _params({ path: _PATH }, ["path"]),
  ),
  shell: _wrap(
    'Run a program given as argv (no shell string), e.g. ["wc", "-l", "log.txt"].',
    "shell.run",
    _params({
      argv: { ..._strs("Program name and its arguments"), minItems: 1 },
      timeout_ms: _int("Timeout in milliseconds", 1, 300_000),
    }, ["argv"]),
  ),
  put_object: _wrap(
    "Create a typed object in Object Memory.",
    "memory.put",
    _params({
      kind: _KIND,
      payload: _any("Any JSON value"),
      name: _str("Object name (unique in its namespace)"),
      label: _LABEL,
      namespace: _str("Namespace (default: this process's)"),
      derived_from: _strs("Oids this object was derived from"),
    }, ["kind", "payload"]),
  ),
  get_object: _wrap(
    "Read an object by oid or by name.",
    "memory.get",
    _params({ oid: _str("Object id"), name: _str("Object name"), namespace: _str("Namespace") }),
  ),
  update_object: _wrap(
    "Update an object (compare-and-swap on its version).",
    "memory.update",
    _params({
      oid: _str("Object id"),
      payload: _any("The new payload"),
      expected_version: _int("The version read before", 1),
      label: _LABEL,
    }, ["oid", "payload", "expected_version"]),
  ),
  list_objects: _wrap(
    "List the objects of a namespace (metadata).",
    "memory.list",
    _params({ namespace: _str("Namespace (default: this process's)") }),
  ),
  link_objects: _wrap(
    "Link two objects.",
    "memory.link",
    _params({ from: _str("Oid"), to: _str("Oid"), relation: _str("Relation name") }, [
      "from",
      "to",
      "relation",
    ]),
  ),
  spawn: _wrap(
    "Start a fresh child process with only a goal (it inherits no authority).",
    "process.spawn",
    _params({
      goal: _str("The child's goal"),
      tools: _strs("Tools the child may use (a subset of yours)"),
      jit_tools: _strs("Your JIT tools to pass on"),
      script: _any("Scripted steps, for a scripted child"),
      budgets: _any(_BUDGETS_DOC),
    }, ["goal"]),
  ),
  fork: _wrap(
    "Fork a child: copy, restricted, speculative or worker.",
    "process.fork",
    _params({
      mode: _enum(["copy", "restricted", "speculative", "worker"], "Fork mode"),
      goal: _str("The child's goal"),
      capabilities: _CAPS,
      tools: _strs("Tools the child may use (a subset of yours)"),
      jit_tools: _strs("Your JIT tools to pass on"),
      script: _any("Scripted steps, for a scripted child"),
      budgets: _any(_BUDGETS_DOC),
    }, ["mode"]),
  ),
  exec: _wrap(
    "Replace this process's image (grants nothing).",
    "process.exec",
    _params({ image: _str("Registered image name") }, ["image"]),
  ),
  wait: _wrap(
    "Wait for a direct child to end.",
    "process.wait",
    _params({ pid: _int("Child pid", 1) }, ["pid"]),
  ),
  signal: _wrap(
    "Signal a direct child.",
    "process.signal",
    _params({
      pid: _int("Child pid", 1),
      signal: _enum(["pause", "resume", "cancel", "terminate"], "Signal"),
    }, ["pid", "signal"]),
  ),
  send: _wrap(
    "Send a message to the parent or a child.",
    "process.send",
    _params({
      pid: _int("Recipient pid", 1),
      body: _any("Message body (JSON)"),
      kind: _enum(["normal", "interrupt"], "Message kind"),
    }, ["pid", "body"]),
  ),
  recv: _wrap(
    "Receive messages (interrupts first).",
    "process.recv",
    _params({ limit: _int("Most messages", 1) }),
  ),
  chdir: _wrap(
    "Change the working directory.",
    "process.chdir",
    _params({ path: _PATH }, ["path"]),
  ),
  exit: _wrap(
    "End this process.",
    "process.exit",
    _params({ code: _int("Exit code (0: success)", 0, 255), result: _str("Final result text") }),
  ),
  output: _wrap(
    "Show text to the human.",
    "human.output",
    _params({ text: _str("What to show"), to: _str("Human name (default owner)") }, ["text"]),
  ),
  now: _wrap("Read the clock.", "clock.now", _params({})),
  sleep: _wrap(
    "Sleep.",
    "clock.sleep",
    _params({ ms: _int("Milliseconds", 0) }, ["ms"]),
  ),
  grant: _wrap(
    "Delegate a narrowed capability to a descendant.",
    "capability.grant",
    _params({
      cap_id: _str("Capability to narrow"),
      to: _int("Descendant pid", 1),
      resource: _str("Narrower resource"),
      rights: _strs("Subset of rights"),
      expires_at: _str("ISO-8601 expiry"),
      uses_remaining: _int("Most uses", 1),
      delegable: _bool("May be delegated further"),
    }, ["cap_id", "to"]),
  ),
  revoke: _wrap(
    "Revoke a capability (cascades to its delegations).",
    "capability.revoke",
    _params({ cap_id: _str("Capability id") }, ["cap_id"]),
  ),
  capabilities: _wrap("List this process's live capabilities.", "capability.list", _params({})),
  create_object_from_file: createObjectFromFile,
  write_object_to_file: writeObjectToFile,
  register_image: _wrap(
    "Register an AgentImage (grants nothing).",
    "image.register",
    _params({ image: { type: "object", description: "The image document" } }, ["image"]),
  ),
  list_images: _wrap("List visible images.", "image.list", _params({})),
  checkpoint_create: _wrap(
    "Checkpoint a process subtree (this process by default) at a quiescent point.",
    "checkpoint.create",
    _params({
      pid: _int("Root of the subtree: this process or a descendant", 1),
      label: _str("A label to find it by"),
    }),
  ),
  checkpoint_list: _wrap(
    "List the checkpoints of a process subtree (this process by default).",
    "checkpoint.list",
    _params({ pid: _int("This process or a descendant", 1) }),
  ),
  checkpoint_inspect: _wrap(
    "Describe a checkpoint: its processes, objects (no payloads) and capabilities.",
    "checkpoint.inspect",
    _params({ checkpoint_id: _CKPT }, ["checkpoint_id"]),
  ),
  checkpoint_diff: _wrap(
    "Compare a checkpoint with another of the same subtree, or with now; lists effects since.",
    "checkpoint.diff",
    _params({ checkpoint_id: _CKPT, other: _str("Another checkpoint id (default: now)") }, [
      "checkpoint_id",
    ]),
  ),
  checkpoint_restore: _wrap(
    "Put a descendant's subtree back as it was at a checkpoint (external effects are not undone).",
    "checkpoint.restore",
    _params({ checkpoint_id: _CKPT }, ["checkpoint_id"]),
  ),
  checkpoint_fork: _wrap(
    "Start a copy of a checkpointed subtree as a new child (it holds no more authority than the originals).",
    "checkpoint.fork",
    _params({ checkpoint_id: _CKPT }, ["checkpoint_id"]),
  ),
  checkpoint_commit: _wrap(
    "Turn a checkpoint into an image (tools, prompt, required capabilities; grants nothing).",
    "checkpoint.commit",
    _params({ checkpoint_id: _CKPT, image: _str("Name of the new image") }, [
      "checkpoint_id",
      "image",
    ]),
  ),
});

/** Builtin tool names. */
export const BUILTIN_TOOL_NAMES: readonly string[] = Object.keys(BUILTIN_TOOLS);

/** Check a tool's argument names, then run it. */
export async function runBuiltin(
  name: string,
  args: Record<string, unknown>,
  sys: Sys,
): Promise<unknown> {
  const tool = BUILTIN_TOOLS[name];
  for (const k of Object.keys(args)) {
    if (!tool.args.includes(k)) throw new ToolArgumentError(`${name}.${k}: unknown argument`);
  }
  return await tool.run(args, sys);
}
