"""The analyst looks at what its top readings compute before it decides (`denotation`, `planner.settle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from services.orchestrator.builtin import denotation
from services.orchestrator.builtin.planner import PROBED_READINGS, plan_question, prepare, settle
from services.orchestrator.builtin.reader import Candidate
from services.orchestrator.plan import DatasetContext, StepResults


def test_agreement_counts_the_same_answer_across_readings() -> None:
    values = [3, 3.0, "Sales", None, " sales", [1, 2], [2, 1]]
    assert denotation.agreement(values) == [1, 1, 1, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("question", "value", "kind", "expected", "absent"),
    [
        ("How many rows are there?", None, "none", "den:none=1", "den:kind=number"),
        ("List the top 3 cities by population.", ["a", "b", "c", "d"], "list", "den:len_vs_asked=more", ""),
        ("List the top 3 cities by population.", ["a", "b", "c"], "list", "den:len_vs_asked=equal", ""),
        ("How many players scored more than 20?", 20, "number", "den:stated_in_question=number", ""),
        ("How many players are there?", 2.5, "number", "den:integral=no", "den:integral=yes"),
        ("How many players are there?", 10, "number", "den:row_count=1", ""),
        ("Is Sales the largest department?", "Sales", "category", "den:stated_in_question=text", ""),
    ],
)
def test_a_result_is_described_by_what_it_is(
    question: str, value: Any, kind: str, expected: str, absent: str
) -> None:
    features = denotation.features(question, value, kind, agrees=0, rows=10)
    assert features[expected] == 1.0
    assert any(k.startswith(expected + "&form=") for k in features)  # each also conjoined with the form
    if absent:
        assert absent not in features


def _candidates(n: int) -> list[Candidate]:
    return [Candidate(query=None) for _ in range(n)]


def test_an_empty_top_result_gives_way_to_the_next_one_that_has_a_result() -> None:
    seen = denotation.Seen("q", _candidates(3), [(None, "none"), None, (7, "number")], 10)
    assert seen.chosen() == 2  # the second was not run (a sandbox step), so it is passed over too
    ranked = [(cand, 0.5 - i / 10) for i, cand in enumerate(seen.readings)]
    assert [c for c, _ in seen.reordered(ranked)] == [seen.readings[2], seen.readings[0], seen.readings[1]]
    assert seen.features_at(1) == {"den:unrun": 1.0}


def test_a_top_result_is_kept_when_it_has_an_answer_or_none_has() -> None:
    assert denotation.Seen("q", _candidates(2), [(1, "number"), (2, "number")], 10).chosen() == 0
    assert denotation.Seen("q", _candidates(2), [(None, "none"), (None, "none")], 10).chosen() == 0


def test_a_reading_and_the_next_that_agree_are_marked() -> None:
    seen = denotation.Seen("How many?", _candidates(3), [(5, "number"), (5, "number"), (4, "number")], 10)
    assert seen.features_at(0)["den:same_as_next=yes"] == 1.0
    assert seen.features_at(0)["den:agrees=1"] == 1.0
    assert seen.features_at(1)["den:same_as_next=no"] == 1.0


def test_value_of_reads_a_result_as_the_plan_would(hr_table: tuple[DatasetContext, Path]) -> None:
    cand = next(c for c in prepare("How many rows are there?", hr_table[0]).top() if c.query is not None)
    assert denotation.value_of(cand, pa.table({"n": [42]})) == (42, "number")
    assert denotation.value_of(cand, None) == (None, "none")


def test_the_top_readings_are_run_once_each_and_the_answer_is_one_of_them(
    hr_table: tuple[DatasetContext, Path], con: duckdb.DuckDBPyConnection
) -> None:
    dataset, _ = hr_table
    asked: list[str] = []

    def run(sql: str) -> pa.Table | None:
        asked.append(sql)
        return con.sql(sql).to_arrow_table()

    plan = plan_question(
        "What is the average monthly income of employees in the research dept?", dataset, run=run
    )
    assert 1 <= len(asked) <= PROBED_READINGS and len(set(asked)) == len(asked)
    assert plan.sql in asked
    answer = plan.compose(StepResults(sql_table=con.sql(plan.sql).to_arrow_table()))
    research = "Research & Development"
    truth = con.execute(
        f'SELECT avg("Monthly Income (USD)") FROM "{dataset.table}" WHERE "Department" = ?', [research]
    ).fetchall()
    assert answer.answer == pytest.approx(truth[0][0])


def test_with_nothing_run_the_words_alone_decide(hr_table: tuple[DatasetContext, Path]) -> None:
    dataset, _ = hr_table
    question = "How many rows are there?"
    assert settle(prepare(question, dataset), {}).sql == plan_question(question, dataset).sql
    assert plan_question(question, dataset).sql is not None


def test_readings_whose_sql_all_failed_are_not_answered(hr_table: tuple[DatasetContext, Path]) -> None:
    plan = plan_question("How many rows are there?", hr_table[0], run=lambda sql: None)
    assert plan.sql is None and "asking instead of guessing" in plan.reasoning
