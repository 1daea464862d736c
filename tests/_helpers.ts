/**
 * Shared fixtures for tests: a runtime over a fresh temp workspace and store,
 * with deterministic providers where asked.
 * @module
 */
import { join } from "node:path";
import { Runtime } from "../host/runtime.ts";
import { DenyingHuman } from "../runtime/providers/scripted.ts";
import type { Providers } from "../runtime/providers/types.ts";
import type { Capability, CapabilitySpec } from "../runtime/types.ts";
import { LibosError } from "../runtime/errors.ts";

/** A test environment: temp dir with `ws/` (workspace) and `store.db`. */
export interface Env {
  /** Temp root (outside the workspace). */
  root: string;
  /** Workspace real path. */
  ws: string;
  /** Store file path. */
  storePath: string;
  /** The runtime. */
  rt: Runtime;
  /** Human channel used (inspect `.asked`, `.shown`). */
  human: DenyingHuman;
  /** Close the runtime and delete the temp dir. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@link makeEnv}. */
export interface EnvOptions {
  /** Files to create in the workspace: relative path -> content. */
  files?: Record<string, string>;
  /** Providers to replace. */
  providers?: Partial<Providers>;
  /** Where JIT artifacts are cached (share one across a file: a source type-checks once). */
  jitCacheDir?: string;
  /** Scheduler slots (the runtime's default unless given; 1 where a test asserts an order). */
  concurrency?: number;
}

/** Create a temp workspace + store and open a runtime on it. Use with `await using`. */
export async function makeEnv(options: EnvOptions = {}): Promise<Env> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const ws = join(root, "ws");
  await Deno.mkdir(ws);
  for (const [rel, content] of Object.entries(options.files ?? {})) {
    await Deno.mkdir(join(ws, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(ws, rel), content);
  }
  const storePath = join(root, "store.db");
  const human = (options.providers?.human as DenyingHuman | undefined) ?? new DenyingHuman();
  const rt = await Runtime.open({
    store: storePath,
    providers: { human, ...options.providers },
    jitCacheDir: options.jitCacheDir,
    concurrency: options.concurrency,
  });
  return {
    root,
    ws,
    storePath,
    rt,
    human,
    async [Symbol.asyncDispose]() {
      try {
        await rt.close();
      } catch { /* already closed */ }
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Launch a root process with `tools` and `caps` (and an optional policy/script). */
export async function launch(
  env: Env,
  caps: CapabilitySpec[] = [],
  extra: {
    tools?: string[];
    policy?: unknown;
    script?: unknown;
    name?: string;
    budgets?: unknown;
  } = {},
): Promise<number> {
  const image: Record<string, unknown> = {
    name: extra.name ?? "test",
    tools: extra.tools ??
      [
        "read_file",
        "write_file",
        "delete_file",
        "list_dir",
        "shell",
        "put_object",
        "get_object",
        "spawn",
        "fork",
        "wait",
        "send",
        "recv",
        "exit",
        "output",
      ],
  };
  if (extra.policy !== undefined) image.policy = extra.policy;
  if (extra.budgets !== undefined) image.budgets = extra.budgets;
  const proc = await env.rt.launch({
    image,
    workspace: env.ws,
    grants: caps,
    script: extra.script,
  });
  return proc.pid;
}

/** Await a promise expected to fail with a LibosError of `code`; returns the error. */
export async function rejectsCode(p: Promise<unknown>, code: string): Promise<LibosError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof LibosError && e.code === code) return e;
    throw new Error(
      `expected ${code}, got ${e instanceof LibosError ? e.code + " " + e.message : String(e)}`,
    );
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/** Shorthand capability spec. */
export function cap(resource: string, ...rights: CapabilitySpec["rights"]): CapabilitySpec {
  return { resource, rights };
}

const _CLI = new URL("../cli/libos.ts", import.meta.url).pathname;

/** What a CLI subprocess printed and returned. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Run `libos ARGS...` as a real subprocess with the task's permissions (in `cwd` if given). */
export async function libos(args: string[], opts: { cwd?: string } = {}): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "--allow-sys",
      "--allow-net",
      _CLI,
      ...args,
    ],
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * A stored capability row: a live, delegable, host-issued ALLOW for pid 1 with
 * no expiry or use limit; `fields` names it and sets anything else.
 */
export function capRecord(
  fields: Pick<Capability, "cap_id" | "resource" | "rights" | "created_at"> & Partial<Capability>,
): Capability {
  return {
    subject: 1,
    constraints: {},
    issued_by: "host",
    expires_at: null,
    delegable: true,
    revocable: true,
    effect: "allow",
    parent_cap_id: null,
    delegation_depth: 0,
    uses_remaining: null,
    status: "active",
    ...fields,
  };
}
