// Formatting for people: numbers, answers, the composer's little markdown, and CSV that a spreadsheet
// cannot turn into a formula. No DOM here except `el`, so node can import it (tests/browser/format.test.mjs).

/** A DOM element with props (class, text, on<event>, attributes) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child != null && child !== false) node.append(child);
  return node;
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** **bold** and `code` inside escaped text. */
export function inline(text) {
  return escapeHtml(text).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>").replace(/`([^`]+)`/g, "<code>$1</code>");
}

/** The little markdown the composer writes: **bold**, `code`, "- " lists, pipe tables and paragraphs. */
export function markdown(text) {
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

/** A number as a person reads it: 250,000; 2.998 (not 3); 995.82; 1,234.57; 0.0042. */
export function formatNumber(value) {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const size = Math.abs(value);
  if (size >= 100) return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  return value.toLocaleString("en-US", { maximumSignificantDigits: 4 });
}

/** Any cell or answer value as text. */
export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "boolean") return value ? "Yes" : "No";
  if (Array.isArray(value)) return value.map(formatValue).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** "1 row", "250,000 rows". */
export function plural(count, word, many = `${word}s`) {
  return `${formatNumber(Number(count))} ${Number(count) === 1 ? word : many}`;
}

/** The headline of an answer, by its type: a number, Yes/No, a category, or a short list. */
export function formatAnswer(answer, type = "") {
  if (answer === null || answer === undefined || type === "none") return "";
  if (Array.isArray(answer)) {
    const shown = answer.slice(0, 5).map(formatValue).join(", ");
    return answer.length > 5 ? `${shown} and ${answer.length - 5} more` : shown;
  }
  if (typeof answer === "object") return "";
  return formatValue(answer);
}

/** The composer's own rendering of a number answer ("**₹995.82**", "**5.42%**"): its first bold figure
 * that is the answer, unit included; "" when the text has none. */
export function statedNumber(text, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  for (const [, bold] of String(text || "").matchAll(/\*\*([^*]+)\*\*/g)) {
    const digits = bold.replace(/[^0-9.\-]/g, "");
    if (!/[0-9]/.test(digits) || bold.length > 24) continue;
    let figure = Number(digits);
    if (/%\s*$/.test(bold) && Math.abs(value) <= 1 && Math.abs(figure) > 1) figure /= 100; // a share shown as %
    if (Math.abs(figure - value) <= Math.max(0.006, Math.abs(value) * 0.001)) return bold.trim();
  }
  return "";
}

const FORMULA = /^[=+\-@\t\r]/;

/** One CSV cell: quoted when needed, and a text that a spreadsheet would run as a formula gets a leading `'`. */
export function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = typeof value === "object" ? JSON.stringify(value) : String(value);
  if (typeof value === "string" && FORMULA.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** A result table ({columns, rows}) as CSV text (CRLF line ends, as RFC 4180 and spreadsheets expect). */
export function toCsv(columns, rows) {
  const lines = [columns.map(csvCell).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}

/** Saves text or a URL as a file through a temporary link (blob: and data: URLs only; nothing leaves). */
export function download(name, content, type = "text/csv;charset=utf-8") {
  const isUrl = typeof content === "string" && /^(data|blob):/.test(content);
  const url = isUrl ? content
    : URL.createObjectURL(content instanceof Blob ? content : new Blob([content], { type }));
  const link = el("a", { href: url, download: name, class: "hidden-link" });
  document.body.append(link);
  link.click();
  link.remove();
  if (!isUrl) setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A file name from a question: "average-amount-by-state". */
export function slug(text, fallback = "result") {
  const s = String(text || "").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 50);
  return s || fallback;
}

/** "just now", "5 min ago", "3 h ago", "2 Dec". */
export function ago(epochSeconds) {
  const s = Date.now() / 1000 - Number(epochSeconds);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(epochSeconds * 1000).toLocaleDateString("en-GB", { day: "numeric", month: "short" });
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(1)} GB`;
}
