/**
 * filesystem.* primitives. Every path is resolved to its real path (following
 * every symlink) before authorization, and the real path must stay inside the
 * caller's workspace. Authorization happens before existence is revealed.
 * @module
 */
import { basename, dirname, isAbsolute, join, normalize, relative, sep } from "node:path";
import { denied, invalid, LibosError } from "../runtime/errors.ts";
import { maxLabel, mayFlow, parseLabel } from "../runtime/labels.ts";
import { foldResource, isLive, restrictionMatches } from "../runtime/capabilities.ts";
import type { FileStat } from "../runtime/providers/types.ts";
import { canonicalPath } from "../runtime/sandbox/flags.ts";
import type { Label } from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { type Call, optBool, type Primitive, str } from "./call.ts";
import { withEffect } from "./effects.ts";

/** Largest file filesystem.read returns. */
export const MAX_READ_BYTES = 8 * 1024 * 1024;
/** Largest content filesystem.write accepts. */
export const MAX_WRITE_CHARS = 8 * 1024 * 1024;

/** A path after resolution. */
export interface ResolvedPath {
  /** Absolute real path (symlinks resolved; missing tail components appended). */
  real: string;
  /** Path relative to the workspace (`.` for the root). */
  rel: string;
  /** `filesystem:workspace:<rel>`. */
  resource: string;
  /** The existing entry's lstat, when resolution took it (never a symlink). */
  stat?: FileStat;
}

/**
 * How long a workspace root, once seen to be its own real path, is trusted
 * without resolving it again. Entries below the root are checked on every call.
 */
export const ROOT_RECHECK_MS = 100;

/**
 * Resolve a path argument for the caller: relative paths are taken from the
 * process cwd; the deepest existing ancestor is realpath'd; a dangling symlink
 * or anything whose real path leaves the workspace is EPERM. An existing
 * non-symlink entry in a real directory takes a shorter way to the same answer.
 */
export async function resolvePath(call: Call, raw: string, field = "path"): Promise<ResolvedPath> {
  const lexical = _lexical(call, raw, field);
  if (call.k.ablated("no-realpath")) return _resolveLexically(call, raw, lexical);
  return await _resolveDirect(call, call.proc.workspace, lexical) ??
    await _resolveFull(call, raw, field, lexical);
}

/**
 * {@link resolvePath} without the shortcut: every component resolved with
 * realpath. Exported so tests can check both ways agree.
 */
export async function resolvePathFully(
  call: Call,
  raw: string,
  field = "path",
): Promise<ResolvedPath> {
  return await _resolveFull(call, raw, field, _lexical(call, raw, field));
}

function _lexical(call: Call, raw: string, field: string): string {
  if (raw.length === 0) throw invalid(`${call.name}.${field}`, "must not be empty");
  if (raw.length > 4096) throw invalid(`${call.name}.${field}`, "longer than 4096 characters");
  const ws = call.proc.workspace;
  return isAbsolute(raw) ? normalize(raw) : normalize(join(ws, call.proc.cwd, raw));
}

/**
 * Benchmark ablation `no-realpath` only: the lexical path is taken as the
 * real one (symlinks are not followed, dangling links not refused). It still
 * has to stay inside the workspace as written.
 */
function _resolveLexically(call: Call, raw: string, lexical: string): ResolvedPath {
  const rel = relative(call.proc.workspace, lexical);
  if (rel === ".." || rel.startsWith(".." + sep) || isAbsolute(rel)) {
    throw denied(`${call.name} ${raw}: path resolves outside the workspace`);
  }
  const relPath = rel === "" ? "." : rel.split(sep).join("/");
  return { real: lexical, rel: relPath, resource: `filesystem:workspace:${relPath}` };
}

async function _resolveFull(
  call: Call,
  raw: string,
  field: string,
  lexical: string,
): Promise<ResolvedPath> {
  const fs = call.k.providers.fs;
  const ws = call.proc.workspace;
  let head = lexical;
  const tail: string[] = [];
  let real: string | null = null;
  while (real === null) {
    try {
      real = await fs.realPath(head);
    } catch (e) {
      // A file used as a directory is treated like a missing tail: answering
      // ENOENT here, before authorization, would reveal that the file exists.
      if (!(e instanceof Deno.errors.NotFound) && !(e instanceof Deno.errors.NotADirectory)) {
        throw e;
      }
      // A name that exists but cannot be resolved is a dangling symlink: following
      // it on write would create a file wherever it points.
      if (await _exists(call, head)) {
        throw denied(`${call.name} ${raw}: dangling symlink refused`);
      }
      const parent = dirname(head);
      if (parent === head) throw new LibosError("ENOENT", `${call.name}.${field}: no such path`);
      tail.unshift(head.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)));
      head = parent;
    }
  }
  const full = tail.length ? join(real, ...tail) : real;
  const rel = relative(ws, full);
  if (rel === ".." || rel.startsWith(".." + sep) || isAbsolute(rel)) {
    throw denied(`${call.name} ${raw}: path resolves outside the workspace`);
  }
  const relPath = rel === "" ? "." : rel.split(sep).join("/");
  return { real: full, rel: relPath, resource: `filesystem:workspace:${relPath}` };
}

