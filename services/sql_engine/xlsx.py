"""Reads one sheet of an .xlsx workbook into an Arrow table, with calamine (Rust), within bounds.

A sheet's `<dimension>` may claim 16,384 columns and a million rows for a few real cells; openpyxl padded
every row to the claim and took minutes. calamine trusts the real cells, but holds the rectangle that
spans them densely: two cells at A1 and XFD30000 make it ask for 15 GB at once, and Rust aborts the whole
process when that fails. So the chosen sheet's XML is scanned first, streaming, for the extent of the
cells that hold a value, and a sheet whose extent passes MAX_CELLS is refused before calamine opens it.
The reading then stops at a time budget, or as soon as the caller says the client has left.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import threading
import time
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pyarrow as pa

from common.errors import InvalidInput

MAX_CELLS = 5_000_000  # rows x columns of the sheet's real extent: calamine holds it densely (~150 MB a
# million cells with the Python values made of it, 2 s on this machine)
MAX_XML_BYTES = 1 << 30  # the workbook's XML, uncompressed as its zip directory declares it
BUDGET_S = 60.0  # reading one sheet (scan, load, typing) stops past this
_CHECK_EVERY = 1024  # rows between two looks at the clock and at the caller's cancel event
_SCAN_CHUNK = 1 << 20
_CELL = re.compile(rb'<(?:\w+:)?c\s[^>]*?\br="([A-Z]{1,3})[0-9][^>]*?(?<!/)>')  # a cell with content
_CELL_ROW = re.compile(rb'<(?:\w+:)?c\s[^>]*?\br="[A-Z]{1,3}([0-9]{1,7})"[^>]*?(?<!/)>')
_ROW = re.compile(rb'<(?:\w+:)?row\s[^>]*?\br="([0-9]{1,7})"')


def read_sheet(
    raw: Path,
    filename: str,
    sheet: str = "",
    *,
    cancelled: threading.Event | None = None,
    budget_s: float = BUDGET_S,
    notes: list[str] | None = None,
) -> pa.Table:
    """The named sheet (the first worksheet when `sheet` is empty), its first non-empty row taken as the
    header. Raises InvalidInput for an unreadable or oversized workbook, IMPORT_TIMEOUT past `budget_s`
    and IMPORT_CANCELLED once `cancelled` is set. `notes` gets a sentence on which sheet was read when
    the workbook has several."""
    from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum

    deadline = time.monotonic() + budget_s
    _check_sizes(raw, filename)
    try:
        book = CalamineWorkbook.from_path(str(raw))
    except (CalamineError, OSError, ValueError) as exc:
        raise _unreadable(filename, exc) from exc
    try:
        worksheets = [m.name for m in book.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
        if sheet and sheet not in book.sheet_names:
            raise InvalidInput(
                "SHEET_NOT_FOUND",
                f"'{filename}' has no sheet named '{sheet}'; its sheets are: {', '.join(book.sheet_names)}.",
            )
        if not sheet and not worksheets:
            raise InvalidInput("EMPTY_TABLE", f"'{filename}' has no worksheet.")
        name = sheet or worksheets[0]
        if notes is not None and len(book.sheet_names) > 1:
            others = ", ".join(f"'{n}'" for n in book.sheet_names if n != name)
            notes.append(
                f"The sheet '{name}' was read; the workbook also has {others} (name one to read it)."
            )
        rows, columns = _extent(raw, filename, name, deadline, cancelled)
        if rows * columns > MAX_CELLS:
            raise InvalidInput(
                "SHEET_TOO_LARGE",
                f"The sheet '{name}' of '{filename}' spans {rows:,} rows by {columns:,} columns"
                f" ({rows * columns:,} cells; at most {MAX_CELLS:,} are read from a workbook). Remove the"
                " stray cells far from the table, or save the sheet as CSV and upload that.",
            )
        try:
            data = book.get_sheet_by_name(name)
            header, values = _columns(data.iter_rows(), filename, deadline, cancelled)
        except CalamineError as exc:
            raise _unreadable(filename, exc) from exc
    finally:
        book.close()
    if header is None:
        raise InvalidInput("EMPTY_TABLE", f"The sheet of '{filename}' holds no data.")
    keep = [
        i
        for i, column_name in enumerate(header)
        if not column_name.startswith("\x00") or any(v is not None for v in values[i])
    ]
    names = [header[i].lstrip("\x00") for i in keep]
    return pa.table({n: _array(values[i]) for n, i in zip(_dedupe(names), keep, strict=True)})


def _unreadable(filename: str, exc: BaseException) -> InvalidInput:
    return InvalidInput(
        "UNREADABLE_FILE", f"'{filename}' is not a readable .xlsx workbook ({type(exc).__name__})."
    )


def _check_sizes(raw: Path, filename: str) -> None:
    """Refuses a workbook whose XML declares more than MAX_XML_BYTES uncompressed (a zip bomb: calamine
    reads the shared strings whole)."""
    try:
        with zipfile.ZipFile(raw) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(filename, exc) from exc
    if declared > MAX_XML_BYTES:
        raise InvalidInput(
            "SHEET_TOO_LARGE",
            f"'{filename}' unpacks to {declared / (1 << 20):,.0f} MiB of XML (at most"
            f" {MAX_XML_BYTES >> 20:,} MiB are read). Save the sheet as CSV and upload that.",
        )


def _extent(
    raw: Path, filename: str, sheet: str, deadline: float, cancelled: threading.Event | None
) -> tuple[int, int]:
    """Rows and columns from A1 to the farthest cell that holds a value, streaming the sheet's XML."""
    try:
        with zipfile.ZipFile(raw) as archive:
            part = _sheet_part(archive, sheet)
            if part is None:  # named in a way not followed here: the largest worksheet bounds it
                parts = [
                    n for n in archive.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")
                ]
                extents = [_part_extent(archive, p, filename, deadline, cancelled) for p in parts]
                return max(extents, key=lambda e: e[0] * e[1], default=(0, 0))
            return _part_extent(archive, part, filename, deadline, cancelled)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, ElementTree.ParseError) as exc:
        raise _unreadable(filename, exc) from exc


