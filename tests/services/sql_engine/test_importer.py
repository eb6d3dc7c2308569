"""Every format imports, messy ones included; bad files are refused with a message and leave nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import duckdb
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import InvalidInput
from services.sql_engine.engine import SqlEngine
from services.sql_engine.importer import import_file, table_name_for
from services.sql_engine.profiler import profile_parquet
from tests.services.sql_engine.conftest import make_settings, spool_copy

ALWAYS = 1 << 62  # profile_rows that profiles every table while importing


def _import(
    tmp_path: Path, data: bytes, filename: str, sheet: str = ""
) -> tuple[list[tuple[str, str]], list]:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    imported = import_file(raw, filename, out, sheet=sheet)
    rows = duckdb.execute(f"SELECT * FROM read_parquet('{imported.parquet}')").fetchall()
    return imported.columns, rows


def _xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "columns", "first"),
    [
        (b"a,b\n1,x\n2,y\n", "plain.csv", [("a", "BIGINT"), ("b", "VARCHAR")], (1, "x")),
        (b"a\tb c\n1\tx y\n2\tz\n", "tabs.tsv", [("a", "BIGINT"), ("b c", "VARCHAR")], (1, "x y")),
        (b"a;b\n1;x\n2;y\n", "semi.csv", [("a", "BIGINT"), ("b", "VARCHAR")], (1, "x")),
        (b"\xef\xbb\xbfname,v\nx,1\ny,2\n", "bom.csv", [("name", "VARCHAR"), ("v", "BIGINT")], ("x", 1)),
        (
            "name,city\nJosé,Zürich\nAnna,Köln\n".encode("latin-1"),
            "latin.csv",
            [("name", "VARCHAR"), ("city", "VARCHAR")],
            ("José", "Zürich"),
        ),
        (
            "name,city\nJosé,Zürich\n".encode(),
            "utf8.csv",
            [("name", "VARCHAR"), ("city", "VARCHAR")],
            ("José", "Zürich"),
        ),
        (
            b'id,note\n1,"a, b"\n2,"say ""hi"""\n',
            "quoted.csv",
            [("id", "BIGINT"), ("note", "VARCHAR")],
            (1, "a, b"),
        ),
        (
            b"1,2.5,x\n2,3.5,y\n",
            "noheader.csv",
            [("column0", "BIGINT"), ("column1", "DOUBLE"), ("column2", "VARCHAR")],
            (1, 2.5, "x"),
        ),
        (
            b"Report of 2024\n\nid,amount\n1,2\n3,4\n",
            "preamble.csv",
            [("id", "BIGINT"), ("amount", "BIGINT")],
            (1, 2),
        ),
        (
            b'[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]',
            "array.json",
            [("a", "BIGINT"), ("b", "VARCHAR")],
            (1, "x"),
        ),
        (
            b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n',
            "lines.ndjson",
            [("a", "BIGINT"), ("b", "VARCHAR")],
            (1, "x"),
        ),
    ],
)
def test_text_formats_import(
    tmp_path: Path, data: bytes, filename: str, columns: list[tuple[str, str]], first: tuple
) -> None:
    got_columns, rows = _import(tmp_path, data, filename)
    assert got_columns == columns
    assert rows[0] == first


def test_column_names_are_kept_as_given(tmp_path: Path) -> None:
    columns, _ = _import(tmp_path, b'"amount (INR)",select,"Order Date"\n1,a,2024-01-01\n', "x.csv")
    assert [name for name, _ in columns] == ["amount (INR)", "select", "Order Date"]
    assert columns[2][1] == "DATE"


def test_mixed_date_formats_become_dates_and_timestamps(tmp_path: Path) -> None:
    data = (
        b"id,day,moment,code\n"
        b"1,2012/01/01,2020-01-01T10:00:00,2012\n"
        b"2,Jan 1 2000,2020-01-02 11:30:00,2013\n"
        b"3,2001-02-03,,2014\n"
    )
    columns, rows = _import(tmp_path, data, "dates.csv")
    assert dict(columns) == {"id": "BIGINT", "day": "DATE", "moment": "TIMESTAMP", "code": "BIGINT"}
    assert [r[1] for r in rows] == [dt.date(2012, 1, 1), dt.date(2000, 1, 1), dt.date(2001, 2, 3)]
    assert rows[1][2] == dt.datetime(2020, 1, 2, 11, 30)


