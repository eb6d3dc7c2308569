"""Reads one sheet of an .xlsx workbook into an Arrow table (openpyxl streams it; no pandas)."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from common.errors import InvalidInput


def read_sheet(raw: Path, filename: str, sheet: str = "") -> pa.Table:
    """The named sheet (the first when `sheet` is empty), its first non-empty row taken as the header."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    # A file object, not a path: openpyxl refuses paths whose extension it does not know (spooled uploads).
    handle = raw.open("rb")
    try:
        book = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        handle.close()
        raise InvalidInput(
            "UNREADABLE_FILE", f"'{filename}' is not a readable .xlsx workbook ({type(exc).__name__})."
        ) from exc
    try:
        if sheet and sheet not in book.sheetnames:
            raise InvalidInput(
                "SHEET_NOT_FOUND",
                f"'{filename}' has no sheet named '{sheet}'; its sheets are: {', '.join(book.sheetnames)}.",
            )
        rows = book[sheet] if sheet else book.worksheets[0]
        header: list[str] | None = None
        columns: list[list[Any]] = []
        for values in rows.iter_rows(values_only=True):
            if header is None:
                if not any(v is not None and str(v).strip() for v in values):
                    continue
                header = _header(values)
                columns = [[] for _ in header]
                continue
            if not any(v is not None and (not isinstance(v, str) or v.strip()) for v in values):
                continue
            for index in range(len(header)):
                columns[index].append(values[index] if index < len(values) else None)
    finally:
        book.close()
        handle.close()
    if header is None:
        raise InvalidInput("EMPTY_TABLE", f"The sheet of '{filename}' holds no data.")
    keep = [
        i
        for i, name in enumerate(header)
        if not name.startswith("\x00") or any(v is not None for v in columns[i])
    ]
    names = [header[i].lstrip("\x00") for i in keep]
    return pa.table({name: _array(columns[i]) for name, i in zip(_dedupe(names), keep, strict=True)})


def _header(values: tuple[Any, ...]) -> list[str]:
    """Header names as given; unnamed columns are marked so empty trailing ones can be dropped."""
    names = []
    for index, value in enumerate(values):
        text = "" if value is None else str(value).strip()
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
    """A typed column: dates stay dates, numbers numbers; anything mixed becomes text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, dt.datetime) for v in present):
        if all(v.time() == dt.time(0) for v in present):
            return pa.array([v.date() if v is not None else None for v in values], pa.date32())
        return pa.array(values, pa.timestamp("us"))
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([float(v) if v is not None else None for v in values], pa.float64())
    return pa.array([None if v is None else _text(v) for v in values], pa.string())


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)
