// The built-in page: sign-in, a landing that starts work (the demo, recent datasets and chats, example
// questions), upload, profile, and chats whose answers come first and whose work folds away.
// Where things are kept: chats and their turns on the server (the gateway's store, the only history; the
// page sends none); the open dataset and chat in the URL's hash (#session=…&chat=…) so a reload restores
// them; the last chat of each dataset in localStorage, so switching datasets and back reopens it.
// No inline script or style anywhere (the CSP allows only files from the gateway).
import { apiError, streamChat } from "/static/sse.js";
import { ago, bytes, el, formatValue, inline, plural } from "/static/format.js";
import { errorBox } from "/static/errors.js";
import { AnswerView, chip, storedClarifications } from "/static/answer.js";
import { cardFor, keepCard } from "/static/cards.js";

const $ = (id) => document.getElementById(id);
const DEMO_FILE = "upi_transactions.csv"; // the dataset `make run` loads for the embedded user
// nav counts the person's moves (open a dataset or chat, a new chat, the landing, a question): a view that
// arrives after a later move is dropped, so a slow load never replaces what they went on to.
const state = { datasets: [], session: null, chats: [], chatId: null, run: null, maxQuestion: 4000, nav: 0 };

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw await apiError(response);
  return response.json();
}

// ---- where we are: the URL's hash ---------------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { session: params.get("session"), chat: params.get("chat") };
}

function writeHash() {
  $("delete-chat").hidden = !(state.session && state.chatId);
  const params = new URLSearchParams();
  if (state.session) params.set("session", state.session.session_id);
  if (state.session && state.chatId) params.set("chat", state.chatId);
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
}

const lastChatKey = (sessionId) => `insightx:last-chat:${sessionId}`;

function rememberChat() {
  if (!state.session) return;
  try {
    if (state.chatId) localStorage.setItem(lastChatKey(state.session.session_id), state.chatId);
    else localStorage.removeItem(lastChatKey(state.session.session_id));
  } catch { /* storage off: the hash still restores a reload */ }
}

function recalledChat(sessionId) {
  try { return localStorage.getItem(lastChatKey(sessionId)); } catch { return null; }
}

// ---- the library: datasets and their chats ---------------------------------------------------------------

/** The demo: the newest of the user's datasets named like the one `make run` loads (one, even if the file
 * was uploaded again by hand). */
const isDemo = (d) => d.session_id === state.datasets.find((x) => x.filename === DEMO_FILE)?.session_id;

async function loadLibrary() {
  state.datasets = (await getJson("/api/datasets")).datasets;
  renderLibrary();
  return state.datasets;
}

function renderLibrary() {
  $("library").hidden = state.datasets.length === 0;
  const active = state.session?.session_id;
  $("datasets").replaceChildren(...state.datasets.map((d) => {
    const open = el("button", { class: "dataset-open", type: "button", onclick: () => openDataset(d.session_id) },
      el("span", { class: "dataset-name", text: d.filename }), isDemo(d) ? el("span", { class: "tag", text: "Demo" }) : null,
      el("small", { class: "muted", text: `${bytes(d.size_bytes)} · ${ago(d.created_at)}` }));
    const item = el("li", { class: `dataset${d.session_id === active ? " active" : ""}`, "data-session": d.session_id }, open);
    if (d.session_id === active) item.append(chatList());
    return item;
  }));
}

