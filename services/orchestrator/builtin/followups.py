"""Short follow-up questions ("and for iOS?", "what about Sales?") read against the previous question.

The previous user question is rewritten with the follow-up's values put in place of the values of the same
column (or added when it had none), so the result is a whole question the planner reads like any other.
"""

from __future__ import annotations

import re

from services.orchestrator.builtin.linking import link
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
    if now.columns and not now.values:
        return question  # "and the median amount?" names its own column: a question of its own
    before = link(previous, schema)
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
