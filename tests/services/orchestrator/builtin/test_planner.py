"""Each question shape, planned and run on the awkward HR table; expected values come from independent SQL."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services.orchestrator.builtin.conftest import Asked, answer_or_best_reading, every_reading_answered
from tools.analyst_eval import sql_runner

Ask = Callable[[str], Asked]
Truth = Callable[[str], Any]


def test_row_count(ask: Ask, truth: Truth) -> None:
    got = ask("How many rows are there?")
    assert got.answer.answer == truth("SELECT count(*) FROM T") == 60
    assert got.answer.answer_type == "number"


def test_average_with_a_value_filter_from_the_profile(ask: Ask, truth: Truth) -> None:
    got = ask("What is the average monthly income of employees in the research dept?")
    want = truth('SELECT avg("Monthly Income (USD)") FROM T WHERE "Department" = \'Research & Development\'')
    assert got.answer.answer == pytest.approx(want)
    assert "Research & Development" in got.answer.text and got.plan.classification == "SQL_ONLY"


def test_count_with_a_numeric_comparison_on_a_word_form(ask: Ask, truth: Truth) -> None:
    got = ask("How many employees are older than 35?")
    assert got.answer.answer == truth('SELECT count(*) FROM T WHERE "Age" > 35')


def test_median_min_max_and_std(ask: Ask, truth: Truth) -> None:
    assert ask("What is the median age?").answer.answer == pytest.approx(truth('SELECT median("Age") FROM T'))
    assert ask("What is the maximum monthly income?").answer.answer == truth(
        'SELECT max("Monthly Income (USD)") FROM T'
    )
    assert ask("What is the standard deviation of age?").answer.answer == pytest.approx(
        truth('SELECT stddev_samp("Age") FROM T')
    )


def test_group_argmax_with_an_aggregate(ask: Ask, truth: Truth) -> None:
    got = ask("Which department has the highest average monthly income?")
    want = truth('SELECT "Department" FROM T GROUP BY 1 ORDER BY avg("Monthly Income (USD)") DESC LIMIT 1')
    assert got.answer.answer == want and got.answer.answer_type == "category"


def test_top_and_bottom_k(ask: Ask, truth: Truth) -> None:
    got = ask("List the 3 highest monthly incomes.")
    assert got.answer.answer == [r[0] for r in got.rows] and len(got.answer.answer) == 3
    assert got.answer.answer[0] == truth('SELECT max("Monthly Income (USD)") FROM T')
    low = ask("List the 2 lowest ages.")
    assert low.answer.answer[0] == truth('SELECT min("Age") FROM T')


def test_most_common_value(ask: Ask, truth: Truth) -> None:
    got = ask("What is the most common device type?")
    assert got.answer.answer == truth(
        'SELECT "deviceType" FROM T GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1'
    )


def test_distinct_values(ask: Ask) -> None:
    got = ask("List the different departments.")
    assert sorted(got.answer.answer) == ["Human Resources", "Research & Development", "Sales"]
    assert ask("How many unique departments are there?").answer.answer == 3


def test_yes_no_between_two_groups(ask: Ask) -> None:
    got = ask("Is our research dept bigger than sales?")
    assert got.answer.answer is True and got.answer.answer_type == "boolean"
    assert ask("Are there fewer employees in HR than in sales?").answer.answer is False


def test_yes_no_aggregate_against_a_number(ask: Ask, truth: Truth) -> None:
    avg = truth('SELECT avg("Age") FROM T')
    assert ask("Is the average age above 30?").answer.answer is (avg > 30)
    assert ask("Is the highest monthly income negative?").answer.answer is False


def test_are_there_any(ask: Ask) -> None:
    assert ask("Are there any employees in HR?").answer.answer is True
    assert ask("Is there anyone older than 90?").answer.answer is False


def test_failure_rate_and_rate_by_group_with_a_chart(ask: Ask, truth: Truth) -> None:
    got = ask("What is the failure rate?")
    want = truth("SELECT 100.0 * avg(CASE WHEN transaction_status = 'FAILED' THEN 1 ELSE 0 END) FROM T")
    assert got.answer.answer == pytest.approx(want, abs=1e-3)
    by = ask("What is the failure rate by device type?")
    assert by.answer.chart is not None and by.answer.chart["mark"] == "bar"
    assert len(by.rows) == 3


def test_breakdown_average_by_group(ask: Ask, truth: Truth) -> None:
    got = ask("Average monthly income by department")
    values = dict(got.rows)
    assert values["Sales"] == pytest.approx(
        truth('SELECT avg("Monthly Income (USD)") FROM T WHERE "Department" = \'Sales\'')
    )
    assert got.answer.chart is not None


def test_time_buckets_by_month_on_mixed_date_formats(ask: Ask, hr_table: object) -> None:
    got = ask("How many employees joined by month?")
    assert got.answer.chart is not None and got.answer.chart["mark"]["type"] == "line"
    assert [r[0] for r in got.rows] == ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06"]
    assert sum(r[1] for r in got.rows) == 60


def test_nulls_are_counted_as_missing(ask: Ask, truth: Truth) -> None:
    got = ask("How many rows have no age?")
    assert got.answer.answer == truth('SELECT count(*) - count("Age") FROM T') > 0


def test_correlation(ask: Ask, truth: Truth) -> None:
    got = ask("What is the correlation between age and monthly income?")
    assert got.answer.answer == pytest.approx(truth('SELECT corr("Age", "Monthly Income (USD)") FROM T'))


def test_outliers_and_significance_go_through_python(ask: Ask) -> None:
    out = ask("Are there outliers in monthly income?")
    assert out.plan.classification == "SQL_THEN_PY" and out.plan.python_on_sql_result
    assert isinstance(out.answer.answer, int)
    sig = ask("Is the difference in monthly income between departments statistically significant?")
    assert sig.plan.classification == "SQL_THEN_PY" and isinstance(sig.answer.answer, bool)
    assert "p =" in sig.answer.text


@pytest.mark.parametrize("question", ["What is blockchain?", "asdf", "Tell me a joke about penguins"])
def test_unanswerable_gives_null_and_help(ask: Ask, question: str) -> None:
    got = ask(question)
    assert got.answer.answer is None and got.answer.answer_type == "none"
    assert got.plan.classification == "EXPLAIN_ONLY" and got.plan.sql is None
    assert "Monthly Income (USD)" in got.answer.text and got.answer.follow_ups


def test_plan_accepts_history(hr_table: tuple) -> None:
    from services.orchestrator.builtin import plan_question

    plan = plan_question(
        "How many rows are there?", hr_table[0], history=[("user", "hi"), ("assistant", "hello")]
    )
    assert plan.sql is not None and "count(*)" in plan.sql


def test_rate_inside_a_group_against_elsewhere(ask: Ask, truth: Truth) -> None:
    got = ask("Is the failure rate higher on Android?")
    rate = "SELECT avg(CASE WHEN transaction_status = 'FAILED' THEN 1 ELSE 0 END) FROM T WHERE "
    inside = truth(rate + "\"deviceType\" = 'Android'")
    outside = truth(rate + "\"deviceType\" <> 'Android'")
    assert got.answer.answer is (inside > outside)


def test_row_order_first_distinct_values_and_first_rows(ask: Ask) -> None:
    got = ask("List the first 3 different departments found in the dataset.")
    assert got.answer.answer == ["Research & Development", "Sales", "Human Resources"]
    rows = ask("List the device types in the first 4 rows.")
    assert rows.answer.answer == ["Android", "iOS", "Web", "Android"]


def test_closest_to_a_number(ask: Ask, truth: Truth) -> None:
    got = ask("Which employee has a monthly income closest to 5000?")
    want = truth('SELECT "Employee ID" FROM T ORDER BY abs("Monthly Income (USD)" - 5000) LIMIT 1')
    assert got.answer.answer == want


@pytest.mark.parametrize(
    "question",
    [
        "What is the average BMI?",
        "How many people are smokers?",
        "What is the region of the youngest employee?",
        "Is the highest DailyRate equal to 1499?",
        "Is our research dept bigger than marketing?",
        "List the ages of employees with the 5 lowest charges.",
        "How many employees in Atlantis?",
    ],
)
def test_questions_about_data_that_is_not_there_get_no_guess(ask: Ask, question: str) -> None:
    got = ask(question)
    assert got.answer.answer is None, got.answer.text
    # either it names what is missing, or no reading is likely enough to state: never a number or a name
    assert got.answer.answer_type == "none"
    assert "could not answer" in got.answer.text or "not sure enough" in got.answer.text


def test_group_with_the_highest_rate(ask: Ask, truth: Truth) -> None:
    got = ask("Which department has the highest failure rate?")
    want = truth(
        'SELECT "Department" FROM T GROUP BY 1 '
        "ORDER BY avg(CASE WHEN transaction_status = 'FAILED' THEN 1 ELSE 0 END) DESC, 1 LIMIT 1"
    )
    assert got.answer.answer == want


def test_rate_on_one_side_of_than_against_the_other(ask: Ask, truth: Truth) -> None:
    rate = "SELECT avg(CASE WHEN transaction_status = 'FAILED' THEN 1 ELSE 0 END) FROM T WHERE "
    android, web = truth(rate + "\"deviceType\" = 'Android'"), truth(rate + "\"deviceType\" = 'Web'")
    assert ask("Is the failure rate on Android higher than on Web?").answer.answer is (android > web)


def test_month_names_and_camel_case_values(ask: Ask, truth: Truth) -> None:
    got = ask("How many employees joined in March?")
    assert got.answer.answer == truth('SELECT count(*) FROM T WHERE month("Joined On") = 3') == 10
    share = ask("What share of employees use iOS?")
    assert share.answer.answer == pytest.approx(
        truth("SELECT 100.0 * avg(CASE WHEN \"deviceType\" = 'iOS' THEN 1 ELSE 0 END) FROM T"), abs=1e-3
    )


def test_busiest_time_bucket_counts_rows(ask: Ask, truth: Truth) -> None:
    got = ask("What is the busiest month?")
    want = truth(
        "SELECT strftime(\"Joined On\", '%Y-%m') FROM T GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    assert got.answer.answer == want


def test_follow_up_replaces_the_value_of_the_previous_question(
    hr_table: tuple, con: Any, truth: Truth
) -> None:
    from services.orchestrator.builtin import plan_question
    from services.orchestrator.plan import StepResults

    history = [("user", "How many employees use Android?"), ("assistant", "20")]
    plan = plan_question("and iOS?", hr_table[0], history=history, run=sql_runner(con))
    if plan.sql is None:  # asked back: the follow-up's best reading must still be the swapped question
        with every_reading_answered():
            plan = plan_question("and iOS?", hr_table[0], history=history, run=sql_runner(con))
    assert plan.sql is not None and "'iOS'" in plan.sql and "Android" not in plan.sql
    answer = plan.compose(StepResults(sql_table=con.sql(plan.sql).to_arrow_table()))
    assert answer.answer == truth("SELECT count(*) FROM T WHERE \"deviceType\" = 'iOS'")
    assert "follow-up" in plan.reasoning
    alone = plan_question("and iOS?", hr_table[0], history=None)
    assert alone.sql is None or "Android" not in alone.sql


def test_key_columns_are_not_compared_by_a_partial_name(ask: Ask) -> None:
    # "employee" partially names `Employee ID`; 500 must not become a condition on the key
    got = ask("Did any employee earn more than 500000?")
    assert got.answer.answer is None or "Employee ID" not in (got.plan.sql or "")


def test_signs_and_least_used(ask: Ask, truth: Truth) -> None:
    # a count of 0 is seldom right in the train data, so the judge may ask back; its best reading counts 0
    assert (
        answer_or_best_reading(lambda: ask("How many employees have a negative monthly income?").answer) == 0
    )
    got = answer_or_best_reading(lambda: ask("Which device type is used the least?").answer)
    assert got == truth('SELECT "deviceType" FROM T GROUP BY 1 ORDER BY count(*), 1 LIMIT 1')


def test_values_counted_by_how_often_they_occur(ask: Ask, truth: Truth) -> None:
    got = ask("How many ages appear exactly once?")
    want = truth(
        'SELECT count(*) FROM (SELECT "Age" FROM T WHERE "Age" IS NOT NULL GROUP BY 1 HAVING count(*) = 1)'
    )
    assert got.answer.answer == want


def test_missing_values_per_column(ask: Ask, truth: Truth) -> None:
    got = ask("How many missing values are there in each column?")
    assert isinstance(got.answer.answer, list) and len(got.answer.answer) == 8
    assert got.answer.answer[2] == truth('SELECT count(*) - count("Age") FROM T') > 0


def test_typos_in_structure_words(ask: Ask, truth: Truth) -> None:
    got = ask("What is the avrage monthly incme?")
    assert got.answer.answer == pytest.approx(truth('SELECT avg("Monthly Income (USD)") FROM T'))


def test_dates_kept_as_text_still_bucket_by_month(tmp_path: Path) -> None:
    import duckdb

    from services.orchestrator.builtin import plan_question
    from services.orchestrator.plan import DatasetContext, StepResults
    from services.sql_engine.profiler import profile_parquet

    parquet = tmp_path / "t.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT 'o' || i AS id, strftime(DATE '2024-01-01' + (i * 7)::INTEGER, '%Y-%m-%d') "
        f"AS order_date, i AS qty FROM range(20) r(i)) TO '{parquet}' (FORMAT parquet)"
    ).fetchall()
    columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM '{parquet}'").fetchall()]
    assert dict(columns)["order_date"] == "VARCHAR"
    dataset = DatasetContext("s", "t", 20, columns, profile_parquet(parquet, columns, 20))
    con.execute(f"CREATE VIEW t AS SELECT * FROM '{parquet}'").fetchall()
    plan = plan_question("Total qty by month", dataset, run=sql_runner(con))
    assert plan.sql is not None and "TRY_CAST" in plan.sql
    answer = plan.compose(StepResults(sql_table=con.sql(plan.sql).to_arrow_table()))
    assert answer.answer[:2] == ["2024-01", "2024-02"] and answer.chart is not None


def test_quoted_header_is_a_column_not_a_value(ask: Ask, truth: Truth) -> None:
    got = ask("What is the average of 'Monthly Income (USD)'?")
    assert got.answer.answer == pytest.approx(truth('SELECT avg("Monthly Income (USD)") FROM T'))


def test_several_aggregates_and_share_of_values_set(ask: Ask, truth: Truth) -> None:
    got = ask("What are the average, median and maximum age?")
    assert got.answer.answer == pytest.approx(
        [
            truth('SELECT avg("Age") FROM T'),
            truth('SELECT median("Age") FROM T'),
            truth('SELECT max("Age") FROM T'),
        ]
    )
    share = ask("What share of rows have Age set?")
    assert share.answer.answer == pytest.approx(
        truth('SELECT 100.0 * count("Age") / count(*) FROM T'), abs=1e-3
    )


def test_possible_extremes_and_ranked_places(ask: Ask, truth: Truth) -> None:
    got = answer_or_best_reading(
        lambda: ask("How many employees have the second lowest possible age?").answer
    )
    second = truth('SELECT DISTINCT "Age" FROM T WHERE "Age" IS NOT NULL ORDER BY 1 LIMIT 1 OFFSET 1')
    assert got == truth(f'SELECT count(*) FROM T WHERE "Age" = {second}')


def test_rate_across_groups_keeps_the_event_on_its_own_column(ask: Ask) -> None:
    got = ask("Compare the failure rate across device types")
    assert got.plan.sql is not None and "transaction_status" in got.plan.sql
    assert len(got.rows) == 3 and any(rate > 0 for _, rate in got.rows)


def test_contains_words_and_any_rows_with_a_value(ask: Ask, truth: Truth) -> None:
    got = ask("Is there a department containing velop?")
    assert got.answer.answer is True and "LIKE '%velop%'" in (got.plan.sql or "")
    assert ask("Is there a department containing zebra?").answer.answer is False
    assert ask("Are there any ages?").answer.answer is True


def test_a_column_named_in_full_is_grouped_even_when_nearly_unique(ask: Ask) -> None:
    got = ask("How many rows are there for each Employee ID?")
    assert got.plan.sql is not None and "GROUP BY" in got.plan.sql and len(got.rows) == 60


def test_chi_square_between_two_categories(ask: Ask) -> None:
    got = ask("Is there a significant association between department and device type?")
    assert got.plan.classification == "SQL_THEN_PY" and "chi" in (got.plan.python_code or "")
    assert isinstance(got.answer.answer, bool) and "p =" in got.answer.text
