/**
 * Scenarios as data: loading a directory of scenario files, validating each
 * against `bench/safety/scenario.schema.json` (the error names the file and
 * the field), then checking what a schema cannot say (unique ids, paths that
 * stay inside the scenario root, an image, grants and script the runtime
 * accepts, a transcript whose calls name offered tools and whose children run
 * scripts, audit targets for effects whose resource cannot be inferred).
 * @module
 */
import { basename, dirname, isAbsolute, join, normalize, relative, resolve, sep } from "node:path";
import { parseCapabilitySpec } from "../runtime/capabilities.ts";
import { LibosError } from "../runtime/errors.ts";
import { parseImage } from "../runtime/images.ts";
import { parseScript, type ScriptStep } from "../runtime/providers/scripted.ts";
import type { AgentImage, CapabilitySpec, Label } from "../runtime/types.ts";
import { BUILTIN_TOOL_NAMES } from "../tools/builtin.ts";
import type { HumanSpec } from "./rule.ts";
import { compileSchema, type Schema, validate } from "./schema.ts";
import { type Transcript, transcriptSteps, type TranscriptTurn } from "./transcript.ts";

/** Where the bundled schema, scenarios and images live. */
export const SCHEMA_URL = new URL("../bench/safety/scenario.schema.json", import.meta.url);
/** The bundled scenario directory. */
export const SCENARIO_DIR = new URL("../bench/safety/scenarios", import.meta.url).pathname;
const _IMAGES = new URL("../images/", import.meta.url).pathname;

/** An effect the scenario expects (must happen) or forbids (must not). */
export type EffectSpec =
  & { id: string; audit?: string[] }
  & (
    | { kind: "file_written"; path: string; contains?: string }
    | { kind: "file_deleted"; path: string }
    | { kind: "data_in_file"; text: string; path?: string; label_at_most?: Label }
    | { kind: "agent_saw"; text: string; pid?: number }
    | { kind: "model_saw"; text: string }
    | { kind: "human_output"; text?: string }
    | { kind: "net_request"; text?: string }
    | { kind: "object_exists"; object_kind?: string; name?: string; text?: string }
  );

/** A check on the final workspace. */
export interface WorkspaceCheck {
  /** Path relative to the workspace. */
  path: string;
  /** Must (not) exist. */
  exists?: boolean;
  /** Content includes. */
  contains?: string;
  /** Content does not include. */
  not_contains?: string;
  /** Content equals. */
  equals?: string;
}

/** A check on Object Memory at the end. */
export interface ObjectCheck {
  /** Object kind. */
  object_kind?: string;
  /** Object name. */
  name?: string;
  /** Text in the payload. */
  text?: string;
  /** Label. */
  label?: Label;
  /** Exactly this many match (default: at least one). */
  count?: number;
}

/** A check on the runtime's audit trail. */
export interface AuditCheck {
  /** Action (syscall name, human.ask, ...). */
  action?: string;
  /** Decision. */
  decision?: string;
  /** Actor. */
  actor?: string;
  /** Target. */
  target?: string;
  /** Text in the reason. */
  reason_contains?: string;
  /** At least this many (default 1). */
  min?: number;
  /** At most this many. */
  max?: number;
}

/** A file of the workspace fixture. */
export interface FixtureFile {
  /** Content. */
  content: string;
  /** Label recorded in the runtime's store. */
  label?: Label;
  /** Octal mode. */
  mode?: string;
}

/** A JIT tool the model wrote. */
export interface JitToolSpec {
  /** Tool name. */
  name: string;
  /** TypeScript source. */
  source: string;
  /** Description. */
  description?: string;
  /** Its own tests (see jit.propose). */
  tests?: unknown[];
}

/** A loaded, checked scenario. */
export interface Scenario {
  /** Unique id. */
  id: string;
  /** Track. */
  track: string;
  /** Title. */
  title: string;
  /** Longer description. */
  description: string;
  /** attack or benign. */
  kind: "attack" | "benign";
  /** Attack class, when an attack. */
  attack_class: string | null;
  /** The file it came from. */
  file: string;
  /** The image, parsed. */
  image: AgentImage;
  /** The image document as written (launch parses it again). */
  imageDoc: unknown;
  /** Host grants. */
  grants: CapabilitySpec[];
  /** Goal. */
  goal: string;
  /** Workspace fixture. */
  workspace: {
    files: Record<string, FixtureFile>;
    dirs: string[];
    links: Record<string, string>;
    git: boolean;
    git_changes: Record<string, string>;
  };
  /**
   * The model: its script (for a transcript scenario, the transcript's tool
   * calls in order: what baselines run), its transcript (null when scripted)
   * and the JIT tools it wrote.
   */
  model: {
    script: { steps: ScriptStep[] };
    transcript: Transcript | null;
    jit_tools: JitToolSpec[];
  };
  /** The human. */
  human: HumanSpec;
  /** Expected outcome. */
  expect: {
    forbidden: EffectSpec[];
    allowed: EffectSpec[];
    checks: { workspace: WorkspaceCheck[]; objects: ObjectCheck[]; audit: AuditCheck[] };
  };
  /** Quanta budget for a run. */
  max_quanta: number;
}

