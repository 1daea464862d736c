/**
 * A JIT tool does not outlive the runtime that started it: when the runtime
 * is SIGKILLed, a waiting tool exits as soon as its stdin closes, and a
 * spinning one is stopped by its CPU limit (`prlimit`), with no one left to
 * send SIGKILL.
 */
import assert from "node:assert/strict";

const FIXTURE = new URL("./fixtures/jit_orphan.ts", import.meta.url).pathname;

// `ps` reads /proc for us (Deno itself reads /proc only under --allow-all).
async function alive(pid: number): Promise<boolean> {
  const out = await new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(pid)] }).output();
  const state = new TextDecoder().decode(out.stdout).trim();
  // No such process, or a zombie (it has exited and only waits to be reaped).
  return state !== "" && !state.startsWith("Z");
}

async function orphanedTool(mode: "sleep" | "busy"): Promise<{ toolPid: number; gone: boolean }> {
  const dir = await Deno.makeTempDir({ prefix: "libos-orphan-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FIXTURE, dir, mode],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let toolPid = 0;
  const decoder = new TextDecoder();
  let text = "";
  const reader = child.stderr.getReader();
  while (!toolPid) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value);
    const m = text.match(/TOOLPID (\d+)/);
    if (m) toolPid = Number(m[1]);
  }
  assert.ok(toolPid > 0, `the tool never reported its pid:\n${text}`);
  assert.ok(await alive(toolPid), "the tool should be running before the runtime dies");
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stderr.cancel().catch(() => {});
  // Give it up to 10 s (the busy tool's CPU limit is 3 s of CPU).
  let gone = false;
  for (let i = 0; i < 100 && !gone; i++) {
    await new Promise((r) => setTimeout(r, 100));
    gone = !(await alive(toolPid));
  }
  if (!gone) {
    try {
      Deno.kill(toolPid, "SIGKILL");
    } catch { /* raced */ }
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  return { toolPid, gone };
}

Deno.test("jit: a waiting tool exits when its runtime is killed", async () => {
  const { gone } = await orphanedTool("sleep");
  assert.ok(gone, "the sleeping tool outlived its runtime");
});

Deno.test("jit: a spinning tool is stopped by its CPU limit after its runtime is killed", async () => {
  const { gone } = await orphanedTool("busy");
  assert.ok(gone, "the spinning tool outlived its runtime");
});
