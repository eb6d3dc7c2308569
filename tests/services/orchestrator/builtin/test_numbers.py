"""Numbers in questions land on the right column: a unit after the number, the column's range, and a
comparison whose unit would otherwise be read as a column name. On a small payments table."""

from pathlib import Path
from typing import Any

import duckdb
import pytest

from services.orchestrator.builtin import plan_question
from services.orchestrator.plan import Answer, DatasetContext, Plan, StepResults
from tests.services.orchestrator.builtin.conftest import answer_or_best_reading, load_table
from tools.analyst_eval import sql_runner

HEADER = [
    "transaction id",
    "transaction type",
    "amount (INR)",
    "transaction_status",
    "fraud_flag",
    "hour_of_day",
    "sender_state",
    "is_weekend",
]
TYPES = ["P2P", "P2M", "Bill Payment"]
STATES = ["Kerala", "Kerala", "Kerala", "Goa", "Goa", "Punjab"]


def _rows() -> list[list[str]]:
    rows = []
    for i in range(300):
        amount = f"{(i * 7919) % 20000 + 10.5:.2f}"
        status = "FAILED" if i % 7 == 0 or (i % 5 == 0 and i % 2) else "SUCCESS"
        fraud = "1" if i % 13 == 0 else "0"
        rows.append(
            [
                f"TXN{i:05d}",
                TYPES[i % 3],
                amount,
                status,
                fraud,
                str((i * 5) % 24),
                STATES[i % 6],
                "1" if i % 7 in (5, 6) else "0",
            ]
        )
    return rows


def _loaded(csv: Path, session_id: str) -> tuple[DatasetContext, duckdb.DuckDBPyConnection]:
    """The analyst's context for `csv`, and a connection where both T and the table name read its data."""
    dataset, parquet = load_table(csv, session_id)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW T AS SELECT * FROM read_parquet('{parquet}')")
    con.execute(f"CREATE VIEW \"{dataset.table}\" AS SELECT * FROM read_parquet('{parquet}')")
    return dataset, con


@pytest.fixture(scope="module")
def payments(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetContext, duckdb.DuckDBPyConnection]:
    work = tmp_path_factory.mktemp("payments")
    csv = work / "payments.csv"
    csv.write_text("\n".join(",".join(r) for r in [HEADER, *_rows()]) + "\n")
    return _loaded(csv, "s")


def _ask(payments: tuple[DatasetContext, duckdb.DuckDBPyConnection], question: str) -> tuple[Plan, Answer]:
    dataset, con = payments
    plan = plan_question(question, dataset, run=sql_runner(con))
    results = StepResults()
    if plan.sql:
        results.sql_table = con.cursor().sql(plan.sql).to_arrow_table()
    return plan, plan.compose(results)


def _truth(payments: tuple[DatasetContext, duckdb.DuckDBPyConnection], sql: str) -> Any:
    return payments[1].execute(sql).fetchall()[0][0]


Payments = tuple[DatasetContext, duckdb.DuckDBPyConnection]
_FRAUD = "100.0 * avg(CASE WHEN fraud_flag = 1 THEN 1 ELSE 0 END)"
_FAILED = "100.0 * avg(CASE WHEN transaction_status = 'FAILED' THEN 1 ELSE 0 END)"


def test_a_number_outside_a_flags_range_goes_to_the_unit_named_after_it(payments: Payments) -> None:
    plan, answer = _ask(payments, "What is the fraud rate for transactions above 5000 INR?")
    want = _truth(payments, f'SELECT {_FRAUD} FROM T WHERE "amount (INR)" > 5000')
    assert '"fraud_flag" >' not in (plan.sql or "")
    assert answer.answer == pytest.approx(want, abs=1e-3)


def test_a_comparison_is_kept_when_its_unit_follows_the_number(payments: Payments) -> None:
    _plan, answer = _ask(payments, "What is the failure rate for amounts over 10000 INR?")
    want = _truth(payments, f'SELECT {_FAILED} FROM T WHERE "amount (INR)" > 10000')
    assert want != pytest.approx(_truth(payments, f"SELECT {_FAILED} FROM T"), abs=1e-3)
    assert answer.answer == pytest.approx(want, abs=1e-3)