/**
 * The common case without resolving every component: an existing entry below
 * the workspace that is not a symlink, in a directory that is its own real
 * path (the workspace root, seen so within {@link ROOT_RECHECK_MS}, or a
 * subdirectory checked with realpath now). Its real path is then the lexical
 * path, exactly what full resolution would return. Anything else (a symlink,
 * a missing component, a path outside) gets null and full resolution.
 */
async function _resolveDirect(
  call: Call,
  ws: string,
  lexical: string,
): Promise<ResolvedPath | null> {
  // A trailing separator ("dir/", "file.txt/") has its own meaning: full resolution.
  if (!lexical.startsWith(ws + sep) || lexical.endsWith(sep)) return null;
  const fs = call.k.providers.fs;
  const parent = dirname(lexical);
  try {
    if (parent === ws ? !(await _rootIsReal(call, ws)) : (await fs.realPath(parent)) !== parent) {
      return null;
    }
    const stat = await fs.lstat(lexical);
    if (stat.kind === "symlink") return null;
    const rel = lexical.slice(ws.length + 1).split(sep).join("/");
    return { real: lexical, rel, resource: `filesystem:workspace:${rel}`, stat };
  } catch {
    return null;
  }
}

/** Whether the workspace root is still its own real path (rechecked every ROOT_RECHECK_MS). */
async function _rootIsReal(call: Call, ws: string): Promise<boolean> {
  const seen = call.k.rootsConfirmed;
  const now = performance.now();
  if (now - (seen.get(ws) ?? -Infinity) < ROOT_RECHECK_MS) return true;
  if ((await call.k.providers.fs.realPath(ws)) !== ws) return false;
  seen.set(ws, now);
  return true;
}

