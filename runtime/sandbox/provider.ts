/**
 * The sandbox provider: validates JIT tool sources into cached artifacts and
 * runs calls in subprocesses (see launcher.ts). Validation never executes the
 * tool's code until its own tests run, and those run in the same sandbox.
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { sha256 } from "../canonical.ts";
import { LibosError } from "../errors.ts";
import { PermissionBroker } from "./broker.ts";
import {
  BWRAP_PATHS,
  checkedCommand,
  firstFile,
  planSandbox,
  PRLIMIT,
  type ShellView,
} from "./bwrap.ts";
import {
  RssProbe,
  runInSandbox,
  RUNNER,
  type SandboxOutcome,
  type SandboxRequest,
  type SandboxWall,
  toolEnv,
} from "./launcher.ts";
import { noSetIdFilter } from "./seccomp.ts";

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
  /** Findings that do not refuse the tool (style lint rules), shown with the validation result. */
  warnings: ValidationWarning[];
}

/** A lint finding that does not refuse a tool. */
export interface ValidationWarning {
  /** The lint rule (`no-explicit-any`, ...). */
  rule: string;
  /** What it found, naming the tool as `tool.ts`. */
  message: string;
  /** 1-based line in tool.ts. */
  line: number;
}

/**
 * Lint rules that refuse a tool: each finds code that is wrong when it runs
 * (a comparison that is always false, a reassigned constant, a missing
 * `super()`), never a matter of style. Every other rule only warns: a model's
 * `any`, an `async` without `await` or an unused local is not a reason to deny
 * a correct tool. Safety never rests on lint: the sandbox contains whatever
 * passes.
 */
export const REFUSING_LINT_RULES: ReadonlySet<string> = new Set([
  "constructor-super",
  "for-direction",
  "getter-return",
  "no-async-promise-executor",
  "no-await-in-sync-fn",
  "no-class-assign",
  "no-compare-neg-zero",
  "no-cond-assign",
  "no-const-assign",
  "no-delete-var",
  "no-deprecated-deno-api",
  "no-dupe-args",
  "no-dupe-class-members",
  "no-dupe-else-if",
  "no-dupe-keys",
  "no-duplicate-case",
  "no-empty-character-class",
  "no-ex-assign",
  "no-func-assign",
  "no-global-assign",
  "no-import-assign",
  "no-invalid-regexp",
  "no-misused-new",
  "no-new-symbol",
  "no-obj-calls",
  "no-self-assign",
  "no-setter-return",
  "no-shadow-restricted-names",
  "no-this-before-super",
  "no-unsafe-finally",
  "no-unsafe-negation",
  "no-window",
  "no-window-prefix",
  "no-with",
  "require-yield",
  "use-isnan",
  "valid-typeof",
]);

/**
 * The type check is strict, with `catch (e) { e.message }` allowed (a style
 * choice, not a bug). TypeScript's 7000-range diagnostics (implicit `any`:
 * untyped `run(args, libos)`, `obj[key]` on `{}`, no return on some path)
 * come back as warnings; every other type error refuses.
 */
const _CHECK_CONFIG = JSON.stringify({
  compilerOptions: { strict: true, useUnknownInCatchVariables: false },
});

/** TypeScript diagnostics that only warn (the implicit-any family, TS7xxx). */
export function isWarningDiagnostic(code: string): boolean {
  return /^TS7\d{3}$/.test(code);
}

