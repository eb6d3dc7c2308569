"""What an upload is: its format from its first bytes (then its name), its text encoding, its dialect.

Everything here looks at a bounded head of the file, so it costs the same for 1 KiB and 1 GiB.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

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


def ragged_row(head_text: str, delimiter: str) -> str | None:
    """A message naming the first row whose field count differs from the header's, if the head has one."""
    lines = head_text.splitlines(keepends=True)
    if len(lines) > 1 and not head_text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may end in the middle of a row
    reader = csv.reader(io.StringIO("".join(lines)), delimiter=delimiter)
    expected: int | None = None
    try:
        for row in reader:
            if not row or (expected is None and len(row) == 1):
                continue  # blank lines, and title lines before the header, are not rows
            if expected is None:
                expected = len(row)
                continue
            if len(row) != expected:
                shown = "tab" if delimiter == "\t" else repr(delimiter)
                return (
                    f"Row {reader.line_num} has {len(row)} fields but the header has {expected} "
                    f"(delimiter {shown}). Fix or remove that row and upload the file again."
                )
    except csv.Error:
        return None
    return None
