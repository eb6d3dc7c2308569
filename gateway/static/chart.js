// Charts people read: a title, horizontal labels when they fit, number formats, the Vega-Lite version
// vega-embed loads (v6), and no chart at all when it would say nothing (a single value).
// Drawn with a loader that loads nothing: data must be inline (the gateway's allow-list already refused the
// rest), and no `eval` (the CSP has no 'unsafe-eval').
import { el, download, slug } from "/static/format.js";
import { errorBox } from "/static/errors.js";

export const VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";
const NUMBER_FORMAT = ",.4~r"; // 250,000 · 2.998 · 0.0421

/** Whether a chart adds anything to the answer: at least two marks to compare. */
export function chartSaysSomething(spec) {
  const values = spec?.data?.values;
  return !Array.isArray(values) || values.length >= 2;
}

/** Words in lines of at most `chars` characters (a title that fits a phone). */
function wrap(text, chars) {
  const lines = [];
  for (const word of text.split(/\s+/)) {
    const last = lines.length - 1;
    if (last >= 0 && (lines[last] + " " + word).length <= chars) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines.length > 3 ? [...lines.slice(0, 2), `${lines.slice(2).join(" ").slice(0, chars - 1)}…`] : lines;
}

/** The spec with a title, readable axes and number formats, for a chart `width` pixels wide; the model's
 * (or composer's) spec wins where it set them. */
export function polish(spec, title, width = 600) {
  const { usermeta, ...rest } = spec; // usermeta.embedOptions could replace the embed options below
  const out = { ...rest, $schema: VEGA_LITE_SCHEMA };
  const chars = Math.max(20, Math.floor((width - 20) / 7.5));
  if (!out.title && title) out.title = { text: wrap(title, chars), anchor: "start", fontSize: 13 };
  out.width = out.width ?? "container";
  out.height = out.height ?? 240;
  const encoding = { ...(out.encoding || {}) };
  const values = Array.isArray(out.data?.values) ? out.data.values : [];
  for (const channel of ["x", "y"]) {
    const enc = encoding[channel];
    if (!enc || typeof enc !== "object") continue;
    const axis = { ...(enc.axis || {}) };
    if (enc.type === "quantitative") {
      // Large numbers as 180M rather than 180,000,000 on the axis; the tooltip keeps them whole.
      const top = Math.max(0, ...values.map((row) => Math.abs(Number(row[enc.field])) || 0));
      axis.format = axis.format ?? (top >= 1e6 ? ".3~s" : NUMBER_FORMAT);
    } else if (channel === "x" && enc.field && (enc.type === "nominal" || enc.type === "ordinal")) {
      const labels = [...new Set(values.map((row) => String(row[enc.field] ?? "")))];
      const longest = Math.max(0, ...labels.map((s) => s.length));
      // Horizontal when they fit side by side in the plot's width (about 6.5 px a character); slanted
      // otherwise, never vertical.
      const fits = labels.length * (longest * 6.5 + 10) <= width - 70;
      axis.labelAngle = axis.labelAngle ?? (fits ? 0 : -40);
      axis.labelLimit = axis.labelLimit ?? 120;
    }
    encoding[channel] = { ...enc, axis };
  }
  if (Array.isArray(encoding.tooltip)) {
    encoding.tooltip = encoding.tooltip.map((t) => {
      const field = encoding.x?.field === t.field ? encoding.x : encoding.y?.field === t.field ? encoding.y : null;
      return field?.type === "quantitative" && !t.format ? { ...t, type: "quantitative", format: ",.6~r" } : t;
    });
  }
  out.encoding = encoding;
  out.config = { ...(out.config || {}), view: { stroke: null }, axis: { labelFontSize: 11, titleFontSize: 11, ...(out.config?.axis || {}) } };
  return out;
}

/** A vega loader that loads nothing: data must be inline, and no image or link URL is let through. */
function inlineOnlyLoader() {
  const refuse = () => Promise.reject(new Error("charts may only use inline data"));
  const loader = window.vega.loader();
  Object.assign(loader, { load: refuse, sanitize: refuse, http: refuse, file: refuse });
  return loader;
}

/** Draws `spec` into `holder`; holder.view is the vega view (for PNG/SVG export) once drawn. */
export async function drawChart(holder, spec, title = "") {
  try {
    await null; // the card is put on the page by the code that called us: measure once it is there
    if (!window.vegaEmbed || !window.vega) throw new Error("the chart library did not load (run make web-deps)");
    // ast + vega-embed's interpreter: expressions are evaluated without eval. defaultStyle and
    // disableDefaultStyle: no injected <style> (the CSP allows style sheets from files only).
    const result = await window.vegaEmbed(holder, polish(spec, title, holder.clientWidth || 600), {
      actions: false, renderer: "svg", ast: true, loader: inlineOnlyLoader(),
      defaultStyle: false, tooltip: { disableDefaultStyle: true },
    });
    holder.view = result.view;
    holder.dataset.drawn = "true";
    return result.view;
  } catch (err) {
    holder.replaceChildren(errorBox(`The chart could not be drawn: ${err.message}`, "CHART_FAILED"));
    return null;
  }
}

/** "PNG" and "SVG" buttons that save the drawn chart (vega's toImageURL: a data: or blob: URL, no request). */
export function imageButtons(holder, name) {
  const save = (format) => async () => {
    if (!holder.view) return;
    const url = await holder.view.toImageURL(format, format === "png" ? 2 : 1);
    download(`${slug(name, "chart")}.${format}`, url); // a data: (PNG) or blob: (SVG) URL, saved by a link
  };
  return [
    el("button", { class: "tool", type: "button", text: "PNG", title: "Download the chart as PNG", onclick: save("png") }),
    el("button", { class: "tool", type: "button", text: "SVG", title: "Download the chart as SVG", onclick: save("svg") }),
  ];
}
