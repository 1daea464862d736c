/**
 * Checks tests/invariants.md: every invariant line names at least one test,
 * and every named test exists in tests/*_test.ts. Exit 1 otherwise.
 *
 * Line format: `- <invariant> — \`test name\`, \`another test\``
 * @module
 */
import { join } from "node:path";

const dir = new URL(".", import.meta.url).pathname;
const names = new Set<string>();
for (const entry of Deno.readDirSync(dir)) {
  if (!entry.name.endsWith("_test.ts")) continue;
  const src = Deno.readTextFileSync(join(dir, entry.name));
  for (const m of src.matchAll(/Deno\.test\(\s*(?:\{\s*name:\s*)?(["'`])((?:(?!\1).)+)\1/g)) {
    names.add(m[2]);
  }
}

// An item may wrap onto indented continuation lines.
const lines = Deno.readTextFileSync(join(dir, "invariants.md")).replace(/\n {2,}/g, " ").split(
  "\n",
);
let invariants = 0;
const problems: string[] = [];
for (const [i, line] of lines.entries()) {
  if (!line.startsWith("- ")) continue;
  invariants++;
  const sep = line.indexOf(" — ");
  const what = sep < 0 ? line.slice(2) : line.slice(2, sep);
  const tests = sep < 0 ? [] : [...line.slice(sep).matchAll(/`([^`]+)`/g)].map((m) => m[1]);
  if (tests.length === 0) problems.push(`line ${i + 1}: invariant "${what}" names no test`);
  for (const t of tests) {
    if (!names.has(t)) {
      problems.push(`line ${i + 1}: invariant "${what}" names missing test "${t}"`);
    }
  }
}
if (invariants === 0) problems.push("tests/invariants.md lists no invariants");
if (problems.length) {
  for (const p of problems) console.error(`invariants: ${p}`);
  Deno.exit(1);
}
console.log(
  `invariants: ${invariants} invariants, each checked by existing tests (${names.size} tests known)`,
);