def _part_extent(
    archive: zipfile.ZipFile, part: str, filename: str, deadline: float, cancelled: threading.Event | None
) -> tuple[int, int]:
    """Rows and columns up to the farthest cell with content in one sheet's XML, read in chunks."""
    max_row = max_column = seen = 0
    tail = b""
    with archive.open(part) as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            _check(filename, deadline, cancelled)
            text = tail + chunk
            cut = text.rfind(b"<")  # a tag cut by the chunk's end is scanned with the next one
            if cut > 0 and text.find(b">", cut) < 0:
                scanned, tail = text[:cut], text[cut:]
            else:
                scanned, tail = text, b""
            # findall, set and map run in C: a Python step per cell tripled the scan's cost.
            letters = set(_CELL.findall(scanned))
            if letters:
                max_column = max(max_column, *map(_column_number, letters))
            rows = _ROW.findall(scanned)
            if rows:
                max_row = max(max_row, *map(int, rows))
            closed = scanned.count(b"row>")  # </row>: every row that is not self-closing
            seen += closed
            if closed > len(rows):  # rows without r="…": their cells say where they are
                numbers = _CELL_ROW.findall(scanned)
                if numbers:
                    max_row = max(max_row, *map(int, numbers))
    return max(max_row, seen), max_column


def _sheet_part(archive: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip path of the named sheet's XML (workbook.xml names it, its relationships locate it)."""
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    relation = None
    for element in workbook.iter():
        if element.tag.endswith("}sheet") and element.get("name") == sheet:
            relation = next((v for k, v in element.attrib.items() if k.endswith("}id")), None)
    if relation is None:
        return None
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for element in rels.iter():
        if element.tag.endswith("}Relationship") and element.get("Id") == relation:
            target = element.get("Target", "")
            path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")
            return path if path in archive.namelist() else None
    return None


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


def _check(filename: str, deadline: float, cancelled: threading.Event | None) -> None:
    if cancelled is not None and cancelled.is_set():
        raise InvalidInput("IMPORT_CANCELLED", f"The import of '{filename}' was cancelled by its caller.")
    if time.monotonic() > deadline:
        raise InvalidInput(
            "IMPORT_TIMEOUT",
            f"Reading '{filename}' took longer than its {BUDGET_S:g} s budget. Save the sheet as CSV and"
            " upload that.",
        )


def _columns(
    rows: Any, filename: str, deadline: float, cancelled: threading.Event | None
) -> tuple[list[str] | None, list[list[Any]]]:
    """The header and the values by column; calamine's empty cells ('') become None. Rows are kept as
    calamine gives them and turned into columns by zip (C speed: 1 us a cell less than a loop)."""
    header: list[str] | None = None
    kept: list[list[Any]] = []
    for count, values in enumerate(rows):
        if count % _CHECK_EVERY == 0:
            _check(filename, deadline, cancelled)
        if not any(_present(v) for v in values):
            continue  # blank rows, before the header or between rows
        if header is None:
            header = _header(values)
        else:
            kept.append(values)
    if header is None:
        return None, []
    width = len(header)
    padded = (row if len(row) == width else (list(row) + [""] * width)[:width] for row in kept)
    columns = [list(column) for column in zip(*padded, strict=True)] or [[] for _ in header]
    return header, [[None if v == "" else v for v in column] for column in columns]


def _present(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


def _header(values: list[Any]) -> list[str]:
    """Header names as given; unnamed columns are marked so empty trailing ones can be dropped."""
    names = []
    for index, value in enumerate(values):
        text = "" if value is None else _text(value).strip()
        names.append(text or f"\x00column{index}")
    return names


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def _array(values: list[Any]) -> pa.Array:
    """A typed column: dates stay dates, whole numbers integers, numbers numbers; anything mixed is text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, dt.date) for v in present):
        if all(not isinstance(v, dt.datetime) or v.time() == dt.time(0) for v in present):
            return pa.array([_day(v) for v in values], pa.date32())
        return pa.array([_moment(v) for v in values], pa.timestamp("us"))
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if present and numbers and all(float(v).is_integer() and abs(v) < 2**53 for v in present):
        return pa.array([int(v) if v is not None else None for v in values], pa.int64())
    if present and numbers:
        return pa.array([float(v) if v is not None else None for v in values], pa.float64())
    return pa.array([None if v is None else _text(v) for v in values], pa.string())


def _day(value: dt.date | None) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else value


def _moment(value: dt.date | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time(0))


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # a header or code written 2024 is "2024", not "2024.0"
    return str(value)
