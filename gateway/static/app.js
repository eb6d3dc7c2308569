// The built-in page: sign-in, upload, profile, and a chat whose steps appear as the SSE events arrive.
// No inline script anywhere (the CSP allows only files from the gateway), and charts are drawn with a loader
// that fetches nothing (the gateway's allow-list already refused specs that would).
import { apiError, streamChat } from "/static/sse.js";

const $ = (id) => document.getElementById(id);
const state = { session: null, history: [], chatId: null, busy: false };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inline(text) {
  return escapeHtml(text).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>").replace(/`([^`]+)`/g, "<code>$1</code>");
}

/** The little markdown the composer writes: **bold**, `code`, "- " lists, pipe tables and paragraphs. */
function markdown(text) {
  const out = [];
  const lines = String(text).split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim().startsWith("|")) {
      const rows = [];
      while (i < lines.length && lines[i].trim().startsWith("|")) rows.push(lines[i++].trim());
      i--;
      const cells = (row) => row.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const body = rows.filter((r, k) => k > 0 && !/^\|[\s:|-]+\|$/.test(r));
      out.push(`<div class="table-wrap"><table class="grid"><thead><tr>${cells(rows[0]).map((c) => `<th>${inline(c)}</th>`).join("")}</tr></thead><tbody>${body.map((r) => `<tr>${cells(r).map((c) => `<td>${inline(c)}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`);
    } else if (lines[i].startsWith("- ")) {
      out.push(`<div>• ${inline(lines[i].slice(2))}</div>`);
    } else if (lines[i].trim()) {
      out.push(`<p>${inline(lines[i])}</p>`);
    }
  }
  return out.join("");
}

function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en-US") : value.toLocaleString("en-US", { maximumFractionDigits: 4 });
  if (typeof value === "boolean") return value ? "Yes" : "No";
  if (Array.isArray(value)) return value.map(formatValue).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function errorBox(message, code) {
  return el("div", { class: "error-box", role: "alert" }, el("span", { text: message }), code ? el("span", {}, " ", el("code", { text: `(${code})` })) : null);
}

// ---- upload and profile -------------------------------------------------------------------------------

