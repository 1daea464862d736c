/**
 * The step journal of a file store: the deferred writes of the scheduler's
 * quanta (a decision, a running mark, a step's result) as JSON lines in
 * `<store>-steps`, written before a tool acts instead of committing them.
 * A running mark is then as durable as an audit record (one `write`, synced
 * at `synchronous = FULL`), and the commit of the deferred writes waits for
 * the store's next commit (a timer, the scheduler's yield, any write that is
 * not deferred), which covers many steps instead of one wave of them.
 *
 * - One store writes a store file's journal: the one that holds the file's
 *   lock on it (taken at open, with the audit log's, for the store's
 *   lifetime); every other store commits its marks as before.
 * - Every commit of the store empties the journal: what it held is in the
 *   tables. A journal found at open is the tail of a store that stopped
 *   before its commit, and is replayed (in order, in one transaction) before
 *   anything else reads the tables: hot rows, and results with their index.
 * - A line is a process's whole state row as its last completed deferred
 *   transaction left it, with the results recorded since the last line; lines
 *   replay in order, so the last one of a process is its state.
 * - A commit that empties a written journal moves `meta.journal_epoch` on in
 *   the same transaction, and lines carry the epoch they were written in: lines
 *   a commit covered are not replayed if the store stopped before emptying the
 *   file.
 * @module
 */

import { LibosError } from "../errors.ts";
import { openLocked, wholeLines } from "./_locked_lines.ts";

const _encoder = new TextEncoder();

/** The journal file name of a store file. */
export function stepJournalPath(storePath: string): string {
  return `${storePath}-steps`;
}

/** A result recorded with a line: its step index row and its object row. */
export type JournalResult = [
  step: number,
  oid: string,
  namespace: string,
  name: string | null,
  version: number,
  body: string,
];

/** One line: a process's state row as column texts, and the results recorded with it. */
export interface JournalLine {
  /** The store's journal epoch when it was written (see `meta.journal_epoch`). */
  e: number;
  /** The process. */
  p: number;
  /** status, pending, model, usage, updated_at, as their column values. */
  h: [string, string | null, string | null, string, string];
  /** Results recorded in the same transaction. */
  r?: JournalResult[];
}

/** What the journal needs of its file: a `Deno.FsFile` (tests wrap one to make it fail). */
export type JournalFile = Pick<
  Deno.FsFile,
  "writeSync" | "syncDataSync" | "truncateSync" | "close"
>;

/** The store thread's side of the step journal. */
export class StepJournal {
  readonly path: string;
  #file: JournalFile;
  #sync: boolean;
  #buffered: string[] = [];
  #written = 0;
  /** The file holds what no line may follow (see {@link torn}). */
  #torn = false;

  private constructor(path: string, file: JournalFile, sync: boolean) {
    this.path = path;
    this.#file = file;
    this.#sync = sync;
  }

  /**
   * Take the journal of the store at `storePath` if no other store holds it
   * (null otherwise) and return what a stopped store left in it, to be
   * replayed before the journal is emptied ({@link clear}). A torn last line
   * was never acted on (a tool acts only once its line is written) and is
   * dropped; a line that does not parse is an error that names the file.
   */
  static open(
    storePath: string,
    synchronous: string,
    wrap: (file: Deno.FsFile) => JournalFile = (file) => file,
  ): { journal: StepJournal; left: JournalLine[] } | null {
    const path = stepJournalPath(storePath);
    const locked = openLocked(path);
    if (!locked) return null;
    const file = wrap(locked);
    try {
      const text = new TextDecoder().decode(wholeLines(path));
      const left = text ? text.slice(0, -1).split("\n").map((l, i) => _parse(path, l, i)) : [];
      const journal = new StepJournal(path, file, synchronous === "FULL");
      // A torn line is still in the file: the next commit (or clear) empties it.
      journal.#written = Deno.statSync(path).size;
      return { journal, left };
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Keep `line` for the next {@link write}. */
  add(line: JournalLine): void {
    this.#buffered.push(JSON.stringify(line));
  }

  /** Bytes written since the journal was last emptied. */
  get written(): number {
    return this.#written;
  }

  /**
   * Write the kept lines (durable when this returns, as an audit-log append).
   * If the write fails (a full disk), the file is cut back to its last whole
   * line: a line written after part of one would make the replay refuse it.
   */
  write(): void {
    if (this.#buffered.length === 0) return;
    const bytes = _encoder.encode(this.#buffered.join("\n") + "\n");
    this.#buffered = [];
    if (this.#torn) {
      throw new LibosError("EIO", `step journal ${this.path}: a failed write is not cut off yet`);
    }
    try {
      let off = 0;
      while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
      if (this.#sync) this.#file.syncDataSync();
    } catch (e) {
      try {
        this.#file.truncateSync(this.#written);
      } catch {
        this.#torn = true;
      }
      throw e;
    }
    this.#written += bytes.length;
  }

  /**
   * The file holds part of a line that could not be cut off, or lines a
   * commit covered that could not be emptied: nothing may be written until a
   * {@link clear} empties it.
   */
  get torn(): boolean {
    return this.#torn;
  }

  /**
   * The store committed: what the journal held (written or kept) is in the
   * tables. If the file cannot be emptied, its lines are of an older epoch
   * (never replayed) and it stays {@link torn} until a later commit empties it.
   */
  clear(): void {
    this.#buffered = [];
    if (this.#written === 0 && !this.#torn) return;
    try {
      this.#file.truncateSync(0);
    } catch {
      this.#torn = true;
      return;
    }
    this.#written = 0;
    this.#torn = false;
  }

  /** Forget the kept lines (their transaction rolled back before any was written). */
  dropPending(): void {
    this.#buffered = [];
  }

  /** Close the file (after the store's last commit, which emptied it). */
  close(): void {
    this.#file.close();
  }
}

function _parse(path: string, line: string, i: number): JournalLine {
  try {
    const v = JSON.parse(line) as JournalLine;
    if (
      typeof v?.e === "number" && typeof v.p === "number" && Array.isArray(v.h) &&
      v.h.length === 5
    ) return v;
  } catch { /* named below */ }
  throw new LibosError("EIO", `step journal ${path}: line ${i + 1} is not a journal line`);
}
