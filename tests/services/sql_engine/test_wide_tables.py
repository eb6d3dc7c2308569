"""Wide uploads import and profile within bounds: 300, 2,000 and 10,000 columns (a 19 KB CSV of 2,000
numeric columns once took the engine to its 12 GiB cap); the profile says what it left out."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.dates import _plausible, date_conversions
from services.sql_engine.formats import WIDE_COLUMNS, csv_dialect
from services.sql_engine.importer import import_file
from services.sql_engine.profiler import PROFILE_MAX_COLUMNS

ALWAYS = 1 << 62


def _wide_csv(path: Path, columns: int, rows: int, text: bool = False) -> Path:
    draw = random.Random(columns * rows)
    with path.open("w") as handle:
        handle.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        for _ in range(rows):
            values = (f"w{draw.randint(0, 9)}" if text else str(draw.randint(0, 9)) for _ in range(columns))
            handle.write(",".join(values) + "\n")
    return path


@pytest.mark.parametrize(("columns", "rows"), [(300, 200), (2_000, 4), (10_000, 4)])
def test_a_wide_csv_imports_and_profiles_within_bounds(tmp_path: Path, columns: int, rows: int) -> None:
    raw = _wide_csv(tmp_path / "wide.csv", columns, rows)
    out = tmp_path / "out"
    out.mkdir()
    imported = import_file(raw, "wide.csv", out, profile_rows=ALWAYS)
    assert imported.row_count == rows and len(imported.columns) == columns
    profile = imported.profile
    assert profile is not None and not profile.failure
    assert len(profile.columns) == columns
    assert profile.columns[0].HasField("mean") and profile.columns[0].top_values
    if columns > PROFILE_MAX_COLUMNS:
        assert profile.partial and f"1,000 of {columns:,} columns" in profile.partial_reason
        assert not profile.columns[-1].HasField("mean")
    else:
        assert not profile.partial and profile.columns[-1].HasField("mean")
    assert len(profile.correlations) <= 66  # 12 measures at most


def test_a_wide_text_table_imports(tmp_path: Path) -> None:
    # Every text column was once parsed with 19 date formats in one statement: 10,000 of them ran for
    # minutes. Values that cannot be dates (w3) are now ruled out in Python first.
    raw = _wide_csv(tmp_path / "words.csv", 3_000, 4, text=True)
    out = tmp_path / "out"
    out.mkdir()
    imported = import_file(raw, "words.csv", out, profile_rows=ALWAYS)
    assert {t for _, t in imported.columns} == {"VARCHAR"}
    assert imported.profile.columns[0].role in (pb.SEMANTIC_ROLE_DIMENSION, pb.SEMANTIC_ROLE_FLAG)


def test_a_wide_file_is_given_its_dialect_instead_of_being_sniffed() -> None:
    header = ",".join(f"c{i}" for i in range(WIDE_COLUMNS)) + "\n"
    dialect = csv_dialect(header + ",".join("1" for _ in range(WIDE_COLUMNS)) + "\n")
    assert dialect.wide and "delim=','" in dialect.duckdb_options()
    assert not csv_dialect("a,b\n1,2\n").duckdb_options()


def test_the_date_check_looks_only_at_columns_that_could_hold_dates() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES ('w3', '2024-01-02', 'Jan 5 2024', '12'),"
        " ('w4', '2024-01-03', 'Feb 6 2024', '13')) v(word, iso, spelled, number)"
    )
    names = ["word", "iso", "spelled", "number"]
    assert _plausible(con, "t", names) == ["iso", "spelled"]
    assert date_conversions(con, "t", [(n, "VARCHAR") for n in names]) == {"iso": "DATE", "spelled": "DATE"}