async function upload(file) {
  $("upload-status").replaceChildren(`Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/api/datasets", { method: "POST", body: form });
    if (!response.ok) throw await apiError(response);
    const dataset = await response.json();
    dataset.filename = file.name;
    showDataset(dataset);
    $("upload-status").replaceChildren();
  } catch (err) {
    $("upload-status").replaceChildren(errorBox(err.message, err.code));
  }
}

async function loadSession(sessionId) {
  const response = await fetch(`/api/datasets/${encodeURIComponent(sessionId)}`);
  if (!response.ok) throw await apiError(response);
  showDataset(await response.json());
}

/** "ready", "pending" or "failed"; a dataset from an older gateway (no state) had its profile. */
function profileState(dataset) {
  return dataset.profile_state || "ready";
}

function showDataset(dataset) {
  state.session = dataset;
  state.history = [];
  state.chatId = null; // the server makes the chat with the first question (X-Chat-Id)
  history.replaceState(null, "", `#session=${dataset.session_id}`);
  $("profile").hidden = false;
  $("dataset-name").textContent = dataset.filename || dataset.table;
  $("dataset-meta").textContent = `${Number(dataset.row_count).toLocaleString("en-US")} rows · ${dataset.columns.length} columns · table "${dataset.table}"`;
  renderProfile(dataset);
  $("columns-box").open = window.innerWidth > 760;
  $("session-badge").hidden = false;
  $("session-badge").textContent = `session ${dataset.session_id.slice(0, 8)}`;
  $("messages").replaceChildren(el("p", { class: "muted empty", text: "Ask a question, or pick a suggestion." }));
  setBusy(false);
  loadInsights();
  $("question").focus();
  if (profileState(dataset) === "pending") awaitProfile(dataset);
}

/** The profile area: health, reasons, suggestions and column stats; while pending, a "Profiling…" line. */
function renderProfile(dataset) {
  const status = profileState(dataset);
  const profile = dataset.profile || {};
  const health = $("health");
  const note = $("profile-status");
  note.hidden = status === "ready";
  $("profile-body").hidden = status === "pending";
  if (status === "pending") {
    note.className = "profile-status working";
    note.textContent = `Profiling ${Number(dataset.row_count).toLocaleString("en-US")} rows… You can ask questions meanwhile.`;
  } else if (status === "failed") {
    note.className = "profile-status failed";
    const why = String(profile.failure || "no reason given").replace(/[.\s]+$/, "");
    note.textContent = `The profile could not be computed: ${why}. The data can still be queried.`;
  }
  if (typeof profile.health_score === "number" && status === "ready") {
    const score = Math.round(profile.health_score);
    health.textContent = String(score);
    health.className = `health ${score >= 80 ? "" : score >= 50 ? "mid" : "low"}`;
    health.title = `Data health ${score}/100`;
  } else {
    health.textContent = status === "pending" ? "…" : "—";
    health.className = `health ${status === "pending" ? "pending" : "mid"}`;
    health.title = status === "pending" ? "Data health: profiling" : "Data health not computed";
  }
  $("health-reasons").replaceChildren(...(profile.health_reasons || []).map((r) => el("li", { text: r })));
  const questions = profile.suggested_questions || [];
  $("suggestions").replaceChildren(...(questions.length ? questions : ["How many rows are there?"]).map((q) => chip(q)));
  const head = el("tr", {}, ...["Column", "Type", "Role", "Nulls", "Distinct", "Range / top"].map((h) => el("th", { text: h })));
  const byName = Object.fromEntries((profile.columns || []).map((c) => [c.name, c]));
  const pending = status === "pending";
  const rows = dataset.columns.map((col) => {
    const p = byName[col.name] || {};
    const role = (p.role || "").replace("SEMANTIC_ROLE_", "").toLowerCase();
    let detail = "";
    if (p.min !== undefined) detail = `${formatValue(p.min)} … ${formatValue(p.max)}`;
    else if (p.min_time) detail = `${p.min_time} … ${p.max_time}`;
    else if (p.top_values?.length) detail = p.top_values.slice(0, 3).map((t) => t.value).join(", ");
    const count = (value) => (pending ? "…" : p.name ? formatValue(Number(value || 0)) : "—");
    return el("tr", {}, el("td", { text: col.name }), el("td", { text: col.type }), el("td", { text: role }),
      el("td", { class: "num", text: count(p.null_count) }),
      el("td", { class: "num", text: count(p.distinct_count) }), el("td", { text: detail }));
  });
  $("columns").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for a pending profile (the gateway holds the request until it is done) and renders it. One loop
 * per shown dataset: showing it again (or another) ends this one. */
async function awaitProfile(dataset) {
  const sessionId = dataset.session_id;
  const current = () => state.session === dataset;
  let pause = 1000;
  while (current()) {
    try {
      const response = await fetch(`/api/datasets/${encodeURIComponent(sessionId)}?wait_for_profile=true`);
      if (!response.ok) throw await apiError(response);
      const described = await response.json();
      if (!current()) return;
      if (profileState(described) !== "pending") {
        Object.assign(state.session, { profile: described.profile, profile_state: described.profile_state });
        renderProfile(state.session);
        return;
      }
      pause = 1000; // still pending after the gateway's wait: ask again
    } catch (err) {
      if (!current()) return;
      if (err.status && err.status < 500) {
        $("profile-status").className = "profile-status";
        $("profile-status").replaceChildren(errorBox(`The profile could not be loaded: ${err.message}`, err.code));
        return;
      }
      pause = Math.min(pause * 2, 30_000);
    }
    await sleep(pause);
  }
}

function chip(question) {
  return el("button", { class: "chip", type: "button", text: question, onclick: () => ask(question) });
}

// ---- chat -------------------------------------------------------------------------------------------

function setBusy(busy) {
  state.busy = busy;
  const ready = Boolean(state.session) && !busy;
  $("question").disabled = !state.session;
  $("ask-button").disabled = !ready;
}

function resultTable(data, limit = 50) {
  const columns = data.columns || [];
  const rows = (data.rows || []).slice(0, limit);
  const head = el("tr", {}, ...columns.map((c) => el("th", { text: c })));
  const body = rows.map((row) => el("tr", {}, ...columns.map((c) => el("td", { class: typeof row[c] === "number" ? "num" : "", text: formatValue(row[c]) }))));
  const shown = data.rows?.length ?? 0;
  const note = `${Number(data.row_count ?? shown).toLocaleString("en-US")} row(s)${data.truncated || shown > limit ? `, first ${Math.min(limit, shown)} shown` : ""}`;
  return el("div", {}, el("div", { class: "table-wrap" }, el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, ...body))), el("div", { class: "muted", text: note }));
}