def test_text_that_is_only_partly_dates_stays_text(tmp_path: Path) -> None:
    columns, _ = _import(tmp_path, b"id,when\n1,2012/01/01\n2,soon\n", "partly.csv")
    assert dict(columns)["when"] == "VARCHAR"


def test_a_late_value_that_breaks_the_sniffed_type_still_imports(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,x\n" * 30_000 + b"hello,y\n"
    columns, rows = _import(tmp_path, data, "late.csv")
    assert dict(columns)["a"] == "VARCHAR"
    assert len(rows) == 30_001


def test_parquet_imports(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3], "label": ["a", "b", "c"]}), buffer)
    columns, rows = _import(tmp_path, buffer.getvalue(), "data.parquet")
    assert columns == [("x", "BIGINT"), ("label", "VARCHAR")]
    assert rows == [(1, "a"), (2, "b"), (3, "c")]


def test_xlsx_first_sheet_and_named_sheet(tmp_path: Path) -> None:
    data = _xlsx(
        {
            "First": [
                ["Region", "Amount", "Day"],
                ["North", 10, dt.datetime(2024, 1, 2)],
                ["South", 2.5, None],
            ],
            "Second": [[None], ["code", "ok"], ["a", True], ["b", False]],
        }
    )
    columns, rows = _import(tmp_path, data, "book.xlsx")
    assert columns == [("Region", "VARCHAR"), ("Amount", "DOUBLE"), ("Day", "DATE")]
    assert rows == [("North", 10.0, dt.date(2024, 1, 2)), ("South", 2.5, None)]
    columns, rows = _import(tmp_path, data, "book.xlsx", sheet="Second")
    assert columns == [("code", "VARCHAR"), ("ok", "BOOLEAN")]
    assert rows == [("a", True), ("b", False)]
    with pytest.raises(InvalidInput) as caught:
        _import(tmp_path, data, "book.xlsx", sheet="Missing")
    assert caught.value.reason == "SHEET_NOT_FOUND" and "First" in caught.value.message


def test_table_names_are_sanitized_stems() -> None:
    assert table_name_for("Sales 2024 (final).csv") == "sales_2024_final"
    assert table_name_for("2024.csv") == "t_2024"
    assert table_name_for("../../etc/passwd") == "passwd"
    assert table_name_for("") == "data"


def _truncated_parquet() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(1000))}), buffer)
    return buffer.getvalue()[:300]


