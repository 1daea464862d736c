/**
 * How an audit record becomes a row of the hash chain, shared by every path
 * that writes one (a transaction, a group commit, the audit log's indexer and
 * its recovery): the stored body, its hash over the previous one, and the
 * multi-row INSERT.
 * @module
 */
import { sha256 } from "../canonical.ts";

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
export const AUDIT_ROWS_PER_INSERT = 32;

/** `INSERT INTO audit ... VALUES` for `rows` rows. */
export function auditInsertSql(rows: number): string {
  return "INSERT INTO audit (seq, record_id, actor, action, decision, prev_hash, hash, body) VALUES " +
    Array(rows).fill("(?, ?, ?, ?, ?, ?, ?, ?)").join(", ");
}

/**
 * Push the column values of the record after `head` onto `params` and return
 * the new head. `draftJson` is `JSON.stringify(draft)`: the stored body is
 * the same text as `JSON.stringify({ seq, record_id, ...draft })`, spliced.
 */
export function auditRowParams(
  head: ChainHead,
  draftJson: string,
  draft: { actor: string; action: string; decision: string },
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
