"""The form of a question ("how many …", "who …", "is …"): what kind of answer it asks for.

Why: the form is a feature of every reading (a count answers "how many", a name answers "who") and a check
on every composed answer (a yes/no question is not answered with a number).
"""

from __future__ import annotations

import re

from services.orchestrator.builtin.text import word_number
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


_K = re.compile(
    r"\b(top|first|last|bottom|list|highest|lowest|largest|smallest|biggest|most|least|the)\s+"
    r"(\d+|two|three|four|five|six|seven|eight|nine|ten)\b"
)


def asked_count(text: str) -> int | None:
    """How many items the question asks for ("the top 3 …", "list the five …"), if it says."""
    m = _K.search(text.lower())
    if m is None:
        return None
    word = m.group(2)
    k = int(word_number(word) or 0)
    return k if 1 < k <= 100 else None


def count_disagrees(text: str, answer: Answer) -> bool:
    """A question that asks for k items is not answered with another number of items."""
    k = asked_count(text)
    if k is None or answer.answer is None:
        return False
    value = answer.answer
    if isinstance(value, list):
        return len(value) > k  # fewer is fine: the data may hold fewer than asked for
    # one value for "the top 3 …" is a mismatch, unless the k items are aggregated ("the mean of the top 10")
    aggregated = re.search(
        r"\b(mean|average|sum|total|median|difference|how many|count|number of)\b", text.lower()
    )
    return aggregated is None


_SINGULAR = re.compile(
    r"^\W*(who (is|was)|what (is|was)|which (\w+ )?(is|was|has|had|did)|which \w+?[^s\W] "
    r"|when (is|was|did))\b"
)
_PLURAL = re.compile(
    r"\b(are|were|all|list|each|every|both|names|ones|and|or|by|per|across|versus|vs|against|compare\w*)\b"
    r"|\w+s\b (are|were)"
)


def many_for_one(text: str, answer: Answer) -> bool:
    """A question asking for one thing ("who was …", "which team has …") answered with several."""
    value = answer.answer
    if not isinstance(value, list) or len(value) < 2 or asked_count(text) is not None or answer.chart:
        return False
    low = text.lower()
    return _SINGULAR.search(low) is not None and _PLURAL.search(low) is None


def _numeric_text(value: str) -> bool:
    return re.fullmatch(r"\s*-?[\d,]+(\.\d+)?\s*%?", value) is not None
