"""The decision: every reading of a question, ranked; the winner answers only when it is likely right.

The reader's typed readings and the first hand-written question shape that fits (each shape is a function
`(Question) -> Plan | None`, tried from the most specific to the most general) compete as candidates; the
scorer ranks them and states a calibrated confidence. Below the threshold, or when the question names
something the data lacks, the analyst asks back instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin import denotation, followups, scorer
from services.orchestrator.builtin.aggregates import (
    _aggregate,
    _distinct,
    _lookup,
    _row_count,
    _several_aggregates,
)
from services.orchestrator.builtin.breakdowns import _breakdown, _rate, _time_buckets
from services.orchestrator.builtin.clarify import asking, gated
from services.orchestrator.builtin.context import _Ctx, _target, _unexplained, _why, unanswerable
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
from services.orchestrator.builtin.parsed import plan_of
from services.orchestrator.builtin.question import Question, add_flag_filters, parse
from services.orchestrator.builtin.ranking import _closest, _ranked
from services.orchestrator.builtin.reader import Candidate, read, shape_candidate
from services.orchestrator.builtin.rows import _frequency, _per_column, _row_order
from services.orchestrator.builtin.schema import Schema, schema_of
from services.orchestrator.builtin.sqlgen import render
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


SqlRunner = Callable[[str], "pa.Table | None"]  # runs one SQL statement; None when the SQL failed


def plan_question(
    question: str,
    dataset: DatasetContext,
    history: list[tuple[str, str]] | None = None,
    run: SqlRunner | None = None,
) -> Plan:
    """The plan for `question` over `dataset`: the best reading when it wins clearly, else an honest question
    back (the top readings as clarifications). With `run`, the top readings are run first and the judge sees
    their results (`denotation`); without it the judge decides from the words alone."""
    shortlist = prepare(question, dataset, history)
    results = {sql: run(sql) for sql in shortlist.to_run()} if run is not None else None
    return settle(shortlist, results)


@dataclass
class Shortlist:
    """A question's readings, ranked, before any of them is run: `to_run` names the SQL that would let the
    judge see the top readings' results; `settle` then decides."""

    question: str  # as resolved (a follow-up rewritten)
    asked: str  # as the user typed it
    schema: Schema
    ranked: list[tuple[Candidate, float]]
    reason: str
    absent: bool

    def top(self) -> list[Candidate]:
        return [cand for cand, _ in self.ranked[:PROBED_READINGS]]

    def to_run(self) -> list[str]:
        """The SQL of the top readings that can be run without the sandbox, without repeats."""
        return list(dict.fromkeys(sql for sql in map(self._sql, self.top()) if sql))

    def _sql(self, cand: Candidate) -> str:
        if cand.query is not None:
            return render(cand.query, self.schema)
        if cand.plan is not None and cand.plan.sql and not cand.plan.python_code:
            return cand.plan.sql
        return ""

    def values(self, results: Mapping[str, pa.Table | None]) -> list[tuple[Any, str] | None]:
        """Each top reading's (answer, answer type) from its result; None when it was not run (a result of
        None is SQL that failed: that reading has no answer)."""
        out: list[tuple[Any, str] | None] = []
        for cand in self.top():
            sql = self._sql(cand)
            if not sql or sql not in results:
                out.append(None)
                continue
            out.append(denotation.value_of(cand, results[sql]))
        return out


PROBED_READINGS = 3  # how many of the top readings are run before the judge decides


def prepare(
    question: str, dataset: DatasetContext, history: list[tuple[str, str]] | None = None
) -> Shortlist:
    """The ranked readings of `question` (a follow-up first rewritten from the history)."""
    schema = schema_of(dataset)
    resolved = followups.resolve(question, history, schema)
    candidates, reason = readings(resolved, schema)
    absent = reason.startswith("absent:")
    reason = reason.split(":", 1)[1] if ":" in reason else reason
    return Shortlist(resolved, question, schema, scorer.ranked(candidates), reason, absent)


def settle(shortlist: Shortlist, results: Mapping[str, pa.Table | None] | None = None) -> Plan:
    """The decision over a shortlist, given the results of its `to_run` SQL (None: nothing was run)."""
    plan = _decide(shortlist, results)
    if shortlist.question != shortlist.asked:
        plan.reasoning = f"A follow-up, read as: “{shortlist.question}”. {plan.reasoning}"
    return plan


def readings(question: str, schema: Schema) -> tuple[list[Candidate], str]:
    """Every reading of `question`: the reader's typed queries, plus the plan of the first question shape
    that fits (as one more candidate); the ranker chooses among them. Also why no shape fitted, if none."""
    shaped, q, shape, guesses = shape_plan(question, schema)
    reading = read(question, schema, q.links)
    if shaped is None and shape.startswith("absent:"):
        for cand in reading.candidates:
            cand.features["shapes_found_absent"] = 1.0
    candidates = reading.candidates
    if shaped is not None:
        candidates.append(shape_candidate(question, shaped, shape, len(_unexplained(q)), guesses, q.links))
    else:
        for cand in candidates:
            cand.features["shapes_refused"] = 1.0
    return candidates, "" if shaped is not None else shape


