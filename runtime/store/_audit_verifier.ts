/**
 * A worker thread that checks one range of the audit chain (see
 * `_audit_verify.ts`) on a read connection of its own and posts its report.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { parentPort, workerData } from "node:worker_threads";
import { verifyRange } from "./_audit_verify.ts";

const job = workerData as { storePath: string; from: number; to: number };
const db = new DatabaseSync(job.storePath, { readOnly: true });
try {
  db.exec("PRAGMA busy_timeout = 5000");
  // Read-only: pages come straight from the OS's cache, not through read calls.
  db.exec("PRAGMA mmap_size = 1073741824");
  db.exec("BEGIN");
  const report = verifyRange(db, job.from, job.to);
  db.exec("COMMIT");
  parentPort!.postMessage({ report });
} catch (e) {
  parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
} finally {
  db.close();
}
