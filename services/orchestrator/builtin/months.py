"""A month named in a question ("held in April", "in Sept.") as a typed filter on the table's dates.

Why: the dates of many tables are text ("8 Apr", "April 5–8, 1998"), not DATE values; a month is still a
condition on them. The column is a date column, else the text column whose values name months.
"""

from __future__ import annotations

import re

from services.orchestrator.builtin.form import MONTH_NAMES, Filter
from services.orchestrator.builtin.linking import Links
from services.orchestrator.builtin.schema import Column, Schema

_MONTH_WORDS = {name.lower(): i + 1 for i, name in enumerate(MONTH_NAMES)} | {
    name.lower()[:3]: i + 1 for i, name in enumerate(MONTH_NAMES) if name != "May"
}
_MONTH_WORDS["sept"] = 9
_FULL = frozenset(name.lower() for name in MONTH_NAMES)


def _next_to_a_number(links: Links, i: int) -> bool:
    near = links.tokens[max(0, i - 1) : i + 2]
    return any(t.text.isdigit() for t in near)


_NAMES_A_MONTH = re.compile(r"\b(" + "|".join(sorted(_MONTH_WORDS, key=len, reverse=True)) + r")\b")


def _names_months(col: Column) -> bool:
    """Most of the profiled values of a text column name a month."""
    shown = [v for v, _ in col.values if v.strip()]
    return bool(shown) and sum(bool(_NAMES_A_MONTH.search(v.lower())) for v in shown) >= 0.6 * len(shown)


def _date_column(schema: Schema) -> Column | None:
    return next((c for c in schema.columns if c.temporal), None) or next(
        (c for c in schema.columns if c.textual and _names_months(c)), None
    )


def filters(text: str, links: Links, schema: Schema) -> list[Filter]:
    """One `month` filter per month word not already part of a value or column link."""
    out: list[Filter] = []
    column: Column | None = None
    for i, t in enumerate(links.tokens):
        month = _MONTH_WORDS.get(t.text.rstrip("."))
        if month is None or links.covered(i) or len(t.text) < 3:
            continue
        if t.text == "may" and not text[t.start : t.start + 1].isupper():
            continue  # "may" the verb
        if t.text.rstrip(".") not in _FULL and not _next_to_a_number(links, i):
            continue  # "Jan" alone may be a name; "Jan 5" is a date
        column = column or _date_column(schema)
        if column is None:
            return []
        out.append(Filter(column, "month", float(month), (i, i + 1), verified=True))
    return out
