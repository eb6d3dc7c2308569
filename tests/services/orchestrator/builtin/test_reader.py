"""The reader, table-driven: a question → the typed readings it proposes (no SQL, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.orchestrator.builtin.form import Query
from services.orchestrator.builtin.reader import read
from services.orchestrator.builtin.schema import schema_of
from services.orchestrator.plan import DatasetContext


def _slots(q: Query) -> tuple:
    return (
        q.op,
        q.answer.name if q.answer else None,
        q.measure.name if q.measure else None,
        tuple(
            (
                f.column.name if f.column else None,
                f.op,
                f.value if isinstance(f.value, str) else float(f.value),
            )
            for f in q.filters
        ),
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # filter + aggregate: the value is found in the profile, the measure by its name
        (
            "What is the average Age in Sales?",
            ("avg", None, "Age", (("Department", "=", "Sales"),)),
        ),
        # argmax row: the answer column and the measure
        (
            "Which Employee ID has the highest Monthly Income?",
            ("argmax", "Employee ID", "Monthly Income (USD)", ()),
        ),
        # a count under a numeric comparison
        ("How many employees have an Age over 40?", ("count", None, None, (("Age", ">", 40.0),))),
        # a name the profile does not hold is kept as a filter on any cell, never dropped
        (
            "What is the Department of Zanzibar Smith?",
            ("values", "Department", None, ((None, "match", "Zanzibar Smith"),)),
        ),
        # first / last row in table order
        ("What was the Department in the first row?", ("first", "Department", None, ())),
        # a count of different values
        ("How many different Department values are there?", ("count_distinct", "Department", None, ())),
        # exclusion: "outside" makes the value's filter a <>
        (
            "What is the average Age outside Sales?",
            ("avg", None, "Age", (("Department", "!=", "Sales"),)),
        ),
        # "after" a number is a comparison
        ("How many employees have an Age after 40?", ("count", None, None, (("Age", ">", 40.0),))),
        # groups ranked by an aggregate
        (
            "Which Department has the highest total Age?",
            ("group_argmax", "Department", "Age", ()),
        ),
    ],
)
def test_reader_proposes_the_reading(
    hr_table: tuple[DatasetContext, Path], question: str, expected: tuple
) -> None:
    dataset, _ = hr_table
    reading = read(question, schema_of(dataset))
    slots = [_slots(c.query) for c in reading.candidates if c.query is not None]
    assert expected in slots, slots[:12]


def test_each_slot_keeps_the_words_that_caused_it(hr_table: tuple[DatasetContext, Path]) -> None:
    dataset, _ = hr_table
    text = "What is the average Age in Sales?"
    reading = read(text, schema_of(dataset))
    q = next(c.query for c in reading.candidates if c.query is not None and c.query.op == "avg")
    (f,) = q.filters
    start, end = f.span
    assert text[reading.links.tokens[start].start : reading.links.tokens[end - 1].end] == "Sales"


def test_operations_need_a_word_that_asks_for_them(hr_table: tuple[DatasetContext, Path]) -> None:
    """No ranking or aggregate is proposed when no word asks for one (a small trigger lexicon)."""
    dataset, _ = hr_table
    reading = read("What is the Department of E007?", schema_of(dataset))
    ops = {c.query.op for c in reading.candidates if c.query is not None}
    assert ops <= {"values"}, ops


def test_a_reading_says_itself_as_a_question(hr_table: tuple[DatasetContext, Path]) -> None:
    dataset, _ = hr_table
    reading = read("What is the average Age in Sales?", schema_of(dataset))
    q = next(c.query for c in reading.candidates if c.query is not None and c.query.op == "avg")
    assert q.describe() == "What is the average `Age` where `Department` is 'Sales'?"


def test_a_ranking_keeps_its_size(hr_table: tuple[DatasetContext, Path]) -> None:
    dataset, _ = hr_table
    reading = read("Which 3 Employee ID have the highest Monthly Income?", schema_of(dataset))
    sizes = {
        c.query.limit
        for c in reading.candidates
        if c.query is not None and c.query.op == "argmax" and c.query.answer is not None
    }
    assert 3 in sizes