class AnswerView {
  constructor() {
    this.steps = el("ul", { class: "steps" });
    this.body = el("div");
    this.root = el("div", { class: "msg assistant" }, this.steps, this.body);
    this.current = null;
  }

  status(message) {
    if (this.current) this.current.className = "done";
    this.current = el("li", { class: "current", text: message });
    this.steps.append(this.current);
  }

  finish() {
    if (this.current) this.current.className = "done";
    this.current = null;
  }

  section(title, ...content) {
    this.body.append(el("div", { class: "step" }, el("h4", { text: title }), ...content));
  }

  handle(event) {
    const data = event.data || {};
    switch (event.type) {
      case "status": this.status(event.message); break;
      case "orchestrator_result":
        this.section("Plan", el("span", { class: "tag", text: data.classification }), " ", el("span", { class: "muted", text: data.reasoning || "" }));
        break;
      case "sql_result":
        this.section(`SQL${data.attempt > 1 ? ` (attempt ${data.attempt})` : ""}`, el("pre", { class: "code", text: data.query }),
          data.error ? errorBox(data.error, data.error_reason) : resultTable(data));
        break;
      case "python_result": {
        const parts = [el("pre", { class: "code", text: data.code })];
        if (data.stdout) parts.push(el("pre", { class: "code", text: data.stdout }));
        if (data.error) parts.push(errorBox(data.error));
        for (const src of data.figures || []) parts.push(el("img", { class: "figure", src, alt: "figure" }));
        this.section("Python", ...parts);
        break;
      }
      case "final_response": this.final(data); break;
      case "error": this.finish(); this.body.append(errorBox(event.message, event.code)); break;
      case "key_rotation": this.steps.append(el("li", { text: event.message })); break;
      default: break;
    }
  }

  final(data) {
    this.finish();
    const answer = el("div", { class: "answer final" });
    if (data.answer !== null && data.answer !== undefined && typeof data.answer !== "object") {
      answer.append(el("div", { class: "answer-value", text: formatValue(data.answer) }));
    }
    const text = el("div", { class: "answer-text" });
    text.innerHTML = markdown(data.text || "");
    answer.append(text);
    if (data.chart) {
      const holder = el("div", { class: "chart", "data-testid": "chart" });
      answer.append(holder);
      drawChart(holder, data.chart);
    }
    if (typeof data.confidence === "number") {
      answer.append(el("div", { class: "confidence", text: `confidence ${Math.round(data.confidence * 100)}%${data.cached ? " · cached" : ""}` }));
    }
    if (data.follow_ups?.length) answer.append(el("div", { class: "chips follow-ups" }, ...data.follow_ups.map(chip)));
    const save = el("button", { class: "chip save-insight", type: "button", text: "☆ Save as insight" });
    save.addEventListener("click", () => saveInsight(save, data));
    answer.append(el("div", { class: "actions" }, save));
    this.body.append(answer);
  }
}

async function saveInsight(button, data) {
  button.disabled = true;
  try {
    const response = await fetch(`/api/sessions/${state.session.session_id}/insights`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: data.text, sql: data.sql || "", chat_id: state.chatId || "", answer: data.answer ?? null }),
    });
    if (!response.ok) throw await apiError(response);
    button.textContent = "★ Saved";
    await loadInsights();
  } catch (err) {
    button.disabled = false;
    button.replaceWith(errorBox(err.message, err.code));
  }
}

async function loadInsights() {
  const response = await fetch(`/api/sessions/${state.session.session_id}/insights`);
  if (!response.ok) return;
  const { insights } = await response.json();
  $("insights-box").hidden = insights.length === 0;
  $("insights").replaceChildren(...insights.map((i) => {
    const item = el("li");
    item.innerHTML = inline(i.text.split("\n")[0]);
    return item;
  }));
}

