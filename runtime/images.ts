/**
 * AgentImage parsing. An image is a JSON file naming a system prompt, tools
 * from the builtin table, capabilities the host grants at launch, a policy and
 * the capabilities a process must already hold to exec into it. Parsing checks
 * every field and names the first bad one; it grants nothing.
 * @module
 */
import { BUDGET_NAMES } from "./budgets.ts";
import { parseCapabilitySpec, parseResource } from "./capabilities.ts";
import { invalid } from "./errors.ts";
import { parseLabel } from "./labels.ts";
import type {
  AgentImage,
  Budgets,
  Label,
  ModelConfig,
  Policy,
  ShellPolicyMode,
  ShellSandboxMode,
} from "./types.ts";

const SANDBOX_MODES: ShellSandboxMode[] = ["bwrap", "none"];

const SHELL_MODES: ShellPolicyMode[] = [
  "always_deny",
  "allowlist_auto_else_ask",
  "blocklist_ask_else_auto",
  "always_allow",
];

/** The policy used when an image gives none: no shell, human sees up to confidential. */
export const DEFAULT_POLICY: Policy = {
  shell: "always_deny",
  shell_allowlist: [],
  shell_blocklist: [],
  shell_sandbox: "bwrap",
  labels: {},
  human_clearance: "confidential",
};

/** Budgets used when an image gives none. */
export const DEFAULT_BUDGETS: Budgets = {
  max_quanta: 10_000,
  max_wall_ms: 600_000,
  max_syscalls: 10_000,
  max_store_bytes: 256 * 1024 * 1024,
};

function _obj(raw: unknown, field: string): Record<string, unknown> {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw invalid(field, "must be an object");
  }
  return raw as Record<string, unknown>;
}

function _noUnknown(o: Record<string, unknown>, allowed: string[], field: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw invalid(field ? `${field}.${k}` : k, "unknown field");
  }
}

function _str(v: unknown, field: string, max = 100_000): string {
  if (typeof v !== "string") throw invalid(field, "must be a string");
  if (v.length > max) throw invalid(field, `longer than ${max} characters`);
  return v;
}

function _names(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw invalid(field, "must be an array of strings");
  return v.map((x, i) => {
    if (typeof x !== "string" || !/^[A-Za-z0-9_.+-]{1,128}$/.test(x)) {
      throw invalid(`${field}[${i}]`, "must be a plain name");
    }
    return x;
  });
}

/** Validate a policy object (missing fields take defaults). */
export function parsePolicy(raw: unknown, field = "policy"): Policy {
  if (raw === undefined) return structuredClone(DEFAULT_POLICY);
  const o = _obj(raw, field);
  _noUnknown(
    o,
    [
      "shell",
      "shell_allowlist",
      "shell_blocklist",
      "shell_sandbox",
      "labels",
      "human_clearance",
      "model_clearance",
    ],
    field,
  );
  const p = structuredClone(DEFAULT_POLICY);
  if (o.shell !== undefined) {
    if (!SHELL_MODES.includes(o.shell as ShellPolicyMode)) {
      throw invalid(`${field}.shell`, `must be one of ${SHELL_MODES.join(", ")}`);
    }
    p.shell = o.shell as ShellPolicyMode;
  }
  if (o.shell_allowlist !== undefined) {
    p.shell_allowlist = _names(o.shell_allowlist, `${field}.shell_allowlist`);
  }
  if (o.shell_blocklist !== undefined) {
    p.shell_blocklist = _names(o.shell_blocklist, `${field}.shell_blocklist`);
  }
  if (o.shell_sandbox !== undefined) {
    if (!SANDBOX_MODES.includes(o.shell_sandbox as ShellSandboxMode)) {
      throw invalid(
        `${field}.shell_sandbox`,
        `must be one of ${SANDBOX_MODES.join(", ")} ("none" runs commands unconfined)`,
      );
    }
    p.shell_sandbox = o.shell_sandbox as ShellSandboxMode;
  }
  if (o.labels !== undefined) {
    const labels = _obj(o.labels, `${field}.labels`);
    const out: Record<string, Label> = {};
    for (const [pattern, label] of Object.entries(labels)) {
      // Same grammar as capabilities: a pattern that can never match (`*.env`)
      // would silently leave a secret file unlabelled.
      parseResource(
        pattern.startsWith("filesystem:") ? pattern : `filesystem:workspace:${pattern}`,
        `${field}.labels.${pattern}`,
      );
      out[pattern] = parseLabel(label, `${field}.labels.${pattern}`);
    }
    p.labels = out;
  }
  if (o.human_clearance !== undefined) {
    p.human_clearance = parseLabel(o.human_clearance, `${field}.human_clearance`);
  }
  if (o.model_clearance !== undefined) {
    const f = `${field}.model_clearance`;
    if (typeof o.model_clearance === "string") {
      p.model_clearance = parseLabel(o.model_clearance, f);
    } else {
      const per: Record<string, Label> = {};
      for (const [k, v] of Object.entries(_obj(o.model_clearance, f))) {
        per[k] = parseLabel(v, `${f}.${k}`);
      }
      p.model_clearance = per;
    }
  }
  return p;
}

