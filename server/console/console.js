// Agent libOS web console. Plain browser JavaScript, no framework.
//
// The token comes from the URL fragment (#token=..., never sent to the server)
// or the form, lives in sessionStorage, and is only ever sent as an
// Authorization header. Everything an agent controls (arguments, paths,
// summaries, diffs) is rendered with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "libos.token";
const MAX_CARDS = 50;
const AUDIT_ROWS = 150;

const $ = (id) => document.getElementById(id);

/** Create an element; children are nodes or strings (always text). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return node;
}

// ---------------------------------------------------------------- token

function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([0-9a-fA-F]{16,128})(?:&|$)/.exec(location.hash);
  if (m) sessionStorage.setItem(TOKEN_KEY, m[1]);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class AuthError extends Error {}

async function api(path, init = {}) {
  const headers = { Authorization: `Bearer ${token()}`, ...(init.headers ?? {}) };
  const res = await fetch(path, { ...init, headers, cache: "no-store" });
  if (res.status === 401) throw new AuthError("the token was not accepted");
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const e = new Error(body?.error?.message ?? `HTTP ${res.status}`);
    e.status = res.status;
    throw e;
  }
  return body;
}

function showLogin(message) {
  stopStream();
  $("main").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message ?? "";
  setConn("off", "offline");
  $("token").focus();
}

function showMain() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("forget").hidden = false;
}

function handleError(e) {
  if (e instanceof AuthError) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("That token was not accepted. Paste the token from the .token file.");
    return;
  }
  console.error(e);
}

// ---------------------------------------------------------------- formatting

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString();
}

function relTime(iso) {
  const ms = Date.parse(iso) - Date.now();
  if (Number.isNaN(ms)) return iso;
  const m = Math.round(Math.abs(ms) / 60000);
  const text = m < 1 ? "<1 min" : m < 120 ? `${m} min` : `${Math.round(m / 60)} h`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

function pill(text, kind) {
  return el("span", { class: `pill ${kind ?? text}` }, text);
}

// ---------------------------------------------------------------- requests

const cards = new Map(); // request_id -> card element
const previews = new Map(); // request_id -> preview (diff) promise

function renderDiff(preview) {
  if (!preview) return null;
  const box = el("div", { class: "diff-box" });
  if (!preview.available) {
    box.append(
      el(
        "p",
        { class: preview.redacted ? "redacted" : "note" },
        preview.redacted ? "Content redacted. " : "No diff. ",
        preview.reason ?? "",
      ),
    );
    return box;
  }
  const cur = preview.current;
  box.append(
    el(
      "p",
      { class: "note" },
      cur.exists
        ? `Current file: ${cur.bytes} bytes, label ${cur.label}. Requested: ${preview.requested.bytes} bytes.`
        : `New file: ${preview.requested.bytes} bytes.`,
      preview.unchanged ? " Identical to the current file." : "",
    ),
  );
  const pre = el("pre", { class: "diff", "aria-label": "diff" });
  const lines = preview.diff.split("\n");
  // Skip the "Index:" and "====" banner the diff package puts first.
  for (const line of lines.slice(lines[0]?.startsWith("===") ? 1 : 0)) {
    if (line === "" || line.startsWith("\\ No newline")) continue;
    const cls = line.startsWith("+++") || line.startsWith("---")
      ? "d-file"
      : line.startsWith("@@")
      ? "d-hunk"
      : line.startsWith("+")
      ? "d-add"
      : line.startsWith("-")
      ? "d-del"
      : "d-ctx";
    pre.append(el("span", { class: `line ${cls}` }, line));
  }
  box.append(pre);
  return box;
}

async function decide(r, decision, card) {
  const buttons = card.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  const status = card.querySelector(".card-status");
  status.textContent = "Sending…";
  status.className = "card-status";
  try {
    await api(`/api/human/${encodeURIComponent(r.request_id)}/decide`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decision }),
    });
    status.textContent = `Decided: ${decision.replace("_", " ")}`;
    card.classList.add("decided");
    scheduleRefresh();
  } catch (e) {
    if (e instanceof AuthError) return handleError(e);
    status.textContent = e.message;
    status.className = "card-status error";
    if (e.status !== 409) { for (const b of buttons) b.disabled = false; }
    else scheduleRefresh();
  }
}

function requestCard(r) {
  const card = el("article", {
    class: `card${r.redacted ? " is-redacted" : ""}`,
    dataset: { id: r.request_id },
  });
  const head = el(
    "header",
    { class: "card-head" },
    el("span", { class: "pid" }, `pid ${r.pid}`),
    r.process ? el("span", { class: "image" }, r.process.image) : null,
    el("span", { class: "effect" }, r.effect),
    el("span", { class: "right" }, r.right),
    ...r.labels.filter((l) => l !== "public").map((l) => pill(l, `label ${l}`)),
  );
  const resource = el("div", { class: "resource" }, r.resource);
  const summary = el("p", { class: "summary" }, r.summary);
  const meta = el(
    "p",
    { class: "meta" },
    `asked ${time(r.created_at)} · expires ${relTime(r.expires_at)} · rule ${r.rule} · `,
    el("code", {}, r.request_id),
  );
  const args = el(
    "details",
    { class: "args", open: true },
    el("summary", {}, r.redacted ? "Arguments (redacted)" : "Exact arguments"),
    el("pre", { class: "json" }, JSON.stringify(r.args, null, 2)),
  );
  const diffSlot = el("div", { class: "diff-slot" });
  const actions = el(
    "div",
    { class: "actions" },
    el("button", {
      class: "allow",
      type: "button",
      title: "Allow exactly this call, once",
      onclick: () => decide(r, "allow_once", card),
    }, "Allow once"),
    el("button", {
      class: "allow-always",
      type: "button",
      title: `Allow ${r.right} on this resource from now on`,
      onclick: () => decide(r, "always_allow", card),
    }, "Always allow"),
    el("button", {
      class: "deny",
      type: "button",
      title: "Refuse this call",
      onclick: () => decide(r, "deny", card),
    }, "Deny"),
    el("button", {
      class: "deny-always",
      type: "button",
      title: `Refuse ${r.right} on this resource from now on`,
      onclick: () => decide(r, "always_deny", card),
    }, "Always deny"),
    el("span", { class: "card-status", role: "status" }),
  );
  if (r.kind === "outcome") {
    // "Did this happen?": the answer is recorded in the effect ledger; nothing is granted.
    card.classList.add("outcome");
    actions.replaceChildren(
      el("button", {
        class: "allow",
        type: "button",
        title: "The effect happened",
        onclick: () => decide(r, "done", card),
      }, "It happened"),
      el("button", {
        class: "deny",
        type: "button",
        title: "The effect did not happen",
        onclick: () => decide(r, "failed", card),
      }, "It did not happen"),
      el("span", { class: "card-status", role: "status" }),
    );
    args.querySelector("summary").textContent = "The effect and the action it belonged to";
  }
  card.append(head, resource, summary, meta, args, diffSlot, actions);
  if (r.effect === "filesystem.write") {
    diffSlot.append(el("p", { class: "note" }, "Loading diff…"));
    let p = previews.get(r.request_id);
    if (!p) {
      p = api(`/api/human/${encodeURIComponent(r.request_id)}`).then((d) => d.preview);
      previews.set(r.request_id, p);
    }
    p.then((preview) => diffSlot.replaceChildren(renderDiff(preview) ?? ""))
      .catch((e) => {
        previews.delete(r.request_id);
        diffSlot.replaceChildren(el("p", { class: "error" }, `diff unavailable: ${e.message}`));
        handleError(e);
      });
  }
  return card;
}

async function loadRequests() {
  const { requests } = await api("/api/human?status=pending");
  $("pending-count").textContent = String(requests.length);
  $("requests-empty").hidden = requests.length > 0;
  const shown = requests.slice(0, MAX_CARDS);
  const keep = new Set(shown.map((r) => r.request_id));
  for (const [id, card] of cards) {
    if (!keep.has(id)) {
      card.remove();
      cards.delete(id);
      previews.delete(id);
    }
  }
  const list = $("requests");
  let prev = null;
  for (const r of shown) {
    let card = cards.get(r.request_id);
    if (!card) {
      card = requestCard(r);
      cards.set(r.request_id, card);
    }
    if (prev ? prev.nextSibling !== card : list.firstChild !== card) {
      if (prev) prev.after(card);
      else list.prepend(card);
    }
    prev = card;
  }
  const more = $("requests-more");
  more.hidden = requests.length <= MAX_CARDS;
  more.textContent = `${
    requests.length - MAX_CARDS
  } more waiting; they appear as these are decided.`;
}

async function loadRecent() {
  const { requests } = await api("/api/human?status=all&decided=1&order=desc&limit=12");
  $("recent").replaceChildren(
    ...requests.map((r) =>
      el(
        "li",
        { class: "decision" },
        pill(r.status.replace("_", " "), r.status),
        el("span", { class: "who" }, r.decided_by ?? ""),
        el("span", { class: "what" }, `pid ${r.pid} · ${r.effect} · `, el("code", {}, r.resource)),
        el("span", { class: "when" }, time(r.decided_at)),
      )
    ),
  );
  if (requests.length === 0) {
    $("recent").replaceChildren(el("li", { class: "empty" }, "No decisions yet."));
  }
}

// ---------------------------------------------------------------- processes

/** A process's JIT tools: each with its warnings (style findings that did not refuse it). */
function jitTools(tools) {
  return el(
    "ul",
    { class: "jit-tools" },
    tools.map((t) =>
      el(
        "li",
        {},
        el("span", { class: "jit-name" }, `JIT ${t.name}`),
        " ",
        pill(t.warnings.length ? `${t.warnings.length} warnings` : "no warnings", "jit"),
        t.warnings.length
          ? el(
            "ul",
            { class: "jit-warnings" },
            t.warnings.map((w) => el("li", {}, `tool.ts:${w.line} ${w.rule}: ${w.message}`)),
          )
          : null,
      )
    ),
  );
}

