/**
 * BenchKernel hot-path benchmark: what an authorized, durably audited primitive
 * call costs next to the raw host operation, measured side by side in one run.
 *
 * 1. `filesystem.read` of a 4 KB file through the full path (Runtime over a
 *    SQLite file store, capability check, path resolution, hash-chained audit
 *    record committed per call) vs raw `Deno.readFile` / `Deno.readFileSync`.
 * 2. `store.appendAudit` (one committed transaction each) vs raw node:sqlite
 *    INSERTs (autocommit) with the same journal settings.
 * 3. Verdict against 20,000 authorized+audited calls/s, and the same numbers
 *    with `synchronous=FULL` as a second measurement.
 *
 * Variants are interleaved round by round (rotating order) so machine noise
 * hits all of them; each number is the median over rounds. Afterwards the
 * audit chain of every benchmark store is verified and its record count is
 * checked against the number of calls made.
 *
 * Usage: `deno task bench:kernel [--json] [--rounds N] [--ms MS]`
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { payloadRef } from "../runtime/canonical.ts";
import { Runtime } from "../runtime/runtime.ts";
import { SqliteStore } from "../runtime/store/sqlite.ts";
import type { AuditDraft } from "../runtime/store/store.ts";

const TARGET_PER_SEC = 20_000;
const FILE_BYTES = 4096;
const FILE_NAME = "data.txt";

// ---- options

function _flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(Deno.args[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
  return n;
}

const JSON_OUT = Deno.args.includes("--json");
/** Rounds of the main (synchronous=NORMAL) comparisons. */
const ROUNDS = _flag("--rounds", 15);
/** Milliseconds each variant runs per round. */
const SLICE_MS = _flag("--ms", 200);
/** Rounds of the synchronous=FULL measurement (cheaper: fewer rounds). */
const FULL_ROUNDS = Math.max(3, Math.ceil(ROUNDS / 2));

// ---- measurement helpers

/** One variant: does one operation per call of `op`. */
interface Variant {
  name: string;
  op: () => Promise<unknown> | unknown;
  /** true if `op` returns a promise that must be awaited. */
  async: boolean;
  rates: number[];
  calls: number;
}

function variant(name: string, op: () => unknown, isAsync: boolean): Variant {
  return { name, op, async: isAsync, rates: [], calls: 0 };
}

/** Run `v` for about `ms` milliseconds; record its rate (ops/s). */
async function slice(v: Variant, ms: number): Promise<void> {
  const t0 = performance.now();
  const stop = t0 + ms;
  let n = 0;
  let now = t0;
  if (v.async) {
    while (now < stop) {
      for (let i = 0; i < 16; i++) await v.op();
      n += 16;
      now = performance.now();
    }
  } else {
    while (now < stop) {
      for (let i = 0; i < 16; i++) v.op();
      n += 16;
      now = performance.now();
    }
  }
  v.calls += n;
  v.rates.push(n / ((now - t0) / 1000));
}

