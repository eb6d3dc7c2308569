"""What a reading's result says about the reading: features of its denotation, not of its words.

Why: two readings can look equally good in the question's words and still differ in what they compute. The
result tells them apart (Pasupat & Liang's denotation features): an empty result, a count that is a fraction,
a list where one thing was asked for, a number the question itself states, readings that agree. The runner-up
readings are run too, so these features rank them again and tell the judge how sure to be.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from services.orchestrator.builtin.forms import asked_count, question_form
from services.orchestrator.builtin.parsed import answer_of
from services.orchestrator.builtin.reader import Candidate
from services.orchestrator.plan import StepResults

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def _numbers_in(question: str) -> set[float]:
    out: set[float] = set()
    for m in _NUMBER.finditer(question):
        try:
            out.add(float(m.group().replace(",", "")))
        except ValueError:
            continue
    return out


def _key(value: Any) -> Any:
    """A value comparable across readings: numbers rounded, text folded, lists as sorted tuples."""
    if isinstance(value, list):
        return tuple(sorted(str(_key(v)) for v in value))
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return round(float(value), 6)
    return str(value).strip().lower()


def agreement(values: Sequence[Any]) -> list[int]:
    """For each result, how many of the other results are the same answer (None agrees with nothing)."""
    keys = [None if v is None else _key(v) for v in values]
    return [
        0 if k is None else sum(1 for j, o in enumerate(keys) if j != i and o == k)
        for i, k in enumerate(keys)
    ]


def features(
    question: str, value: Any, kind: str, agrees: int, op: str = "", rows: int = 0, same_as_next: bool = False
) -> dict[str, float]:
    """Features of one reading's result (`agrees`: how many other run readings gave the same answer;
    `same_as_next`: the next-ranked one did), each also conjoined with the question's form and `op`."""
    form = question_form(question)
    f: dict[str, str] = {}
    if value is None:
        f["den:none"] = "1"
    else:
        f["den:kind"] = kind
        f["den:same_as_next"] = "yes" if same_as_next else "no"
        if isinstance(value, list):
            n = len(value)
            if rows and n >= rows:
                f["den:every_row"] = "1"
            f["den:len"] = "2" if n == 2 else "3-5" if n <= 5 else "6-20" if n <= 20 else ">20"
            k = asked_count(question)
            if k is not None:
                f["den:len_vs_asked"] = "equal" if n == k else "fewer" if n < k else "more"
        elif isinstance(value, bool):
            f["den:bool"] = "1"
        elif isinstance(value, int | float):
            v = float(value)
            f["den:sign"] = "zero" if v == 0 else "negative" if v < 0 else "positive"
            f["den:integral"] = "yes" if v.is_integer() else "no"
            if v in _numbers_in(question):
                f["den:stated_in_question"] = "number"
            if rows and v == rows:
                f["den:row_count"] = "1"
        elif isinstance(value, str):
            low = value.strip().lower()
            if low and re.search(r"(?<!\w)" + re.escape(low) + r"(?!\w)", question.lower()):
                f["den:stated_in_question"] = "text"
        f["den:agrees"] = "0" if agrees == 0 else "1" if agrees == 1 else "2+"
    out: dict[str, float] = {}
    for name, level in f.items():
        out[f"{name}={level}"] = 1.0
        out[f"{name}={level}&form={form}"] = 1.0
        if op:
            out[f"{name}={level}&{op}"] = 1.0
    return out


def value_of(cand: Candidate, table: pa.Table | None) -> tuple[Any, str]:
    """A run reading's (answer, answer type), as its plan would compose it; (None, "none") for no answer."""
    if table is None:
        return None, "none"
    results = StepResults(sql_table=table)
    try:
        if cand.query is not None:
            return answer_of(cand.query, results)
        if cand.plan is not None:
            answer = cand.plan.compose(results)
            return answer.answer, answer.answer_type or "none"
    except Exception:  # a composer that cannot read this result has no answer from it
        return None, "none"
    return None, "none"


@dataclass
class Seen:
    """What the top readings computed: their answers (None: not run) and, from them, each one's features."""

    question: str
    readings: list[Candidate]
    answers: list[tuple[Any, str] | None]
    rows: int

    def _value(self, i: int) -> Any:
        got = self.answers[i]
        return None if got is None else got[0]

    def features_at(self, i: int) -> dict[str, float]:
        """The features of the i-th top reading's result ({"den:unrun": 1} when it was not run)."""
        got = self.answers[i]
        if got is None:
            return {"den:unrun": 1.0}
        values = [self._value(j) for j in range(len(self.answers))]
        agrees = agreement(values)[i]
        nxt = values[i + 1] if i + 1 < len(values) else None
        same = got[0] is not None and nxt is not None and agreement([got[0], nxt])[0] == 1
        return features(self.question, got[0], got[1], agrees, rows=self.rows, same_as_next=same)

    def features_of(self, cand: Candidate) -> dict[str, float] | None:
        i = next((j for j, c in enumerate(self.readings) if c is cand), None)
        return None if i is None else self.features_at(i)

    def chosen(self) -> int:
        """Which top reading answers: the first, unless its result is empty and a later one's is not."""
        if not self.answers or self.answers[0] is None or self._value(0) is not None:
            return 0
        return next(
            (
                i
                for i in range(1, len(self.answers))
                if self.answers[i] is not None and self._value(i) is not None
            ),
            0,
        )

    def reordered(self, ranked: list[tuple[Candidate, float]]) -> list[tuple[Candidate, float]]:
        """`ranked` with the chosen reading first."""
        k = self.chosen()
        return ranked if k == 0 else [ranked[k], *ranked[:k], *ranked[k + 1 :]]
