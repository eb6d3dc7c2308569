// The page's formatting (gateway/static/format.js) in Node: numbers as people read them, and CSV cells a
// spreadsheet cannot run as formulas. Run by tests/browser/test_format_node.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { csvCell, formatAnswer, formatNumber, plural, slug, statedNumber, toCsv } from "../../gateway/static/format.js";

test("numbers keep what matters and no more", () => {
  assert.equal(formatNumber(2.998), "2.998"); // not "3"
  assert.equal(formatNumber(250000), "250,000");
  assert.equal(formatNumber(1234.567), "1,234.57");
  assert.equal(formatNumber(0.004213), "0.004213");
  assert.equal(formatNumber(5.4213), "5.421");
  assert.equal(formatNumber(-17), "-17");
});

test("counts agree with their noun", () => {
  assert.equal(plural(1, "row"), "1 row"); // not "About 1 rows"
  assert.equal(plural(2, "row"), "2 rows");
  assert.equal(plural(250000, "row"), "250,000 rows");
});

test("answers by type", () => {
  assert.equal(formatAnswer(true, "boolean"), "Yes");
  assert.equal(formatAnswer(995.8209814, "number"), "995.82");
  assert.equal(formatAnswer(null, "none"), "");
  assert.equal(formatAnswer(["a", "b", "c", "d", "e", "f", "g"], "list[category]"), "a, b, c, d, e and 2 more");
});

test("the headline takes the composer's unit when its bold figure is the answer", () => {
  assert.equal(statedNumber("Average of `amount (INR)`: **₹995.82**.", 995.8209814), "₹995.82");
  assert.equal(statedNumber("Failure rate: **5.42%** of rows.", 0.0542), "5.42%");
  assert.equal(statedNumber("Failure rate: **5.42%** of rows.", 5.42), "5.42%");
  assert.equal(statedNumber("Rows: **250,000**.", 250000), "250,000");
  assert.equal(statedNumber("The most common: **ICICI** (rows: 31,481).", 31481), ""); // not bold
  assert.equal(statedNumber("**Android** has **997.15**", 3), "");
});

test("a text cell that starts like a formula is made text with a leading quote", () => {
  for (const cell of ["=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]) {
    assert.ok(csvCell(cell).replace(/^"/, "").startsWith("'"), cell);
  }
  assert.equal(csvCell('=HYPERLINK("http://x.test")'), `"'=HYPERLINK(""http://x.test"")"`);
  assert.equal(csvCell(-5), "-5"); // a number is a number
  assert.equal(csvCell("a,b"), '"a,b"');
  assert.equal(csvCell(null), "");
  assert.equal(csvCell("plain"), "plain");
});

test("a table as CSV has a header row and CRLF line ends", () => {
  const csv = toCsv(["team", "note"], [{ team: "red", note: "=cmd" }, { team: "blue", note: null }]);
  assert.equal(csv, "team,note\r\nred,'=cmd\r\nblue,\r\n");
});

test("file names from questions", () => {
  assert.equal(slug("What is the total amount (INR) by device_type?"), "what-is-the-total-amount-inr-by-device-type");
  assert.equal(slug("???"), "result");
});
