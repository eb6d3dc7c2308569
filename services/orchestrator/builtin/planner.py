"""Question shapes → SQL (and sandbox code) with a composer; the first shape that fits answers.

Each shape is a function `(Question) -> Plan | None`. Shapes are tried from the most specific to the most
general; a question no shape fits gets an honest "cannot answer" plan, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from services.orchestrator.builtin import followups
from services.orchestrator.builtin.aggregates import (
    _aggregate,
    _distinct,
    _lookup,
    _row_count,
    _several_aggregates,
)
from services.orchestrator.builtin.breakdowns import _breakdown, _rate, _time_buckets
from services.orchestrator.builtin.context import _Ctx, _target, _why, unanswerable
from services.orchestrator.builtin.guards import (
    _contains_filters,
    _entity_filters,
    _guarded,
    _known_word,
    _null_filters,
    _unknown_identifier,
    _with_guess_count,
)
from services.orchestrator.builtin.lexicon import GENERIC
from services.orchestrator.builtin.question import add_flag_filters, parse
from services.orchestrator.builtin.ranking import _closest, _ranked
from services.orchestrator.builtin.rows import _frequency, _per_column, _row_order
from services.orchestrator.builtin.schema import Schema, schema_of
from services.orchestrator.builtin.stats import _correlation, _outliers, _significance
from services.orchestrator.builtin.weekparts import _weekend_contrast
from services.orchestrator.plan import DatasetContext, Plan


def _boolean(ctx: _Ctx) -> Plan | None:
    from services.orchestrator.builtin import booleans

    if ctx.q.answer_type != "boolean":
        return None
    # a yes/no question gets a yes/no answer or an honest "cannot answer", never a number
    return booleans.plan(ctx) or unanswerable(
        ctx.schema, "the yes/no question does not map onto the columns."
    )


_SHAPES: list[Callable[[_Ctx], Plan | None]] = [
    _correlation,
    _outliers,
    _significance,
    _row_order,
    _frequency,
    _per_column,
    _closest,
    _weekend_contrast,
    _time_buckets,
    _boolean,
    _several_aggregates,
    _rate,
    _breakdown,
    _distinct,
    _ranked,
    _row_count,
    _aggregate,
    _lookup,
]


def plan_question(
    question: str, dataset: DatasetContext, history: list[tuple[str, str]] | None = None
) -> Plan:
    """The plan for `question` over `dataset`: the first shape that fits, or an honest "cannot answer"."""
    schema = schema_of(dataset)
    resolved = followups.resolve(question, history, schema)
    plan = _plan_for(resolved, schema)
    if resolved != question:
        plan.reasoning = f"A follow-up, read as: “{resolved}”. {plan.reasoning}"
    return plan


def _plan_for(question: str, schema: Schema) -> Plan:
    q = parse(question, schema)
    ctx = _Ctx(q)
    _contains_filters(ctx)
    _entity_filters(ctx)
    _null_filters(ctx)
    target = _target(ctx)
    add_flag_filters(q, target.start if target is not None and q.answer_type != "boolean" else None)
    target = _target(ctx)
    asked = re.match(r"^\W*(what|which)\s+(is|are|was|were)?\s*(the\s+)?([a-z]+)\b", q.low)
    if asked is not None and asked.group(4) in q.uncovered():
        # "What is the region …" with no region in the data: what is asked for is missing
        return unanswerable(schema, f'I found no column for "{asked.group(4)}".')
    unknown = _unknown_identifier(q)
    if unknown is not None:
        return unanswerable(schema, f"there is no column named `{unknown}`.")
    listed = re.match(
        r"^\W*list\s+(all\s+)?(the\s+)?((top|bottom|first|last)\s+)?"
        r"(\d+\s+|two\s+|three\s+|four\s+|five\s+|ten\s+)?(?P<noun>[a-z]+)\b",
        q.low,
    )
    if (
        listed is not None
        and listed.group("noun") in q.uncovered()
        and not _known_word(schema, listed.group("noun"))
    ):
        return unanswerable(schema, f'I found no column for "{listed.group("noun")}".')
    generic_target = target is not None and all(
        t.stem in GENERIC for t in q.tokens[target.start : target.end]
    )
    qualifier = q.tokens[target.start - 1].text if target is not None and target.start > 0 else ""
    # "the most frequent brand name" where only `Name` exists: the qualifier is not in the data
    if (
        target is not None
        and generic_target
        and qualifier in q.uncovered()
        and not _known_word(schema, qualifier)
    ):
        return unanswerable(
            schema,
            f'I found no column for "{q.tokens[target.start - 1].text} '
            f'{q.text[q.tokens[target.start].start : q.tokens[target.end - 1].end]}".',
        )
    for shape in _SHAPES:
        plan = shape(ctx)
        if plan is not None:
            guesses = [f for f in q.filters if f.guess]
            if guesses and plan.sql:
                plan.sql = _with_guess_count(plan.sql, ctx, guesses)
                plan.compose = _guarded(plan.compose, schema, guesses)
            return plan
    return unanswerable(schema, _why(q))
