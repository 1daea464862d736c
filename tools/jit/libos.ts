/**
 * The client interface a JIT tool sees. A tool may `import type` from this
 * module (it is copied beside the tool inside the sandbox); it has no runtime
 * code, so the tool's module graph stays the tool alone.
 *
 * @example A JIT tool
 * ```ts
 * import type { Libos } from "./libos.ts";
 *
 * export async function run(args: { path: string }, libos: Libos): Promise<number> {
 *   const text = await libos.syscall<string>("filesystem.read", { path: args.path });
 *   return text.split("\n").length;
 * }
 * ```
 * @module
 */

/** The only door a JIT tool has to the runtime. */
export interface Libos {
  /** Issue a syscall; it is authorized, audited and labelled exactly like a builtin tool's. */
  syscall<T = unknown>(name: string, args?: Record<string, unknown>): Promise<T>;
}

/** The shape of a JIT tool's `run` export. */
export type ToolRun<A = Record<string, unknown>, R = unknown> = (
  args: A,
  libos: Libos,
) => Promise<R>;
