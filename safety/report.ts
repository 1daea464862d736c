/**
 * The benchmark's report: one self-contained HTML file (inline CSS and SVG,
 * no script, no network): the result table, bar charts of forbidden effects
 * and false denials per runner, heat maps per track, and every scenario with
 * its outcome under every runner, each outcome linking to the audit records
 * that decided it (or, for baselines, to what the model was handed).
 * @module
 */
import { type Ablation, ABLATIONS } from "../runtime/ablations.ts";
import { type BenchResult, type Metrics, RUNNER_ABOUT } from "./bench.ts";
import type { ScenarioOutcome } from "./evaluate.ts";
import type { Scenario } from "./scenario.ts";

function _esc(s: unknown): string {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

function _id(...parts: string[]): string {
  return "x-" + parts.join("--").replace(/[^A-Za-z0-9_-]/g, "_");
}

/** What a runner is, in words. */
export function runnerAbout(runner: string): string {
  if (runner.startsWith("ablation:")) {
    const a = runner.slice("ablation:".length) as Ablation;
    return `full, without one mechanism: ${ABLATIONS[a]}`;
  }
  return RUNNER_ABOUT[runner] ?? runner;
}

function _pct(x: number): string {
  return `${Math.round(x * 1000) / 10}%`;
}

function _color(runner: string): string {
  if (runner === "full") return "#1f7a4d";
  if (runner.startsWith("ablation:")) return "#c77d1a";
  return "#b23b3b";
}

/** A horizontal bar chart: one bar per runner. */
function _bars(title: string, rows: { label: string; value: number; color: string }[]): string {
  const max = Math.max(1, ...rows.map((r) => r.value));
  const left = 235;
  const width = 320;
  const h = 21;
  const height = rows.length * h + 36;
  const bars = rows.map((r, i) => {
    const y = 28 + i * h;
    const w = Math.round((r.value / max) * width);
    return `<text x="${left - 8}" y="${y + 15}" text-anchor="end" class="lbl">${
      _esc(r.label)
    }</text>` +
      `<rect x="${left}" y="${y + 3}" width="${Math.max(w, 1)}" height="${
        h - 6
      }" fill="${r.color}"/>` +
      `<text x="${left + Math.max(w, 1) + 6}" y="${y + 15}" class="val">${r.value}</text>`;
  }).join("");
  return `<figure><svg role="img" aria-label="${_esc(title)}" viewBox="0 0 ${
    left + width + 60
  } ${height}" ` +
    `width="${left + width + 60}" height="${height}" xmlns="http://www.w3.org/2000/svg">` +
    `<text x="0" y="16" class="ttl">${_esc(title)}</text>${bars}</svg></figure>`;
}

/** A heat map: runners by tracks, one number per cell. */
function _heat(
  title: string,
  runners: string[],
  tracks: string[],
  value: (runner: string, track: string) => number,
): string {
  const left = 235;
  const cw = 56;
  const ch = 21;
  const top = 44;
  const max = Math.max(1, ...runners.flatMap((r) => tracks.map((t) => value(r, t))));
  const head = tracks.map((t, j) =>
    `<text x="${left + j * cw + cw / 2}" y="${top - 8}" text-anchor="middle" class="lbl">${
      _esc(t)
    }</text>`
  ).join("");
  const cells = runners.map((r, i) => {
    const y = top + i * ch;
    const row = tracks.map((t, j) => {
      const v = value(r, t);
      const a = v === 0 ? 0 : 0.15 + 0.85 * (v / max);
      return `<rect x="${left + j * cw}" y="${y}" width="${cw - 2}" height="${ch - 2}" ` +
        `fill="rgba(178,59,59,${a.toFixed(2)})" stroke="#ddd"/>` +
        `<text x="${left + j * cw + cw / 2}" y="${y + 15}" text-anchor="middle" class="${
          a > 0.55 ? "val inv" : "val"
        }">${v}</text>`;
    }).join("");
    return `<text x="${left - 8}" y="${y + 15}" text-anchor="end" class="lbl">${
      _esc(r)
    }</text>${row}`;
  }).join("");
  const w = left + tracks.length * cw + 10;
  const h = top + runners.length * ch + 10;
  return `<figure><svg role="img" aria-label="${
    _esc(title)
  }" viewBox="0 0 ${w} ${h}" width="${w}" ` +
    `height="${h}" xmlns="http://www.w3.org/2000/svg"><text x="0" y="16" class="ttl">${
      _esc(title)
    }</text>${head}${cells}</svg></figure>`;
}

function _summaryTable(r: BenchResult): string {
  const rows = r.summaries.map((s) =>
    `<tr><th scope="row" title="${
      _esc(runnerAbout(s.runner))
    }"><span class="dot" style="background:${_color(s.runner)}"></span>${_esc(s.runner)}</th>` +
    `<td>${_pct(s.task_success)} <small>(${s.tasks_succeeded}/${s.scenarios})</small></td>` +
    `<td class="${s.forbidden_effects ? "bad" : "good"}">${s.forbidden_effects}</td>` +
    `<td class="${s.false_denials ? "bad" : "good"}">${s.false_denials}</td>` +
    `<td>${s.approvals} <small>(${s.approved} approved)</small></td>` +
    `<td>${_pct(s.audit_coverage)}</td></tr>`
  ).join("");
  return `<table class="summary"><thead><tr><th>runner</th><th>task success</th>` +
    `<th>forbidden effects</th><th>false denials</th><th>human approvals asked</th>` +
    `<th>audit coverage</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function _runnerList(r: BenchResult): string {
  return `<h2>Runners</h2><dl class="defs">${
    r.runners.map((x) => `<dt>${_esc(x)}</dt><dd>${_esc(runnerAbout(x))}</dd>`).join("")
  }</dl>`;
}

function _cell(o: ScenarioOutcome | undefined, sc: Scenario, runner: string): string {
  if (!o) return "<td>–</td>";
  const href = `#${_id(sc.id, runner)}`;
  const title = `${o.forbidden_effects} forbidden, ${o.false_denials} false denial(s)` +
    (o.failedChecks.length ? `, failed: ${o.failedChecks.join("; ")}` : "") +
    (o.error ? `, runner error: ${o.error}` : "");
  let text = "ok";
  let cls = "ok";
  if (o.forbidden_effects > 0) (text = `✗${o.forbidden_effects}`, cls = "fx");
  else if (!o.task_success) {
    (text = o.false_denials ? `denied ${o.false_denials}` : "failed", cls = "fd");
  }
  return `<td class="${cls}"><a href="${href}" title="${_esc(title)}">${_esc(text)}</a></td>`;
}

function _scenarioTable(r: BenchResult, by: Map<string, ScenarioOutcome>): string {
  const head = r.runners.map((x) => `<th class="rot"><span>${_esc(x)}</span></th>`).join("");
  let track = "";
  const rows: string[] = [];
  for (const sc of r.scenarios) {
    if (sc.track !== track) {
      track = sc.track;
      rows.push(`<tr class="track"><th colspan="${r.runners.length + 1}">${_esc(track)}</th></tr>`);
    }
    const cells = r.runners.map((x) => _cell(by.get(`${sc.id}|${x}`), sc, x)).join("");
    rows.push(
      `<tr><th scope="row"><a href="#${_id(sc.id)}">${
        _esc(sc.id)
      }</a> <span class="kind ${sc.kind}">${_esc(sc.kind)}</span></th>${cells}</tr>`,
    );
  }
  return `<table class="scenarios"><thead><tr><th>scenario</th>${head}</tr></thead><tbody>${
    rows.join("")
  }</tbody></table>`;
}

function _effectsText(sc: Scenario): string {
  const line = (kind: string, e: Scenario["expect"]["forbidden"][number]) => {
    const { id, audit: _a, ...rest } = e;
    return `<li><b>${kind}</b> <code>${_esc(id)}</code> ${_esc(JSON.stringify(rest))}</li>`;
  };
  return `<ul class="effects">${sc.expect.forbidden.map((e) => line("must not", e)).join("")}${
    sc.expect.allowed.map((e) => line("must", e)).join("")
  }</ul>`;
}

function _excerpt(r: BenchResult, sc: Scenario, runner: string, o: ScenarioOutcome): string {
  const ex = r.excerpts.get(`${sc.id}|${runner}`);
  const effects = o.effects.map((e) => {
    const recs = (ex?.deciding[e.id] ?? []).map((a) =>
      `<li><code>#${a.seq} ${_esc(a.actor)} ${_esc(a.action)} ${_esc(a.target)} ${
        _esc(a.decision.toUpperCase())
      }${a.capability_refs.length ? ` [${_esc(a.capability_refs.join(", "))}]` : ""}</code> — ${
        _esc(a.reason)
      }</li>`
    ).join("");
    const bad = (e.expected === "forbidden") === e.happened;
    return `<tr class="${bad ? "bad" : "good"}"><td><code>${
      _esc(e.id)
    }</code></td><td>${e.expected}</td>` +
      `<td>${e.happened ? "happened" : "did not happen"}</td><td>${
        e.covered === null ? "no audit kept" : e.covered ? "explained" : "not explained"
      }${recs ? `<ul class="recs">${recs}</ul>` : ""}</td></tr>`;
  }).join("");
  const extra = [
    ...o.failedChecks.map((c) => `check failed: ${c}`),
    ...(o.failedAuditChecks ?? []).map((c) => `audit check failed: ${c}`),
    ...(o.error ? [`runner error: ${o.error}`] : []),
  ].map((x) => `<li>${_esc(x)}</li>`).join("");
  const trailTitle = o.effects.some((e) => e.covered !== null)
    ? "audit trail"
    : "what the model was handed (this runner keeps no audit)";
  return `<section class="excerpt" id="${_id(sc.id, runner)}"><h4>${_esc(sc.id)} · ${
    _esc(runner)
  } <a href="#${_id(sc.id)}" class="up">scenario</a></h4>` +
    `<table class="fx"><thead><tr><th>effect</th><th>expected</th><th>outcome</th><th>deciding records</th></tr></thead><tbody>${effects}</tbody></table>` +
    (extra ? `<ul class="checks">${extra}</ul>` : "") +
    `<details><summary>${trailTitle} (${ex?.trail.length ?? 0} lines)</summary><pre>${
      _esc((ex?.trail ?? []).join("\n"))
    }</pre></details></section>`;
}

/** Which model a scenario runs: a script, or a transcript served to the real model loop. */
function _modelText(sc: Scenario): string {
  const t = sc.model.transcript;
  return t
    ? `model: ${t.provider} transcript, ${t.turns.length} turns (real model loop)`
    : `model: script, ${sc.model.script.steps.length} steps`;
}

function _details(r: BenchResult, by: Map<string, ScenarioOutcome>): string {
  return r.scenarios.map((sc) => {
    const runs = r.runners.map((x) => {
      const o = by.get(`${sc.id}|${x}`);
      return o ? _excerpt(r, sc, x, o) : "";
    }).join("");
    return `<article class="scenario" id="${_id(sc.id)}"><h3>${_esc(sc.id)}: ${
      _esc(sc.title)
    }</h3>` +
      `<p class="meta">${_esc(sc.track)} · ${_esc(sc.kind)}${
        sc.attack_class ? ` · ${_esc(sc.attack_class)}` : ""
      } · ${_esc(_modelText(sc))} · <code>${_esc(sc.file)}</code></p>` +
      (sc.description ? `<p>${_esc(sc.description)}</p>` : "") + _effectsText(sc) +
      `<p class="runs">${
        r.runners.map((x) => `<a href="#${_id(sc.id, x)}">${_esc(x)}</a>`).join(" · ")
      }</p>${runs}</article>`;
  }).join("");
}

const _CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1360px;margin:0 auto;padding:20px 20px 80px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #dde2e7;padding-bottom:4px}
h3{font-size:15px;margin:26px 0 4px}h4{font-size:14px;margin:0 0 8px}
.lead{color:#4a5560;margin:0 0 16px}small,.about,.meta{color:#5d6873}.about{font-weight:400;font-size:12px}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #e1e5ea;padding:5px 8px;text-align:left;vertical-align:top}
table.summary td{text-align:right;white-space:nowrap}td.good{color:#1f7a4d;font-weight:600}td.bad{color:#b23b3b;font-weight:700}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.charts{display:flex;flex-wrap:wrap;gap:14px;margin-top:14px}figure{margin:0;background:#fff;border:1px solid #e1e5ea;padding:8px}
.top{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
svg .ttl{font:600 13px system-ui,sans-serif;fill:#1d232a}svg .lbl{font:12px system-ui,sans-serif;fill:#33404c}
svg .val{font:12px system-ui,sans-serif;fill:#1d232a}svg .inv{fill:#fff}
table.scenarios{font-size:12px}table.scenarios td{text-align:center;padding:3px 4px}
table.scenarios td a{text-decoration:none;color:inherit;display:block}
th.rot{height:150px;white-space:nowrap;vertical-align:bottom;padding:0 2px}th.rot span{display:inline-block;transform:rotate(-60deg);transform-origin:left bottom;width:24px;margin-left:14px}
td.ok{background:#e7f4ec;color:#1f7a4d}td.fx{background:#f8dada;color:#8d1f1f;font-weight:700}td.fd{background:#fdf0d5;color:#7a5212;font-weight:600}
tr.track th{background:#eef1f4;font-size:13px}.kind{font-size:11px;padding:0 5px;border-radius:3px}.kind.attack{background:#f3e3e3}.kind.benign{background:#e3f0e8}
.excerpt{display:none;border:2px solid #5a7fa6;background:#fff;padding:10px 12px;margin:10px 0}.excerpt:target{display:block}
.excerpt table.fx{width:100%;font-size:12px}.excerpt tr.bad td:first-child{border-left:4px solid #b23b3b}.excerpt tr.good td:first-child{border-left:4px solid #1f7a4d}
ul.recs{margin:4px 0 0 16px;padding:0}pre{white-space:pre-wrap;font-size:11.5px;background:#f4f6f8;padding:8px;max-height:420px;overflow:auto}
code{font-size:12px}.up{font-weight:400;font-size:12px;margin-left:8px}ul.effects{font-size:12.5px}
dl.defs dt{font-weight:600}dl.defs dd{margin:0 0 8px 0;color:#3b4651}`;

/** Render the report for a benchmark run. */
export function renderReport(r: BenchResult, meta: { tasks: string; date: string }): string {
  const by = new Map(r.outcomes.map((o) => [`${o.scenario}|${o.runner}`, o]));
  const tracks = Object.keys(r.tracks);
  const trackLine = tracks.map((t) =>
    `${_esc(t)} ${r.tracks[t].scenarios} (${r.tracks[t].attack} attack, ${
      r.tracks[t].benign
    } benign)`
  ).join(" · ");
  const m = (runner: string, track: string, k: keyof Metrics) =>
    r.summaries.find((s) => s.runner === runner)?.by_track[track]?.[k] as number ?? 0;
  const charts = [
    _bars(
      "Forbidden effects committed, per runner",
      r.summaries.map((s) => ({
        label: s.runner,
        value: s.forbidden_effects,
        color: _color(s.runner),
      })),
    ),
    _bars(
      "False denials (must-allow effects that did not happen), per runner",
      r.summaries.map((s) => ({
        label: s.runner,
        value: s.false_denials,
        color: _color(s.runner),
      })),
    ),
    _heat(
      "Forbidden effects per track",
      r.runners,
      tracks,
      (x, t) => m(x, t, "forbidden_effects"),
    ),
    _heat("False denials per track", r.runners, tracks, (x, t) => m(x, t, "false_denials")),
  ].join("");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>Agent libOS runtime-safety benchmark</title><style>${_CSS}</style></head><body><main>` +
    `<h1>Agent libOS runtime-safety benchmark</h1>` +
    `<p class="lead">${r.scenarios.length} scenarios from <code>${
      _esc(meta.tasks)
    }</code>, ${r.runners.length} runners, ${(r.ms / 1000).toFixed(1)} s, ${
      _esc(meta.date)
    }.<br>${trackLine}</p>` +
    _summaryTable(r) + `<div class="charts">${charts}</div>` + _runnerList(r) +
    `<h2>Every scenario under every runner</h2><p class="lead">✗N: N forbidden effects committed; ` +
    `"denied N": N must-allow effects did not happen; ok: neither. Each cell links to the audit ` +
    `records that decided the scenario's effects under that runner.</p>` +
    _scenarioTable(r, by) + `<h2>Definitions</h2><dl class="defs">` +
    `<dt>forbidden effect</dt><dd>An effect the scenario forbids that really happened, observed in the world after the run (the file tree before and after, what each process's model was handed, what the human was shown, hits on a loopback listener standing for the network, Object Memory), never taken from a runner's own account.</dd>` +
    `<dt>false denial</dt><dd>An effect the scenario requires that did not happen.</dd>` +
    `<dt>task success</dt><dd>Every required effect happened and every check on the final workspace and objects held.</dd>` +
    `<dt>human approvals asked</dt><dd>Decisions the human was asked for (runtime: human requests; confirm: confirmations).</dd>` +
    `<dt>audit coverage</dt><dd>Share of expected effects whose outcome an audit record explains: an allow (naming the capability that allowed) for one that happened, a deny (naming the capability or the rule) for one that did not. Baselines keep no audit.</dd>` +
    `</dl><h2>Scenarios</h2>${_details(r, by)}</main></body></html>\n`;
}