/** `TSnnnn [ERROR]: message ... at tool.ts:L:C` blocks of `deno check` output. */
function _typeDiagnostics(text: string): ValidationWarning[] {
  const out: ValidationWarning[] = [];
  const re = /(TS\d+) \[ERROR\]: ([^\n]*)[\s\S]*?\bat [^\n]*?:(\d+):\d+/g;
  for (const m of text.matchAll(re)) out.push({ rule: m[1], message: m[2], line: Number(m[3]) });
  return out;
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

const _BWRAP = firstFile([...BWRAP_PATHS]);
const _SECCOMP = noSetIdFilter();
/** Opens the filter file (its one argument) on descriptor 3, for `bwrap --seccomp 3`, then becomes the command. */
const _OPEN_FILTER_EXEC = 'exec 3<"$1" || exit 1; shift; exec "$@"';

/** Whether a call's view grants any workspace file (then it runs behind the wall). */
function _touchesFiles(view: ShellView | undefined): boolean {
  return view !== undefined && view.grants.read.length + view.grants.write.length > 0;
}

function _noWall(): LibosError {
  return new LibosError(
    "ENOSYS",
    "jit.call: a tool that may touch workspace files runs behind an OS wall, and this host has none: " +
      "install the Debian package 'bubblewrap' (and util-linux for prlimit; x86_64 or aarch64)",
  );
}
const CHECK_TIMEOUT_MS = 60_000;

/**
 * Checkers name files by absolute path or file URL; a refusal names the tool
 * `tool.ts` and no host path (the cache, the store, the checkout).
 */
function _scrub(text: string, work: string): string {
  return text.replaceAll(`file://${work}/`, "").replaceAll(`${work}/`, "").replaceAll(work, ".");
}

function _fail(stage: string, message: string): LibosError {
  return new LibosError("EINVAL", `jit.validate: ${stage}: ${message}`);
}

/** sha256 of the client every artifact holds a copy of (read once, at the first cache hit). */
let _clientHash: string | undefined;

/** Whether a cached artifact's tool and client are still the bytes validated. */
async function _intact(dir: string, hash: string): Promise<boolean> {
  const [tool, client] = await Promise.all([
    Deno.readTextFile(join(dir, "tool.ts")),
    Deno.readTextFile(join(dir, "libos.ts")),
  ]);
  _clientHash ??= sha256(await Deno.readTextFile(CLIENT));
  return sha256(tool) === hash && sha256(client) === _clientHash;
}

/** Validation and calls on this host, with artifacts cached under `cacheDir`. */
export class HostSandbox implements SandboxProvider {
  #cacheDir: string;
  #broker: Promise<PermissionBroker> | null = null;
  // Reads the RSS of calls when this host may not read /proc itself.
  #rss = new RssProbe();
  #filterAt: string | null = null;

  /** Artifacts live under `cacheDir` (created if missing). */
  constructor(cacheDir: string) {
    // Absolute once: every path derived from it (module specifiers, cwd of the
    // checkers, what refusals scrub) must not depend on the current directory.
    this.#cacheDir = resolve(cacheDir);
  }

  async prepare(source: string): Promise<Artifact> {
    if (source.length > MAX_TOOL_SOURCE) {
      throw _fail("size", `source is ${source.length} characters, limit ${MAX_TOOL_SOURCE}`);
    }
    const hash = sha256(source);
    const dir = join(this.#cacheDir, hash);
    const report = join(dir, "validated.json");
    try {
      const done = JSON.parse(await Deno.readTextFile(report));
      // What runs is what was validated: a cached file changed since (on disk, by
      // anything) is not run; the artifact is validated again from the source.
      if (await _intact(dir, hash)) {
        return {
          sha256: hash,
          dir,
          toolPath: join(dir, "tool.ts"),
          checks: done.checks,
          warnings: done.warnings ?? [],
        };
      }
      await Deno.remove(dir, { recursive: true });
    } catch { /* not cached yet */ }
    await Deno.mkdir(this.#cacheDir, { recursive: true });
    // Real: the checkers print real paths, and refusals must scrub them.
    const work = join(
      await Deno.realPath(this.#cacheDir),
      `${hash}.tmp-${crypto.randomUUID().slice(0, 8)}`,
    );
    await Deno.mkdir(join(work, "home"), { recursive: true });
    await Deno.mkdir(join(work, "deno_dir"), { recursive: true });
    try {
      await Deno.writeTextFile(join(work, "tool.ts"), source);
      await Deno.copyFile(CLIENT, join(work, "libos.ts"));
      const { checks, warnings } = await this.#check(work);
      // The checks' own cache (the type checker's ~2.5 MB V8 code cache among
      // it) stays out of the run-time DENO_DIR: every call's child would
      // otherwise replay that SQLite WAL at start-up before running anything.
      await Deno.remove(join(work, "check_deno_dir"), { recursive: true }).catch(() => {});
      await Deno.remove(join(work, "check.json")).catch(() => {});
      await Deno.writeTextFile(
        join(work, "validated.json"),
        JSON.stringify({ sha256: hash, checks, warnings }),
      );
      try {
        await Deno.rename(work, dir);
      } catch {
        // Another caller validated the same source first; theirs is identical.
        await Deno.remove(work, { recursive: true });
      }
      return { sha256: hash, dir, toolPath: join(dir, "tool.ts"), checks, warnings };
    } catch (e) {
      await Deno.remove(work, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  async #check(work: string): Promise<{ checks: string[]; warnings: ValidationWarning[] }> {
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
    if (root.error) throw _fail("parse", _scrub(root.error, work).split("\n")[0]);
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
    const typeWarnings = await this.#typeCheck(work);
    const warnings = [...typeWarnings, ...await this.#lint(work)].slice(0, 100);
    return { checks: ["size", "parse", "imports", "exports", "type check", "lint"], warnings };
  }

  /** Type errors refuse; implicit-any diagnostics come back as warnings. */
  async #typeCheck(work: string): Promise<ValidationWarning[]> {
    await Deno.writeTextFile(join(work, "check.json"), _CHECK_CONFIG);
    const out = await this.#deno(
      work,
      ["check", "--config", "check.json", "--no-lock", "--no-remote", "--no-npm", "tool.ts"],
      "type check",
      { allowFailure: true },
    );
    if (out.success) return [];
    const report = _scrub(out.stdout, work) + out.stderr;
    const found = _typeDiagnostics(report);
    const errors = found.filter((d) => !isWarningDiagnostic(d.rule));
    if (found.length === 0 || errors.length) {
      const shown = errors.length
        ? errors.slice(0, 6).map((d) => `tool.ts:${d.line}: ${d.rule}: ${d.message}`).join(" | ")
        : report.split("\n").filter((l) => l.trim()).slice(0, 6).join(" | ");
      throw _fail("type check", shown.slice(0, 600));
    }
    return found;
  }

  /** Lint findings: refusing rules fail validation, the rest come back as warnings. */
  async #lint(work: string): Promise<ValidationWarning[]> {
    // deno lint exits 1 whenever it finds anything; the JSON report says what.
    const { stdout } = await this.#deno(
      work,
      ["lint", "--no-config", "--json", "tool.ts"],
      "lint",
      {
        allowFailure: true,
      },
    );
    let report: {
      diagnostics?: { code: string; message: string; range?: { start?: { line?: number } } }[];
      errors?: { message: string }[];
    };
    try {
      report = JSON.parse(stdout);
    } catch {
      throw _fail("lint", "deno lint gave no report");
    }
    if (report.errors?.length) {
      throw _fail("lint", _scrub(report.errors[0].message, work).split("\n")[0].slice(0, 300));
    }
    const found: ValidationWarning[] = (report.diagnostics ?? []).map((d) => ({
      rule: d.code,
      message: _scrub(d.message, work).slice(0, 300),
      line: d.range?.start?.line ?? 0,
    }));
    const refusing = found.filter((w) => REFUSING_LINT_RULES.has(w.rule));
    if (refusing.length) {
      throw _fail(
        "lint",
        refusing.slice(0, 6).map((w) => `tool.ts:${w.line}: ${w.rule}: ${w.message}`).join(" | "),
      );
    }
    return found.slice(0, 100);
  }

  async #deno(
    cwd: string,
    args: string[],
    stage: string,
    opts: { allowFailure?: boolean } = {},
  ): Promise<{ stdout: string; stderr: string; success: boolean }> {
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
    if (!out.success && !opts.allowFailure) {
      const text = _scrub(dec.decode(out.stderr) + dec.decode(out.stdout), cwd).trim();
      throw _fail(
        stage,
        text.split("\n").filter((l) => l.trim()).slice(0, 6).join(" | ").slice(0, 600),
      );
    }
    return {
      stdout: dec.decode(out.stdout),
      stderr: _scrub(dec.decode(out.stderr), cwd),
      success: out.success,
    };
  }

  async run(req: SandboxRequest, useBroker: boolean): Promise<SandboxOutcome> {
    const broker = useBroker ? await (this.#broker ??= PermissionBroker.start()) : null;
    const wall = broker && _touchesFiles(req.view) ? this.#wall(broker, req) : undefined;
    try {
      return await runInSandbox(broker, req, this.#rss, wall);
    } finally {
      wall?.revoke();
      await boundToolCache(join(req.artifactDir, "deno_dir"));
    }
  }

  /**
   * The OS wall of a call that may touch workspace files: Deno runs inside
   * bubblewrap with the workspace mounted as a shell command's would be (the
   * same derivation, no labels: the broker labels each access), the Deno
   * executable, the runner and the artifact read-only (its cache writable), no
   * network, a pid namespace of its own, the seccomp filter that refuses
   * set-id mode bits, and the same limits as outside it (CPU by prlimit, the
   * heap cap, the RSS watchdog, the timeout; no cgroups: joining one costs a
   * call about 11 ms here, and a tool can start no process to bound). The
   * broker still decides every access; the wall makes sure what it
   * allowed is what is opened: a link or directory swapped in after a check
   * finds nothing outside the mounts, and what a rule protects inside them is
   * masked or read-only. Without bubblewrap (or prlimit, or the filter) a
   * call that touches files is refused (ENOSYS), as a shell command is.
   */
  #wall(broker: PermissionBroker, req: SandboxRequest): SandboxWall {
    if (!_BWRAP || !PRLIMIT || !_SECCOMP) throw _noWall();
    const view = req.view!;
    const sock = broker.listenFor(req.onPermission ?? (() => Promise.resolve(false)));
    try {
      const filter = this.#seccompFile(broker);
      const plan = planSandbox(view, req.artifactDir, {
        etc: false,
        binds: [
          { path: Deno.execPath(), kind: "ro" },
          { path: dirname(RUNNER), kind: "ro" },
          { path: req.artifactDir, kind: "ro" },
          { path: join(req.artifactDir, "deno_dir"), kind: "rw" },
          { path: sock.path, kind: "rw" },
        ],
        // As outside the wall: no PATH (a bare program name finds nothing), no LANG.
        env: { PATH: null, LANG: null, ...toolEnv(req.artifactDir, sock.path) },
      });
      return {
        command: (deno) => [
          "/bin/sh",
          "-c",
          _OPEN_FILTER_EXEC,
          "sh",
          filter,
          PRLIMIT!,
          `--cpu=${req.limits.cpuSeconds}`,
          "--",
          _BWRAP!,
          "--seccomp",
          "3",
          ...plan.args,
          "--",
          ...checkedCommand(plan, deno),
        ],
        revoke: () => sock.release(),
      };
    } catch (e) {
      sock.release();
      throw e;
    }
  }

  /** The seccomp filter as a file in the broker's private directory (written once). */
  #seccompFile(broker: PermissionBroker): string {
    const path = join(dirname(broker.path), "no-set-id.bpf");
    if (this.#filterAt !== path) {
      Deno.writeFileSync(path, _SECCOMP!, { mode: 0o600 });
      this.#filterAt = path;
    }
    return path;
  }

  async close(): Promise<void> {
    if (this.#broker) await (await this.#broker).close();
    this.#broker = null;
    await this.#rss.close();
  }
}

/** Most a tool's Deno cache may hold after a call (bytes). */
export const TOOL_CACHE_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Keep a tool's Deno cache (`DENO_DIR`, which its calls must be able to
 * write) within {@link TOOL_CACHE_MAX_BYTES}: past it, it is emptied. Deno
 * caches what every module a tool imports compiles to, and `data:` imports
 * need no permission, so a tool with no grant at all grew its cache by
 * hundreds of MB a call. A tool's own modules are cached again by its next
 * call (a few ms, once).
 */
export async function boundToolCache(denoDir: string): Promise<void> {
  // Synchronous: a cache holds a dozen entries, and sync calls cost far less than
  // async ones (the walk took 0.25 ms of a 20 ms call, against 0.85 ms async); a
  // hostile one stops the walk at 10,000 entries.
  let bytes = 0;
  let entries = 0;
  const over = (dir: string, depth: number): boolean => {
    for (const e of Deno.readDirSync(dir)) {
      if (++entries > 10_000 || depth > 16) return true;
      const p = join(dir, e.name);
      if (e.isDirectory) {
        if (over(p, depth + 1)) return true;
      } else if ((bytes += Deno.lstatSync(p).size) > TOOL_CACHE_MAX_BYTES) return true;
    }
    return false;
  };
  try {
    if (!over(denoDir, 0)) return;
    await Deno.remove(denoDir, { recursive: true });
    await Deno.mkdir(denoDir);
  } catch { /* gone already, or another call is emptying it too */ }
}