function _budgets(raw: unknown): Budgets {
  if (raw === undefined) return { ...DEFAULT_BUDGETS };
  const o = _obj(raw, "budgets");
  _noUnknown(o, BUDGET_NAMES, "budgets");
  const b: Budgets = { ...DEFAULT_BUDGETS };
  for (const k of BUDGET_NAMES) {
    const v = o[k];
    if (v === undefined) continue;
    if (v !== null && (!Number.isInteger(v) || (v as number) < 1)) {
      throw invalid(`budgets.${k}`, "must be a positive integer or null");
    }
    b[k] = v as number | null;
  }
  return b;
}

/** Validate an image document against the builtin tool table. */
export function parseImage(raw: unknown, knownTools: readonly string[]): AgentImage {
  const o = _obj(raw, "image");
  _noUnknown(
    o,
    [
      "name",
      "description",
      "system_prompt",
      "tools",
      "capabilities",
      "policy",
      "required_capabilities",
      "budgets",
      "model",
    ],
    "",
  );
  const name = _str(o.name, "name", 128);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) {
    throw invalid("name", "must be letters, digits, '.', '_' or '-'");
  }
  const tools = o.tools === undefined ? [] : _names(o.tools, "tools");
  tools.forEach((t, i) => {
    if (!knownTools.includes(t)) throw invalid(`tools[${i}]`, `unknown builtin tool '${t}'`);
  });
  const caps = (v: unknown, field: string) => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw invalid(field, "must be an array");
    return v.map((c, i) => parseCapabilitySpec(c, `${field}[${i}]`));
  };
  return {
    name,
    description: o.description === undefined ? "" : _str(o.description, "description", 10_000),
    system_prompt: o.system_prompt === undefined ? "" : _str(o.system_prompt, "system_prompt"),
    tools,
    capabilities: caps(o.capabilities, "capabilities"),
    policy: parsePolicy(o.policy),
    required_capabilities: caps(o.required_capabilities, "required_capabilities"),
    budgets: _budgets(o.budgets),
    model: o.model === undefined || o.model === null ? null : parseModelConfig(o.model),
  };
}

/** Context windows assumed when an image names none. */
const _DEFAULT_WINDOW = { openai: 128_000, anthropic: 200_000 };

/** A model name as `--model` gives it: `openai:<model>` or `anthropic:<model>`. */
export function parseModelFlag(raw: string, field = "--model"): { provider: string; name: string } {
  const m = /^(openai|anthropic):(.+)$/.exec(raw);
  if (!m || m[2].length > 200) {
    throw invalid(field, "must be openai:<model> or anthropic:<model>");
  }
  return { provider: m[1], name: m[2] };
}

/** A base URL: http(s), no credentials, no query or fragment. */
export function parseBaseUrl(raw: unknown, field: string): string {
  const s = _str(raw, field, 2048);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw invalid(field, "must be an http(s) URL");
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw invalid(field, "must be http(s)");
  if (u.username || u.password) throw invalid(field, "must not carry credentials");
  if (u.search || u.hash) throw invalid(field, "must not have a query or fragment");
  return s.replace(/\/+$/, "");
}

/**
 * Validate a model document `{"provider", "name", "base_url"?, "context_window"?,
 * "max_output_tokens"?, ...}` and fill in defaults.
 */
export function parseModelConfig(raw: unknown, field = "model"): ModelConfig {
  const o = _obj(raw, field);
  _noUnknown(o, [
    "provider",
    "name",
    "base_url",
    "context_window",
    "compact_at",
    "max_output_tokens",
    "stream",
    "max_tool_result_chars",
    "timeout_ms",
    "max_attempts",
  ], field);
  if (o.provider !== "openai" && o.provider !== "anthropic") {
    throw invalid(`${field}.provider`, "must be openai or anthropic");
  }
  const name = _str(o.name, `${field}.name`, 200);
  if (!name) throw invalid(`${field}.name`, "must not be empty");
  const int = (k: string, min: number, max: number, def: number) => {
    const v = o[k];
    if (v === undefined) return def;
    if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) {
      throw invalid(`${field}.${k}`, `must be an integer from ${min} to ${max}`);
    }
    return v as number;
  };
  const compactAt = o.compact_at ?? 0.8;
  if (typeof compactAt !== "number" || !(compactAt > 0 && compactAt < 1)) {
    throw invalid(`${field}.compact_at`, "must be a number between 0 and 1");
  }
  if (o.stream !== undefined && typeof o.stream !== "boolean") {
    throw invalid(`${field}.stream`, "must be a boolean");
  }
  return {
    provider: o.provider,
    name,
    base_url: o.base_url === undefined || o.base_url === null
      ? null
      : parseBaseUrl(o.base_url, `${field}.base_url`),
    context_window: int("context_window", 1024, 10_000_000, _DEFAULT_WINDOW[o.provider]),
    compact_at: compactAt,
    max_output_tokens: int("max_output_tokens", 1, 1_000_000, 4096),
    stream: (o.stream as boolean | undefined) ?? true,
    max_tool_result_chars: int("max_tool_result_chars", 256, 10_000_000, 32_000),
    timeout_ms: int("timeout_ms", 100, 3_600_000, 120_000),
    max_attempts: int("max_attempts", 1, 20, 4),
  };
}
