/**
 * The safety benchmark's HTML report in a real browser (Debian's chromium
 * driven by playwright-core): it loads from a file with no network request
 * at all, shows the result table and the SVG charts, lists every scenario,
 * and a click on an outcome opens the audit excerpt that decided it.
 *
 * Run as a script it screenshots a report for the README:
 *   deno run -A tests/safety_report_browser_test.ts REPORT.html docs/safety-report.png
 *
 * Needs /usr/bin/chromium (`.ci/run` installs it). As with the console's
 * browser test, playwright-core needs `-A`, so the test runs this file in a
 * child Deno.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { libos } from "./_helpers.ts";

const CHROMIUM = "/usr/bin/chromium";

/** Open `report` in chromium, check it, and save a screenshot to `png`. */
async function inspect(report: string, png: string, full: boolean): Promise<void> {
  const { chromium } = await import("playwright-core");
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
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    const requests: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const url = pathToFileURL(report).href;
    await page.goto(url);
    // Self-contained: the only request is the report itself.
    assert.deepEqual(requests.filter((u) => u !== url), []);
    assert.ok((await page.locator("svg").count()) >= 4, "four charts");
    await page.locator("table.summary tbody tr", { hasText: "full" }).first().waitFor();
    const rows = await page.locator("table.scenarios tbody tr:not(.track)").count();
    assert.ok(rows >= 1, "every scenario has a row");
    // An excerpt is hidden until its outcome is clicked.
    const cell = page.locator("table.scenarios td a").first();
    const target = (await cell.getAttribute("href"))!;
    const excerpt = page.locator(target);
    assert.equal(await excerpt.isVisible(), false);
    await cell.click();
    await excerpt.waitFor({ state: "visible" });
    assert.match(await excerpt.innerText(), /effect/);
    await page.goto(url);
    await page.screenshot({ path: png, fullPage: full });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
  console.log("safety report: ok");
}

if (import.meta.main) {
  const [report, png, mode] = Deno.args;
  if (!report || !png) {
    console.error(
      "usage: deno run -A tests/safety_report_browser_test.ts REPORT.html OUT.png [full]",
    );
    Deno.exit(2);
  }
  await inspect(report, png, mode === "full");
} else {
  Deno.test("safety report: self-contained, charts and every scenario shown, an outcome opens its audit excerpt", async () => {
    try {
      await Deno.stat(CHROMIUM);
    } catch {
      throw new Error(`${CHROMIUM} is missing: install it with 'apt-get install -y chromium'`);
    }
    const dir = await Deno.makeTempDir({ prefix: "libos-report-" });
    try {
      const tasks = join(dir, "tasks");
      await Deno.mkdir(tasks);
      const src = new URL("../bench/safety/scenarios/", import.meta.url).pathname;
      for (const f of ["files/symlink-out-read.json", "human/one-shot-replay.json"]) {
        await Deno.copyFile(join(src, f), join(tasks, f.replace("/", "-")));
      }
      const out = join(dir, "out");
      const run = await libos([
        "bench",
        "safety",
        "--tasks",
        tasks,
        "--runner",
        "full",
        "--runner",
        "direct",
        "--runner",
        "ablation:no-realpath",
        "--out",
        out,
        "--json",
      ]);
      assert.equal(run.code, 0, run.stderr);
      const report = JSON.parse(run.stdout).report as string;
      const png = join(dir, "report.png");
      const root = new URL("..", import.meta.url).pathname;
      const child = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--config",
          join(root, "deno.json"),
          new URL(import.meta.url).pathname,
          report,
          png,
        ],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      const dec = new TextDecoder();
      assert.equal(child.code, 0, `${dec.decode(child.stdout)}\n${dec.decode(child.stderr)}`);
      assert.match(dec.decode(child.stdout), /safety report: ok/);
      const bytes = await Deno.readFile(png);
      assert.deepEqual([...bytes.slice(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
