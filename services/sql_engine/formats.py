"""What an upload is: its format from its first bytes (then its name), its text encoding, its dialect.

Everything here looks at a bounded head of the file, so it costs the same for 1 KiB and 1 GiB; only
rewrite_as_rfc4180, for the rare file that escapes quotes both ways, reads it whole.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from common.errors import InvalidInput

HEAD_BYTES = 1 << 20
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DELIMITERS = (",", "\t", ";", "|")
_CONTROLS = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"
READABLE = "CSV, TSV, Parquet, JSON or Excel (.xlsx)"

if TYPE_CHECKING:
    from _csv import Reader as _csv_reader


@dataclass(frozen=True)
class Sniffed:
    """The format of an upload and, for text, its encoding."""

    format: str  # csv, parquet, json, xlsx
    encoding: str = "utf-8"  # DuckDB's names: utf-8, utf-16, latin-1


def read_head(raw: Path) -> bytes:
    with raw.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def sniff(raw: Path, filename: str) -> Sniffed:
    """Decides the format from magic bytes first and the extension second; refuses what is not data."""
    head = read_head(raw)
    if not head.strip(b" \t\r\n" + _UTF8_BOM):
        raise InvalidInput(
            "EMPTY_FILE", f"'{filename}' is empty: upload a {READABLE} file with rows of data."
        )
    suffix = Path(filename).suffix.lower()
    if head.startswith(_PARQUET_MAGIC):
        return Sniffed("parquet")
    if suffix == ".parquet":
        raise InvalidInput(
            "UNREADABLE_FILE", f"'{filename}' is named .parquet but is not a Parquet file (no PAR1 header)."
        )
    if head.startswith(_ZIP_MAGIC):
        return Sniffed("xlsx")
    if head.startswith(_OLE_MAGIC):
        raise InvalidInput(
            "UNSUPPORTED_FORMAT", f"'{filename}' is an old Excel (.xls) file: save it as .xlsx or CSV first."
        )
    if head.startswith(_UTF16_BOMS):
        return Sniffed("csv", "utf-16")
    encoding = text_encoding(head)
    if _looks_binary(head):
        raise InvalidInput(
            "UNSUPPORTED_FORMAT",
            f"'{filename}' looks like binary data, not text; InsightX reads {READABLE} files.",
        )
    stripped = head.removeprefix(_UTF8_BOM).lstrip()
    if stripped[:1] in (b"[", b"{") or suffix in (".json", ".ndjson", ".jsonl"):
        return Sniffed("json", encoding)
    return Sniffed("csv", encoding)


def text_encoding(head: bytes) -> str:
    """utf-8 when the head decodes as UTF-8 (a BOM is fine), else latin-1, which decodes any byte."""
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the head is still UTF-8.
        if len(head) == HEAD_BYTES and exc.start >= len(head) - 3:
            return "utf-8"
        return "latin-1"


def _looks_binary(head: bytes) -> bool:
    """NUL bytes, or more than 1% control characters, mean this is not a text table."""
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROLS))  # C speed: a Python loop costs ~20 ms/MiB
    return controls > max(1, len(head) // 100)


def likely_delimiter(first_line: str) -> str:
    """The delimiter candidate that occurs most in the header line (comma on a tie or none)."""
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


@dataclass(frozen=True)
class Dialect:
    """How a delimited text file is written, as far as its head shows."""

    delimiter: str = ","
    backslash_escapes: bool = False  # quotes inside quoted fields written \" (else "" as RFC 4180 says)
    decimal_comma: bool = False  # numbers written 1234,56 (with `thousands` grouping, 1.234,56)
    thousands: str = ""
    wide: bool = False  # at least WIDE_COLUMNS fields in the first line

    def duckdb_options(self) -> str:
        """read_csv options for what DuckDB's sniffer does not find by itself, or finds slowly ('' for a
        plain file). A wide file gets its delimiter and quoting given: DuckDB's dialect sniffing costs
        about 1 ms a column per thousand rows (10 s for 10,000 columns of 1,000 rows; 1 s given them)."""
        options = ""
        if self.wide or self.decimal_comma:
            options += f", delim={_sql_char(self.delimiter)}"
        if self.wide or self.backslash_escapes:
            options += ", quote='\"', escape=" + ("'\\'" if self.backslash_escapes else "'\"'")
        if self.decimal_comma:
            options += ", decimal_separator=','"
            if self.thousands:
                options += f", thousands={_sql_char(self.thousands)}"
        return options

    def notes(self) -> list[str]:
        """What was detected, one sentence each, for the profile's source_notes."""
        notes = []
        if self.delimiter != ",":
            notes.append(f"Fields are separated by {_DELIMITER_NAMES[self.delimiter]}.")
        if self.decimal_comma:
            example, grouping = ("1.234,56", " and '.' groups thousands") if self.thousands else ("3,5", "")
            notes.append(
                f"Numbers are written with a decimal comma{grouping} (as in {example}):"
                " they were read as numbers."
            )
        if self.backslash_escapes:
            notes.append('Quotes inside quoted fields are escaped with a backslash (\\").')
        return notes

    def reader(self, text: str | TextIO) -> _csv_reader:
        """Python's csv reader of `text` in this dialect (both \" and "" read as a quote when backslashed)."""
        escape = "\\" if self.backslash_escapes else None
        source = io.StringIO(text) if isinstance(text, str) else text
        return csv.reader(source, delimiter=self.delimiter, escapechar=escape)