def test_a_clock_time_filters_the_hour_column(payments: Payments) -> None:
    question = "What is the average amount for transactions made after 8 PM?"
    plan, _answer = _ask(payments, question)
    want = _truth(payments, 'SELECT avg("amount (INR)") FROM T WHERE hour_of_day >= 20')
    assert '"amount (INR)" >' not in (plan.sql or "")
    assert answer_or_best_reading(lambda: _ask(payments, question)[1]) == pytest.approx(want)


def test_a_word_before_a_range_names_its_column(payments: Payments) -> None:
    plan, answer = _ask(payments, "What is the average amount for transactions made at night (hour 0 to 5)?")
    want = _truth(payments, 'SELECT avg("amount (INR)") FROM T WHERE hour_of_day BETWEEN 0 AND 5')
    assert "BETWEEN 0 AND 5" in (plan.sql or "") and '"hour_of_day"' in (plan.sql or "")
    assert answer.answer == pytest.approx(want)


def test_a_percentile_is_a_quantile_not_a_filter(payments: Payments) -> None:
    plan, answer = _ask(payments, "What is the 90th percentile of the amount?")
    assert "= 90" not in (plan.sql or "")
    assert answer.answer == pytest.approx(
        _truth(payments, 'SELECT quantile_cont("amount (INR)", 0.9) FROM T')
    )


def test_a_quartile_with_a_filter(payments: Payments) -> None:
    _plan, answer = _ask(payments, "What is the upper quartile of amount for P2P transactions?")
    want = _truth(
        payments, 'SELECT quantile_cont("amount (INR)", 0.75) FROM T WHERE "transaction type" = \'P2P\''
    )
    assert answer.answer == pytest.approx(want)


def test_the_maximum_of_a_measure_is_the_value_not_a_row_id(payments: Payments) -> None:
    _plan, answer = _ask(payments, "What is the maximum amount for P2M transactions?")
    want = _truth(payments, 'SELECT max("amount (INR)") FROM T WHERE "transaction type" = \'P2M\'')
    assert answer.answer == pytest.approx(want)


def test_a_rate_compared_across_named_values_is_one_rate_each(payments: Payments) -> None:
    plan, answer = _ask(payments, "Compare the failure rate of P2P and P2M")
    rows = (
        payments[1]
        .execute(
            f'SELECT "transaction type", round({_FAILED}, 4) FROM T '
            "WHERE \"transaction type\" IN ('P2P', 'P2M') GROUP BY 1 ORDER BY 1"
        )
        .fetchall()
    )
    assert rows[0][1] != rows[1][1]
    assert answer.answer == [r[0] for r in rows]
    got = payments[1].execute((plan.sql or "").replace(f'"{payments[0].table}"', "T")).fetchall()
    assert [(g, pytest.approx(v)) for g, v in got] == rows
    _plan, pooled = _ask(payments, "What is the failure rate of P2P or P2M?")
    assert isinstance(pooled.answer, float)


@pytest.mark.xfail(
    strict=True,
    reason="the ranked shape's reading is right here, but the calibrated judge puts such readings at 0.33 "
    "(below the 0.5 threshold), so the analyst asks back instead",
)
def test_by_transaction_volume_ranks_the_named_groups_by_their_row_count(payments: Payments) -> None:
    _plan, answer = _ask(payments, "Top 2 states by transaction volume")
    rows = payments[1].execute("SELECT sender_state FROM T GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2")
    assert answer.answer == [r[0] for r in rows.fetchall()]


def test_a_share_of_one_group_that_falls_in_another_counts_the_second(payments: Payments) -> None:
    _plan, answer = _ask(payments, "What percentage of P2M transactions are in Kerala?")
    want = _truth(
        payments,
        "SELECT 100.0 * avg(CASE WHEN sender_state = 'Kerala' THEN 1 ELSE 0 END) FROM T "
        "WHERE \"transaction type\" = 'P2M'",
    )
    reverse = _truth(
        payments,
        "SELECT 100.0 * avg(CASE WHEN \"transaction type\" = 'P2M' THEN 1 ELSE 0 END) FROM T "
        "WHERE sender_state = 'Kerala'",
    )
    assert want != pytest.approx(reverse, abs=1e-3)
    assert answer.answer == pytest.approx(want, abs=1e-3)