// ---------------------------------------------------------------- checkpoints

const openCheckpoints = new Set(); // pids whose checkpoints are shown
const checkpointBoxes = new Map(); // pid -> element (kept across refreshes)

function checkpointLine(p) {
  return el(
    "div",
    { class: "ckpt-line" },
    el(
      "button",
      {
        class: "quiet ckpt-toggle",
        type: "button",
        onclick: () => {
          if (openCheckpoints.has(p.pid)) openCheckpoints.delete(p.pid);
          else openCheckpoints.add(p.pid);
          loadProcesses().catch(handleError);
        },
      },
      openCheckpoints.has(p.pid) ? "Hide checkpoints" : `Checkpoints (${p.checkpoints})`,
    ),
  );
}

/** The checkpoints of `pid`, each with its diff against now, filled (again) from the API. */
function checkpointBox(pid) {
  let box = checkpointBoxes.get(pid);
  if (!box) {
    box = el("div", { class: "checkpoints", dataset: { pid } }, "Loading…");
    checkpointBoxes.set(pid, box);
  }
  (async () => {
    const { checkpoints } = await api(`/api/processes/${pid}/checkpoints`);
    const items = [];
    for (const k of checkpoints.slice(-10).reverse()) {
      const d = await api(`/api/checkpoints/${encodeURIComponent(k.checkpoint_id)}/diff`);
      items.push(renderCheckpoint(k, d));
    }
    box.replaceChildren(el("ol", { class: "ckpt-list" }, items));
  })().catch(handleError);
  return box;
}