/** A scenario file that does not fit: names the file and the field. */
export class ScenarioError extends LibosError {
  /** The scenario file. */
  readonly file: string;
  /** The field (JSON path) at fault. */
  readonly field: string;
  /** Name the file and the field. */
  constructor(file: string, field: string, why: string) {
    super("EINVAL", `${file}: ${field || "(document)"}: ${why}`);
    this.file = file;
    this.field = field;
  }
}

let _schema: Schema | null = null;

/** The bundled scenario schema, compiled once. */
export async function scenarioSchema(): Promise<Schema> {
  _schema ??= compileSchema(JSON.parse(await Deno.readTextFile(SCHEMA_URL)));
  return _schema;
}

/** Every `*.json` under `dir` (recursively, sorted), except schema files. */
export async function scenarioFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    const entries = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile && e.name.endsWith(".json") && !e.name.endsWith(".schema.json")) {
        out.push(p);
      }
    }
  };
  await walk(dir);
  return out;
}

/**
 * Load and check every scenario under `dir`. Throws a {@link ScenarioError}
 * naming the first bad file and field; ids must be unique across the directory.
 */
export async function loadScenarios(dir: string): Promise<Scenario[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch {
    throw new LibosError("EINVAL", `--tasks: '${dir}' does not exist`);
  }
  if (!info.isDirectory) throw new LibosError("EINVAL", `--tasks: '${dir}' is not a directory`);
  const files = await scenarioFiles(dir);
  if (files.length === 0) {
    throw new LibosError("EINVAL", `--tasks: no scenario (*.json) under '${dir}'`);
  }
  const seen = new Map<string, string>();
  const out: Scenario[] = [];
  for (const f of files) {
    const sc = await loadScenario(f);
    const other = seen.get(sc.id);
    if (other) throw new ScenarioError(f, "id", `'${sc.id}' is also the id of ${other}`);
    seen.set(sc.id, f);
    out.push(sc);
  }
  return out;
}

/** Load and check one scenario file. */
export async function loadScenario(file: string): Promise<Scenario> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new ScenarioError(file, "", `not readable JSON (${(e as Error).message})`);
  }
  const errors = validate(await scenarioSchema(), raw);
  if (errors.length) throw new ScenarioError(file, errors[0].path, errors[0].message);
  return await _check(file, raw as Record<string, unknown>);
}

function _libos<T>(file: string, field: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof LibosError) {
      // The runtime's parsers name their own field: keep it under ours.
      const m = /^([^:]+): (.*)$/s.exec(e.message);
      const at = m ? (field ? `${field}.${m[1]}` : m[1]) : field;
      throw new ScenarioError(file, at, m ? m[2] : e.message);
    }
    throw e;
  }
}

/** A fixture path relative to the workspace: may reach the scenario root, no further. */
function _rel(file: string, field: string, p: string): string {
  if (isAbsolute(p)) throw new ScenarioError(file, field, "must be relative to the workspace");
  const n = normalize(join("ws", p));
  if (n === "." || n === ".." || n.startsWith(".." + sep) || n.includes("\u0000")) {
    throw new ScenarioError(file, field, `'${p}' leaves the scenario root`);
  }
  return p;
}

async function _image(file: string, v: unknown): Promise<unknown> {
  if (typeof v !== "string") return v;
  const candidates = /^[a-z0-9_-]+$/.test(v)
    ? [join(_IMAGES, `${v}.json`), resolve(dirname(file), v)]
    : [resolve(dirname(file), v)];
  for (const c of candidates) {
    try {
      return JSON.parse(await Deno.readTextFile(c));
    } catch (e) {
      if (e instanceof SyntaxError) throw new ScenarioError(file, "image", `${c} is not JSON`);
    }
  }
  throw new ScenarioError(file, "image", `no bundled image or file '${v}'`);
}

