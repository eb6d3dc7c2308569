// One answer as a card: the answer first (value, sentence, chart, follow-ups), then "Show work" (steps,
// plan, SQL that can be edited and run again, tables that download as CSV). A refusal is one line plus the
// analyst's clarifying questions as chips.
import { apiError } from "/static/sse.js";
import { el, download, formatAnswer, formatValue, markdown, plural, slug, statedNumber, toCsv } from "/static/format.js";
import { errorBox } from "/static/errors.js";
import { chartSaysSomething, drawChart, imageButtons } from "/static/chart.js";

/** A copy button: writes `text()` to the clipboard and says so. */
export function copyButton(label, text) {
  const button = el("button", { class: "tool", type: "button", text: label });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

/** A result table with its row count and a CSV download of the rows it holds. */
export function resultTable(data, name, limit = 50) {
  const columns = data.columns || [];
  const all = data.rows || [];
  const rows = all.slice(0, limit);
  const head = el("tr", {}, ...columns.map((c) => el("th", { text: c })));
  const body = rows.map((row) => el("tr", {}, ...columns.map((c) => el("td", { class: typeof row[c] === "number" ? "num" : "", text: formatValue(row[c]) }))));
  const total = Number(data.row_count ?? all.length);
  const partial = data.truncated || all.length < total;
  const note = `${plural(total, "row")}${rows.length < total ? `, first ${rows.length} shown` : ""}`;
  const csv = el("button", {
    class: "tool csv", type: "button", text: partial ? `CSV (first ${all.length})` : "CSV",
    title: "Download these rows as CSV", onclick: () => download(`${slug(name)}.csv`, toCsv(columns, all)),
  });
  return el("div", { class: "result" },
    el("div", { class: "table-wrap" }, el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, ...body))),
    el("div", { class: "table-foot" }, el("span", { class: "muted", text: note }), csv));
}

/** Whether a final answer is the analyst asking back rather than answering (no answer, and choices offered
 * or a confidence of 0, which the orchestrator gives every refusal). */
export function isRefusal(data) {
  const none = data.answer === null || data.answer === undefined;
  return none && ((data.clarifications || []).length > 0 || (data.confidence === 0 && !data.sql));
}

/** The choices of a stored refusal, read back from its text ("Did you mean: “a” or “b”"): the store keeps
 * the text, not the event's list. */
export function storedClarifications(text) {
  const tail = String(text || "").split("Did you mean:")[1];
  return tail ? [...tail.matchAll(/“([^”]+)”/g)].map((m) => m[1]) : [];
}

export class AnswerView {
  /** ctx: {question, sessionId, ask(question), saveInsight(button, data)} */
  constructor(ctx) {
    this.ctx = ctx;
    this.progress = el("div", { class: "progress", role: "status" });
    this.head = el("div", { class: "answer-slot" });
    this.steps = el("ul", { class: "steps" });
    this.workBody = el("div", { class: "work-body" });
    this.work = el("details", { class: "work" }, el("summary", { text: "Show work" }), this.steps, this.workBody);
    this.root = el("div", { class: "msg assistant" }, this.progress, this.head, this.work);
    this.current = null;
    this.tables = [];
  }

  status(message) {
    if (this.current) this.current.className = "done";
    this.current = el("li", { class: "current", text: message });
    this.steps.append(this.current);
    this.progress.textContent = message;
  }

  finish() {
    if (this.current) this.current.className = "done";
    this.current = null;
    this.progress.remove();
    this.label();
  }

  /** "Show work · 7 steps · SQL · 1 table": what the folded part holds. */
  label() {
    const steps = this.steps.childElementCount;
    const parts = [steps ? plural(steps, "step") : "", this.sql ? "SQL" : "", this.tables.length ? plural(this.tables.length, "table") : ""];
    this.work.querySelector("summary").textContent = ["Show work", ...parts.filter(Boolean)].join(" · ");
  }

  section(title, ...content) {
    const node = el("div", { class: "step" }, el("h4", { text: title }), ...content);
    this.workBody.append(node);
    return node;
  }

  handle(event) {
    const data = event.data || {};
    switch (event.type) {
      case "status": this.status(event.message); break;
      case "orchestrator_result":
        this.section("Plan", el("span", { class: "tag", text: data.classification }), " ", el("span", { class: "muted", text: data.reasoning || "" }));
        break;
      case "sql_result": this.sqlStep(data); break;
      case "python_result": {
        const parts = [el("pre", { class: "code", text: data.code })];
        if (data.stdout) parts.push(el("pre", { class: "code", text: data.stdout }));
        if (data.error) parts.push(errorBox(data.error, "PYTHON_FAILED"));
        for (const src of data.figures || []) parts.push(el("img", { class: "figure", src, alt: "figure" }));
        this.section("Python", ...parts);
        break;
      }
      case "final_response": this.final(data); break;
      case "error": this.fail(event.message, event.code); break;
      case "key_rotation": this.steps.append(el("li", { text: event.message })); break;
      default: break;
    }
  }

