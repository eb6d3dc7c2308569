"""Short follow-up questions ("and for iOS?", "what about Sales?") read against the previous question.

The previous user question is rewritten with the follow-up's values put in place of the values of the same
column (or added when it had none), so the result is a whole question the planner reads like any other.
"""

from __future__ import annotations

import re

from services.orchestrator.builtin.lexicon import STOP_STEMS
from services.orchestrator.builtin.linking import Links, link
from services.orchestrator.builtin.schema import Schema

_FOLLOW_UP = re.compile(
    r"^\W*(and|what about|how about|same for|now for|and for|and what about|and in|and on)\b", re.I
)


def _previous_question(history: list[tuple[str, str]] | None, question: str) -> str | None:
    for role, content in reversed(history or []):
        if role == "user" and content.strip() and content.strip() != question.strip():
            return content.strip()
    return None


def resolve(question: str, history: list[tuple[str, str]] | None, schema: Schema) -> str:
    """The question to plan: `question` itself, or the previous question rewritten by this follow-up."""
    previous = _previous_question(history, question)
    if previous is None or not _FOLLOW_UP.match(question) or len(question.split()) > 8:
        return question
    now = link(question, schema)
    before = link(previous, schema)
    if now.columns and not now.values:
        # "and for price?" swaps one column; "and the median amount?" is a question of its own
        return _swap_column(question, now, previous, before) or question
    rewritten = previous
    appended: list[str] = []
    for value in now.values:
        same = [v for v in before.values if v.column is value.column]
        if same:
            old = same[0]
            start, end = before.tokens[old.start].start, before.tokens[old.end - 1].end
            rewritten = rewritten[:start] + value.value + rewritten[end:]
            before = link(rewritten, schema)
        else:
            appended.append(value.value)
    if not now.values:
        tail = _FOLLOW_UP.sub("", question).strip(" ?.!")
        return f"{previous.rstrip(' ?.!')} {tail}?" if tail else question
    if appended:
        rewritten = f"{rewritten.rstrip(' ?.!')} for {' and '.join(appended)}?"
    return rewritten


def _swap_column(question: str, now: Links, previous: str, before: Links) -> str | None:
    """The previous question with the follow-up's one column in place of the previous column of the same
    kind (a measure for a measure, a category for a category); None when the follow-up says more than a
    column, or the previous question has no column of that kind to replace."""
    if len(now.columns) != 1:
        return None
    named = now.columns[0]
    prefix = _FOLLOW_UP.match(question)
    rest = [
        t
        for i, t in enumerate(now.tokens)
        if (prefix is None or t.start >= prefix.end()) and not named.start <= i < named.end
    ]
    if any(t.stem not in STOP_STEMS and t.text not in ("for", "about") for t in rest):
        return None
    column = named.column
    same_kind = [c for c in before.columns if c.column.numeric == column.numeric and c.column is not column]
    if not same_kind:
        return None
    old = same_kind[-1] if column.numeric else same_kind[0]
    start, end = before.tokens[old.start].start, before.tokens[old.end - 1].end
    written = question[now.tokens[named.start].start : now.tokens[named.end - 1].end]
    return previous[:start] + written + previous[end:]
