/**
 * The web console in a real browser (Debian's chromium driven by
 * playwright-core): a person opens the link `libos serve` prints, sees the
 * pending request with its exact arguments and diff, clicks "Allow once", and
 * the file is written; the audit shows the HTTP decision. With
 * LIBOS_SCREENSHOT=docs/console.png it refreshes the README's screenshot.
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs
 * it). Without it this test fails: it is never skipped.
 *
 * playwright-core probes `/proc/sys/...` when it loads, which Deno allows only
 * under `--allow-all`; the test task does not grant that, so the test runs the
 * scenario below in a child Deno (this same file as the main module, `-A`)
 * and checks that it passed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { serve } from "../server/serve.ts";
import { HTTP_DECIDER } from "../server/app.ts";
import { QueueHuman } from "../runtime/providers/scripted.ts";
import { makeEnv } from "./_helpers.ts";
import { startFakeModelServer } from "./fake_models.ts";

const CHROMIUM = "/usr/bin/chromium";
// The README's screenshot is refreshed only on request (LIBOS_SCREENSHOT=docs/console.png):
// a test run must not rewrite a committed file.
const SCREENSHOT = Deno.env.get("LIBOS_SCREENSHOT") ??
  join(Deno.env.get("TMPDIR") ?? "/tmp", `libos-console-${Deno.pid}.png`);

const OLD = "def add(a, b):\n    return a + b\n";
const NEW = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";

async function until<T>(what: string, fn: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readOr(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return null;
  }
}

async function scenario(): Promise<void> {
  const { chromium } = await import("playwright-core");
  await using env = await makeEnv({
    files: {
      "README.md": "# Sample project\n",
      "logs/pytest.log": "FAILED test_sub\nFAILED test_div\n2 failed, 2 passed\n",
      "src/app.py": OLD,
    },
    providers: { human: new QueueHuman() },
  });
  const image = JSON.parse(
    await Deno.readTextFile(new URL("../images/coding.json", import.meta.url)),
  );
  // The demo agent: reads, forks a worker over the logs, then asks to write src/app.py.
  const proc = await env.rt.launch({
    image,
    workspace: env.ws,
    script: {
      steps: [
        { tool: "read_file", args: { path: "README.md" } },
        {
          tool: "fork",
          args: {
            mode: "worker",
            goal: "Find the failing tests",
            capabilities: [{ resource: "filesystem:workspace:logs/*", rights: ["read"] }],
            tools: ["read_file", "exit"],
            script: {
              steps: [
                { tool: "read_file", args: { path: "logs/pytest.log" } },
                { tool: "exit", args: { code: 0, result: "2 failures" } },
              ],
            },
          },
        },
        { tool: "wait", args: { pid: 2 } },
        { tool: "read_file", args: { path: ".env" } },
        { tool: "write_file", args: { path: "src/util.py", content: "ONE = 1\n" } },
        { tool: "write_file", args: { path: "src/app.py", content: NEW } },
      ],
    },
  });
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(proc.pid)).status, "waiting_human");

  // A process that wrote itself a JIT tool in a model's loose style: it validates with warnings.
  const maker = await env.rt.launch({
    image: { name: "toolmaker", tools: [] },
    workspace: env.ws,
    grants: [{ resource: "tool:loose", rights: ["write"] }],
  });
  const source = "export async function run(args: any) {\n  return args.x;\n}\n";
  const cand = await env.rt.syscall(maker.pid, "jit.propose", { name: "loose", source }) as {
    oid: string;
  };
  const art = await env.rt.syscall(maker.pid, "jit.validate", { oid: cand.oid }) as { oid: string };
  await env.rt.syscall(maker.pid, "jit.register", { oid: art.oid });

  // A model-driven agent (a fake OpenAI server on loopback): its conversation and token use.
  Deno.env.set("OPENAI_API_KEY", "sk-console-test-not-a-key");
  const models = startFakeModelServer();
  models.push(
    {
      text: "Looking at the log.",
      tool_calls: [{ name: "read_file", arguments: { path: "logs/pytest.log" } }],
    },
    {
      text: "Two tests fail: test_sub and test_div.",
      usage: { input_tokens: 321, output_tokens: 12 },
    },
  );
  const agent = await env.rt.launch({
    image: { name: "triage", tools: ["read_file"] },
    workspace: env.ws,
    grants: [{ resource: "filesystem:workspace:logs/*", rights: ["read"] }],
    goal: "Which tests fail?",
    model: { provider: "openai", name: "fake-model", base_url: models.openaiBaseUrl },
  });
  await env.rt.runUntilIdle();
  assert.equal((await env.rt.process(agent.pid)).status, "exited");

  // A checkpoint of the waiting agent's subtree: its diff will list what was written since.
  await env.rt.createCheckpoint(proc.pid, { label: "before the approved writes" });
  const srv = await serve(env.rt, { port: 0, tokenFile: env.beside(".token") });
  // The first ask (src/util.py) is answered over the API; the agent then asks for src/app.py.
  const [first] = await env.rt.humanRequests();
  const answered = await fetch(`${srv.url}/api/human/${first.request_id}/decide`, {
    method: "POST",
    headers: { Authorization: `Bearer ${srv.token}`, "Content-Type": "application/json" },
    body: '{"decision":"allow_once"}',
  });
  assert.equal(answered.status, 200);
  await answered.body?.cancel();
  await srv.idle();
  assert.equal(await readOr(join(env.ws, "src/util.py")), "ONE = 1\n");
  assert.equal(((await env.rt.humanRequests())[0].args as { path: string }).path, "src/app.py");
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const requests: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.goto(`${srv.url}/#token=${srv.token}`);

    // The pending request: pid, effect, resource, exact arguments and the diff.
    const card = page.locator(".card", { hasText: "filesystem.write" });
    await card.waitFor();
    const text = await card.innerText();
    assert.match(text, new RegExp(`pid ${proc.pid}`));
    assert.match(text, /filesystem:workspace:src\/app\.py/);
    assert.match(text, /"path": "src\/app\.py"/);
    assert.ok(text.includes(JSON.stringify(NEW)), "exact content argument shown");
    await card.locator(".diff .d-add", { hasText: "def sub(a, b):" }).waitFor();
    await card.locator(".diff .d-hunk").first().waitFor();
    // The process tree and a verified audit chain.
    await page.locator("#procs .proc", { hasText: "waiting_human" }).waitFor();
    await page.locator('#procs .proc[data-pid="2"]', { hasText: "exited" }).waitFor();
    await page.locator("#verify.ok", { hasText: "Audit chain verified" }).waitFor();
    // The JIT tool with the warnings its validation returned.
    await page.locator("#procs .jit-warnings li", { hasText: "no-explicit-any" }).waitFor();
    await page.locator("#procs .jit-tools", { hasText: "JIT loose" }).waitFor();
    // The model-driven process: its model and token use, then its conversation.
    const agentRow = page.locator(`#procs .proc[data-pid="${agent.pid}"]`);
    await agentRow.locator(".model-line", { hasText: "openai:fake-model" }).waitFor();
    await agentRow.locator(".model-line", { hasText: "2 model calls, 331 in / 17 out tokens" })
      .waitFor();
    await agentRow.getByRole("button", { name: "Conversation" }).click();
    const conv = agentRow.locator(".conversation");
    await conv.locator(".turn.goal", { hasText: "Which tests fail?" }).waitFor();
    await conv.locator(".turn.assistant", { hasText: "→ read_file" }).waitFor();
    await conv.locator(".turn.tool", { hasText: "test_sub" }).waitFor();
    await conv.locator(".turn.assistant", { hasText: "Two tests fail" }).waitFor();
    await page.locator("#audit .rec", { hasText: "human.ask" }).first().waitFor();
    await page.locator("#recent .decision", { hasText: HTTP_DECIDER }).waitFor();
    // The token left the address bar and never went into a URL.
    assert.equal(page.url().includes(srv.token), false);
    assert.equal(requests.filter((u) => u.includes(srv.token)).length, 0);
    await Deno.mkdir(join(SCREENSHOT, ".."), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });

    // One click.
    await card.getByRole("button", { name: "Allow once" }).click();
    const path = join(env.ws, "src/app.py");
    await until("the approved write", async () => (await readOr(path)) === NEW ? true : undefined);
    assert.equal(await Deno.readTextFile(path), NEW);
    await until(
      "the process to exit",
      async () => (await env.rt.process(proc.pid)).status === "exited" ? true : undefined,
    );
    // The console shows the decision in the audit, live, and the card is gone.
    await page.locator("#audit .rec.by-human", { hasText: HTTP_DECIDER }).waitFor();
    await card.waitFor({ state: "detached" });
    await page.locator(`#procs .proc[data-pid="${proc.pid}"]`, { hasText: "exited" }).waitFor();
    // The process's checkpoint with its diff against now: the approved writes are effects
    // since (a restore would not undo them), and the process moved on from waiting.
    await page.locator(`#procs .proc[data-pid="${proc.pid}"] .ckpt-toggle`).click();
    const ckpt = page.locator(`.checkpoints[data-pid="${proc.pid}"] .ckpt`);
    await ckpt.locator(".ckpt-effects li", { hasText: "filesystem:workspace:src/app.py" })
      .waitFor();
    await ckpt.locator(".ckpt-effects li", { hasText: "filesystem:workspace:src/util.py" })
      .waitFor();
    const ckptText = await ckpt.innerText();
    assert.match(ckptText, /before the approved writes/);
    assert.match(ckptText, new RegExp(`pid ${proc.pid} changed · status`));
    const decisions = await env.rt.kernel.store.listAudit({ action: "human.decide" });
    assert.deepEqual(decisions.map((r) => [r.actor, r.decision]), [
      [HTTP_DECIDER, "allow"],
      [HTTP_DECIDER, "allow"],
    ]);

    // A new request arrives live, and agent-written markup is shown as text, never run.
    const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
    const second = await env.rt.launch({
      image: { name: "intruder", tools: ["write_file"] },
      workspace: env.ws,
      grants: [{ resource: "filesystem:workspace:src/*", rights: ["write"], effect: "ask" }],
      script: { steps: [{ tool: "write_file", args: { path: "src/evil.html", content: evil } }] },
    });
    srv.kick();
    const card2 = page.locator(".card", { hasText: `pid ${second.pid}` });
    await card2.locator(".diff .d-add", { hasText: "<img src=x" }).waitFor();
    assert.equal(await card2.locator("img").count(), 0);
    assert.equal(await card2.locator("script").count(), 0);
    assert.equal(await page.evaluate("window.__pwned"), undefined);
    await card2.getByRole("button", { name: "Deny", exact: true }).click();
    await card2.waitFor({ state: "detached" });
    await until("the denied process to finish", async () => {
      const s = (await env.rt.process(second.pid)).status;
      return s === "exited" || s === "failed" ? s : undefined;
    });
    assert.equal(await readOr(join(env.ws, "src/evil.html")), null);
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
    await srv.close();
    await models.close();
  }
  console.log("console scenario: ok");
}

if (import.meta.main) {
  await scenario();
} else {
  Deno.test("console: a person sees the request with its diff, clicks Allow once, and the file is written", async () => {
    try {
      await Deno.stat(CHROMIUM);
    } catch {
      throw new Error(`${CHROMIUM} is missing: install it with 'apt-get install -y chromium'`);
    }
    const root = new URL("..", import.meta.url).pathname;
    const before = await Deno.stat(SCREENSHOT).then((s) => s.mtime?.getTime() ?? 0, () => 0);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", join(root, "deno.json"), new URL(import.meta.url).pathname],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", LIBOS_SCREENSHOT: SCREENSHOT },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `the browser scenario failed:\n${stdout}\n${stderr}`);
    assert.match(stdout, /console scenario: ok/);
    // A fresh PNG screenshot for the README.
    const png = await Deno.readFile(SCREENSHOT);
    assert.deepEqual([...png.slice(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.ok(png.length > 20_000);
    assert.ok(((await Deno.stat(SCREENSHOT)).mtime?.getTime() ?? 0) >= before);
    if (!Deno.env.get("LIBOS_SCREENSHOT")) await Deno.remove(SCREENSHOT);
  });
}