const CHATS_SHOWN = 6;
const chatTitle = (c) => (c.title || "Untitled chat").replace(/`/g, "");

/** The open dataset's chats, newest first: a few, and the rest on request (the open one always shows). */
function chatList() {
  const shown = state.allChats ? state.chats : state.chats.filter((c, i) => i < CHATS_SHOWN || c.chat_id === state.chatId);
  const items = shown.map((c) => el("li", {},
    el("button", { class: `chat-link${c.chat_id === state.chatId ? " active" : ""}`, type: "button", "data-chat": c.chat_id,
      text: chatTitle(c), title: chatTitle(c), onclick: () => openChat(c.chat_id) })));
  if (shown.length < state.chats.length) {
    items.push(el("li", {}, el("button", { class: "chat-link more", type: "button", text: `All ${state.chats.length} chats…`,
      onclick: () => { state.allChats = true; renderLibrary(); } })));
  }
  return el("ul", { class: "chats", "aria-label": "Chats" }, ...items);
}

async function refreshChats() {
  if (!state.session) return;
  const session = state.session;
  const { chats } = await getJson(`/api/sessions/${encodeURIComponent(session.session_id)}/chats`);
  if (state.session !== session) return;
  state.chats = chats;
  renderLibrary();
  const chat = chats.find((c) => c.chat_id === state.chatId);
  $("chat-title").textContent = chat ? `· ${chatTitle(chat)}` : "· new chat";
}

// ---- the landing ----------------------------------------------------------------------------------------

async function showLanding() {
  const nav = ++state.nav;
  abandonRun();
  state.session = null;
  state.chatId = null;
  state.chats = [];
  writeHash();
  $("profile").hidden = true;
  $("session-badge").hidden = true;
  document.title = "InsightX";
  $("landing").hidden = false;
  $("chat-head").hidden = true;
  $("ask-form").hidden = true;
  $("messages").replaceChildren();
  const datasets = await loadLibrary();
  if (state.nav !== nav) return;
  const recent = renderRecent(datasets); // meanwhile, the demo's examples (which may wait for its profile)
  const demo = datasets.find(isDemo);
  $("demo-card").hidden = !demo;
  $("no-demo").hidden = Boolean(demo);
  if (demo) {
    $("open-demo").onclick = () => openDataset(demo.session_id);
    try {
      const url = `/api/datasets/${encodeURIComponent(demo.session_id)}`;
      let described = await getJson(url);
      $("demo-meta").textContent = `${plural(described.row_count, "row")} · ${described.columns.length} columns`;
      for (let tries = 0; profileState(described) === "pending" && tries < 5 && !state.session; tries++) {
        // the examples are the profile's suggested questions: wait for it (a just-loaded demo is profiling)
        $("examples").replaceChildren(el("span", { class: "muted profile-status working", text: "Profiling the demo…" }));
        described = await getJson(`${url}?wait_for_profile=true`);
      }
      const questions = (described.profile?.suggested_questions || []).slice(0, 4);
      $("examples").replaceChildren(...(questions.length ? questions : ["How many rows are there?"]).map((q) =>
        chip(q, async () => { await openDataset(demo.session_id, { fresh: true }); ask(q); })));
    } catch (err) {
      $("examples").replaceChildren(errorBox(err.message, err.code));
    }
  }
  await recent;
}

/** The newest datasets with their newest chats: one click back into earlier work. */
async function renderRecent(datasets) {
  const shown = datasets.slice(0, 6);
  const lists = await Promise.all(shown.map((d) =>
    getJson(`/api/sessions/${encodeURIComponent(d.session_id)}/chats`).then((r) => r.chats).catch(() => [])));
  $("recent-box").hidden = shown.length === 0;
  $("recent").replaceChildren(...shown.map((d, i) => el("li", { class: "recent-item" },
    el("button", { class: "link", type: "button", onclick: () => openDataset(d.session_id) },
      el("strong", { text: d.filename }), el("small", { class: "muted", text: ` · ${ago(d.created_at)}` })),
    lists[i].length ? el("ul", { class: "recent-chats" }, ...lists[i].slice(0, 3).map((c) => el("li", {},
      el("button", { class: "link", type: "button", text: chatTitle(c),
        onclick: () => openDataset(d.session_id, { chat: c.chat_id }) })))) : null)));
}

// ---- upload, dataset and profile ---------------------------------------------------------------------------

async function upload(file) {
  $("upload-status").replaceChildren(`Uploading ${file.name} (${bytes(file.size)})…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/api/datasets", { method: "POST", body: form });
    if (!response.ok) throw await apiError(response);
    const dataset = await response.json();
    dataset.filename = file.name;
    $("upload-status").replaceChildren();
    state.datasets = [{ session_id: dataset.session_id, filename: file.name, size_bytes: file.size, created_at: Date.now() / 1000 }, ...state.datasets];
    await openDataset(dataset.session_id, { described: dataset, fresh: true });
    loadLibrary().catch(() => {});
  } catch (err) {
    $("upload-status").replaceChildren(errorBox(err.message, err.code, "Check the file and upload it again."));
  }
}

