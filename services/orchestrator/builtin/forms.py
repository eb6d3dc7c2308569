"""The form of a question ("how many …", "who …", "is …"): what kind of answer it asks for.

Why: the form is a feature of every reading (a count answers "how many", a name answers "who") and a check
on every composed answer (a yes/no question is not answered with a number).
"""

from __future__ import annotations

import re

from services.orchestrator.plan import Answer

_FORMS = (
    ("how_many", r"^\W*(how many|what is the number of|what was the number of|number of|count)\b"),
    ("how_much", r"^\W*how (much|old|long|far|big|tall|high)\b"),
    ("when", r"^\W*(when|what year|which year|in what year|in which year|what date)\b"),
    ("who", r"^\W*(who|whom|whose)\b"),
    ("which", r"^\W*(which|what)\s+\w+\s+(is|was|are|were|has|had|have|did|does)\b"),
    ("what", r"^\W*(what|which)\b"),
    ("yesno", r"^\W*(is|are|was|were|does|do|did|has|have|had|can|could|will)\b"),
    ("list", r"^\W*(list|name|give|show|tell)\b"),
    ("where", r"^\W*where\b"),
)


def question_form(text: str) -> str:
    """The first form whose opening words the question has, else "other"."""
    low = text.lower().strip()
    return next((name for name, pattern in _FORMS if re.search(pattern, low)), "other")


def type_disagrees(form: str, answer: Answer) -> bool:
    """The answer's type contradicts what the question's form asks for: "how many" answered by a name,
    "who" by a number, a yes/no question by a name."""
    value = answer.answer
    text = isinstance(value, str) and not _numeric_text(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if form == "how_many":
        return text
    if form == "yesno":
        return text
    if form == "who":
        return numeric
    return False


def _numeric_text(value: str) -> bool:
    return re.fullmatch(r"\s*-?[\d,]+(\.\d+)?\s*%?", value) is not None