/** Interleave: each round runs every variant once, in an order rotated per round. */
async function rounds(variants: Variant[], count: number, ms: number): Promise<void> {
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < variants.length; j++) {
      await slice(variants[(r + j) % variants.length], ms);
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Summary of one variant. */
interface Stat {
  /** Median ops/s over rounds. */
  per_sec: number;
  /** Microseconds per op at the median rate. */
  us_per_call: number;
  /** Slowest and fastest round (ops/s). */
  min_per_sec: number;
  max_per_sec: number;
  rounds: number;
  /** Ops executed while measuring (excludes warm-up). */
  calls: number;
}

function stat(v: Variant): Stat {
  const med = median(v.rates);
  return {
    per_sec: Math.round(med),
    us_per_call: Number((1e6 / med).toFixed(2)),
    min_per_sec: Math.round(Math.min(...v.rates)),
    max_per_sec: Math.round(Math.max(...v.rates)),
    rounds: v.rates.length,
    calls: v.calls,
  };
}

/** Ratio of medians, `a` over `b`. */
function ratio(a: Stat, b: Stat): number {
  return Number((a.per_sec / b.per_sec).toFixed(2));
}

// ---- fixtures

type Sync = "NORMAL" | "FULL";

/** A runtime on a real store file with one process allowed to read the file. */
interface BenchKernel {
  rt: Runtime;
  store: SqliteStore;
  storePath: string;
  pid: number;
}

async function openKernel(root: string, ws: string, sync: Sync): Promise<BenchKernel> {
  const storePath = join(root, `store-${sync.toLowerCase()}.db`);
  const store = SqliteStore.open(storePath, { synchronous: sync });
  // JIT artifacts (if this runtime caches any) stay under the temp root too.
  const options = { store, jitCacheDir: join(root, `jit-${sync.toLowerCase()}`) };
  const rt = await Runtime.open(options);
  const proc = await rt.launch({
    image: {
      name: "bench",
      tools: ["read_file"],
      budgets: { max_syscalls: null },
    },
    workspace: ws,
    grants: [{ resource: `filesystem:workspace:${FILE_NAME}`, rights: ["read"] }],
  });
  return { rt, store, storePath, pid: proc.pid };
}

/** A raw SQLite database with the audit table's shape and the given journal settings. */
function openRaw(root: string, sync: Sync): DatabaseSync {
  const db = new DatabaseSync(join(root, `raw-${sync.toLowerCase()}.db`));
  db.exec("PRAGMA busy_timeout = 5000");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA synchronous = ${sync}`);
  db.exec(`CREATE TABLE audit (
    seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL UNIQUE, actor TEXT NOT NULL,
    action TEXT NOT NULL, decision TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    body TEXT NOT NULL)`);
  return db;
}

function pragma(db: DatabaseSync, name: string): string {
  const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown>;
  return String(Object.values(row)[0]);
}

const SYNC_NAMES = ["OFF", "NORMAL", "FULL", "EXTRA"];

/** An audit draft shaped like the one a filesystem.read call writes. */
function sampleDraft(content: string): Omit<AuditDraft, "timestamp"> {
  return {
    actor: "pid:1",
    action: "filesystem.read",
    target: `filesystem:workspace:${FILE_NAME}`,
    input_refs: payloadRef({ path: FILE_NAME }),
    output_refs: payloadRef(content),
    capability_refs: ["cap_bench0001"],
    decision: "allow",
    reason: "allowed by cap_bench0001",
    correlation_id: "c_bench",
    parent_record_id: null,
  };
}

/** Count audit rows by a separate read-only connection (not through the code under test). */
function auditRows(storePath: string): { total: number; reads: number } {
  const db = new DatabaseSync(storePath, { readOnly: true });
  try {
    const total = db.prepare("SELECT COUNT(*) AS n FROM audit").get() as { n: number };
    const reads = db.prepare(
      "SELECT COUNT(*) AS n FROM audit WHERE action = 'filesystem.read' AND decision = 'allow'",
    ).get() as { n: number };
    return { total: Number(total.n), reads: Number(reads.n) };
  } finally {
    db.close();
  }
}

// ---- the benchmark

async function main(): Promise<Record<string, unknown>> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-" }));
  const cleanups: (() => unknown)[] = [];
  try {
    const ws = join(root, "ws");
    await Deno.mkdir(ws);
    const filePath = join(ws, FILE_NAME);
    const content = "0123456789abcdef".repeat(FILE_BYTES / 16).slice(0, FILE_BYTES - 1) + "\n";
    await Deno.writeTextFile(filePath, content);

    const normal = await openKernel(root, ws, "NORMAL");
    cleanups.push(() => normal.rt.close());
    const full = await openKernel(root, ws, "FULL");
    cleanups.push(() => full.rt.close());
    const rawNormal = openRaw(root, "NORMAL");
    cleanups.push(() => rawNormal.close());
    const rawFull = openRaw(root, "FULL");
    cleanups.push(() => rawFull.close());

    // What is really in effect on the store's connection (and the raw one).
    const probe = new DatabaseSync(normal.storePath);
    const storeJournal = pragma(probe, "journal_mode");
    probe.close();
    const settings = {
      store_journal_mode: storeJournal,
      raw_journal_mode: pragma(rawNormal, "journal_mode"),
      raw_synchronous: SYNC_NAMES[Number(pragma(rawNormal, "synchronous"))],
      raw_full_synchronous: SYNC_NAMES[Number(pragma(rawFull, "synchronous"))],
    };

    // Sanity: the full path returns the file's bytes.
    const got = await normal.rt.syscall(normal.pid, "filesystem.read", { path: FILE_NAME });
    if (got !== content) throw new Error("filesystem.read returned something else than the file");
    let syscallsNormal = 1;
    let syscallsFull = 0;
    let appendsNormal = 0;
    let appendsFull = 0;

    const readArgs = { path: FILE_NAME };
    const draft = sampleDraft(content);
    const rawBody = JSON.stringify({ ...draft, timestamp: new Date().toISOString() });
    const rawInsert = (db: DatabaseSync) => {
      const stmt = db.prepare(
        "INSERT INTO audit (seq, record_id, actor, action, decision, prev_hash, hash, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      );
      const hash = "0".repeat(64);
      let seq = 0;
      return () => {
        seq++;
        stmt.run(seq, `a${seq}`, "pid:1", "filesystem.read", "allow", hash, hash, rawBody);
      };
    };

    const sysN = variant("syscall filesystem.read", () => {
      syscallsNormal++;
      return normal.rt.syscall(normal.pid, "filesystem.read", readArgs);
    }, true);
    const readAsync = variant("Deno.readFile", () => Deno.readFile(filePath), true);
    const readSync = variant("Deno.readFileSync", () => Deno.readFileSync(filePath), false);
    const appendN = variant("store.appendAudit", () => {
      appendsNormal++;
      return normal.store.appendAudit({ ...draft, timestamp: new Date().toISOString() });
    }, true);
    const rawN = variant("raw INSERT (autocommit)", rawInsert(rawNormal), false);

    const sysF = variant("syscall filesystem.read", () => {
      syscallsFull++;
      return full.rt.syscall(full.pid, "filesystem.read", readArgs);
    }, true);
    const appendF = variant("store.appendAudit", () => {
      appendsFull++;
      return full.store.appendAudit({ ...draft, timestamp: new Date().toISOString() });
    }, true);
    const rawF = variant("raw INSERT (autocommit)", rawInsert(rawFull), false);

    const started = performance.now();
    // Warm-up (JIT, page cache, statement cache); not recorded.
    const all = [sysN, readAsync, readSync, appendN, rawN, sysF, appendF, rawF];
    for (const v of all) {
      const saved = { rates: v.rates.length, calls: v.calls };
      await slice(v, Math.min(100, SLICE_MS));
      v.rates.length = saved.rates;
      v.calls = saved.calls;
    }

    // Section 1 and 2 are interleaved in the same rounds, so noise is shared.
    await rounds([sysN, readAsync, readSync, appendN, rawN], ROUNDS, SLICE_MS);
    await rounds([sysF, appendF, rawF], FULL_ROUNDS, SLICE_MS);
    const measureMs = performance.now() - started;

    // Proof that every call was recorded: audit rows == calls made, chain intact.
    const verifyStarted = performance.now();
    const verify = async (k: BenchKernel, syscalls: number, appends: number) => {
      const v = await k.store.verifyAudit();
      const rows = auditRows(k.storePath);
      const expected = syscalls + appends;
      const countOk = v.count === expected && rows.total === expected;
      // Every syscall made its own allow record; appendAudit drafts say filesystem.read too.
      const readsOk = rows.reads === expected;
      return {
        ok: v.ok && countOk && readsOk,
        chain_ok: v.ok,
        records: v.count,
        expected_records: expected,
        syscalls,
        appends,
        head: v.head,
        first_bad: v.ok ? null : v.firstBad,
      };
    };
    const auditNormal = await verify(normal, syscallsNormal, appendsNormal);
    const auditFull = await verify(full, syscallsFull, appendsFull);
    const verifyMs = performance.now() - verifyStarted;

    const s = {
      syscall: stat(sysN),
      readFile: stat(readAsync),
      readFileSync: stat(readSync),
      appendAudit: stat(appendN),
      rawInsert: stat(rawN),
      syscallFull: stat(sysF),
      appendAuditFull: stat(appendF),
      rawInsertFull: stat(rawF),
    };
    const pass = s.syscall.per_sec >= TARGET_PER_SEC;
    return {
      machine: {
        cores: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        v8: Deno.version.v8,
        os: Deno.build.os,
      },
      config: {
        file_bytes: FILE_BYTES,
        rounds: ROUNDS,
        full_rounds: FULL_ROUNDS,
        slice_ms: SLICE_MS,
        synchronous: "NORMAL",
        ...settings,
      },
      read: {
        syscall: s.syscall,
        readFile: s.readFile,
        readFileSync: s.readFileSync,
        /** How many times faster the raw read is than the full path. */
        ratio_readFile_over_syscall: ratio(s.readFile, s.syscall),
        ratio_readFileSync_over_syscall: ratio(s.readFileSync, s.syscall),
        overhead_us_vs_readFile: Number(
          (s.syscall.us_per_call - s.readFile.us_per_call).toFixed(2),
        ),
      },
      audit: {
        appendAudit: s.appendAudit,
        rawInsert: s.rawInsert,
        ratio_raw_over_append: ratio(s.rawInsert, s.appendAudit),
      },
      full: {
        synchronous: "FULL",
        syscall: s.syscallFull,
        appendAudit: s.appendAuditFull,
        rawInsert: s.rawInsertFull,
        ratio_raw_over_append: ratio(s.rawInsertFull, s.appendAuditFull),
        target_pass: s.syscallFull.per_sec >= TARGET_PER_SEC,
      },
      verify: { normal: auditNormal, full: auditFull, ms: Math.round(verifyMs) },
      target: { per_sec: TARGET_PER_SEC, measured: s.syscall.per_sec, pass },
      elapsed_ms: { measure: Math.round(measureMs) },
    };
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch { /* already closed */ }
    }
    await Deno.remove(root, { recursive: true });
  }
}

// ---- output

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function row(label: string, s: Stat): string {
  return `  ${label.padEnd(34)}${s.us_per_call.toFixed(2).padStart(9)} us${
    fmtInt(s.per_sec).padStart(12)
  } /s   [${fmtInt(s.min_per_sec)} .. ${fmtInt(s.max_per_sec)}]`;
}

// deno-lint-ignore no-explicit-any
function printText(r: any): void {
  const c = r.config;
  const out: string[] = [];
  out.push(
    `Agent libOS kernel benchmark  (deno ${r.machine.deno}, ${r.machine.cores} cores, ${c.rounds} interleaved rounds x ${c.slice_ms} ms, medians)`,
  );
  out.push(
    `store: journal_mode=${c.store_journal_mode} synchronous=${c.synchronous}; raw: journal_mode=${c.raw_journal_mode} synchronous=${c.raw_synchronous}`,
  );
  out.push("");
  out.push(
    `1. read a ${c.file_bytes} B file${
      " ".repeat(18)
    }per call       calls/s   [slowest .. fastest round]`,
  );
  out.push(row("filesystem.read (authz+audit)", r.read.syscall));
  out.push(row("Deno.readFile", r.read.readFile));
  out.push(row("Deno.readFileSync", r.read.readFileSync));
  out.push(
    `  ratio: raw Deno.readFile does ${r.read.ratio_readFile_over_syscall}x, Deno.readFileSync ${r.read.ratio_readFileSync_over_syscall}x the calls/s of the authorized+audited path (+${r.read.overhead_us_vs_readFile} us/call over readFile)`,
  );
  out.push("");
  out.push(`2. audit appends (one committed transaction each)`);
  out.push(row("store.appendAudit", r.audit.appendAudit));
  out.push(row("raw node:sqlite INSERT (autocommit)", r.audit.rawInsert));
  out.push(
    `  ratio: raw INSERT commits ${r.audit.ratio_raw_over_append}x as many rows/s as store.appendAudit`,
  );
  out.push("");
  out.push(`   with synchronous=FULL (${c.full_rounds} rounds; fsync per commit)`);
  out.push(row("filesystem.read (authz+audit)", r.full.syscall));
  out.push(row("store.appendAudit", r.full.appendAudit));
  out.push(row("raw node:sqlite INSERT (autocommit)", r.full.rawInsert));
  out.push(
    `  ratio: raw INSERT commits ${r.full.ratio_raw_over_append}x as many rows/s as store.appendAudit`,
  );
  out.push("");
  const vn = r.verify.normal;
  const vf = r.verify.full;
  const vline = (name: string, v: typeof vn) =>
    `  ${name.padEnd(8)} chain ${v.chain_ok ? "ok" : "BROKEN"}, ${fmtInt(v.records)} records == ${
      fmtInt(v.syscalls)
    } syscalls + ${fmtInt(v.appends)} appends: ${v.ok ? "ok" : "MISMATCH"}${
      v.first_bad ? ` (${JSON.stringify(v.first_bad)})` : ""
    }`;
  out.push(`audit verification (${r.verify.ms} ms)`);
  out.push(vline("NORMAL", vn));
  out.push(vline("FULL", vf));
  out.push("");
  out.push(
    `authorized+audited filesystem.read: ${
      fmtInt(r.target.measured)
    }/s (synchronous=NORMAL; FULL: ${
      fmtInt(r.full.syscall.per_sec)
    }/s) -- target ${r.target.per_sec}/s: ${r.target.pass ? "PASS" : "FAIL"}`,
  );
  console.log(out.join("\n"));
}

if (import.meta.main) {
  const result = await main();
  if (JSON_OUT) console.log(JSON.stringify(result));
  else printText(result);
  // deno-lint-ignore no-explicit-any
  const v = (result as any).verify;
  if (!v.normal.ok || !v.full.ok) {
    console.error("audit verification failed: not every call was recorded");
    Deno.exit(1);
  }
}