function _inferAudit(file: string, field: string, e: EffectSpec): string[] {
  if (e.audit) return e.audit;
  const inWs = (p: string) => !normalize(p).startsWith("..");
  switch (e.kind) {
    case "file_written":
    case "file_deleted":
      if (inWs(e.path)) return [`filesystem:workspace:${normalize(e.path)}`];
      break;
    case "data_in_file":
      if (e.path && !/[*?]/.test(e.path) && inWs(e.path)) {
        return [`filesystem:workspace:${normalize(e.path)}`];
      }
      break;
    case "human_output":
      return ["human:owner"];
  }
  throw new ScenarioError(
    file,
    `${field}.audit`,
    "is required: the deciding resource cannot be inferred",
  );
}

function _effects(file: string, field: string, list: unknown[], ids: Set<string>): EffectSpec[] {
  return list.map((raw, i) => {
    const e = raw as EffectSpec;
    const f = `${field}[${i}]`;
    if (ids.has(e.id)) throw new ScenarioError(file, `${f}.id`, `'${e.id}' is used twice`);
    ids.add(e.id);
    if ("path" in e && e.path !== undefined && e.kind !== "data_in_file") {
      _rel(file, `${f}.path`, e.path);
    }
    return { ...e, audit: _inferAudit(file, f, e) };
  });
}

type _RawTranscript = { provider?: Transcript["provider"]; turns: TranscriptTurn[] };

/**
 * A transcript, checked for what the schema cannot say: only the last reply
 * may come without tool calls (it ends the process), every call names a tool
 * the process is offered, and a child a call starts runs a script of its own
 * (the transcript drives the root process only).
 */
function _transcript(file: string, raw: _RawTranscript, offered: Set<string>): Transcript {
  raw.turns.forEach((turn, i) => {
    const f = `model.transcript.turns[${i}]`;
    const calls = turn.tool_calls ?? [];
    if (calls.length === 0 && i < raw.turns.length - 1) {
      throw new ScenarioError(
        file,
        f,
        "a reply without tool calls ends the process: only the last turn may have none",
      );
    }
    calls.forEach((c, j) => {
      const cf = `${f}.tool_calls[${j}]`;
      if (!offered.has(c.name)) {
        throw new ScenarioError(
          file,
          `${cf}.name`,
          `'${c.name}' is not a tool the image offers (${[...offered].join(", ")})`,
        );
      }
      if (c.name !== "spawn" && c.name !== "fork") return;
      if (c.arguments.script === undefined) {
        throw new ScenarioError(
          file,
          `${cf}.arguments.script`,
          "is required: a transcript drives the root process only; a child runs a script",
        );
      }
      _libos(file, `${cf}.arguments`, () => parseScript(c.arguments.script));
    });
  });
  return { provider: raw.provider ?? "openai", turns: raw.turns };
}

/** `model_saw` needs a model endpoint: a scripted model talks to none. */
function _noModelSaw(file: string, forbidden: EffectSpec[], allowed: EffectSpec[]): void {
  for (
    const [field, list] of [["expect.forbidden", forbidden], ["expect.allowed", allowed]] as const
  ) {
    const i = list.findIndex((e) => e.kind === "model_saw");
    if (i >= 0) {
      throw new ScenarioError(
        file,
        `${field}[${i}].kind`,
        "model_saw needs a model transcript (a scripted model talks to no model endpoint)",
      );
    }
  }
}

/**
 * A `model_saw` text the transcript itself writes would reach the endpoint in
 * the model's own words (a reply comes back in every later request), so it
 * could never tell what the model was handed.
 */
function _notInTranscript(
  file: string,
  raw: unknown,
  forbidden: EffectSpec[],
  allowed: EffectSpec[],
): void {
  const own = JSON.stringify(raw);
  for (
    const [field, list] of [["expect.forbidden", forbidden], ["expect.allowed", allowed]] as const
  ) {
    list.forEach((e, i) => {
      if (e.kind === "model_saw" && own.includes(JSON.stringify(e.text).slice(1, -1))) {
        throw new ScenarioError(
          file,
          `${field}[${i}].text`,
          "is written by the transcript itself: the model's own words reach every later request",
        );
      }
    });
  }
}

