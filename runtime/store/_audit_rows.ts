/**
 * How an audit record becomes a row of the hash chain, shared by every path
 * that writes one (a transaction, a group commit, the audit log's indexer and
 * its recovery): the stored body, its hash over the previous one, the
 * multi-row INSERT, and indexing a run of audit-log lines.
 * @module
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { sha256 } from "../canonical.ts";
import { LibosError } from "../errors.ts";

/** Hash of a record: sha256 over the previous hash and the body exactly as stored. */
export function chainHash(prevHash: string, body: string): string {
  return sha256(prevHash + "\n" + body);
}

/** The last record of the chain (seq 0 and hash "" before the first). */
export interface ChainHead {
  /** Its seq. */
  seq: number;
  /** Its hash. */
  hash: string;
}

/** Rows one audit INSERT statement takes at most (8 parameters each). */
const AUDIT_ROWS_PER_INSERT = 32;

/** `INSERT INTO audit ... VALUES` for `rows` rows. */
function _insertSql(rows: number): string {
  return "INSERT INTO audit (seq, record_id, actor, action, decision, prev_hash, hash, body) VALUES " +
    Array(rows).fill("(?, ?, ?, ?, ?, ?, ?, ?)").join(", ");
}

/** The fields of a draft the audit table also keeps in columns, to filter by. */
export interface IndexedFields {
  /** Who acted. */
  actor: string;
  /** What was done. */
  action: string;
  /** allow, deny, ask, info or error. */
  decision: string;
}

/**
 * A draft's JSON as the chain stores it: the indexed fields first (actor,
 * action, decision), so a stored body opens with the record's seq, id and
 * those fields, and the verifier checks them against the columns by that
 * opening instead of parsing every body (`_audit_verify.ts`).
 */
export function auditDraftJson(draft: IndexedFields): string {
  const { actor, action, decision, ...rest } = draft;
  return JSON.stringify({ actor, action, decision, ...rest });
}

/**
 * Push the column values of the record after `head` onto `params` and return
 * the new head. `draftJson` is {@link auditDraftJson} of the draft: the stored
 * body is the same text as `JSON.stringify({ seq, record_id, ...draft })`, spliced.
 */
function _rowParams(
  head: ChainHead,
  draftJson: string,
  draft: IndexedFields,
  params: (string | number)[],
): ChainHead {
  const seq = head.seq + 1;
  const recordId = `a${seq}`;
  const body = draftJson === "{}"
    ? `{"seq":${seq},"record_id":"${recordId}"}`
    : `{"seq":${seq},"record_id":"${recordId}",${draftJson.slice(1)}`;
  const hash = chainHash(head.hash, body);
  params.push(seq, recordId, draft.actor, draft.action, draft.decision, head.hash, hash, body);
  return { seq, hash };
}

/** A statement source (a caching one where it matters). */
export type Prepare = (sql: string) => StatementSync;

const _UPSERT_META =
  "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/**
 * Records numbered and hash-chained after `after`, ready to insert: all the
 * work of indexing but the statements. Computing them needs no lock; they
 * are only inserted if the table's head is still `after` (see {@link insertChained}).
 */
export interface ChainedRows {
  /** The head they chain after. */
  after: ChainHead;
  /** The head once they are in. */
  head: ChainHead;
  /** Column values, one array per INSERT statement. */
  chunks: { rows: number; params: (string | number)[] }[];
}

/** Number and chain `records` ([draft JSON, draft] in order) after `after`. */
export function chainRows(
  after: ChainHead,
  records: [string, IndexedFields][],
): ChainedRows {
  let head = after;
  const chunks: ChainedRows["chunks"] = [];
  // One INSERT per chunk of rows: running a statement per row costs more than binding it.
  for (let i = 0; i < records.length; i += AUDIT_ROWS_PER_INSERT) {
    const chunk = records.slice(i, i + AUDIT_ROWS_PER_INSERT);
    const params: (string | number)[] = [];
    for (const [json, draft] of chunk) head = _rowParams(head, json, draft, params);
    chunks.push({ rows: chunk.length, params });
  }
  return { after, head, chunks };
}

/** The table's head: its last record (seq 0 and hash "" when empty). */
export function readHead(prepare: Prepare): ChainHead {
  const last = prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").get() as
    | ChainHead
    | undefined;
  return { seq: last?.seq ?? 0, hash: last?.hash ?? "" };
}

/**
 * Insert rows chained by {@link chainRows} and move the head. The caller
 * provides the transaction and has checked that the head is `rows.after`.
 */
export function insertChained(prepare: Prepare, rows: ChainedRows): void {
  for (const c of rows.chunks) prepare(_insertSql(c.rows)).run(...c.params);
  // An upsert rewrites only the row's table page; REPLACE would delete and
  // reinsert, dirtying meta's key index too (one more WAL frame per call).
  prepare(_UPSERT_META).run("audit_head", JSON.stringify(rows.head));
}

/**
 * Number, chain and insert `records` ([draft JSON, draft] in order) after the
 * table's head, and move the head. The caller provides the transaction.
 */
export function insertAuditRows(
  prepare: Prepare,
  records: [string, IndexedFields][],
): void {
  insertChained(prepare, chainRows(readHead(prepare), records));
}

/**
 * Parse audit-log lines (draft JSON each) into what {@link chainRows} takes.
 * Only the runtime appends to the log; a line that is not a record's draft
 * was written by something else, and is refused (EIO) rather than indexed.
 */
export function parseAuditLines(
  lines: string[],
): [string, IndexedFields][] {
  return lines.map((l, i) => [l, _draft(l, i)]);
}

function _draft(line: string, i: number): IndexedFields {
  let d: unknown = null;
  try {
    d = JSON.parse(line);
  } catch { /* refused below */ }
  const f = d as Partial<IndexedFields> | null;
  if (
    f === null || typeof f !== "object" || Array.isArray(f) || typeof f.actor !== "string" ||
    typeof f.action !== "string" || typeof f.decision !== "string"
  ) {
    throw new LibosError(
      "EIO",
      `line ${i + 1} after the indexed part is not an audit record ` +
        `(${JSON.stringify(line.slice(0, 40))}): the log was changed outside the runtime`,
    );
  }
  return f as IndexedFields;
}

/**
 * Index audit-log `lines` (draft JSON each) in one transaction that also
 * records `endOffset` as `meta.audit_log_offset`, so each line lands once.
 */
export function indexAuditLines(
  db: DatabaseSync,
  prepare: Prepare,
  lines: string[],
  endOffset: number,
): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    insertAuditRows(prepare, parseAuditLines(lines));
    setAuditLogOffset(prepare, endOffset);
    db.exec("COMMIT");
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}

/** Record how far the audit log is indexed. */
export function setAuditLogOffset(prepare: Prepare, offset: number): void {
  prepare(_UPSERT_META).run("audit_log_offset", String(offset));
}
