"""A chosen reading as a Plan: its SQL from the generator, and a composer that checks the result.

Why: the result is checked before it is stated: a reading whose filters matched no row, or whose result has
the wrong type for the question's form, is not answered ("a filter that matched no value is not dropped").
"""

from __future__ import annotations

from typing import Any

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.form import AGGREGATES, Query
from services.orchestrator.builtin.forms import (
    count_disagrees,
    many_for_one,
    question_form,
    type_disagrees,
)
from services.orchestrator.builtin.schema import Schema
from services.orchestrator.builtin.sqlgen import render
from services.orchestrator.plan import Answer, Plan, StepResults

NUMBER_OPS = ("count", "count_distinct", "difference", *AGGREGATES)


def answer_of(q: Query, results: StepResults) -> tuple[Any, str]:
    """(typed answer, answer_type) of a reading's result; (None, "none") when nothing matched."""
    table = results.sql_table
    if table is None or table.num_rows == 0 or table.num_columns == 0:
        return None, "none"
    values = [c.plain(v) for v in table.column(0).to_pylist()]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return None, "none"
    if q.op in NUMBER_OPS:
        v = values[0]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if q.op in ("count", "count_distinct") and v == 0 and q.filters:
            return None, "none"  # "how many … where X": X matched nothing, so 0 is not an answer
        return v, "number"
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        v = distinct[0]
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return v, "number" if numeric else "category"
    return distinct, "list"


def plan_of(q: Query, schema: Schema, confidence: float, follow_ups: list[str], question: str = "") -> Plan:
    """The plan that runs reading `q` and states its answer at `confidence`."""
    sql = render(q, schema)
    reading = q.describe()

    def compose(results: StepResults) -> Answer:
        value, kind = answer_of(q, results)
        candidate = Answer(text="", answer=value, answer_type=kind)
        form = question_form(question)
        if value is not None and (
            type_disagrees(form, candidate)
            or count_disagrees(question, candidate)
            or many_for_one(question, candidate)
        ):
            value = None  # the result does not have the kind (or number) of values asked for
        if value is None:
            return Answer(
                text=f"Nothing in the data matched my reading of the question ({reading}); I will not guess.",
                answer=None,
                answer_type="none",
                follow_ups=follow_ups,
                confidence=0.0,
                clarifications=[],
            )
        shown = ", ".join(c.fmt(v) for v in value) if isinstance(value, list) else c.fmt(value)
        return Answer(
            text=f"{reading.rstrip('?')}: **{shown}**.",
            answer=value,
            answer_type=kind,
            follow_ups=follow_ups,
            confidence=confidence,
        )

    return Plan(
        classification="SQL_ONLY",
        reasoning=f"Read as: {reading} (confidence {confidence:.0%}).",
        compose=compose,
        sql=sql,
    )