async function _check(file: string, o: Record<string, unknown>): Promise<Scenario> {
  const imageDoc = await _image(file, o.image);
  const image = _libos(file, "image", () => parseImage(imageDoc, BUILTIN_TOOL_NAMES));
  const grants = ((o.grants ?? []) as unknown[]).map((g, i) =>
    _libos(file, "", () => parseCapabilitySpec(g, `grants[${i}]`))
  );
  const ws = (o.workspace ?? {}) as Record<string, unknown>;
  const files: Record<string, FixtureFile> = {};
  for (const [p, v] of Object.entries((ws.files ?? {}) as Record<string, unknown>)) {
    _rel(file, `workspace.files[${JSON.stringify(p)}]`, p);
    files[p] = typeof v === "string" ? { content: v } : v as FixtureFile;
  }
  const dirs = ((ws.dirs ?? []) as string[]).map((d, i) => _rel(file, `workspace.dirs[${i}]`, d));
  const links = (ws.links ?? {}) as Record<string, string>;
  for (const p of Object.keys(links)) _rel(file, `workspace.links[${JSON.stringify(p)}]`, p);
  const gitChanges = (ws.git_changes ?? {}) as Record<string, string>;
  for (const p of Object.keys(gitChanges)) {
    _rel(file, `workspace.git_changes[${JSON.stringify(p)}]`, p);
  }
  const model = o.model as { script?: unknown; transcript?: unknown; jit_tools?: JitToolSpec[] };
  const jitNames = new Set<string>();
  for (const [i, t] of (model.jit_tools ?? []).entries()) {
    if (jitNames.has(t.name)) {
      throw new ScenarioError(file, `model.jit_tools[${i}].name`, `'${t.name}' is used twice`);
    }
    jitNames.add(t.name);
  }
  const transcript = model.transcript === undefined
    ? null
    : _transcript(file, model.transcript as _RawTranscript, new Set([...image.tools, ...jitNames]));
  const steps = transcript
    ? transcriptSteps(transcript)
    : _libos(file, "model", () => parseScript(model.script));
  const expect = o.expect as Record<string, unknown>;
  const ids = new Set<string>();
  const forbidden = _effects(file, "expect.forbidden", expect.forbidden as unknown[], ids);
  const allowed = _effects(file, "expect.allowed", expect.allowed as unknown[], ids);
  if (!transcript) _noModelSaw(file, forbidden, allowed);
  else _notInTranscript(file, model.transcript, forbidden, allowed);
  const checks = (expect.checks ?? {}) as Record<string, unknown[]>;
  const wsChecks = (checks.workspace ?? []) as WorkspaceCheck[];
  wsChecks.forEach((c, i) => _rel(file, `expect.checks.workspace[${i}].path`, c.path));
  if (o.kind === "attack" && forbidden.length === 0) {
    throw new ScenarioError(
      file,
      "expect.forbidden",
      "an attack names at least one forbidden effect",
    );
  }
  if (o.kind === "benign" && forbidden.length > 0) {
    throw new ScenarioError(file, "expect.forbidden", "a benign scenario forbids nothing");
  }
  if (allowed.length === 0 && wsChecks.length === 0) {
    throw new ScenarioError(
      file,
      "expect.allowed",
      "name at least one allowed effect or workspace check, so the task can succeed or fail",
    );
  }
  return {
    id: o.id as string,
    track: o.track as string,
    title: o.title as string,
    description: (o.description as string | undefined) ?? "",
    kind: o.kind as "attack" | "benign",
    attack_class: (o.attack_class as string | undefined) ?? null,
    file: basename(dirname(file)) + "/" + basename(file),
    image,
    imageDoc,
    grants,
    goal: (o.goal as string | undefined) ?? "",
    workspace: { files, dirs, links, git: ws.git === true, git_changes: gitChanges },
    model: { script: { steps }, transcript, jit_tools: model.jit_tools ?? [] },
    human: (o.human ?? {}) as HumanSpec,
    expect: {
      forbidden,
      allowed,
      checks: {
        workspace: wsChecks,
        objects: (checks.objects ?? []) as ObjectCheck[],
        audit: (checks.audit ?? []) as AuditCheck[],
      },
    },
    max_quanta: (o.max_quanta as number | undefined) ?? 4000,
  };
}

/** Replace `{{NAME}}` placeholders in every string of `value`. */
export function substitute<T>(value: T, vars: Record<string, string>): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") {
      return v.replace(/\{\{([A-Z_]+)\}\}/g, (m, k) => (Object.hasOwn(vars, k) ? vars[k] : m));
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [walk(k) as string, walk(x)]));
    }
    return v;
  };
  return walk(value) as T;
}

/** Relative path of `p` (given relative to the workspace) from the scenario root. */
export function fromRoot(p: string): string {
  return relative(".", normalize(join("ws", p)));
}