def test_weekdays_against_weekends_gives_both_sides(payments: Payments) -> None:
    plan, answer = _ask(payments, "What is the average amount on weekdays vs weekends?")
    rows = (
        payments[1].execute('SELECT is_weekend, avg("amount (INR)") FROM T GROUP BY 1 ORDER BY 1').fetchall()
    )
    assert answer.answer == ["weekday", "weekend"]
    got = payments[1].execute((plan.sql or "").replace(f'"{payments[0].table}"', "T")).fetchall()
    assert [v for _, v in got] == pytest.approx([v for _, v in rows])


def test_is_a_measure_higher_on_weekends_is_a_real_comparison(payments: Payments) -> None:
    weekday, weekend = (
        payments[1]
        .execute(
            'SELECT avg("amount (INR)") FILTER (WHERE is_weekend = 0), '
            'avg("amount (INR)") FILTER (WHERE is_weekend = 1) FROM T'
        )
        .fetchone()
    )
    _plan, higher = _ask(payments, "Is the average amount higher on weekends than on weekdays?")
    _plan, lower = _ask(payments, "Is the average amount lower on weekends than on weekdays?")
    assert higher.answer is (weekend > weekday)
    assert lower.answer is (weekend < weekday)


def test_the_lower_quartile_is_no_minimum(payments: Payments) -> None:
    _plan, answer = _ask(payments, "What is the lower quartile of amount?")
    assert answer.answer == pytest.approx(
        _truth(payments, 'SELECT quantile_cont("amount (INR)", 0.25) FROM T')
    )


@pytest.mark.xfail(
    strict=True,
    reason="read right (hour_of_day >= 22), but judged at 0.40, under the 0.5 threshold: refused",
)
def test_a_clock_time_written_together_is_still_an_hour(payments: Payments) -> None:
    _plan, answer = _ask(payments, "How many transactions happened after 10pm?")
    assert answer.answer == _truth(payments, "SELECT count(*) FROM T WHERE hour_of_day >= 22")


def test_a_range_of_clock_times_filters_the_hours_between(payments: Payments) -> None:
    for question in (
        "How many transactions happened between 9 AM and 5 PM?",
        "How many transactions from 9am to 5pm?",
    ):
        want = _truth(payments, "SELECT count(*) FROM T WHERE hour_of_day >= 9 AND hour_of_day < 17")
        assert want != _truth(payments, "SELECT count(*) FROM T"), "the filter must matter"
        got = answer_or_best_reading(lambda q=question: _ask(payments, q)[1])  # type: ignore[misc]
        assert got == want, question


def test_a_range_of_clock_times_past_midnight_is_refused_not_guessed(payments: Payments) -> None:
    plan, answer = _ask(payments, "How many transactions happened between 10 PM and 6 AM?")
    assert plan.sql is None and answer.answer is None  # not a count of every row, nor an empty range


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetContext, duckdb.DuckDBPyConnection]:
    """Payments with a timestamp and no weekend flag: the day of the week says which days are weekends."""
    work = tmp_path_factory.mktemp("dated")
    csv = work / "dated.csv"
    lines = ["timestamp,amount"] + [
        f"2024-03-{1 + i % 28:02d} 10:00:00,{(i * 37) % 500 + 1}" for i in range(120)
    ]
    csv.write_text("\n".join(lines) + "\n")
    return _loaded(csv, "d")


def test_weekdays_against_weekends_from_a_date_column(dated: Payments) -> None:
    weekday, weekend = (
        dated[1]
        .execute(
            "SELECT avg(amount) FILTER (WHERE isodow(timestamp) <= 5), "
            "avg(amount) FILTER (WHERE isodow(timestamp) >= 6) FROM T"
        )
        .fetchall()[0]
    )
    assert weekday != pytest.approx(weekend)
    _plan, answer = _ask(dated, "Is the average amount higher on weekends than on weekdays?")
    assert answer.answer is (weekend > weekday)