async function _exists(call: Call, path: string): Promise<boolean> {
  try {
    await call.k.providers.fs.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Label of a workspace file: the higher of its recorded label and the policy's. */
export async function fileLabel(call: Call, p: ResolvedPath): Promise<Label> {
  let label: Label = (await call.k.store.getFileLabel(p.real)) ?? "normal";
  for (const [pattern, l] of Object.entries(call.proc.policy.labels)) {
    const full = pattern.startsWith("filesystem:") ? pattern : `filesystem:workspace:${pattern}`;
    if (restrictionMatches(full, p.resource)) label = maxLabel(label, l);
  }
  return label;
}

/**
 * Every real path in the caller's workspace that carries a label: the policy's
 * patterns (`dir/*` stands for `dir`, wider, never narrower) and the labels
 * recorded on files.
 */
export async function labelledPaths(call: Call): Promise<{ path: string; label: Label }[]> {
  const ws = call.proc.workspace;
  const out: { path: string; label: Label }[] = [];
  for (const [pattern, label] of Object.entries(call.proc.policy.labels)) {
    const full = pattern.startsWith("filesystem:") ? pattern : `filesystem:workspace:${pattern}`;
    if (!full.startsWith("filesystem:workspace:")) continue;
    const rel = full.slice("filesystem:workspace:".length);
    const base = rel === "*" ? "." : rel.endsWith("/*") ? rel.slice(0, -2) : rel;
    out.push({ path: canonicalPath(join(ws, base)), label });
  }
  return [...out, ...await call.k.store.fileLabelsUnder(ws)];
}

/** Raise the caller's taint to `label` (labels follow data into the process). */
export async function taint(call: Call, label: Label): Promise<void> {
  call.resultLabel = maxLabel(call.resultLabel, label);
  if (maxLabel(call.proc.taint, label) !== call.proc.taint) {
    call.proc.taint = label;
    await call.k.saveProcess(call.proc.pid, { taint: label });
  }
}

/** Refuse a flow of the caller's data into a sink with a lower label. */
export async function checkFlow(call: Call, sink: Label, sinkName: string): Promise<void> {
  if (call.k.ablated("no-labels")) return;
  if (!mayFlow(call.proc.taint, sink)) {
    await call.k.emit("label.blocked", `pid:${call.proc.pid}`, sinkName, {
      data: call.proc.taint,
      sink,
    }, call.correlationId);
    throw denied(
      `${call.name} ${sinkName}: ${call.proc.taint} data may not flow to a ${sink} sink`,
    );
  }
}

/**
 * Resolve a path naming an entry itself: like {@link resolvePath}, except that
 * a symlink in last position is not followed. Its directory is resolved (and
 * must be inside the workspace); the result is the link, so deleting it
 * removes the link and never the file it points to.
 */
export async function resolveEntry(
  call: Call,
  raw: string,
  field = "path",
): Promise<ResolvedPath> {
  const lexical = _lexical(call, raw, field);
  if (call.k.ablated("no-realpath")) return _resolveLexically(call, raw, lexical);
  const fs = call.k.providers.fs;
  let stat: FileStat | null = null;
  if (!lexical.endsWith(sep) && lexical !== call.proc.workspace) {
    try {
      stat = await fs.lstat(lexical);
    } catch {
      // Missing (or unreadable): resolvePath decides, authorization first.
    }
  }
  if (stat?.kind !== "symlink") return await resolvePath(call, raw, field);
  const dir = await resolvePath(call, dirname(lexical), field);
  const name = basename(lexical);
  const rel = dir.rel === "." ? name : `${dir.rel}/${name}`;
  return { real: join(dir.real, name), rel, resource: `filesystem:workspace:${rel}`, stat };
}

async function _target(call: Call, entry = false): Promise<ResolvedPath> {
  const raw = str(call, "path", 4096);
  call.target = `filesystem:workspace:${raw}`; // as asked, until resolved
  const p = entry ? await resolveEntry(call, raw) : await resolvePath(call, raw);
  call.target = p.resource;
  return p;
}

const read: Primitive = {
  fields: ["path"],
  async run(call) {
    const p = await _target(call);
    await authorize(call, { resource: p.resource, right: "read" });
    const text = await call.k.providers.fs.readText(p.real, MAX_READ_BYTES, p.stat);
    await taint(call, await fileLabel(call, p));
    return text;
  },
};

const write: Primitive = {
  fields: ["path", "content", "label"],
  async run(call) {
    const p = await _target(call);
    const content = str(call, "content", MAX_WRITE_CHARS);
    const asked = call.args.label === undefined
      ? undefined
      : parseLabel(call.args.label, `${call.name}.label`);
    const current = await fileLabel(call, p);
    const sink = maxLabel(current, asked ?? "public");
    call.argsLabel = sink;
    await authorize(call, { resource: p.resource, right: "write", label: call.proc.taint });
    await checkFlow(call, sink, p.resource);
    const fs = call.k.providers.fs;
    const bytes = new TextEncoder().encode(content).length;
    await withEffect(call, p.resource, async () => {
      await fs.mkdir(dirname(p.real));
      await fs.writeText(p.real, content);
      return { bytes };
    });
    if (sink !== current) await call.k.store.setFileLabel(p.real, sink);
    await call.k.emit(
      "file.written",
      `pid:${call.proc.pid}`,
      p.resource,
      { bytes },
      call.correlationId,
    );
    return { path: p.rel, bytes, label: sink };
  },
};

const remove: Primitive = {
  fields: ["path", "recursive"],
  async run(call) {
    // The entry named: a symlink is removed itself, its target stays.
    const p = await _target(call, true);
    const recursive = optBool(call, "recursive") ?? false;
    if (p.rel === ".") throw denied(`${call.name}: the workspace root cannot be deleted`);
    if (recursive) {
      // A DENY or ASK on anything below wins over any wildcard; checked first so
      // a refused delete uses up no limited capability.
      const now = call.k.providers.clock.now();
      const below = (await call.k.store.capabilitiesOf(call.proc.pid)).find((c) =>
        c.effect !== "allow" && isLive(c, now) && c.rights.includes("delete") &&
        (c.resource.startsWith(`${p.resource}/`) ||
          foldResource(c.resource).startsWith(`${foldResource(p.resource)}/`))
      );
      if (below) throw denied(`${call.name} ${p.rel}: ${below.resource} is not deletable`);
    }
    await authorize(call, { resource: p.resource, right: "delete" });
    // A recursive delete touches everything below: it needs that authority too.
    if (recursive) await authorize(call, { resource: `${p.resource}/*`, right: "delete" });
    const fs = call.k.providers.fs;
    await fs.lstat(p.real); // ENOENT before the ledger records an intent
    await withEffect(call, p.resource, () => fs.remove(p.real, recursive));
    await call.k.emit("file.deleted", `pid:${call.proc.pid}`, p.resource, {}, call.correlationId);
    return { path: p.rel, deleted: true };
  },
};

const list: Primitive = {
  fields: ["path"],
  async run(call) {
    const p = await _target(call);
    await authorize(call, { resource: p.resource, right: "read" });
    return await call.k.providers.fs.list(p.real);
  },
};

const stat: Primitive = {
  fields: ["path"],
  async run(call) {
    const p = await _target(call);
    await authorize(call, { resource: p.resource, right: "read" });
    const s = await call.k.providers.fs.statEntry(p.real);
    return { path: p.rel, ...s, label: await fileLabel(call, p) };
  },
};

/** The filesystem family. */
export const FILESYSTEM: Record<string, Primitive> = {
  "filesystem.read": read,
  "filesystem.write": write,
  "filesystem.delete": remove,
  "filesystem.list": list,
  "filesystem.stat": stat,
};
