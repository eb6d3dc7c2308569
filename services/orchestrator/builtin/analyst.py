"""Question → plan for the shapes the built-in analyst knows; an honest `None` answer otherwise."""

from __future__ import annotations

import re

from services.orchestrator.plan import Answer, DatasetContext, Plan, StepResults

_ROW_COUNT = re.compile(
    r"\bhow many (rows|records|entries|lines|transactions|items|observations)\b|\b(number|count) of (rows|records)\b"
    r"|\brow count\b",
    re.IGNORECASE,
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_question(question: str, dataset: DatasetContext) -> Plan:
    """The plan for `question` over `dataset`."""
    if _ROW_COUNT.search(question):
        return _row_count_plan(dataset)
    return _unanswerable_plan(dataset)


def _row_count_plan(dataset: DatasetContext) -> Plan:
    def compose(results: StepResults) -> Answer:
        count = int(results.sql_table.column(0)[0].as_py()) if results.sql_table is not None else 0
        return Answer(
            text=f"There are **{count:,}** rows in `{dataset.table}`.",
            answer=count,
            answer_type="number",
            confidence=1.0,
        )

    return Plan(
        classification="SQL_ONLY",
        reasoning="Counting rows needs one aggregate over the table.",
        sql=f"SELECT count(*) AS row_count FROM {_quote(dataset.table)}",
        compose=compose,
    )


def _unanswerable_plan(dataset: DatasetContext) -> Plan:
    names = ", ".join(f"`{name}`" for name, _ in dataset.columns[:8])

    def compose(_: StepResults) -> Answer:
        return Answer(
            text=(
                "I could not match this question to the data. I can answer counts, sums, averages, "
                f"breakdowns and comparisons over columns such as {names}."
            ),
            answer=None,
            answer_type="none",
            confidence=0.0,
        )

    return Plan(
        classification="EXPLAIN_ONLY",
        reasoning="No column, value or aggregate in the question matched the dataset.",
        compose=compose,
    )
