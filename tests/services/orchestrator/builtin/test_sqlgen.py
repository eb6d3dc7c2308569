"""The generator, table-driven: a typed reading → SQL, and that SQL's result against an independent query."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from services.orchestrator.builtin.form import Filter, Query
from services.orchestrator.builtin.schema import Schema, schema_of
from services.orchestrator.builtin.sqlgen import ident, literal, not_a_totals_row, render
from services.orchestrator.plan import DatasetContext


@pytest.fixture(scope="module")
def schema(hr_table: tuple[DatasetContext, Path]) -> Schema:
    return schema_of(hr_table[0])


def _col(schema: Schema, name: str):
    col = schema.by_name(name)
    assert col is not None
    return col


def test_quoting_happens_in_one_place() -> None:
    assert ident('we"ird name') == '"we""ird name"'
    assert literal("O'Brien") == "'O''Brien'"


def test_rendered_sql_is_exact(schema: Schema) -> None:
    sales = Filter(_col(schema, "Department"), "=", "Sales", (0, 1), verified=True)
    q = Query("avg", measure=_col(schema, "Age"), filters=(sales,))
    guard = not_a_totals_row(schema)
    assert guard is not None and '"Employee ID"' in guard  # the first text column
    assert render(q, schema) == (
        f'SELECT avg("Age") AS answer FROM {ident(schema.table)} t WHERE "Department" = \'Sales\' AND {guard}'
    )


def test_a_totals_row_is_not_ranked_or_counted() -> None:
    from services.orchestrator.builtin.schema import Column

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('a', 3), ('b', 5), ('Total', 8)) v(k, n)")
    s = Schema("t", 3, [Column("k", "VARCHAR", 0), Column("n", "BIGINT", 1)])
    assert con.execute(render(Query("argmax", answer=s.columns[0], measure=s.columns[1]), s)).fetchall() == [
        ("b",)
    ]
    assert con.execute(render(Query("count"), s)).fetchall() == [(2,)]


@pytest.mark.parametrize(
    ("build", "truth"),
    [
        (
            lambda s: Query(
                "avg",
                measure=_col(s, "Age"),
                filters=(Filter(_col(s, "Department"), "=", "Sales", (0, 1), verified=True),),
            ),
            "SELECT avg(Age) FROM T WHERE Department = 'Sales'",
        ),
        (
            lambda s: Query("count", filters=(Filter(_col(s, "Age"), ">", 40.0, (0, 1)),)),
            "SELECT count(*) FROM T WHERE Age > 40",
        ),
        (
            lambda s: Query("argmax", answer=_col(s, "Employee ID"), measure=_col(s, "Monthly Income (USD)")),
            'SELECT "Employee ID" FROM T ORDER BY "Monthly Income (USD)" DESC LIMIT 1',
        ),
        (
            lambda s: Query(
                "first", answer=_col(s, "Employee ID"), filters=(Filter(None, "match", "human", (0, 1)),)
            ),
            "SELECT \"Employee ID\" FROM T WHERE Department ILIKE '%human%' LIMIT 1",
        ),
        (
            lambda s: Query(
                "next",
                answer=_col(s, "Employee ID"),
                filters=(Filter(_col(s, "Employee ID"), "match", "E010", (0, 1)),),
            ),
            "SELECT 'E011'",
        ),
        (
            lambda s: Query(
                "pick_max",
                answer=_col(s, "Department"),
                measure=_col(s, "Age"),
                pair=(
                    Filter(_col(s, "Department"), "=", "Sales", (0, 1), verified=True),
                    Filter(_col(s, "Department"), "=", "Human Resources", (2, 3), verified=True),
                ),
            ),
            "SELECT Department FROM T WHERE Department IN ('Sales', 'Human Resources') AND Age IS NOT NULL "
            "ORDER BY Age DESC LIMIT 1",
        ),
    ],
)
def test_rendered_sql_computes_what_the_reading_says(
    schema: Schema,
    con: duckdb.DuckDBPyConnection,
    build,
    truth: str,
) -> None:
    got = con.execute(render(build(schema), schema)).fetchall()[0][0]
    want = con.execute(truth.replace("FROM T", f"FROM {ident(schema.table)}")).fetchall()[0][0]
    assert got == want


def test_numbers_stored_as_text_are_read_as_numbers() -> None:
    """`"12,467"` and `"17 years"` are numbers for a measure (WTQ-style cells)."""
    from services.orchestrator.builtin.schema import Column

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES ('a', '12,467'), ('b', '17 years'), ('c', 'n/a')) v(k, n)"
    )
    s = Schema("t", 3, [Column("k", "VARCHAR", 0), Column("n", "VARCHAR", 1)])
    q = Query("sum", measure=s.columns[1])
    assert con.execute(render(q, s)).fetchall()[0][0] == 12484


@pytest.mark.parametrize(
    ("build", "truth"),
    [
        (
            lambda s: Query(
                "argmax", answer=_col(s, "Employee ID"), measure=_col(s, "Monthly Income (USD)"), limit=3
            ),
            'SELECT "Employee ID" FROM T ORDER BY "Monthly Income (USD)" DESC LIMIT 3',
        ),
        (
            lambda s: Query("group_argmax", answer=_col(s, "Department"), measure=_col(s, "Age"), agg="sum"),
            "SELECT Department FROM T GROUP BY 1 ORDER BY sum(Age) DESC, 1 LIMIT 1",
        ),
        (
            lambda s: Query("group_argmin", answer=_col(s, "Department"), measure=_col(s, "Age"), agg="avg"),
            "SELECT Department FROM T GROUP BY 1 ORDER BY avg(Age) ASC, 1 LIMIT 1",
        ),
        (
            lambda s: Query("group_argmax", answer=_col(s, "Department"), agg="count", limit=2),
            "SELECT Department FROM T GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2",
        ),
    ],
)
def test_rankings_keep_their_size_and_groups_rank_by_an_aggregate(
    schema: Schema, con: duckdb.DuckDBPyConnection, build, truth: str
) -> None:
    got = con.execute(render(build(schema), schema)).fetchall()
    want = con.execute(truth.replace("FROM T", f"FROM {ident(schema.table)}")).fetchall()
    assert [r[0] for r in got] == [r[0] for r in want]


def _tiny(rows: str, columns: list[tuple[str, str]]) -> tuple[duckdb.DuckDBPyConnection, Schema]:
    from services.orchestrator.builtin.schema import Column

    con = duckdb.connect()
    names = ", ".join(n for n, _ in columns)
    con.execute(f"CREATE TABLE t AS SELECT * FROM (VALUES {rows}) v({names})")
    return con, Schema("t", 0, [Column(n, ty, i) for i, (n, ty) in enumerate(columns)])


def test_a_value_not_in_the_profile_matches_whole_cells_when_the_table_has_them() -> None:
    con, s = _tiny(
        "('China', 10), ('Hong Kong, China', 20), ('Chile', 30)", [("country", "VARCHAR"), ("pop", "BIGINT")]
    )
    china = Filter(None, "match", "china", (0, 1))
    q = Query("sum", measure=s.columns[1], filters=(china,))
    assert con.execute(render(q, s)).fetchall() == [(10,)]
    # no cell equals "kong": the cells that contain it
    kong = Filter(s.columns[0], "=", "Kong", (0, 1))
    assert con.execute(render(Query("sum", measure=s.columns[1], filters=(kong,)), s)).fetchall() == [(20,)]


@pytest.mark.parametrize(
    ("dates", "kind"),
    [
        ("(DATE '2020-04-03', 1), (DATE '2020-05-01', 2), (DATE '2021-04-30', 4)", "DATE"),
        ("('3 Apr', 1), ('1 May', 2), ('April 30', 4)", "VARCHAR"),
    ],
)
def test_a_month_filter_on_dates_and_on_dates_written_as_text(dates: str, kind: str) -> None:
    con, s = _tiny(dates, [("day", kind), ("n", "BIGINT")])
    april = Filter(s.columns[0], "month", 4.0, (0, 1), verified=True)
    assert con.execute(render(Query("sum", measure=s.columns[1], filters=(april,)), s)).fetchall() == [(5,)]
    assert april.describe() == "`day` is in April"
