/**
 * Verifying the audit hash chain by ranges of sequence numbers. Each record
 * carries the hash of the one before it (its hash is the sha256 of that hash,
 * a newline and its body: `chainHash`), so a range can be checked on its own
 * (contiguity, links inside it, every record's hash over its stored body, the
 * record id, the indexed columns against the body); joining the ranges checks
 * what lies between them (the first record of a range follows the last of the
 * one before). One thread checks a small chain; a large one is split among
 * worker threads (`_audit_verifier.ts`), each with its own read connection,
 * and the answer is the same: the first bad record in sequence order, with
 * the same problem and count as a check from the start would give.
 * @module
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { sha256 } from "../canonical.ts";
import type { AuditVerification } from "./store.ts";

/** Rows read per statement step. */
const CHUNK = 2000;

/** Problems in the order a check of one record meets them. */
const RANK = { removed: 0, json: 1, prev: 2, id: 3, hash: 4, columns: 5 } as const;

/** The first bad record of a range. */
export interface RangeBad {
  /** Its seq. */
  seq: number;
  /** Its record id (as stored). */
  record_id: string;
  /** What is wrong. */
  problem: string;
  /** Order among the problems of one record. */
  rank: number;
}

/** What a range check found. */
export interface RangeReport {
  /** Seq of its first row (null: no row in the range). */
  firstSeq: number | null;
  /** Record id of its first row. */
  firstRecordId: string;
  /** prev_hash of its first row (checked by the joiner). */
  firstPrev: string;
  /** Rows that checked out before the first bad one (or all). */
  count: number;
  /** Seq of the last row that checked out. */
  lastSeq: number;
  /** Hash of the last row that checked out. */
  lastHash: string;
  /** The first bad row, if any. */
  bad: RangeBad | null;
}

/** The columns every range query opens with. */
const _HEAD =
  "SELECT seq, record_id = 'a' || seq, length(prev_hash), hash, prev_hash || char(10) || body";
const _RANGE = `FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ${CHUNK}`;

/**
 * The range queries; rows come as arrays.
 * - layout: no JSON is read. A body opens as the writer writes it
 *   (`auditDraftJson`: seq, record id, then actor, action and decision), so
 *   the indexed columns are checked against that opening text. A record
 *   whose opening and hash check out is the one the writer chained (or one a
 *   forger rewrote the chain from, which no check of the body could catch).
 *   Any record that fails a check, and any record written before bodies
 *   opened that way, is checked again by `parsed`, which names its problem.
 * - parsed: the indexed columns are compared with the hashed body in SQL
 *   (parsed once, in C). It raises on a body that is not JSON: the range
 *   then goes on from its last good record with `careful`, which says so.
 */
const _QUERIES = {
  layout: `${_HEAD}, actor, action, decision ${_RANGE}`,
  parsed: `${_HEAD}, 1,
    json_extract(body, '$.actor', '$.action', '$.decision') IS json_array(actor, action, decision)
    ${_RANGE}`,
  careful: `${_HEAD}, json_valid(body),
    CASE WHEN json_valid(body) THEN
      json_extract(body, '$.actor', '$.action', '$.decision') IS json_array(actor, action, decision)
    END
    ${_RANGE}`,
} as const;

type _Mode = keyof typeof _QUERIES;

/**
 * seq, record id is `a<seq>`, length of prev_hash, hash, what the hash is over
 * (prev_hash, a newline, the body), then by query: actor, action, decision
 * (layout); or body is JSON, columns agree with it (parsed, careful).
 */
type _Row = [number, number, number, string, string, unknown, unknown, unknown?];

function _statement(db: DatabaseSync, sql: string): StatementSync {
  const st = db.prepare(sql);
  (st as unknown as { setReturnArrays(on: boolean): void }).setReturnArrays(true);
  return st;
}

