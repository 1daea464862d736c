/**
 * The sandbox provider: validates JIT tool sources into cached artifacts and
 * runs calls in subprocesses (see launcher.ts). Validation never executes the
 * tool's code until its own tests run, and those run in the same sandbox.
 * @module
 */
import { join } from "node:path";
import { sha256 } from "../canonical.ts";
import { LibosError } from "../errors.ts";
import { PermissionBroker } from "./broker.ts";
import { RssProbe, runInSandbox, type SandboxOutcome, type SandboxRequest } from "./launcher.ts";

/** Largest JIT tool source, in characters. */
export const MAX_TOOL_SOURCE = 64 * 1024;

/** A validated, cached tool. */
export interface Artifact {
  /** sha256 of the source. */
  sha256: string;
  /** Directory of the artifact (tool.ts, libos.ts, validated.json, deno_dir, home). */
  dir: string;
  /** The module a call loads (its transpiled form is cached in the artifact's DENO_DIR). */
  toolPath: string;
  /** Checks that passed, in order. */
  checks: string[];
}

/** What a JIT-capable runtime needs from its host. */
export interface SandboxProvider {
  /** Validate `source` (size, parse, imports, `run` export, type check, lint) and cache its artifact. */
  prepare(source: string): Promise<Artifact>;
  /** Run one call. `broker` decides whether direct access goes through the permission broker. */
  run(req: SandboxRequest, useBroker: boolean): Promise<SandboxOutcome>;
  /** Stop the broker. */
  close(): Promise<void>;
}

const CLIENT = new URL("../../tools/jit/libos.ts", import.meta.url).pathname;
const CHECK_TIMEOUT_MS = 60_000;

function _fail(stage: string, message: string): LibosError {
  return new LibosError("EINVAL", `jit.validate: ${stage}: ${message}`);
}

/** Validation and calls on this host, with artifacts cached under `cacheDir`. */
export class HostSandbox implements SandboxProvider {
  #cacheDir: string;
  #broker: Promise<PermissionBroker> | null = null;
  // Reads the RSS of calls when this host may not read /proc itself.
  #rss = new RssProbe();

  /** Artifacts live under `cacheDir` (created if missing). */
  constructor(cacheDir: string) {
    this.#cacheDir = cacheDir;
  }

  async prepare(source: string): Promise<Artifact> {
    if (source.length > MAX_TOOL_SOURCE) {
      throw _fail("size", `source is ${source.length} characters, limit ${MAX_TOOL_SOURCE}`);
    }
    const hash = sha256(source);
    const dir = join(this.#cacheDir, hash);
    const report = join(dir, "validated.json");
    try {
      const checks = JSON.parse(await Deno.readTextFile(report)).checks as string[];
      return { sha256: hash, dir, toolPath: join(dir, "tool.ts"), checks };
    } catch { /* not cached yet */ }
    const work = `${dir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(join(work, "home"), { recursive: true });
    await Deno.mkdir(join(work, "deno_dir"), { recursive: true });
    try {
      await Deno.writeTextFile(join(work, "tool.ts"), source);
      await Deno.copyFile(CLIENT, join(work, "libos.ts"));
      const checks = await this.#check(work);
      // The checks' own cache (the type checker's ~2.5 MB V8 code cache among
      // it) stays out of the run-time DENO_DIR: every call's child would
      // otherwise replay that SQLite WAL at start-up before running anything.
      await Deno.remove(join(work, "check_deno_dir"), { recursive: true }).catch(() => {});
      await Deno.writeTextFile(
        join(work, "validated.json"),
        JSON.stringify({ sha256: hash, checks }),
      );
      try {
        await Deno.rename(work, dir);
      } catch {
        // Another caller validated the same source first; theirs is identical.
        await Deno.remove(work, { recursive: true });
      }
      return { sha256: hash, dir, toolPath: join(dir, "tool.ts"), checks };
    } catch (e) {
      await Deno.remove(work, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  async #check(work: string): Promise<string[]> {
    const info = JSON.parse(
      (await this.#deno(work, [
        "info",
        "--json",
        "--no-config",
        "--no-remote",
        "--no-npm",
        "tool.ts",
      ], "imports")).stdout,
    );
    const root = (info.modules as {
      specifier: string;
      error?: string;
      dependencies?: { specifier: string; code?: unknown; type?: unknown }[];
    }[])
      .find((m) => m.specifier.endsWith("/tool.ts"));
    if (!root) throw _fail("parse", "tool.ts was not analysed");
    if (root.error) throw _fail("parse", root.error.split("\n")[0]);
    for (const d of root.dependencies ?? []) {
      // Only `import type ... from "./libos.ts"`: erased at run time, so the graph is the tool alone.
      if (d.specifier === "./libos.ts" && d.code === undefined) continue;
      throw _fail(
        "imports",
        `'${d.specifier}' is imported; a tool may import nothing (only \`import type\` from "./libos.ts")`,
      );
    }
    const doc = JSON.parse(
      (await this.#deno(work, ["doc", "--json", "tool.ts"], "exports")).stdout,
    );
    const nodes = Object.values(doc.nodes ?? {}) as {
      symbols: {
        name: string;
        declarations: {
          declarationKind: string;
          kind: string;
          def?: { tsType?: { kind?: string } };
        }[];
      }[];
    }[];
    const run = nodes.flatMap((n) => n.symbols).find((s) => s.name === "run");
    const decl = run?.declarations.find((d) => d.declarationKind === "export");
    // deno doc reports function declarations, arrows and function expressions as
    // "function"; a variable counts only when its declared type is a function type.
    const fnVariable = decl?.kind === "variable" && decl.def?.tsType?.kind === "fnOrConstructor";
    if (!decl || (decl.kind !== "function" && !fnVariable)) {
      throw _fail("exports", "tool has no `export async function run(args, libos)`");
    }
    await this.#deno(
      work,
      ["check", "--no-config", "--no-remote", "--no-npm", "tool.ts"],
      "type check",
    );
    await this.#deno(work, ["lint", "--no-config", "tool.ts"], "lint");
    return ["size", "parse", "imports", "exports", "type check", "lint"];
  }

  async #deno(cwd: string, args: string[], stage: string): Promise<{ stdout: string }> {
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      clearEnv: true,
      env: {
        HOME: join(cwd, "home"),
        DENO_DIR: join(cwd, "check_deno_dir"),
        NO_COLOR: "1",
        DENO_NO_UPDATE_CHECK: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, CHECK_TIMEOUT_MS);
    const out = await child.output();
    clearTimeout(timer);
    const dec = new TextDecoder();
    if (!out.success) {
      const text = (dec.decode(out.stderr) + dec.decode(out.stdout)).replaceAll(cwd, ".").trim();
      throw _fail(
        stage,
        text.split("\n").filter((l) => l.trim()).slice(0, 6).join(" | ").slice(0, 600),
      );
    }
    return { stdout: dec.decode(out.stdout) };
  }

  async run(req: SandboxRequest, useBroker: boolean): Promise<SandboxOutcome> {
    const broker = useBroker ? await (this.#broker ??= PermissionBroker.start()) : null;
    return await runInSandbox(broker, req, this.#rss);
  }

  async close(): Promise<void> {
    if (this.#broker) await (await this.#broker).close();
    this.#broker = null;
    await this.#rss.close();
  }
}
