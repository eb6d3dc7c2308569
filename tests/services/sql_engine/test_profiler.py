"""The profile: roles, counts, statistics, top values, date spans, correlations, health, questions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb
import pytest

from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine import profiler
from services.sql_engine.profiler import profile_parquet


def _profile(tmp_path: Path, select: str) -> pb.DatasetProfile:
    path = tmp_path / "t.parquet"
    duckdb.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    columns = [(r[0], r[1]) for r in duckdb.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]
    rows = duckdb.execute(f"SELECT count(*) FROM '{path}'").fetchall()[0][0]
    return profile_parquet(path, columns, rows)


DATA = """
SELECT i AS customer_id,
       ['North', 'South', 'East'][1 + i % 3] AS region,
       (i % 50) * 2.0 AS amount,
       (i % 50) * 4.0 + 1 AS doubled,
       DATE '2024-01-01' + (i % 90)::INT AS order_date,
       i % 2 = 0 AS paid,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'note ' || i END AS note
FROM range(1000) t(i)
"""


def test_roles_and_statistics(tmp_path: Path) -> None:
    profile = _profile(tmp_path, DATA)
    by_name = {c.name: c for c in profile.columns}
    roles = {name: pb.SemanticRole.Name(c.role) for name, c in by_name.items()}
    assert roles == {
        "customer_id": "SEMANTIC_ROLE_IDENTIFIER",
        "region": "SEMANTIC_ROLE_DIMENSION",
        "amount": "SEMANTIC_ROLE_MEASURE",
        "doubled": "SEMANTIC_ROLE_MEASURE",
        "order_date": "SEMANTIC_ROLE_TEMPORAL",
        "paid": "SEMANTIC_ROLE_FLAG",
        "note": "SEMANTIC_ROLE_TEXT",
    }
    region = by_name["region"]
    assert [(v.value, v.count) for v in region.top_values] == [("North", 334), ("East", 333), ("South", 333)]
    assert region.distinct_count == 3 and region.null_count == 0
    amount = by_name["amount"]
    assert (amount.min, amount.max, amount.mean) == (0.0, 98.0, 49.0)
    assert amount.HasField("std") and amount.p25 <= amount.p50 <= amount.p75
    assert abs(amount.p50 - 49.0) < 2.5
    assert by_name["note"].null_count == 250
    assert (by_name["order_date"].min_time, by_name["order_date"].max_time) == ("2024-01-01", "2024-03-30")
    assert not by_name["region"].HasField("mean")
    assert len(by_name["region"].samples) > 0


def test_correlations_are_between_measures_only(tmp_path: Path) -> None:
    profile = _profile(tmp_path, DATA)
    pairs = {(c.column_a, c.column_b): c.coefficient for c in profile.correlations}
    assert pairs == {("amount", "doubled"): 1.0}


def test_health_score_names_its_reasons(tmp_path: Path) -> None:
    clean = _profile(
        tmp_path, "SELECT i AS id, i * 1.5 AS v, ['a','b','c'][1 + i % 3] AS g FROM range(100) t(i)"
    )
    assert clean.health_score == 100.0 and not list(clean.health_reasons)
    messy = _profile(
        tmp_path,
        "SELECT CASE WHEN i % 2 = 0 THEN NULL ELSE i END AS v, 'same' AS k, NULL::INT AS empty, 1 AS dup "
        "FROM range(100) t(i) UNION ALL SELECT 1, 'same', NULL, 1",
    )
    reasons = " ".join(messy.health_reasons)
    assert messy.health_score < 80
    assert "empty" in reasons and "single value" in reasons and "duplicates" in reasons


def test_a_score_of_100_has_nothing_to_report(tmp_path: Path) -> None:
    # one duplicate and one empty cell among 20,000 rows: tiny shares, but each is a reason, so not 100
    profile = _profile(
        tmp_path,
        "SELECT i AS id, CASE WHEN i = 7 THEN NULL ELSE i * 1.5 END AS v FROM range(20000) t(i) "
        "UNION ALL SELECT 3, 4.5",
    )
    assert list(profile.health_reasons) and profile.health_score <= 98.0


def test_suggested_questions_use_the_columns(tmp_path: Path) -> None:
    questions = list(_profile(tmp_path, DATA).suggested_questions)
    assert questions[0] == "How many rows are there?"
    assert any("amount" in q and "region" in q for q in questions)
    assert any("order_date" in q for q in questions)


def test_names_that_need_quoting_profile(tmp_path: Path) -> None:
    profile = _profile(tmp_path, 'SELECT 1.5 AS "amount (INR)", \'x\' AS "select", [1, 2] AS "list col"')
    assert [c.name for c in profile.columns] == ["amount (INR)", "select", "list col"]


@pytest.mark.slow
def test_two_million_rows_profile_in_seconds_without_pandas(tmp_path: Path) -> None:
    select = DATA.replace("range(1000)", "range(2000000)")
    had_pandas = "pandas" in sys.modules
    started = time.perf_counter()
    profile = _profile(tmp_path, select)
    assert time.perf_counter() - started < 10
    assert len(profile.columns) == 7
    if not had_pandas:
        assert "pandas" not in sys.modules


def test_a_table_wider_than_64_columns_is_profiled(tmp_path: Path) -> None:
    parquet = tmp_path / "wide.parquet"
    columns = ", ".join(f"(range % {3 + i})::VARCHAR AS c{i}" for i in range(130))
    duckdb.sql(f"COPY (SELECT {columns} FROM range(500)) TO '{parquet}' (FORMAT parquet)")
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{parquet}'").fetchall()
    profile = profile_parquet(parquet, [(str(r[0]), str(r[1])) for r in described], 500)
    assert len(profile.columns) == 130
    last = profile.columns[129]
    assert last.name == "c129" and last.top_values and last.top_values[0].count == 4
    assert profile.columns[0].top_values[0].count == 167


def test_suggested_share_question_names_the_flags_rarer_value(tmp_path: Path) -> None:
    parquet = tmp_path / "status.parquet"
    duckdb.sql(
        "COPY (SELECT range AS id, CASE WHEN range % 20 = 0 THEN 'FAILED' ELSE 'SUCCESS' END AS status,"
        f" range * 1.5 AS amount FROM range(400)) TO '{parquet}' (FORMAT parquet)"
    )
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{parquet}'").fetchall()
    profile = profile_parquet(parquet, [(str(r[0]), str(r[1])) for r in described], 400)
    assert "What share of rows have status = FAILED?" in profile.suggested_questions


def _wide_parquet(tmp_path: Path, columns: int, rows: int, kind: str = "numeric") -> tuple[Path, list]:
    parquet = tmp_path / f"wide-{columns}-{rows}-{kind}.parquet"
    value = "(hash(range * {k}) % 10)::BIGINT" if kind == "numeric" else "'w' || (hash(range * {k}) % 10)"
    select = ", ".join(f"{value.format(k=k + 1)} AS c{k}" for k in range(columns))
    duckdb.sql(f"COPY (SELECT {select} FROM range({rows})) TO '{parquet}' (FORMAT parquet)")
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{parquet}'").fetchall()
    return parquet, [(str(r[0]), str(r[1])) for r in described]


def test_a_wide_table_is_profiled_within_its_column_bound_and_says_so(tmp_path: Path) -> None:
    parquet, columns = _wide_parquet(tmp_path, profiler.PROFILE_MAX_COLUMNS + 500, 4)
    profile = profile_parquet(parquet, columns, 4)
    assert [c.name for c in profile.columns] == [name for name, _ in columns]  # every column is listed
    assert profile.partial and "1,000 of 1,500 columns" in profile.partial_reason
    profiled, listed = profile.columns[999], profile.columns[1000]
    assert profiled.HasField("mean") and profiled.top_values and profiled.samples
    assert not listed.HasField("mean") and not listed.top_values and listed.type == "BIGINT"
    assert len(profile.correlations) <= profiler.MAX_CORRELATED * (profiler.MAX_CORRELATED - 1) // 2
    assert not profile.failure


def test_a_profile_past_its_time_budget_is_partial_not_failed(tmp_path: Path) -> None:
    parquet, columns = _wide_parquet(tmp_path, 20, 1000)
    profile = profile_parquet(parquet, columns, 1000, budget_s=0.0)
    assert profile.partial and "time budget" in profile.partial_reason
    assert len(profile.columns) == 20 and not profile.columns[0].HasField("mean")


def test_a_statement_running_at_the_end_of_the_budget_is_interrupted(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute("SET threads=1")
    # A view that takes far longer than the budget to aggregate (a cross join of 10^5 x 10^5 rows).
    con.execute("CREATE VIEW slow AS SELECT a.range * b.range AS x FROM range(100000) a, range(100000) b")
    started = time.perf_counter()
    profile = profiler.profile_relation(con, "slow", [("x", "BIGINT")], 10**10, budget_s=0.5)
    assert time.perf_counter() - started < 20  # interrupted, not run to its end (minutes)
    assert profile.partial and "time budget" in profile.partial_reason
    assert con.execute("SELECT 42").fetchone() == (42,)  # the connection still works afterwards


def test_correlations_are_between_the_most_informative_measures(tmp_path: Path) -> None:
    # 14 constant numeric columns first, then three that vary: correlations are found among the three.
    constant = ", ".join(f"1.0 AS k{i}" for i in range(14))
    select = f"SELECT {constant}, range * 1.5 AS a, range * -2.5 AS b, (range % 7) * 1.0 AS c FROM range(300)"
    profile = _profile(tmp_path, select)
    pairs = {(c.column_a, c.column_b): c.coefficient for c in profile.correlations}
    assert pairs[("a", "b")] == -1.0 and ("a", "c") in pairs
    assert not any(name.startswith("k") for pair in pairs for name in pair)


def test_top_values_counted_in_python_match_duckdbs(tmp_path: Path) -> None:
    # A small table's top values come from its rows in Python; a large one's from GROUPING SETS: the same.
    parquet, columns = _wide_parquet(tmp_path, 6, 300, kind="text")
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM '{parquet}'")
    cols = [profiler._Col(i, n, t) for i, (n, t) in enumerate(columns)]
    first = profiler._first_rows(con, "t", cols)
    assert first.num_rows == 300
    stats = {f"nd_{c.index}": 10 for c in cols}
    budget = profiler._Budget(con, 60)
    try:
        scanned = profiler._scan_top_values(con, "t", cols, stats, budget)
    finally:
        budget.close()
    assert profiler._top_values_in(cols, cols, first) == scanned


def test_source_notes_come_from_the_parquet_metadata(tmp_path: Path) -> None:
    parquet = tmp_path / "noted.parquet"
    notes = ["Separator ';' detected.", 'Quotes escaped as \\".']
    duckdb.sql(f"COPY (SELECT 1 AS a) TO '{parquet}' (FORMAT parquet{profiler.notes_option(notes)})")
    profile = profile_parquet(parquet, [("a", "INTEGER")], 1)
    assert list(profile.source_notes) == notes


def test_long_cells_are_cut_in_the_profile(tmp_path: Path) -> None:
    # 50 rows of 1 MB cells: the profile shows their first VALUE_CHARS characters, not megabytes.
    profile = _profile(tmp_path, "SELECT repeat(chr(97 + (range % 3)::INT), 1000000) AS blob FROM range(50)")
    blob = profile.columns[0]
    assert blob.samples and all(len(v) == profiler.VALUE_CHARS for v in blob.samples)
    assert [v.count for v in blob.top_values] == [17, 17, 16]
    assert profile.ByteSize() < 10_000