def _decide(shortlist: Shortlist, results: Mapping[str, pa.Table | None] | None) -> Plan:
    """The top-ranked reading's plan when its calibrated confidence clears the threshold; else a refusal
    that offers the top two readings as questions to click. With results, a top reading whose result is
    empty gives way to the next one that has a result, and the judge sees what the readings computed."""
    model = scorer.ranker()
    question, schema, ranked_readings = shortlist.question, shortlist.schema, shortlist.ranked
    if not ranked_readings:
        return unanswerable(schema, _why(parse(question, schema)))
    if shortlist.absent:
        # the question names something the data does not have: never answered by another reading
        return asking(schema, [], 0.0, shortlist.reason)
    seen = None
    answers = shortlist.values(results) if results is not None else []
    if any(a is not None for a in answers):  # else nothing was run: the words alone decide
        seen = denotation.Seen(question, shortlist.top(), answers, schema.row_count)
        ranked_readings = seen.reordered(ranked_readings)
    best, p = ranked_readings[0]
    rivals = [pr for cand, pr in ranked_readings[1:]]
    second = max(rivals, default=0.0)
    runner_up = ranked_readings[1][0] if len(ranked_readings) > 1 else None
    seen_features = seen.features_of(best) if seen is not None else None
    confidence = round(
        model.confidence(
            best, p, p - second, schema.row_count, runner_up, len(ranked_readings), seen_features
        ),
        2,
    )
    named = next((cand for cand, _ in ranked_readings if _asked_for_by_name(cand, question)), None)
    if named is not None and named is not best:
        best, confidence = named, round(model.confidence(named, 0.0, 0.0, schema.row_count), 2)
    if confidence >= model.threshold or named is not None:
        if best.plan is not None:
            return gated(best.plan, question, confidence)
        assert best.query is not None
        return plan_of(best.query, schema, confidence, c.follow_ups_for(schema, set()), question)
    options = [cand.query.describe() for cand, _ in ranked_readings if cand.query is not None]
    return asking(schema, list(dict.fromkeys(options))[:2], confidence, shortlist.reason)


# Analyses named by their own words. Neither training corpus asks for them, so the fitted judge has not
# seen them answered; when the question names the analysis, its shape's plan is taken (a hand-set rule).
_ANALYSES = {
    "outliers": re.compile(r"\boutliers?\b|\banomal"),
    "significance": re.compile(r"\bsignifican"),
    "correlation": re.compile(r"\bcorrelat"),
    "per_column": re.compile(r"\b(missing|null|empty)\b.*\b(each|every|per|by) column"),
    "time_buckets": re.compile(
        r"\b(by|per|each|every|over) (hour|day|week|month|quarter|year|weekday)s?\b|\bbusiest\b"
    ),
    "breakdown": re.compile(
        r"\b(for each|per|across)\b|\bby (each|every)\b"
        r"|\b(average|mean|total|sum|count|median|number of|rate|share|percentage|proportion|ratio)\b"
        r".*\bby\b(?! (far|the way|then|now))"
    ),
    "rate": re.compile(r"\b\w+ rate\b|\b(share|proportion|fraction|percentage) of\b"),
    "weekend_contrast": re.compile(r"\bweekends?\b"),
}


# "the average T-bill rate": a rate the data holds, aggregated; not a share of rows to compute
_AGGREGATED_RATE = re.compile(r"\b(average|mean|median)\b[^?.]*\brates?\b")


def _asked_for_by_name(best: Candidate, question: str) -> bool:
    pattern = _ANALYSES.get(best.shape)
    low = question.lower()
    if best.shape == "rate" and _AGGREGATED_RATE.search(low):
        return False
    return best.plan is not None and pattern is not None and pattern.search(low) is not None


def shape_plan(question: str, schema: Schema) -> tuple[Plan | None, Question, str, int]:
    """(plan, parsed question, shape name, guessed filters) of the first hand-written shape that fits;
    plan None when none fits or the question names something the data lacks (the name is then
    "absent:<why>" when the question names what the data lacks, "none:<why>" when no shape fits)."""
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
        return None, q, f'absent:I found no column for "{asked.group(4)}".', 0
    unknown = _unknown_identifier(q)
    if unknown is not None:
        return None, q, f"absent:there is no column named `{unknown}`.", 0
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
        return None, q, f'absent:I found no column for "{listed.group("noun")}".', 0
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
        missing = q.text[q.tokens[target.start - 1].start : q.tokens[target.end - 1].end]
        return None, q, f'absent:I found no column for "{missing}".', 0
    for shape in _SHAPES:
        plan = shape(ctx)
        if plan is not None:
            guesses = [f for f in q.filters if f.guess]
            if guesses and plan.sql:
                plan.sql = _with_guess_count(plan.sql, ctx, guesses)
                plan.compose = _guarded(plan.compose, schema, guesses)
            return plan, q, shape.__name__.strip("_"), len(guesses)
    return None, q, f"none:{_why(q)}", 0