/** Opens a dataset and one of its chats: the given one, else the last one open here, else the newest. */
async function openDataset(sessionId, { chat = null, described = null, fresh = false } = {}) {
  const nav = ++state.nav;
  abandonRun();
  try {
    const dataset = described || await getJson(`/api/datasets/${encodeURIComponent(sessionId)}`);
    if (state.nav !== nav) return;
    showDataset(dataset);
    const { chats } = await getJson(`/api/sessions/${encodeURIComponent(sessionId)}/chats`);
    if (state.session !== dataset) return;
    state.chats = chats;
    renderLibrary();
    if (state.nav !== nav) return; // they started a new chat or asked meanwhile
    const known = (id) => id && chats.some((c) => c.chat_id === id);
    const pick = fresh ? null : known(chat) ? chat : known(recalledChat(sessionId)) ? recalledChat(sessionId) : chats[0]?.chat_id;
    if (pick) await openChat(pick);
    else newChat();
  } catch (err) {
    $("upload-status").replaceChildren(errorBox(err.message, err.code));
    if (!state.session) showLanding();
  }
}

function showDataset(dataset) {
  state.session = dataset;
  state.allChats = false;
  state.chatId = null;
  state.chats = [];
  $("messages").replaceChildren();
  $("landing").hidden = true;
  $("chat-head").hidden = false;
  $("ask-form").hidden = false;
  $("profile").hidden = false;
  const name = dataset.filename || state.datasets.find((d) => d.session_id === dataset.session_id)?.filename || dataset.table;
  dataset.filename = name;
  $("dataset-name").textContent = name;
  $("chat-dataset").textContent = name;
  document.title = `${name} · InsightX`;
  $("dataset-meta").textContent = `${plural(dataset.row_count, "row")} · ${plural(dataset.columns.length, "column")} · table "${dataset.table}"`;
  renderProfile(dataset);
  $("columns-box").open = false;
  $("session-badge").hidden = false;
  $("session-badge").textContent = `session ${dataset.session_id.slice(0, 8)}`;
  renderLibrary();
  setBusy(false);
  loadInsights();
  if (profileState(dataset) === "pending") awaitProfile(dataset);
}

