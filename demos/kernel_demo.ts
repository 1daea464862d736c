/**
 * The main demo: a scripted coding agent triages a failing test run in a copy
 * of demos/workspace. It forks a worker with narrowed authority, is refused a
 * secret read, a path escape and a destructive command, gets a one-shot human
 * approval for exactly one write (the identical second write asks again and is
 * denied), writes its report and exits. Then the audit chain is verified.
 *
 * Run: `npx deno task demo`
 * @module
 */
import { join } from "node:path";
import { main } from "../cli/libos.ts";
import { SqliteStore } from "../runtime/store/sqlite.ts";

const here = new URL(".", import.meta.url).pathname;
const root = await Deno.makeTempDir({ prefix: "libos-demo-" });
const ws = join(root, "workspace");
const store = join(root, "libos.db");
await _copyDir(join(here, "workspace"), ws);

console.log(`== libos run (workspace ${ws})`);
const code = await main([
  "run",
  join(here, "../images/coding.json"),
  "--workspace",
  ws,
  "--script",
  join(here, "scripts/triage.json"),
  "--store",
  store,
  "--human",
  `script:${join(here, "scripts/answers.json")}`,
  "--goal",
  "Triage the failing tests and fix what the owner approves.",
]);

console.log("\n== libos ps");
await main(["ps", "--store", store]);

const db = SqliteStore.open(store);
const decisions: Record<string, number> = {};
for (const r of await db.listAudit()) decisions[r.decision] = (decisions[r.decision] ?? 0) + 1;
console.log("\n== audit decisions", JSON.stringify(decisions));
console.log("== worker (pid 2) denied:");
for (const r of await db.listAudit({ actor: "pid:2", decision: "deny" })) {
  console.log(`  ${r.action} ${r.target}: ${r.reason}`);
}
await db.close();

console.log("\n== libos audit --verify");
const verified = await main(["audit", "--store", store, "--verify"]);
console.log(
  `\nreport written: ${await Deno.readTextFile(join(ws, "reports/triage.md")).then(() => "yes")}`,
);
console.log(`store kept at ${store}`);
Deno.exit(code === 0 && verified === 0 ? 0 : 1);

async function _copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await _copyDir(join(from, e.name), join(to, e.name));
    else if (e.isFile) await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}