/** `text` at `at` is `head` followed by "," or "}" (the end of a key's value). */
function _opensWith(text: string, at: number, head: string): boolean {
  if (!text.startsWith(head, at)) return false;
  const next = text.charCodeAt(at + head.length);
  return next === 0x2c || next === 0x7d; // "," or "}"
}

/** The record's own seq and id open its body (at `at`), as the writer stores it. */
function _idOk(seq: number, input: string, at: number): boolean {
  return _opensWith(input, at, `{"seq":${seq},"record_id":"a${seq}"`);
}

/** The body (at `at`) opens with its seq, id and the indexed columns, as the writer stores it. */
function _layoutOk(seq: number, input: string, at: number, row: _Row): boolean {
  const actor = row[5], action = row[6], decision = row[7];
  if (typeof actor !== "string" || typeof action !== "string" || typeof decision !== "string") {
    return false;
  }
  return _opensWith(
    input,
    at,
    `{"seq":${seq},"record_id":"a${seq}","actor":${JSON.stringify(actor)},"action":${
      JSON.stringify(action)
    },"decision":${JSON.stringify(decision)}`,
  );
}

/** The body (at `at`) opens as the writer now writes it, whatever its values. */
function _looksLaidOut(input: string, at: number): boolean {
  const comma = input.indexOf(",", input.indexOf('"record_id":', at));
  return comma > 0 && input.startsWith('"actor":', comma + 1);
}

/** The record id stored with `seq`. */
function _recordId(db: DatabaseSync, seq: number): string {
  const r = db.prepare("SELECT record_id FROM audit WHERE seq = ?").get(seq) as
    | { record_id: string }
    | undefined;
  return r?.record_id ?? `a${seq}`;
}

/** The record id of a row: `a<seq>` when the query found it so, else as stored (only a report reads it). */
function _rid(db: DatabaseSync, row: _Row): string {
  return row[1] ? `a${row[0]}` : _recordId(db, row[0]);
}

/** `out` with `row` as its first bad record. */
function _bad(
  db: DatabaseSync,
  out: RangeReport,
  row: _Row,
  problem: string,
  rank: number,
): RangeReport {
  out.bad = { seq: row[0], record_id: _rid(db, row), problem, rank };
  return out;
}

/** Check the records with seq in (`from`, `to`] on `db` (inside a read transaction). */
export function verifyRange(db: DatabaseSync, from: number, to: number): RangeReport {
  const statements = new Map<_Mode, StatementSync>();
  const query = (m: _Mode) => {
    let st = statements.get(m);
    if (!st) statements.set(m, st = _statement(db, _QUERIES[m]));
    return st;
  };
  let mode: _Mode = "layout";
  const out: RangeReport = {
    firstSeq: null,
    firstRecordId: "",
    firstPrev: "",
    count: 0,
    lastSeq: from,
    lastHash: "",
    bad: null,
  };
  let at = from;
  let expect = -1;
  let prev = "";
  for (;;) {
    let rows: _Row[];
    try {
      rows = query(mode).all(at, to) as unknown as _Row[];
    } catch (e) {
      if (mode !== "parsed") throw e;
      // A body that is not JSON: the careful query finds and names it.
      mode = "careful";
      continue;
    }
    const n = rows.length;
    if (n === 0) return out;
    let again = false;
    // Indexed access and no closure a row: this loop runs once a record.
    for (let i = 0; i < n; i++) {
      const row = rows[i];
      const seq = row[0];
      const prevLen = row[2];
      const hash = row[3];
      const input = row[4];
      if (out.firstSeq === null) {
        out.firstSeq = seq;
        out.firstRecordId = _rid(db, row);
        out.firstPrev = input.slice(0, prevLen);
        expect = seq;
      }
      if (seq !== expect) {
        return _bad(db, out, row, `expected record ${expect}: a record was removed`, RANK.removed);
      }
      // The first row's link is the joiner's to check (it knows the range before).
      // (`input.slice(0, prevLen) !== prev`, without making the slice.)
      const linked = seq === out.firstSeq || (prevLen === prev.length && input.startsWith(prev));
      if (mode === "layout") {
        if (
          !(linked && row[1] && _layoutOk(seq, input, prevLen + 1, row) && sha256(input) === hash)
        ) {
          // Written before bodies opened this way, or bad: the parsed query checks it and names the problem.
          mode = "parsed";
          at = seq - 1;
          again = true;
          break;
        }
      } else {
        if (!row[5]) return _bad(db, out, row, "record body is not valid JSON", RANK.json);
        if (!linked) {
          return _bad(db, out, row, "prev_hash does not match the previous record", RANK.prev);
        }
        if (!row[1] || !_idOk(seq, input, prevLen + 1)) {
          return _bad(db, out, row, "record id altered", RANK.id);
        }
        if (sha256(input) !== hash) {
          return _bad(db, out, row, "hash does not match the record's contents", RANK.hash);
        }
        if (!row[6]) {
          return _bad(
            db,
            out,
            row,
            "indexed columns disagree with the hashed record",
            RANK.columns,
          );
        }
      }
      prev = hash;
      out.count++;
      out.lastSeq = seq;
      out.lastHash = hash;
      expect++;
    }
    if (again) continue;
    const last = rows[n - 1];
    at = last[0];
    // Back to reading no JSON once the chain's bodies open with the indexed columns.
    if (mode !== "layout" && _looksLaidOut(last[4], last[2] + 1)) mode = "layout";
  }
}

