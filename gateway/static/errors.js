// Errors in plain words: what happened and what to do next, first; the service's own text (DuckDB's, say)
// only behind "Details".
import { el } from "/static/format.js";

const PLAIN = [
  [/^SQL_(SYNTAX|BINDER|ERROR|FAILED|ENGINE_ERROR)$/, "The query could not run on this data.", "Rephrase the question, or edit the SQL under “Show work” and run it again."],
  [/^SQL_(FORBIDDEN|NOT_READ_ONLY|MULTIPLE_STATEMENTS|EMPTY)$/, "Only one read-only SELECT can run here.", "Keep a single SELECT statement and run it again."],
  [/^SQL_(TIMEOUT|TOO_LARGE)$|DEADLINE_EXCEEDED/, "That took too long or needed too much memory.", "Narrow the question (a filter, fewer groups) and ask again."],
  [/^(SQL_CANCELLED|CANCELLED)$/, "The answer was stopped.", "Ask again when you are ready."],
  [/^(TOO_MANY_QUERIES|QUOTA_EXCEEDED|HTTP_429)$/, "You have reached a limit for now.", "Wait a moment (or until the limit resets) and try again."],
  [/^(UPSTREAM_UNAVAILABLE|UNAVAILABLE|ENGINE_STOPPING|LLM_GATEWAY_UNREACHABLE|HTTP_50[234])$/, "A service InsightX needs is not answering.", "Try again in a few seconds; if it persists, restart with make run."],
  [/^(ALL_KEYS_EXHAUSTED|LLM_ERROR|LLM_BAD_REPLY|LLM_NOT_CONFIGURED|PROVIDER_NOT_CONFIGURED)$/, "The language model could not answer.", "Ask a simpler question (the built-in analyst answers counts, averages, top values and trends), or try again later."],
  [/^PYTHON_FAILED$/, "The analysis step failed.", "Rephrase the question, or ask for the numbers only."],
  [/^(FILE_TOO_LARGE|REQUEST_TOO_LARGE|HTTP_413)$/, "The file is too large.", "Upload a smaller file (a sample or fewer columns)."],
  // The importer's messages are written for people already: shown as they are.
  [/^(NOT_A_TABLE|RAGGED_ROWS|UNREADABLE_FILE|EMPTY_FILE|EMPTY_TABLE|UNSUPPORTED_FORMAT|UNSUPPORTED_MEDIA_TYPE|SHEET_TOO_LARGE|SHEET_NOT_FOUND|IMPORT_CANCELLED)$/, null, null],
  [/^(UNAUTHENTICATED|HTTP_401)$/, "You are signed out.", "Open the link make run printed, or sign in again."],
  [/NOT_FOUND$|^HTTP_404$/, "That is no longer here.", "Pick a dataset from the list, or upload one."],
  [/^STREAM_ENDED$/, "The connection dropped before the answer.", "Ask again."],
];

/** {title, next, details} for an error code and the service's message; `next`, when given, is the advice
 * for where it happened (an upload's, the SQL editor's), in place of the general one. */
export function plainError(code, message, next = null) {
  const text = String(message || "").trim();
  for (const [pattern, title, advice] of PLAIN) {
    if (pattern.test(code || "")) {
      return title ? { title, next: next || advice, details: text } : { title: shorten(text), next: null, details: text };
    }
  }
  const general = "Try again; if it keeps happening, rephrase the question.";
  return { title: shorten(text) || "Something went wrong.", next: next || general, details: text };
}

/** A message cut to its first sentence when it is long (the rest stays behind "Details"). */
function shorten(text) {
  const line = text.split("\n")[0];
  if (line.length <= 200) return line;
  const end = line.slice(0, 200).lastIndexOf(". ");
  return end > 40 ? line.slice(0, end + 1) : `${line.slice(0, 197)}…`;
}

/** The error box: a plain line, what to do, and the original text behind "Details" (when it adds anything). */
export function errorBox(message, code, next) {
  const { title, next: advice, details } = plainError(code, message, next);
  const box = el("div", { class: "error-box", role: "alert" }, el("strong", { class: "error-title", text: title }));
  if (advice) box.append(el("div", { class: "error-next", text: advice }));
  if (details && details !== title) {
    box.append(el("details", { class: "error-details" }, el("summary", { text: "Details" }),
      el("pre", { class: "error-text", text: code ? `${details}\n(${code})` : details })));
  }
  return box;
}