function renderCheckpoint(k, d) {
  const changes = d.processes.filter((p) => p.change !== "same").map((p) => {
    const o = p.objects;
    const fields = Object.keys(p.fields);
    return el(
      "li",
      { class: `ckpt-proc ${p.change}` },
      `pid ${p.pid} ${p.change}`,
      fields.length ? ` · ${fields.join(", ")}` : "",
      ` · objects +${o.added.length} −${o.removed.length} ~${o.changed.length}`,
      o.added.length ? ` (new: ${o.added.map((x) => x.name ?? x.kind).join(", ")})` : "",
      p.capabilities.added.length ? ` · capabilities +${p.capabilities.added.length}` : "",
    );
  });
  const fx = d.effects_since;
  return el(
    "li",
    { class: "ckpt", dataset: { id: k.checkpoint_id } },
    el("b", {}, k.label ?? "checkpoint"),
    " ",
    el("code", {}, k.checkpoint_id.slice(0, 13)),
    ` · ${time(k.created_at)} · ${k.processes} processes, ${k.objects} objects · since then:`,
    el("ul", { class: "ckpt-diff" }, changes.length ? changes : el("li", {}, "no change")),
    el(
      "p",
      { class: "detail" },
      `Effects since (a restore does not undo them): ${fx.effects_total} effects, ${fx.model_calls_total} model calls`,
    ),
    el(
      "ul",
      { class: "ckpt-effects" },
      fx.effects.map((e) => el("li", {}, `pid ${e.pid} ${e.syscall} ${e.resource} ${e.status}`)),
      fx.model_calls.map((m) =>
        el("li", {}, `pid ${m.pid} model call, turn ${m.turn}, ${m.status}`)
      ),
    ),
  );
}