/**
 * Join range reports (in seq order, covering (0, last seq]) into the answer a
 * check from the first record would give; `head` is the chain head recorded
 * in the store (null if none).
 */
export function joinRanges(
  reports: RangeReport[],
  head: { seq: number; hash: string } | null,
): AuditVerification {
  let count = 0;
  let prev = "";
  let expect = 1;
  for (const r of reports) {
    if (r.firstSeq === null) continue;
    const found: RangeBad[] = [];
    if (r.firstSeq !== expect) {
      found.push({
        seq: r.firstSeq,
        record_id: r.firstRecordId,
        problem: `expected record ${expect}: a record was removed`,
        rank: RANK.removed,
      });
    } else if (r.firstPrev !== prev) {
      found.push({
        seq: r.firstSeq,
        record_id: r.firstRecordId,
        problem: "prev_hash does not match the previous record",
        rank: RANK.prev,
      });
    }
    if (r.bad) found.push(r.bad);
    // The first in seq order; for one record, the problem a check meets first.
    const bad = found.sort((a, b) => a.seq - b.seq || a.rank - b.rank)[0];
    if (bad) {
      // Rows of this range before its bad one checked out, unless the bad one is its first.
      const before = bad.seq === r.firstSeq ? 0 : r.count;
      const headHash = bad.seq === r.firstSeq ? prev : r.lastHash;
      return {
        ok: false,
        count: count + before,
        head: headHash,
        firstBad: { seq: bad.seq, record_id: bad.record_id, problem: bad.problem },
      };
    }
    count += r.count;
    prev = r.lastHash;
    expect = r.lastSeq + 1;
  }
  if (count > 0 || head) {
    if (!head || head.seq !== count || head.hash !== prev) {
      return removedFromEnd(count, prev, head ? head.seq : null);
    }
  }
  return { ok: true, count, head: prev };
}

/**
 * The answer when every record checks out but the chain head (the count and
 * last hash kept apart from the records) says there were more: the end was cut.
 */
export function removedFromEnd(
  count: number,
  lastHash: string,
  headSeq: number | null,
): AuditVerification {
  return {
    ok: false,
    count,
    head: lastHash,
    firstBad: {
      seq: count + 1,
      record_id: `a${count + 1}`,
      problem: `chain head says ${
        headSeq ?? "nothing"
      } records, found ${count}: records were removed from the end`,
    },
  };
}
