/**
 * The layers are visible in the folder names and dependencies point one way:
 * runtime/ (kernel) <- primitives/ (syscall table) <- host/ (runtime facade,
 * scheduler) <- server/, cli/; tools/ know only the syscall interface. Checked
 * over every import of every module, with no import cycles.
 * @module
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");

/** Which top-level folders each layer may import from (besides npm and node: modules). */
const ALLOWED: Record<string, string[]> = {
  runtime: ["runtime"],
  primitives: ["runtime", "primitives"],
  tools: ["tools"],
  host: ["runtime", "primitives", "tools", "host"],
  server: ["runtime", "host", "server"],
  // The safety benchmark's harness: drives the runtime (host/) and, for its
  // baselines, the builtin tools over its own syscall layer; never primitives/.
  safety: ["runtime", "tools", "host", "safety"],
  cli: ["runtime", "primitives", "tools", "host", "server", "safety", "cli"],
};

function _modules(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(..._modules(p));
    else if (e.name.endsWith(".ts") || e.name.endsWith(".js")) out.push(p);
  }
  return out;
}

/** Relative specifiers a module imports (static, re-exports, literal dynamic imports). */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\s[^;]*?\sfrom\s*["']([^"']+)["']/gms,
    /^\s*import\s*["']([^"']+)["']/gm,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) out.push(m[1]);
  return out.filter((s) => s.startsWith("."));
}

function _graph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const layer of Object.keys(ALLOWED)) {
    for (const file of _modules(join(ROOT, layer))) {
      const deps = importsOf(Deno.readTextFileSync(file)).map((s) =>
        relative(ROOT, resolve(dirname(file), s))
      );
      graph.set(relative(ROOT, file), deps);
    }
  }
  return graph;
}

Deno.test("layering: imports point one way between runtime/, primitives/, tools/, host/, server/, safety/, cli/", () => {
  const wrong: string[] = [];
  const graph = _graph();
  assert(graph.size > 40, `expected the project's modules, found ${graph.size}`);
  for (const [file, deps] of graph) {
    const layer = file.split("/")[0];
    for (const dep of deps) {
      const to = dep.split("/")[0];
      if (!ALLOWED[layer].includes(to)) wrong.push(`${file} imports ${dep}`);
    }
  }
  assertEquals(wrong, []);
});

Deno.test("layering: nothing under runtime/ imports primitives/ or what sits above it", () => {
  const offenders = [..._graph()].filter(([file]) => file.startsWith("runtime/"))
    .flatMap(([file, deps]) =>
      deps.filter((d) => !d.startsWith("runtime/")).map((d) => `${file} -> ${d}`)
    );
  assertEquals(offenders, []);
});

Deno.test("layering: no import cycles between modules", () => {
  const graph = _graph();
  // Tarjan's strongly connected components: any component of more than one module is a cycle.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  assertEquals(cycles, []);
});