_DELIMITER_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons (';')", "|": "vertical bars ('|')"}
_DECIMAL_COMMA = re.compile(r"[-+]?(\d{1,3}(\.\d{3})+|\d+),\d+")
_THOUSANDS_DOT = re.compile(r"[-+]?\d{1,3}(\.\d{3})+(,\d+)?")
_DECIMAL_POINT = re.compile(r"[-+]?\d*\.\d+")
WIDE_COLUMNS = 200  # from this many fields in the first line, DuckDB is told the dialect, not left to sniff
_PROSE_WORDS = 8  # the median line of prose has at least this many words
_HEAD_ROWS = 2_000  # rows of the head looked at for the dialect


def _sql_char(char: str) -> str:
    return "'\t'" if char == "\t" else f"'{char}'"


def csv_dialect(head_text: str) -> Dialect:
    """The dialect of a text file from its head: delimiter, escapes, decimal comma and thousands mark."""
    delimiter = likely_delimiter(head_text.split("\n", 1)[0])
    backslash = '\\"' in head_text and _backslash_quotes_fit(head_text, delimiter)
    wide = head_text.split("\n", 1)[0].count(delimiter) + 1 >= WIDE_COLUMNS
    dialect = Dialect(delimiter, backslash, wide=wide)
    if delimiter == ",":
        return dialect
    comma = thousands = point = 0
    try:
        for number, row in enumerate(dialect.reader(_complete_lines(head_text))):
            if number >= _HEAD_ROWS:
                break
            for field in row:
                value = field.strip()
                if _DECIMAL_COMMA.fullmatch(value):
                    comma += 1
                if _THOUSANDS_DOT.fullmatch(value):
                    thousands += 1
                elif _DECIMAL_POINT.fullmatch(value):
                    point += 1
    except csv.Error:
        return dialect
    if comma and not point:  # a single 12.5 in the head means the points are decimal points
        return Dialect(delimiter, backslash, True, "." if thousands else "", wide)
    return dialect


def _backslash_quotes_fit(head_text: str, delimiter: str) -> bool:
    """Whether reading \\" as an escaped quote gives rows as long as the first more often than RFC 4180."""
    text = _complete_lines(head_text)

    def consistent(backslash: bool) -> float:
        """The share of rows as long as the first."""
        try:
            lengths = [len(r) for r in Dialect(delimiter, backslash).reader(text) if r]
        except csv.Error:
            return -1.0
        return lengths.count(lengths[0]) / len(lengths) if lengths else 0.0

    return consistent(True) >= consistent(False)