// ---------------------------------------------------------------- conversations

const openConversations = new Set(); // pids whose conversation is shown
const conversationBoxes = new Map(); // pid -> element (kept across refreshes)

/** A model-driven process: its model and token use, and a toggle for its conversation. */
function modelLine(p) {
  const u = p.usage;
  return el(
    "div",
    { class: "model-line" },
    `${p.model.provider}:${p.model.name}`,
    p.model.base_url ? ` at ${p.model.base_url}` : "",
    ` · ${u.model_calls ?? 0} model calls, ${u.input_tokens ?? 0} in / ${
      u.output_tokens ?? 0
    } out tokens `,
    el(
      "button",
      {
        class: "quiet conv-toggle",
        type: "button",
        onclick: () => {
          if (openConversations.has(p.pid)) openConversations.delete(p.pid);
          else openConversations.add(p.pid);
          loadProcesses().catch(handleError);
        },
      },
      openConversations.has(p.pid) ? "Hide conversation" : "Conversation",
    ),
  );
}

/** The conversation box of `pid`, filled (again) from the API. */
function conversationBox(pid) {
  let box = conversationBoxes.get(pid);
  if (!box) {
    box = el("div", { class: "conversation", dataset: { pid } }, "Loading…");
    conversationBoxes.set(pid, box);
  }
  api(`/api/processes/${pid}/conversation`).then((c) => renderConversation(box, c))
    .catch(handleError);
  return box;
}

function renderConversation(box, c) {
  const held = new Map();
  for (const call of c.calls) {
    for (const r of call.request.redactions) held.set(r.sha256, r);
  }
  const item = (e) => {
    switch (e.kind) {
      case "goal":
        return el("li", { class: "turn goal" }, el("b", {}, "Goal "), e.text);
      case "summary":
        return el("li", { class: "turn summary" }, el("b", {}, "Summary "), e.text);
      case "assistant":
        return el(
          "li",
          { class: "turn assistant" },
          el("b", {}, `Model, turn ${e.turn} `),
          e.text,
          e.tool_calls.map((t) => el("div", { class: "call" }, `→ ${t.name} ${t.arguments}`)),
        );
      case "tool":
        return el(
          "li",
          { class: `turn tool${e.is_error ? " error" : ""}` },
          el("b", {}, `${e.name} result `),
          el("pre", {}, e.content),
          held.has(e.sha256)
            ? el(
              "button",
              {
                class: "quiet",
                type: "button",
                onclick: () =>
                  api(`/api/processes/${c.pid}/release`, {
                    method: "POST",
                    headers: { "Content-Type": "application/json" },
                    body: JSON.stringify({ sha256: e.sha256 }),
                  }).then(() => loadProcesses()).catch(handleError),
              },
              `Held back from the model (${held.get(e.sha256).label}): release it`,
            )
            : null,
        );
      default:
        return null;
    }
  };
  box.replaceChildren(
    el("ol", { class: "turns" }, c.entries.map(item)),
    el(
      "p",
      { class: "detail" },
      `${c.calls.length} calls: `,
      c.calls.map((k) =>
        `${k.purpose} ${k.turn} ${k.status} ${k.input_tokens ?? "-"}/${k.output_tokens ?? "-"} tok`
      ).join(" · "),
    ),
  );
}