/** A vega loader that loads nothing: data must be inline, and no image or link URL is let through. */
function inlineOnlyLoader() {
  const refuse = () => Promise.reject(new Error("charts may only use inline data"));
  const loader = window.vega.loader();
  Object.assign(loader, { load: refuse, sanitize: refuse, http: refuse, file: refuse });
  return loader;
}

async function drawChart(holder, spec) {
  try {
    if (!window.vegaEmbed || !window.vega) throw new Error("the chart library did not load (run make web-deps)");
    const { usermeta, ...rest } = spec; // usermeta.embedOptions could replace the options below
    const full = { width: "container", ...rest };
    // ast + vega-embed's interpreter: expressions are evaluated without eval (the CSP has no 'unsafe-eval').
    // defaultStyle/disableDefaultStyle: no injected <style> (the CSP allows style sheets from files only;
    // the tooltip's look is in style.css).
    await window.vegaEmbed(holder, full, {
      actions: false, renderer: "svg", ast: true, loader: inlineOnlyLoader(),
      defaultStyle: false, tooltip: { disableDefaultStyle: true },
    });
    holder.dataset.drawn = "true";
  } catch (err) {
    holder.replaceChildren(errorBox(`The chart could not be drawn: ${err.message}`));
  }
}

async function ask(question) {
  question = question.trim();
  if (!question || !state.session || state.busy) return;
  $("messages").querySelector(".empty")?.remove();
  $("question").value = "";
  setBusy(true);
  $("messages").append(el("div", { class: "msg user", text: question }));
  const view = new AnswerView();
  view.status("Sending the question");
  $("messages").append(view.root);
  const body = { session_id: state.session.session_id, message: question, history: state.history.slice(-10) };
  if (state.chatId) body.chat_id = state.chatId;
  const session = state.session;
  try {
    const last = await streamChat("", body, {
      onEvent: (event) => { view.handle(event); view.root.scrollIntoView({ block: "end" }); },
      onChat: (chatId) => { if (state.session === session) state.chatId = chatId; },
    });
    state.history.push({ role: "user", content: question });
    if (last.type === "final_response") state.history.push({ role: "assistant", content: last.data.text });
  } catch (err) {
    view.finish();
    view.body.append(errorBox(err.message || "The request failed.", err.code));
  } finally {
    setBusy(false);
    $("question").focus();
  }
}

// ---- wiring -----------------------------------------------------------------------------------------

function wire() {
  const zone = $("dropzone");
  for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => { const file = e.dataTransfer?.files?.[0]; if (file) upload(file); });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); } });
  $("file-input").addEventListener("change", (e) => { const file = e.target.files?.[0]; if (file) upload(file); e.target.value = ""; });
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask($("question").value); });
  $("question").addEventListener("input", () => { $("ask-button").disabled = !state.session || state.busy || !$("question").value.trim(); });
  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("signin-token").value); });
  $("signout").addEventListener("click", signOut);
}

// ---- sign-in ------------------------------------------------------------------------------------------

async function signIn(token) {
  token = token.trim();
  if (!token) return;
  const response = await fetch("/api/auth/login", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
  });
  if (!response.ok) {
    const err = await apiError(response);
    $("signin-status").replaceChildren(errorBox(err.message, err.code));
    return;
  }
  $("signin-token").value = "";
  await start();
}

async function signOut() {
  await fetch("/api/auth/logout", { method: "POST" });
  location.replace("/");
}

/** Shows the workspace to a signed-in user (the HttpOnly cookie is sent by itself), else the sign-in box. */
async function start() {
  const response = await fetch("/api/me");
  const signedIn = response.ok;
  $("signin").hidden = signedIn;
  $("workspace").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  if (!signedIn) {
    if (response.status !== 401) $("signin-status").replaceChildren(errorBox((await apiError(response)).message));
    $("signin-token").focus();
    return;
  }
  const match = location.hash.match(/session=([A-Za-z0-9_-]+)/);
  if (match) loadSession(match[1]).catch((err) => $("upload-status").replaceChildren(errorBox(err.message, err.code)));
}

wire();
start();
