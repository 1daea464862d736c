/**
 * Builtin tools: libc-like wrappers. Each one only shapes its arguments and
 * calls syscalls through the `sys` function it is handed; none of them checks
 * or holds authority. Tool dispatch is never trusted: the primitives decide.
 * @module
 */

/** The syscall interface a tool sees: a name and JSON arguments. */
export type Sys = (name: string, args: Record<string, unknown>) => Promise<unknown>;

/** A builtin tool. */
export interface BuiltinTool {
  /** One line for the model. */
  description: string;
  /** Argument names it accepts. */
  args: readonly string[];
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

function _wrap(
  description: string,
  syscall: string,
  args: readonly string[],
  defaults: Record<string, unknown> = {},
): BuiltinTool {
  return {
    description,
    args,
    run: (a, sys) => sys(syscall, { ...defaults, ...a }),
  };
}

// Bridge tools: files <-> objects. Labels cross with the data because the
// primitives carry them: reading raises the caller's taint, which the next
// write inherits; writing an object out asks for the object's label on the file.
const createObjectFromFile: BuiltinTool = {
  description: "Read a workspace file into a new object (label carried).",
  args: ["path", "kind", "name", "label"],
  async run(a, sys) {
    const text = await sys("filesystem.read", { path: a.path });
    const put: Record<string, unknown> = {
      kind: a.kind ?? "artifact",
      payload: { path: a.path, text },
    };
    if (a.name !== undefined) put.name = a.name;
    if (a.label !== undefined) put.label = a.label;
    return await sys("memory.put", put);
  },
};

const writeObjectToFile: BuiltinTool = {
  description: "Write an object's text (or JSON) to a workspace file (label carried).",
  args: ["oid", "name", "path"],
  async run(a, sys) {
    const get: Record<string, unknown> = a.oid !== undefined ? { oid: a.oid } : { name: a.name };
    const obj = await sys("memory.get", get) as { payload: unknown; label: string };
    const p = obj.payload as { text?: unknown } | null;
    const content = p !== null && typeof p === "object" && typeof p.text === "string"
      ? p.text
      : JSON.stringify(obj.payload, null, 2);
    return await sys("filesystem.write", { path: a.path, content, label: obj.label });
  },
};

/** The builtin tool table. Images list tools by these names. */
export const BUILTIN_TOOLS: Readonly<Record<string, BuiltinTool>> = Object.freeze({
  read_file: _wrap("Read a workspace file as text.", "filesystem.read", ["path"]),
  write_file: _wrap("Write text to a workspace file.", "filesystem.write", [
    "path",
    "content",
    "label",
  ]),
  delete_file: _wrap("Delete a workspace file.", "filesystem.delete", ["path", "recursive"]),
  list_dir: _wrap("List a workspace directory.", "filesystem.list", ["path"], { path: "." }),
  stat_file: _wrap("Describe a workspace path.", "filesystem.stat", ["path"]),
  shell: _wrap("Run a command given as argv (no shell string).", "shell.run", [
    "argv",
    "timeout_ms",
  ]),
  put_object: _wrap("Create a typed object in Object Memory.", "memory.put", [
    "kind",
    "payload",
    "name",
    "label",
    "namespace",
    "derived_from",
  ]),
  get_object: _wrap("Read an object by oid or name.", "memory.get", ["oid", "name", "namespace"]),
  update_object: _wrap("Update an object (compare-and-swap on version).", "memory.update", [
    "oid",
    "payload",
    "expected_version",
    "label",
  ]),
  list_objects: _wrap("List objects of a namespace.", "memory.list", ["namespace"]),
  link_objects: _wrap("Link two objects.", "memory.link", ["from", "to", "relation"]),
  spawn: _wrap("Start a fresh child with only a goal.", "process.spawn", [
    "goal",
    "tools",
    "jit_tools",
    "script",
  ]),
  fork: _wrap("Fork a child (copy, restricted, speculative, worker).", "process.fork", [
    "mode",
    "goal",
    "capabilities",
    "tools",
    "jit_tools",
    "script",
  ]),
  exec: _wrap("Replace this process's image.", "process.exec", ["image"]),
  wait: _wrap("Wait for a direct child to end.", "process.wait", ["pid"]),
  signal: _wrap("Signal a direct child.", "process.signal", ["pid", "signal"]),
  send: _wrap("Send a message to the parent or a child.", "process.send", ["pid", "body", "kind"]),
  recv: _wrap("Receive messages (interrupts first).", "process.recv", ["limit"]),
  chdir: _wrap("Change the working directory.", "process.chdir", ["path"]),
  exit: _wrap("End this process.", "process.exit", ["code", "result"]),
  output: _wrap("Show text to the human.", "human.output", ["text", "to"]),
  now: _wrap("Read the clock.", "clock.now", []),
  sleep: _wrap("Sleep.", "clock.sleep", ["ms"]),
  grant: _wrap("Delegate a narrowed capability to a descendant.", "capability.grant", [
    "cap_id",
    "to",
    "resource",
    "rights",
    "expires_at",
    "uses_remaining",
    "delegable",
  ]),
  revoke: _wrap("Revoke a capability (cascades).", "capability.revoke", ["cap_id"]),
  capabilities: _wrap("List this process's live capabilities.", "capability.list", []),
  create_object_from_file: createObjectFromFile,
  write_object_to_file: writeObjectToFile,
  register_image: _wrap("Register an AgentImage (grants nothing).", "image.register", ["image"]),
  list_images: _wrap("List visible images.", "image.list", []),
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
