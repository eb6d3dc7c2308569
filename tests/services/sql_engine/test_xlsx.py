"""Workbooks read by calamine within bounds: real cells, not the claimed dimension; stray far cells,
zip bombs, time budget and a client that leaves end in clear errors, never in a padded or aborted read."""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import zipfile
from pathlib import Path

import duckdb
import openpyxl
import pytest

from common.errors import InvalidInput
from services.sql_engine import xlsx
from services.sql_engine.importer import import_file
from services.sql_engine.xlsx import read_sheet


def _workbook(rows: list[list[object]], far_cell: bool = False) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Data"
    for row in rows:
        sheet.append(row)
    if far_cell:
        sheet.cell(row=30_000, column=16_384, value=1)  # XFD30000
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _claim_dimension(data: bytes, ref: str) -> bytes:
    """The same workbook with its sheet's <dimension> rewritten to claim `ref`."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                content = re.sub(rb'<dimension ref="[^"]*"/>', f'<dimension ref="{ref}"/>'.encode(), content)
            target.writestr(item, content)
    return out.getvalue()


def _file(tmp_path: Path, data: bytes) -> Path:
    raw = tmp_path / "upload.bin"  # spooled uploads have no extension
    raw.write_bytes(data)
    return raw


TABLE = [["id", "label"]] + [[i, f"x{i}"] for i in range(3000)]


def test_a_claimed_dimension_of_16384_columns_reads_only_the_real_cells(tmp_path: Path) -> None:
    data = _claim_dimension(_workbook(TABLE), "A1:XFD30000")
    out = tmp_path / "out"
    out.mkdir()
    imported = import_file(_file(tmp_path, data), "bomb.xlsx", out)
    assert imported.columns == [("id", "BIGINT"), ("label", "VARCHAR")]
    assert imported.row_count == 3000
    last = duckdb.execute(
        f"SELECT * FROM read_parquet('{imported.parquet}') ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert last == (2999, "x2999")


def test_a_stray_far_cell_is_refused_before_calamine_allocates_its_rectangle(tmp_path: Path) -> None:
    # calamine would ask for 15 GB at once for A1:XFD30000 and abort the process when it fails.
    raw = _file(tmp_path, _workbook(TABLE, far_cell=True))
    with pytest.raises(InvalidInput) as caught:
        read_sheet(raw, "far.xlsx")
    assert caught.value.reason == "SHEET_TOO_LARGE"
    assert "30,000 rows by 16,384 columns" in str(caught.value) and "CSV" in str(caught.value)


def test_a_workbook_that_unpacks_past_the_bound_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    raw = _file(tmp_path, _workbook(TABLE))
    monkeypatch.setattr(xlsx, "MAX_XML_BYTES", 10_000)
    with pytest.raises(InvalidInput) as caught:
        read_sheet(raw, "big.xlsx")
    assert caught.value.reason == "SHEET_TOO_LARGE" and "unpacks to" in str(caught.value)


def test_reading_stops_when_the_client_has_left_or_the_budget_is_spent(tmp_path: Path) -> None:
    raw = _file(tmp_path, _workbook(TABLE))
    left = threading.Event()
    left.set()
    with pytest.raises(InvalidInput) as caught:
        read_sheet(raw, "book.xlsx", cancelled=left)
    assert caught.value.reason == "IMPORT_CANCELLED"
    with pytest.raises(InvalidInput) as caught:
        read_sheet(raw, "book.xlsx", budget_s=0.0)
    assert caught.value.reason == "IMPORT_TIMEOUT"


def test_cell_types_become_column_types(tmp_path: Path) -> None:
    rows = [
        ["whole", "fraction", "day", "moment", "flag", "mixed", None],
        [1, 2.5, dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4), True, "a", None],
        [2, 3.0, dt.datetime(2024, 1, 3), dt.datetime(2024, 1, 3), False, 7, None],
        [None, None, None, None, None, None, None],
        [3, 4.0, None, dt.datetime(2024, 1, 4), True, 2.5, None],
    ]
    table = read_sheet(_file(tmp_path, _workbook(rows)), "types.xlsx")
    assert table.column_names == ["whole", "fraction", "day", "moment", "flag", "mixed"]
    assert [str(t) for t in table.schema.types] == [
        "int64",
        "double",
        "date32[day]",
        "timestamp[us]",
        "bool",
        "string",
    ]
    assert table.num_rows == 3  # the empty row is skipped
    assert table.column("mixed").to_pylist() == ["a", "7", "2.5"]


def test_a_csv_import_is_interrupted_when_the_client_leaves(tmp_path: Path) -> None:
    raw = tmp_path / "big.csv"
    duckdb.execute(
        f"COPY (SELECT range AS id, range % 97 AS v, 'item ' || range AS label FROM range(3000000))"
        f" TO '{raw}' (FORMAT csv, HEADER)"
    )
    out = tmp_path / "out"
    out.mkdir()
    left = threading.Event()
    threading.Timer(0.3, left.set).start()
    with pytest.raises(InvalidInput) as caught:
        import_file(raw, "big.csv", out, threads=1, cancelled=left)
    assert caught.value.reason == "IMPORT_CANCELLED"
    assert not (out / "raw.parquet").exists()


def test_far_cells_in_rows_without_numbers_are_found_too(tmp_path: Path) -> None:
    # <row> may omit r="…"; its cells' references still place them at XFD1048576.
    data, out = _workbook([["a"]]), io.BytesIO()
    far = (
        b'<sheetData><row><c r="A1" t="inlineStr"><is><t>a</t></is></c></row>'
        b'<row><c r="XFD1048576"><v>1</v></c></row></sheetData>'
    )
    source = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                content = re.sub(rb"<sheetData>.*</sheetData>", far, content, flags=re.S)
            target.writestr(item, content)
    with pytest.raises(InvalidInput) as caught:
        read_sheet(_file(tmp_path, out.getvalue()), "rows.xlsx")
    assert caught.value.reason == "SHEET_TOO_LARGE" and "1,048,576 rows by 16,384 columns" in str(
        caught.value
    )


def test_the_profile_says_which_sheet_of_several_was_read(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Summary {2024}"
    book.active.append(["region", "sales"])
    book.active.append(["North", 10])
    book.create_sheet("Raw data").append(["x"])
    buffer = io.BytesIO()
    book.save(buffer)
    out = tmp_path / "out"
    out.mkdir()
    imported = import_file(_file(tmp_path, buffer.getvalue()), "book.xlsx", out, profile_rows=1000)
    assert list(imported.profile.source_notes) == [
        "The sheet 'Summary {2024}' was read; the workbook also has 'Raw data' (name one to read it)."
    ]
