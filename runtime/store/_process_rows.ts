/**
 * How a process is laid out in SQLite: what rarely changes (image, policy,
 * goal, budgets, ...) as one document in `processes`, and the small state every
 * quantum rewrites (status, pending action, model cursor, usage) as columns of
 * `process_state`. A quantum then writes a row whose size does not depend on
 * the goal, the script or how long the process has run. Also the one-time
 * migration of stores written before the split.
 * @module
 */
import type { DatabaseSync } from "node:sqlite";
import type { ProcessRecord } from "../types.ts";

/** The fields a quantum rewrites, stored as columns of `process_state`. */
export const HOT_KEYS = ["status", "pending", "model", "usage", "updated_at"] as const;

/** The per-quantum part of a process record. */
export type Hot = Pick<ProcessRecord, typeof HOT_KEYS[number]>;

/** The rest of a process record (pid included), stored as one JSON document. */
export type Static = Omit<ProcessRecord, typeof HOT_KEYS[number]>;

/** A `process_state` row as SQLite returns it. */
export interface HotRow {
  /** Status. */
  status: string;
  /** Pending action JSON, or null. */
  pending: string | null;
  /** Model cursor JSON, or null. */
  model: string | null;
  /** Usage JSON. */
  usage: string;
  /** ISO time of the last change. */
  updated_at: string;
}

/** Columns of `process_state`, in the order {@link HotRow} lists them. */
export const HOT_COLUMNS = "status, pending, model, usage, updated_at";

/** Ended statuses, as an SQL list (ended processes drop out of `live_processes`). */
export const TERMINAL_SQL = "('exited', 'failed', 'killed')";

const _HOT: ReadonlySet<string> = new Set(HOT_KEYS);

/** Parse a `process_state` row. */
export function parseHot(r: HotRow): Hot {
  return {
    status: r.status as Hot["status"],
    pending: r.pending === null ? null : JSON.parse(r.pending),
    model: r.model === null ? null : JSON.parse(r.model),
    usage: JSON.parse(r.usage),
    updated_at: r.updated_at,
  };
}

/** A hot field as its column value. */
export function hotValue(key: typeof HOT_KEYS[number], v: unknown): string | null {
  if (key === "status" || key === "updated_at") return v as string;
  return v === null || v === undefined ? null : JSON.stringify(v);
}

/** Split a patch into hot fields and the rest (`null` when the patch has no other field). */
export function splitPatch(
  patch: Partial<Omit<ProcessRecord, "pid">>,
): { hot: Partial<Hot>; rest: Record<string, unknown> | null } {
  const hot: Record<string, unknown> = {};
  let rest: Record<string, unknown> | null = null;
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined || k === "pid") continue;
    if (_HOT.has(k)) hot[k] = v;
    else (rest ??= {})[k] = v;
  }
  return { hot: hot as Partial<Hot>, rest };
}

/** The document stored in `processes.body`: the record without its pid and hot fields. */
export function staticBody(rec: Omit<ProcessRecord, "pid"> | ProcessRecord): string {
  const body: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec)) if (!_HOT.has(k) && k !== "pid") body[k] = v;
  return JSON.stringify(body);
}

/**
 * Move a store written before the split (the whole record, script included, in
 * `processes.body`, with a `status` column) to the split layout, in one
 * transaction: hot fields to `process_state`, a scripted model's steps to
 * `model_inputs`, and each process's `step-<n>` results to `step_results`.
 * Does nothing on a store already split. Returns how many processes it moved.
 */
export function migrateProcesses(db: DatabaseSync): number {
  const cols = db.prepare("PRAGMA table_info(processes)").all() as { name: string }[];
  if (!cols.some((c) => c.name === "status")) return 0;
  db.exec("BEGIN IMMEDIATE");
  try {
    const rows = db.prepare("SELECT pid, body FROM processes ORDER BY pid").all() as {
      pid: number;
      body: string;
    }[];
    for (const r of rows) _migrateOne(db, r.pid, JSON.parse(r.body) as ProcessRecord);
    db.exec("ALTER TABLE processes DROP COLUMN status");
    db.exec("COMMIT");
    return rows.length;
  } catch (e) {
    db.exec("ROLLBACK");
    throw e;
  }
}

function _migrateOne(db: DatabaseSync, pid: number, rec: ProcessRecord): void {
  let model = rec.model ?? null;
  const state = (model?.state ?? {}) as Record<string, unknown>;
  if (model && Array.isArray(state.steps)) {
    const { steps, ...cursor } = state;
    db.prepare("INSERT OR REPLACE INTO model_inputs (pid, body) VALUES (?, ?)").run(
      pid,
      JSON.stringify({ steps }),
    );
    model = { kind: model.kind, state: cursor };
  }
  db.prepare(
    `INSERT OR REPLACE INTO process_state (pid, ${HOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`,
  ).run(
    pid,
    rec.status,
    hotValue("pending", rec.pending ?? null),
    hotValue("model", model),
    hotValue("usage", rec.usage ?? { quanta: 0, wall_ms: 0, syscalls: 0 }),
    rec.updated_at ?? rec.created_at ?? "",
  );
  db.prepare("UPDATE processes SET body = ? WHERE pid = ?").run(staticBody(rec), pid);
  _indexSteps(db, pid, rec.namespace);
}

// Step results used to be found by listing the namespace; index them by number.
function _indexSteps(db: DatabaseSync, pid: number, namespace: string): void {
  const objs = db.prepare(
    "SELECT oid, name, body FROM objects WHERE namespace = ? AND name GLOB 'step-[0-9]*'",
  ).all(namespace) as { oid: string; name: string; body: string }[];
  const ins = db.prepare("INSERT OR IGNORE INTO step_results (pid, step, oid) VALUES (?, ?, ?)");
  for (const o of objs) {
    const body = JSON.parse(o.body) as { kind?: string; created_by?: number };
    const step = Number(o.name.slice(5));
    if (body.kind !== "tool_result" || body.created_by !== pid || !Number.isInteger(step)) continue;
    ins.run(pid, step, o.oid);
  }
}