async function loadProcesses() {
  const { processes } = await api("/api/processes");
  $("proc-count").textContent = String(processes.length);
  const children = new Map();
  for (const p of processes) {
    const key = p.ppid ?? 0;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(p);
  }
  const known = new Set(processes.map((p) => p.pid));
  const branch = (list) =>
    el(
      "ul",
      { class: "tree" },
      list.map((p) =>
        el(
          "li",
          {},
          el(
            "div",
            { class: "proc", dataset: { pid: p.pid } },
            el("span", { class: "pid" }, String(p.pid)),
            el("span", { class: "image" }, p.image),
            pill(p.status),
            p.pending_requests ? pill(`asks ${p.pending_requests}`, "asks") : null,
            p.taint !== "public" ? pill(p.taint, `label ${p.taint}`) : null,
            // Shell commands of this process run with the runtime's own OS permissions.
            p.shell_sandbox === "none" ? pill("shell unsandboxed", "unsandboxed") : null,
            el(
              "span",
              { class: "detail" },
              `${p.origin} · cwd ${p.cwd} · ${p.usage.quanta} quanta, ${p.usage.syscalls} syscalls`,
              p.exit_code !== null ? ` · exit ${p.exit_code}` : "",
              p.exit_reason ? ` (${p.exit_reason})` : "",
              p.pending_tool && !p.status.startsWith("exit") ? ` · next: ${p.pending_tool}` : "",
            ),
            p.jit_tools.length ? jitTools(p.jit_tools) : null,
            p.model ? modelLine(p) : null,
            p.model && openConversations.has(p.pid) ? conversationBox(p.pid) : null,
            p.checkpoints ? checkpointLine(p) : null,
            p.checkpoints && openCheckpoints.has(p.pid) ? checkpointBox(p.pid) : null,
          ),
          children.has(p.pid) ? branch(children.get(p.pid)) : null,
        )
      ),
    );
  const roots = processes.filter((p) => p.ppid === null || !known.has(p.ppid));
  $("procs").replaceChildren(
    roots.length ? branch(roots) : el("p", { class: "empty" }, "No processes yet."),
  );
}

// ---------------------------------------------------------------- audit

async function loadAudit() {
  const { records } = await api(`/api/audit?order=desc&limit=${AUDIT_ROWS}`);
  $("audit").replaceChildren(
    ...records.map((r) =>
      el(
        "li",
        { class: `rec ${r.actor.startsWith("human:") ? "by-human" : ""}` },
        el("span", { class: "seq" }, `#${r.seq}`),
        el("span", { class: "when" }, time(r.timestamp)),
        pill(r.decision),
        el("span", { class: "actor" }, r.actor),
        el("span", { class: "action" }, r.action),
        el("span", { class: "target" }, r.target),
        r.reason ? el("span", { class: "reason" }, r.reason) : null,
      )
    ),
  );
}

let lastVerify = 0;
async function loadVerify(force) {
  if (!force && Date.now() - lastVerify < 1500) return;
  lastVerify = Date.now();
  const v = await api("/api/audit/verify");
  const box = $("verify");
  if (v.ok) {
    box.className = "verify ok";
    box.textContent = `Audit chain verified · ${v.count} records`;
  } else {
    box.className = "verify bad";
    box.textContent = `Audit TAMPERED at record ${v.firstBad.seq}: ${v.firstBad.problem}`;
  }
}

// ---------------------------------------------------------------- refresh + live stream

let refreshTimer = null;
let refreshing = null;

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh(false);
  }, 150);
}

async function refresh(forceVerify) {
  if (refreshing) {
    await refreshing;
    return scheduleRefresh();
  }
  refreshing = Promise.all([
    loadRequests(),
    loadRecent(),
    loadProcesses(),
    loadAudit(),
    loadVerify(forceVerify),
  ])
    .catch(handleError)
    .finally(() => (refreshing = null));
  await refreshing;
}

function setConn(kind, text) {
  const c = $("conn");
  c.className = `conn ${kind}`;
  c.textContent = text;
}

let streamAbort = null;

function stopStream() {
  streamAbort?.abort();
  streamAbort = null;
}

/** Read the SSE stream with fetch(), so the token travels in the Authorization header. */
async function stream() {
  stopStream();
  const ctl = new AbortController();
  streamAbort = ctl;
  let lastId = null;
  while (!ctl.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const res = await fetch("/api/events", { headers, signal: ctl.signal, cache: "no-store" });
      if (res.status === 401) throw new AuthError("the token was not accepted");
      if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          let type = "message";
          let id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("id: ")) id = line.slice(4);
          }
          if (id !== null) lastId = id;
          if (type === "ready") {
            setConn("on", "live");
            refresh(true);
          } else if (id !== null) {
            scheduleRefresh();
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      if (e instanceof AuthError) return handleError(e);
    }
    if (ctl.signal.aborted) return;
    setConn("off", "reconnecting…");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function start() {
  if (!token()) return showLogin();
  showMain();
  setConn("off", "connecting…");
  stream();
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!/^[0-9a-fA-F]{16,128}$/.test(t)) {
      $("login-error").textContent = "A token is 64 hexadecimal digits.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Token forgotten.");
  });
  addEventListener("hashchange", () => {
    takeTokenFromFragment();
    start();
  });
  // Relative times ("expires in 23 h") and anything missed: a slow safety refresh.
  setInterval(() => {
    if (token() && !$("main").hidden) refresh(false);
  }, 30000);
  start();
});