/** "ready", "pending" or "failed"; a dataset from an older gateway (no state) had its profile. */
function profileState(dataset) {
  return dataset.profile_state || "ready";
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
    note.textContent = `Profiling ${formatValue(Number(dataset.row_count))} rows… You can ask questions meanwhile.`;
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
  $("suggestions").replaceChildren(...(questions.length ? questions : ["How many rows are there?"]).map((q) => chip(q, ask)));
  const head = el("tr", {}, el("th", { text: "Column" }), el("th", { text: "Nulls" }),
    el("th", { text: "≈ Distinct", title: "Approximate: counted with a sketch, not exactly" }), el("th", { text: "Range / top" }));
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
    return el("tr", {},
      el("td", {}, el("div", { class: "col-name", text: col.name }), el("small", { class: "muted", text: [col.type, role].filter(Boolean).join(" · ") })),
      el("td", { class: "num", text: count(p.null_count) }),
      el("td", { class: "num", text: count(p.distinct_count) }), el("td", { class: "detail", text: detail, title: detail }));
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
      const described = await getJson(`/api/datasets/${encodeURIComponent(sessionId)}?wait_for_profile=true`);
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

// ---- chats ---------------------------------------------------------------------------------------------

function newChat() {
  state.nav++;
  abandonRun();
  state.chatId = null; // the server makes the chat with the first question (X-Chat-Id)
  rememberChat();
  writeHash();
  $("chat-title").textContent = "· new chat";
  $("messages").replaceChildren(el("p", { class: "muted empty", text: "Ask a question, or pick a suggestion." }));
  renderLibrary();
  $("question").focus();
}

/** Deletes the open chat (after asking) with its messages; the dataset stays. */
async function deleteChat() {
  const chatId = state.chatId;
  if (!chatId || state.run || !window.confirm("Delete this chat and its answers?")) return;
  const response = await fetch(`/api/chats/${encodeURIComponent(chatId)}`, { method: "DELETE" });
  if (!response.ok && response.status !== 404) {
    const err = await apiError(response);
    $("messages").prepend(errorBox(err.message, err.code));
    return;
  }
  state.chats = state.chats.filter((c) => c.chat_id !== chatId);
  newChat();
}

/** Shows a stored chat: each question with its answer as the store kept it (value, text and SQL). */
async function openChat(chatId) {
  const nav = ++state.nav;
  abandonRun();
  const session = state.session;
  const { chat, messages } = await getJson(`/api/chats/${encodeURIComponent(chatId)}/messages?session_id=${encodeURIComponent(session.session_id)}`);
  if (state.session !== session || state.nav !== nav) return;
  state.chatId = chatId;
  rememberChat();
  writeHash();
  $("chat-title").textContent = `· ${chatTitle(chat)}`;
  const nodes = [];
  let question = "";
  for (const message of messages) {
    if (message.role === "user") {
      if (question) nodes.push(unanswered());
      question = message.content;
      nodes.push(el("div", { class: "msg user", text: message.content }));
    } else if (message.role === "assistant") {
      const view = new AnswerView(context(question));
      const clarifications = message.answer == null ? storedClarifications(message.content) : [];
      const shown = message.card || cardFor(chatId, message.content) || {}; // stored card; older: this browser's
      view.final({ clarifications, follow_ups: [], ...shown, text: message.content, answer: message.answer, sql: message.sql });
      nodes.push(view.root);
      question = "";
    }
  }
  if (question) nodes.push(unanswered());
  $("messages").replaceChildren(...(nodes.length ? nodes : [el("p", { class: "muted empty", text: "Ask a question, or pick a suggestion." })]));
  renderLibrary();
  nodes.at(-1)?.scrollIntoView?.({ block: "end" });
}

const unanswered = () => el("div", { class: "msg assistant muted", text: "No answer was stored for this question (it was stopped or is still running)." });

function context(question) {
  const sessionId = state.session.session_id;
  return { question, sessionId, ask, saveInsight: (button, data) => saveInsight(button, data, sessionId) };
}

function setBusy(busy) {
  const ready = Boolean(state.session) && !busy;
  $("question").disabled = !state.session;
  $("ask-button").disabled = !ready || !$("question").value.trim();
  $("ask-button").hidden = busy;
  $("stop-button").hidden = !busy;
}

/** Leaves a running answer to finish on its own (the server stores it) when the view changes. */
function abandonRun() {
  state.run = null;
  setBusy(false);
}

async function ask(question) {
  question = question.trim();
  if (!question || !state.session || state.run) return;
  if (question.length > state.maxQuestion) return; // the box refuses longer text; a chip never is
  $("messages").querySelector(".empty")?.remove();
  $("question").value = "";
  updateCount();
  state.nav++; // a restore still loading must not replace this question
  const run = { controller: new AbortController(), session: state.session };
  state.run = run;
  setBusy(true);
  $("messages").append(el("div", { class: "msg user", text: question }));
  const view = new AnswerView(context(question));
  view.status("Sending the question");
  $("messages").append(view.root);
  view.root.scrollIntoView({ block: "end" });
  const body = { session_id: state.session.session_id, message: question }; // no history: the server keeps it
  if (state.chatId) body.chat_id = state.chatId;
  run.chatId = state.chatId;
  try {
    await streamChat("", body, {
      signal: run.controller.signal,
      retries: 3,
      onEvent: (event) => {
        view.handle(event);
        if (event.type === "final_response") keepCard(run.chatId, event.data);
        if (state.run === run && event.type !== "status") view.root.scrollIntoView({ block: "nearest" });
      },
      onChat: (chatId) => {
        run.chatId = chatId;
        if (state.session !== run.session) return;
        state.chatId = chatId;
        rememberChat();
        writeHash();
      },
    });
  } catch (err) {
    if (run.controller.signal.aborted) view.stopped();
    else view.fail(err.message || "The request failed.", err.code);
  } finally {
    if (state.run === run) {
      state.run = null;
      setBusy(false);
      $("question").focus();
    }
    if (state.session === run.session) refreshChats().catch(() => {});
  }
}

function stop() {
  const run = state.run;
  if (!run) return;
  // Leaving a stream does not stop an answer (it runs on, resumable): the stop is asked for explicitly.
  if (run.chatId) {
    fetch("/api/chat/stop", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ chat_id: run.chatId, session_id: run.session.session_id }),
    }).catch(() => {});
  }
  run.controller.abort();
}

