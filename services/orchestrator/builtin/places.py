"""A place in a ranking named in a question ("ranked fourth", "finished 3rd", "in 5th place") as a typed
filter on the table's rank column.

Why: tables of results carry a rank or position column; "the countries ranked fourth" selects its rows
with 4, while "the fourth country" (no ranking verb) is a row position, which the reader reads elsewhere.
"""

from __future__ import annotations

import re

from services.orchestrator.builtin.form import Filter
from services.orchestrator.builtin.linking import Links
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.builtin.text import ORDINALS, split_name, word_number

_BEFORE = frozenset({"ranked", "rank", "placed", "finished", "finish", "came", "come", "position", "ranking"})
_AFTER = frozenset({"place", "position", "spot", "rank"})
_RANK_WORDS = frozenset(
    {"rank", "rk", "pos", "position", "place", "placing", "finish", "finished", "standing"}
)


def _rank_column(schema: Schema) -> Column | None:
    """The first column named like a rank whose values are (or start with) small whole numbers."""
    for col in schema.columns:
        words = {w.lower().strip(".") for w in split_name(col.name)}
        if not words & _RANK_WORDS:
            continue
        if col.numeric or any(re.match(r"^\s*[tT]?-?\d", v) for v, _ in col.values):
            return col
    return None


def filters(links: Links, schema: Schema) -> list[Filter]:
    """One `=` filter on the rank column per place named with a ranking word next to it."""
    out: list[Filter] = []
    tokens = links.tokens
    for i, t in enumerate(tokens):
        place = ORDINALS.get(t.text)
        if place is None and re.fullmatch(r"\d+(st|nd|rd|th)", t.text):
            place = int(word_number(t.text) or 0)
        if not place or links.covered(i):
            continue
        before = tokens[i - 1].text if i > 0 else ""
        after = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if before not in _BEFORE and after not in _AFTER:
            continue
        column = _rank_column(schema)
        if column is None:
            return []
        # the filter explains its words: "finished in 4th place", "ranked fourth"
        start = next((k for k in range(i - 1, max(-1, i - 3), -1) if tokens[k].text in _BEFORE), i)
        end = i + 2 if after in _AFTER else i + 1
        out.append(Filter(column, "=", float(place), (start, end), verified=True))
    return out