  /** The SQL, editable and runnable in place, with its result table. */
  sqlStep(data) {
    const editor = el("textarea", { class: "sql-edit", spellcheck: "false", rows: String(Math.min(12, Math.max(3, String(data.query || "").split("\n").length + 1))), "aria-label": "SQL" });
    editor.value = data.query || "";
    const output = el("div", { class: "sql-output" });
    const run = el("button", { class: "tool run-sql", type: "button", text: "Run" });
    run.addEventListener("click", () => this.runSql(editor.value, output, run));
    const title = `SQL${data.attempt > 1 ? ` (attempt ${data.attempt})` : ""}`;
    this.section(title, editor, el("div", { class: "tools" }, run, copyButton("Copy SQL", () => editor.value)), output);
    if (data.error) output.append(errorBox(data.error, data.error_reason || "SQL_FAILED"));
    else if (data.columns) {
      this.tables.push(data);
      output.append(resultTable(data, this.ctx.question));
    }
    this.sql = data.query;
  }

  async runSql(sql, output, button) {
    button.disabled = true;
    button.textContent = "Running…";
    try {
      const response = await fetch("/api/sql/execute", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ session_id: this.ctx.sessionId, sql }),
      });
      if (!response.ok) throw await apiError(response);
      const result = await response.json();
      output.replaceChildren(resultTable(result, this.ctx.question), el("div", { class: "muted ran", text: `Ran in ${Math.round(result.elapsed_ms)} ms` }));
    } catch (err) {
      output.replaceChildren(errorBox(err.message, err.code, /^SQL_(SYNTAX|BINDER|ERROR)$/.test(err.code || "")
        ? "Check the names against the dataset's columns (under Columns), then run it again." : undefined));
    } finally {
      button.disabled = false;
      button.textContent = "Run";
    }
  }

  fail(message, code) {
    this.finish();
    this.head.replaceChildren(errorBox(message, code));
  }

  stopped() {
    this.finish();
    this.head.replaceChildren(el("div", { class: "answer stopped muted", text: "Stopped. Nothing more runs for this question." }));
  }

  final(data) {
    this.finish();
    if (isRefusal(data)) return this.refusal(data);
    const card = el("div", { class: "answer final" });
    // The headline is a single value (a number, Yes/No, a name); a list is better said by the sentence.
    const value = Array.isArray(data.answer) ? ""
      : statedNumber(data.text, data.answer) || formatAnswer(data.answer, data.answer_type);
    if (value) card.append(el("div", { class: "answer-value", text: value }));
    const text = el("div", { class: "answer-text" });
    text.innerHTML = markdown(data.text || "");
    card.append(text);
    const plain = String(data.text || value).replace(/\*\*(.+?)\*\*/g, "$1").replace(/`([^`]+)`/g, "$1");
    const tools = [copyButton("Copy answer", () => plain)];
    if (data.chart && chartSaysSomething(data.chart)) {
      const holder = el("div", { class: "chart", "data-testid": "chart" });
      card.append(holder);
      drawChart(holder, data.chart, this.ctx.question);
      tools.push(...imageButtons(holder, this.ctx.question));
      foldLongTables(text); // the chart says it; the numbers stay one click away
    } else if (!value && !/^\s*\|/m.test(data.text || "") && this.tables.length && (this.tables.at(-1).rows || []).length > 1) {
      card.append(resultTable(this.tables.at(-1), this.ctx.question, 10)); // a table says more than a chart here
    }
    const meta = [];
    if (typeof data.confidence === "number" && data.confidence > 0) meta.push(`confidence ${Math.round(data.confidence * 100)}%`);
    if (data.cached) meta.push("cached");
    if (meta.length) card.append(el("div", { class: "confidence", title: "How often answers like this one are right", text: meta.join(" · ") }));
    if (this.ctx.saveInsight) {
      const save = el("button", { class: "tool save-insight", type: "button", text: "☆ Save as insight" });
      save.addEventListener("click", () => this.ctx.saveInsight(save, data));
      tools.push(save);
    }
    card.append(el("div", { class: "tools card-tools" }, ...tools));
    if (data.follow_ups?.length) {
      card.append(el("div", { class: "chips follow-ups" }, ...data.follow_ups.map((q) => chip(q, this.ctx.ask))));
    }
    this.head.replaceChildren(card);
    if (data.sql && !this.sql) {
      this.sqlStep({ query: data.sql }); // a restored answer: its SQL, to run again
      this.label();
    }
  }

  refusal(data) {
    const choices = data.clarifications || [];
    const line = choices.length ? "I am not sure what is asked. Did you mean:" : firstLine(data.text);
    const card = el("div", { class: "answer refusal" }, el("div", { class: "refusal-line", text: line }));
    if (choices.length) card.append(el("div", { class: "chips clarifications" }, ...choices.map((q) => chip(q, this.ctx.ask))));
    this.head.replaceChildren(card);
    this.work.hidden = this.workBody.childElementCount === 0 && this.steps.childElementCount <= 1;
  }
}

/** Folds each table of more than five rows in the answer's text under "The numbers (N rows)". */
function foldLongTables(text) {
  for (const wrap of text.querySelectorAll(".table-wrap")) {
    const rows = wrap.querySelectorAll("tbody tr").length;
    if (rows <= 5) continue;
    const fold = el("details", { class: "numbers" }, el("summary", { text: `The numbers (${plural(rows, "row")})` }));
    wrap.replaceWith(fold);
    fold.append(wrap);
  }
}

function firstLine(text) {
  const line = String(text || "").split("\n").find((l) => l.trim()) || "I could not answer that.";
  return line.replace(/\*\*/g, "");
}

/** A question as a chip that asks it (shown without the analyst's `backticks`, asked as written). */
export function chip(question, ask) {
  return el("button", { class: "chip", type: "button", text: question.replace(/`/g, ""), "data-question": question, onclick: () => ask(question) });
}