async function saveInsight(button, data, sessionId) {
  button.disabled = true;
  try {
    const response = await fetch(`/api/sessions/${encodeURIComponent(sessionId)}/insights`, {
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
  const session = state.session;
  const response = await fetch(`/api/sessions/${encodeURIComponent(session.session_id)}/insights`);
  if (!response.ok || state.session !== session) return;
  const { insights } = await response.json();
  $("insights-box").hidden = insights.length === 0;
  $("insights").replaceChildren(...insights.map((i) => {
    const item = el("li");
    item.innerHTML = inline(i.text.split("\n")[0]);
    return item;
  }));
}

// ---- the question box ----------------------------------------------------------------------------------

/** Shows how much room is left near the limit (the box itself refuses more: maxlength). */
function updateCount() {
  const length = $("question").value.length;
  const count = $("question-count");
  count.hidden = length < state.maxQuestion * 0.8;
  count.textContent = `${formatValue(length)} / ${formatValue(state.maxQuestion)}`;
  count.classList.toggle("full", length >= state.maxQuestion);
  $("ask-button").disabled = !state.session || Boolean(state.run) || !$("question").value.trim();
}

/** The question limit, read from the API's own schema so page and server agree. */
async function loadLimits() {
  try {
    const schema = await getJson("/api/openapi.json");
    const limit = schema.components?.schemas?.ChatStreamRequest?.properties?.message?.maxLength;
    if (Number.isInteger(limit) && limit > 0) state.maxQuestion = limit;
  } catch { /* keep the default */ }
  $("question").maxLength = state.maxQuestion;
}

// ---- wiring -----------------------------------------------------------------------------------------

function wire() {
  const zone = $("dropzone");
  for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => { const file = e.dataTransfer?.files?.[0]; if (file) upload(file); });
  const landing = $("landing"); // the landing takes a dropped file too: the biggest target on the page
  for (const name of ["dragenter", "dragover"]) landing.addEventListener(name, (e) => { e.preventDefault(); landing.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) landing.addEventListener(name, (e) => { e.preventDefault(); landing.classList.remove("over"); });
  landing.addEventListener("drop", (e) => { const file = e.dataTransfer?.files?.[0]; if (file) upload(file); });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); } });
  $("file-input").addEventListener("change", (e) => { const file = e.target.files?.[0]; if (file) upload(file); e.target.value = ""; });
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask($("question").value); });
  $("question").addEventListener("input", updateCount);
  $("stop-button").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.run) stop(); });
  $("new-chat").addEventListener("click", newChat);
  $("delete-chat").addEventListener("click", deleteChat);
  $("landing-upload").addEventListener("click", () => $("file-input").click());
  $("to-library").addEventListener("click", () => $("data-panel").scrollIntoView({ block: "start" }));
  $("home").addEventListener("click", (e) => { e.preventDefault(); showLanding(); });
  window.addEventListener("hashchange", followHash); // a link or the back button names another dataset or chat
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

/** Shows the workspace to a signed-in user (the HttpOnly cookie is sent by itself), else the sign-in box;
 * then the dataset and chat the URL names, or the landing. */
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
  loadLimits();
  const { session, chat } = readHash();
  if (session) {
    await loadLibrary().catch(() => {});
    await openDataset(session, { chat });
  } else {
    await showLanding();
  }
}

/** Opens what the hash names when it differs from what is shown (the page itself only replaces it). */
function followHash() {
  const { session, chat } = readHash();
  if (!session) { if (state.session) showLanding(); return; }
  if (session !== state.session?.session_id) openDataset(session, { chat });
  else if (chat && chat !== state.chatId) openChat(chat).catch((err) => $("upload-status").replaceChildren(errorBox(err.message, err.code)));
}

wire();
start();