@pytest.mark.parametrize(
    ("data", "filename", "reason", "hint"),
    [
        (b"", "empty.csv", "EMPTY_FILE", "empty"),
        (b"\n\n  \n", "blank.csv", "EMPTY_FILE", "empty"),
        (b"a,b,c\n", "header.csv", "EMPTY_TABLE", "no rows"),
        (_truncated_parquet(), "cut.parquet", "UNREADABLE_FILE", "PARQUET"),
        (b"not parquet at all", "fake.parquet", "UNREADABLE_FILE", "not a Parquet file"),
        (bytes(range(256)) * 40, "junk.csv", "UNSUPPORTED_FORMAT", "binary"),
        (b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n", "ragged.csv", "RAGGED_ROWS", "Row 3 has 2 fields"),
        (b"a,b,c\n" + b"1,2,3\n" * 30_000 + b"4,5\n", "late_ragged.csv", "RAGGED_ROWS", "has 2 fields"),
        (b'[{"a": 1}, {"a": 2}', "cut.json", "UNREADABLE_FILE", "JSON"),
        (b"PK\x03\x04 not really a workbook", "fake.xlsx", "UNREADABLE_FILE", "xlsx"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old.xls", "UNSUPPORTED_FORMAT", ".xlsx"),
    ],
)
def test_bad_files_are_refused_with_an_actionable_message(
    engine: SqlEngine, data: bytes, filename: str, reason: str, hint: str
) -> None:
    raw = spool_copy(engine, data)
    with pytest.raises(InvalidInput) as caught:
        engine.import_dataset(raw, filename)
    assert caught.value.reason == reason
    assert hint in caught.value.message
    raw.unlink()
    assert not list((engine.settings.data_dir / "spool").iterdir()), "the import left a work folder"
    assert not list((engine.settings.data_dir / "sessions").iterdir())


def test_an_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=1000)
    from common.store import LocalDatasetStore

    engine = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    try:
        raw = spool_copy(engine, b"a,b\n" + b"1,2\n" * 500)
        with pytest.raises(InvalidInput) as caught:
            engine.import_dataset(raw, "big.csv")
        assert caught.value.reason == "FILE_TOO_LARGE"
        assert "INSIGHTX_MAX_UPLOAD_BYTES" in caught.value.message
        assert not list((settings.data_dir / "sessions").iterdir())
    finally:
        engine.close()


def test_the_stored_dataset_is_identified_by_its_content_hash(engine: SqlEngine, sales_file: Path) -> None:
    import hashlib

    record, _ = engine.import_dataset(spool_copy(engine, sales_file), sales_file.name)
    stored = engine.store.parquet_path(record.session_id)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == record.dataset_hash
    assert stored.parent.name == "data" and [p.name for p in stored.parent.iterdir()] == ["raw.parquet"]
    assert record.table == "sales_2024"
    assert record.row_count == 6


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (
            b"id,day,moment,code,city\n1,2012/01/01,2020-01-01T10:00:00,2012,x\n"
            b"2,Jan 1 2000,2020-01-02 11:30:00,2013,y\n3,2001-02-03,,2014,x\n",
            "dates.csv",
        ),
        ("name,city\nJosé,Zürich\nAnna,Köln\n".encode("latin-1"), "latin.csv"),
        (b"a,b\n" + b"1,x\n" * 30_000 + b"hello,y\n", "late.csv"),
        (b"Report of 2024\n\nid,amount\n1,2\n3,4\n1,2\n", "preamble.csv"),
    ],
)
def test_the_profile_made_while_importing_is_the_profile_of_the_parquet(
    tmp_path: Path, data: bytes, filename: str
) -> None:
    """The profile made while importing (small tables) is the profile made later from the stored file
    (large tables): both paths give the same message."""
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data)
    imported = import_file(raw, filename, tmp_path, profile_rows=ALWAYS)
    assert imported.profile is not None
    assert len(imported.profile.columns) == len(imported.columns)
    assert imported.profile == profile_parquet(imported.parquet, imported.columns, imported.row_count)
    again = tmp_path / "again"
    again.mkdir()
    assert import_file(raw, filename, again, profile_rows=ALWAYS).profile == imported.profile  # samples too
    assert imported.sha256 == hashlib.sha256(imported.parquet.read_bytes()).hexdigest()


def test_a_table_above_the_inline_limit_is_stored_unprofiled(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_bytes(b"a,b\n" + b"1,x\n2,y\n" * 50)
    out = tmp_path / "out"
    out.mkdir()
    imported = import_file(raw, "rows.csv", out, profile_rows=99)
    assert imported.row_count == 100 and imported.profile is None and imported.parquet.exists()
    exactly = tmp_path / "exactly"
    exactly.mkdir()
    assert import_file(raw, "rows.csv", exactly, profile_rows=100).profile is not None


def test_a_ragged_csv_leaves_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_bytes(b"a,b\n1,2\n" + b"3,4\n" * 5000 + b"5,6,7\n")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInput) as caught:
        import_file(raw, "ragged.csv", out, profile_rows=ALWAYS)
    assert caught.value.reason == "RAGGED_ROWS"
    assert not (out / "raw.parquet").exists()