def _complete_lines(head_text: str) -> str:
    lines = head_text.splitlines(keepends=True)
    if len(lines) > 1 and not head_text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may end in the middle of a row
    return "".join(lines)


def ragged_row(head_text: str, dialect: Dialect | str) -> str | None:
    """A message naming the first row whose field count differs from the header's, if the head has one."""
    if isinstance(dialect, str):
        dialect = Dialect(dialect)
    reader = dialect.reader(_complete_lines(head_text))
    expected: int | None = None
    try:
        for row in reader:
            if not row or (expected is None and len(row) == 1):
                continue  # blank lines, and title lines before the header, are not rows
            if expected is None:
                expected = len(row)
                continue
            if len(row) != expected:
                shown = "tab" if dialect.delimiter == "\t" else repr(dialect.delimiter)
                return (
                    f"Row {reader.line_num} has {len(row)} fields but the header has {expected} "
                    f"(delimiter {shown}). Fix or remove that row and upload the file again."
                )
    except csv.Error:
        return None
    return None


def not_a_table(head_text: str, dialect: Dialect) -> str | None:
    """Why the head is not a table (prose, a letter, a log), or None. A table's rows mostly have the
    header's number of fields; prose has lines of one field or of a few accidental commas."""
    rows: list[list[str]] = []
    try:
        for row in dialect.reader(_complete_lines(head_text)):
            if row and any(field.strip() for field in row):
                rows.append(row)
            if len(rows) >= _HEAD_ROWS:
                break
    except csv.Error:
        return None
    if len(rows) < 3:
        return None
    words = sorted(len(" ".join(row).split()) for row in rows)
    if words[len(words) // 2] < _PROSE_WORDS:  # a line of a table rarely holds 8 words
        return None
    start = next((k for k, row in enumerate(rows) if len(row) > 1), None)
    if start is None:  # one field a line: a table of one text column has a short header line, prose not
        first = len(rows[0][0].split())
        return "its lines are sentences, not rows of fields" if first >= _PROSE_WORDS else None
    body = rows[start + 1 :]
    width = len(rows[start])
    matching = sum(1 for row in body if len(row) == width)
    if matching < len(body):
        shown = "tab" if dialect.delimiter == "\t" else repr(dialect.delimiter)
        return (
            f"its lines are sentences, not rows of fields (only {matching} of the {len(body)} lines after"
            f" its first line of {width} fields, delimiter {shown}, have as many)"
        )
    return None


def excerpt(text: str, limit: int = 80) -> str:
    """At most `limit` characters of `text` (an error message never echoes a whole line of the upload)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rewrite_as_rfc4180(
    raw: Path, encoding: str, dialect: Dialect, target: Path, cancelled: threading.Event | None = None
) -> Dialect:
    """Writes `raw` to `target` as RFC 4180 UTF-8 (quotes doubled), for a file that escapes quotes both
    ways (\\" and ""), which DuckDB cannot read in one dialect; returns the dialect of `target`. Python's
    csv module reads both at about 50 MB/s: only such files take this path."""
    python_encoding = {"utf-8": "utf-8-sig", "utf-16": "utf-16"}.get(encoding, encoding)
    with (
        raw.open(encoding=python_encoding, errors="replace", newline="") as source,
        target.open("w", encoding="utf-8", newline="") as sink,
    ):
        writer = csv.writer(sink, delimiter=dialect.delimiter, lineterminator="\n")
        for number, row in enumerate(dialect.reader(source)):
            if number % 10_000 == 0 and cancelled is not None and cancelled.is_set():
                raise InvalidInput("IMPORT_CANCELLED", "The import was cancelled by its caller.")
            writer.writerow(row)
    return replace(dialect, backslash_escapes=False)
