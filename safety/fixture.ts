/**
 * A scenario's world: a fresh temp root holding the workspace (`ws/`) and
 * whatever the scenario puts beside it (sentinel files outside the
 * workspace), a loopback listener standing for the network, and snapshots of
 * the whole root so effects are observed in the real world, never taken from
 * a runner's own account.
 * @module
 */
import { dirname, join, relative } from "node:path";
import type { Scenario } from "./scenario.ts";

/** A built fixture. */
export interface Fixture {
  /** Temp root (real path); the workspace is `root/ws`. */
  root: string;
  /** Workspace real path. */
  ws: string;
  /** Files with a label to record: real path -> label. */
  labels: { real: string; label: NonNullable<Scenario["workspace"]["files"][string]["label"]> }[];
}

const _GIT_ENV = {
  GIT_AUTHOR_NAME: "bench",
  GIT_AUTHOR_EMAIL: "bench@example.invalid",
  GIT_COMMITTER_NAME: "bench",
  GIT_COMMITTER_EMAIL: "bench@example.invalid",
  GIT_CONFIG_NOSYSTEM: "1",
  HOME: "/nonexistent",
  PATH: "/usr/local/bin:/usr/bin:/bin",
};

async function _git(ws: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("git", {
    args,
    cwd: ws,
    clearEnv: true,
    env: _GIT_ENV,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`fixture: git ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Create the scenario's temp root under `base` (scenario already substituted). */
export async function buildFixture(sc: Scenario, root: string): Promise<Fixture> {
  const ws = join(root, "ws");
  await Deno.mkdir(ws, { recursive: true });
  const labels: Fixture["labels"] = [];
  for (const d of sc.workspace.dirs) await Deno.mkdir(join(ws, d), { recursive: true });
  for (const [p, f] of Object.entries(sc.workspace.files)) {
    const full = join(ws, p);
    await Deno.mkdir(dirname(full), { recursive: true });
    await Deno.writeTextFile(full, f.content);
    if (f.mode) await Deno.chmod(full, parseInt(f.mode, 8));
    if (f.label) labels.push({ real: full, label: f.label });
  }
  if (sc.workspace.git) {
    await _git(ws, ["init", "-q", "-b", "main"]);
    await _git(ws, ["add", "-A"]);
    await _git(ws, ["commit", "-q", "-m", "initial"]);
    for (const [p, content] of Object.entries(sc.workspace.git_changes)) {
      await Deno.mkdir(dirname(join(ws, p)), { recursive: true });
      await Deno.writeTextFile(join(ws, p), content);
    }
  }
  for (const [p, target] of Object.entries(sc.workspace.links)) {
    await Deno.mkdir(dirname(join(ws, p)), { recursive: true });
    await Deno.symlink(target, join(ws, p));
  }
  return { root, ws, labels };
}

/** One entry of a snapshot. */
export interface Entry {
  /** file, dir, symlink or other. */
  kind: "file" | "dir" | "symlink" | "other";
  /** File content (as text; files over 4 MB are summarized by size). */
  content?: string;
  /** Symlink target. */
  target?: string;
}

/** Everything under the root, by path relative to the root, symlinks not followed. */
export type Snapshot = Map<string, Entry>;

const _MAX_CONTENT = 4 * 1024 * 1024;

/** Snapshot the whole tree under `root`. */
export async function snapshot(root: string): Promise<Snapshot> {
  const out: Snapshot = new Map();
  const walk = async (dir: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return; // an unreadable directory (a test made it mode 000): nothing to see
    }
    for (const e of entries) {
      const full = join(dir, e.name);
      const rel = relative(root, full);
      let info: Deno.FileInfo;
      try {
        info = await Deno.lstat(full);
      } catch {
        continue;
      }
      if (info.isSymlink) {
        out.set(rel, { kind: "symlink", target: await Deno.readLink(full) });
      } else if (info.isDirectory) {
        out.set(rel, { kind: "dir" });
        await walk(full);
      } else if (info.isFile) {
        let content: string;
        try {
          content = info.size > _MAX_CONTENT
            ? `<${info.size} bytes>`
            : new TextDecoder().decode(await Deno.readFile(full));
        } catch {
          content = "<unreadable>";
        }
        out.set(rel, { kind: "file", content });
      } else out.set(rel, { kind: "other" });
    }
  };
  await walk(root);
  return out;
}

/** Remove a fixture's temp root (restoring modes a scenario may have taken away). */
export async function removeFixture(root: string): Promise<void> {
  try {
    await Deno.remove(root, { recursive: true });
  } catch {
    await new Deno.Command("chmod", { args: ["-R", "u+rwx", root], stderr: "null" }).output();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

/** One request the loopback listener received. */
export interface EgressHit {
  /** Run the hit belongs to (the first path segment). */
  run: string;
  /** Method, path, query and body, as text. */
  text: string;
}

/**
 * The network, as far as scenarios are concerned: a loopback HTTP listener.
 * `{{EGRESS}}` expands to `http://127.0.0.1:PORT/<run>`, so every hit is
 * attributed to the run that made it.
 */
export class Egress {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #hits: EgressHit[] = [];

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, hits: EgressHit[]) {
    this.#server = server;
    this.#hits = hits;
  }

  /** Start listening on 127.0.0.1 (a free port). */
  static start(): Egress {
    const hits: EgressHit[] = [];
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (req) => {
        const url = new URL(req.url);
        const body = await req.text().catch(() => "");
        const run = url.pathname.split("/")[1] ?? "";
        hits.push({ run, text: `${req.method} ${url.pathname}${url.search}\n${body}` });
        return new Response("ok\n");
      },
    );
    return new Egress(server, hits);
  }

  /** The URL prefix of one run. */
  url(run: string): string {
    return `http://127.0.0.1:${this.#server.addr.port}/${run}`;
  }

  /** Hits of one run. */
  hits(run: string): EgressHit[] {
    return this.#hits.filter((h) => h.run === run);
  }

  /** Stop listening. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}
