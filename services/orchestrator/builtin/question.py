"""Reads a question's form: the answer type, aggregate, superlative, k (filters: `filters.py`).

Works on the links (columns, values, numbers) so that every piece of structure is tied to a column; nothing
here writes SQL except the filters' predicates, which are small and quoted.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from services.orchestrator.builtin.degrees import ASC_SUPERLATIVES, DESC_SUPERLATIVES
from services.orchestrator.builtin.lexicon import STOP_STEMS
from services.orchestrator.builtin.linking import ColumnLink, Links, link
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.builtin.text import ORDINALS, Token, same_word, stem, word_number

_BOOL_START = re.compile(
    r"^\s*(is|are|does|do|did|was|were|has|have|can|could|would|will|should|isn't|aren't|doesn't)\b", re.I
)
_LIST_START = re.compile(
    r"^\s*(list|name the|show( me)?( the| all)?|give me( the| all)?|enumerate|what are( the)?)\b", re.I
)

AGG_WORDS: list[tuple[str, str]] = [
    (r"\bstandard deviation\b|\bstd\b|\bstdev\b", "std"),
    (r"\bvariance\b", "var"),
    (
        r"\brange\b|\bdifference between the (highest|largest|maximum|max) and (the "
        r")?(lowest|smallest|minimum|min)\b"
        r"|\bspread\b",
        "range",
    ),
    (r"\bmedian\b|\bmiddle\b", "median"),
    (r"\baverage\b|\bmean\b|\bavg\b|\btypical\b|\bon average\b", "avg"),
    (r"\b(how many|(total )?number of|count of|count)\b", "count"),
    (r"\bsum\b|\btotal (amount|value|sum)\b|\bcombined\b|\bin total\b|\btotal\b(?! number)", "sum"),
    (r"\bmaximum\b|\bmax\b", "max"),
    (r"\bminimum\b|\bmin\b", "min"),
]
_DESC = (
    r"highest|most|max|maximum|largest|biggest|greatest|top|best|longest|oldest|richest|heaviest|tallest"
    r"|most expensive|priciest|latest|newest|strongest|more|higher"
)
_ASC = (
    r"lowest|least|min|minimum|smallest|fewest|bottom|worst|cheapest|youngest|shortest|poorest|lightest"
    r"|earliest|oldest first|weakest|cheaper|less|lower|fewer"
)
_MODE = re.compile(
    r"\b(most|least|more|less)\s+(common|frequent|frequently|popular|represented|usual|often|prevalent|typical|used)"
    r"|\bmost commonly\b|\b(commonest|rarest|busiest|quietest)\b|\bthe mode of\b|\bappears? (the )?most\b"
    r"|\bmost (active|busy)\b|\bpeak\b",
    re.I,
)
_SUPER = re.compile(
    rf"\b(?P<desc>{_DESC}|{DESC_SUPERLATIVES})\b|\b(?P<asc>{_ASC}|{ASC_SUPERLATIVES})\b", re.I
)
_CMP: list[tuple[str, str]] = [
    (r"\bat least\b|\bno less than\b|\bminimum of\b|\bor more\b|>=", ">="),
    (r"\bat most\b|\bno more than\b|\bup to\b|\bor less\b|\bor fewer\b|<=", "<="),
    (
        r"\b(more|greater|higher|bigger|larger|better|older|longer|over|above|exceed(s|ing)?|beyond|after)\b"
        r"( than)?|>",
        ">",
    ),
    (r"\b(less|fewer|lower|smaller|worse|younger|shorter|under|below|before|beneath)\b( than)?|<", "<"),
    (r"\b(equal to|equals?|exactly|same as|of|is|=|to|are|at|ranked( in| at)?|placed( in| at)?)\b", "="),
]


STRUCTURAL = {
    "average",
    "mean",
    "median",
    "percentile",
    "quartile",
    "sum",
    "total",
    "number",
    "count",
    "many",
    "much",
    "highest",
    "lowest",
    "most",
    "least",
    "top",
    "bottom",
    "common",
    "frequent",
    "frequently",
    "popular",
    "unique",
    "different",
    "distinct",
    "value",
    "values",
    "rows",
    "entries",
    "records",
    "than",
    "more",
    "less",
    "greater",
    "above",
    "below",
    "over",
    "under",
    "between",
    "equal",
    "exactly",
    "first",
    "last",
    "rate",
    "share",
    "percentage",
    "proportion",
    "difference",
    "range",
    "maximum",
    "minimum",
    "max",
    "min",
    "std",
    "standard",
    "deviation",
    "closest",
    "nearest",
    "largest",
    "smallest",
    "biggest",
    "best",
    "worst",
    "higher",
    "bigger",
    "smaller",
    "fewer",
    "list",
    "show",
    "name",
    "names",
    "amounts",
    "amount",
    "type",
    "types",
    "kind",
    "kinds",
    "category",
    "categories",
    "level",
    "levels",
    "score",
    "scores",
    "rating",
    "ratings",
    "listed",
    "represented",
    "present",
    "found",
    "contain",
    "contains",
    "include",
    "includes",
    "exist",
    "exists",
    "appear",
    "appears",
    "once",
    "twice",
    "times",
    "true",
    "false",
    "possible",
    "take",
    "element",
    "elements",
    "entity",
    "entities",
    "per",
    "cent",
    "percent",
    "each",
    "every",
    "across",
    "overall",
    "respectively",
    "including",
    "excluding",
    "both",
    "either",
    "order",
    "ranked",
    "rank",
    "associated",
    "correlation",
    "relationship",
    "outliers",
    "significant",
    "trend",
    "month",
    "year",
    "week",
    "day",
    "hour",
    "time",
    "breakdown",
    "compare",
    "versus",
    "vs",
    "along",
    "same",
    "assigned",
    "related",
    "perfect",
    "among",
    "available",
    "data",
    "dataset",
    "table",
    "database",
    "item",
    "items",
    "respective",
    "result",
    "results",
    "information",
    "avg",
    "mode",
    "specific",
    "certain",
    "particular",
    "people",
    "person",
    "individuals",
    "individual",
    "someone",
    "anyone",
    "everyone",
    "employees",
    "employee",
    "users",
    "user",
    "customers",
    "customer",
    "applicants",
    "applicant",
    "busiest",
    "quietest",
    "peak",
    "students",
    "student",
    "patients",
    "persons",
    "non",
    "null",
    "nulls",
    "empty",
    "missing",
    "blank",
    "valid",
}


@dataclass
class Filter:
    """A WHERE predicate with the words that produced it."""

    column: Column | None
    sql: str
    text: str
    start: int = -1
    end: int = -1
    op: str = ""  # for numeric comparisons: >, >=, <, <=, =, between
    number: float | None = None
    guess: bool = False  # a word not found in the profile, matched by name ("Iceland")


@dataclass
class Superlative:
    """A "highest"/"most common" word: its position, direction, and whether it counts rows."""

    index: int
    desc: bool
    mode: bool
    offset: int = 0  # "second highest" → 1


@dataclass
class Question:
    """A question read against a schema."""

    text: str
    low: str
    schema: Schema
    links: Links
    answer_type: str
    filters: list[Filter] = field(default_factory=list)
    used: set[int] = field(default_factory=set)  # token indices consumed by filters
    k: int | None = None
    superlative: Superlative | None = None
    agg: str | None = None
    agg_index: int = -1
    distinct: bool = False
    k_numbers: set[int] = field(default_factory=set)

    @property
    def tokens(self) -> list[Token]:
        return self.links.tokens

    def free_columns(self) -> list[ColumnLink]:
        """Column links that are not part of a filter, in question order."""
        return [c for c in self.links.columns if not any(i in self.used for i in range(c.start, c.end))]

    def index_at(self, char: int) -> int:
        return next((i for i, t in enumerate(self.tokens) if t.end > char), len(self.tokens))

    def uncovered(self) -> list[str]:
        """Content words that name nothing in the data (nor any structure the analyst knows)."""
        out = []
        for i, t in enumerate(self.tokens):
            if i in self.used or self.links.covered(i) or any(n.index == i for n in self.links.numbers):
                continue
            if any(f.start <= i < f.end for f in self.filters):
                continue
            if t.stem in STOP_STEMS or t.text in STRUCTURAL or t.stem in STRUCTURAL or len(t.text) <= 2:
                continue
            if t.text in ORDINALS or not t.text.isalpha() or _SUPER.fullmatch(t.text):
                continue
            out.append(t.text)
        return out

    def loose_numbers(self) -> list[float]:
        """Numbers of the question that no filter, k or comparison took: a condition was not understood."""
        return [
            n.value
            for n in self.links.numbers
            if n.index not in self.used and n.index not in self.k_numbers and n.value != self.k
        ]

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.low) is not None


def _answer_type(text: str) -> str:
    text = text.strip().lstrip("\"'“‘ ")
    if _BOOL_START.match(text) or re.match(r"^\s*(is it true|true or false)", text, re.I):
        return "boolean"
    if _LIST_START.match(text):
        return "list"
    low = text.lower()
    if re.search(
        r"\bhow (many|much|old|long|far)\b|\bwhat (is|was) the (number|count|total|sum|average|mean"
        r"|median|standard|range|variance|percentage|proportion|share|rate|ratio|difference)\b",
        low,
    ):
        return "number"
    return "unknown"


def _superlative(q: Question) -> Superlative | None:
    mode = _MODE.search(q.low)
    if mode:
        word = mode.group(0).split()[0]
        desc = (
            word in ("most", "more", "commonest", "busiest", "peak")
            or word.startswith("mode")
            or word == "appears"
        )
        index = q.index_at(mode.start())
        return Superlative(index, desc, True, _ordinal_before(q, index))
    for m in _SUPER.finditer(q.low):
        word = m.group(0)
        index = q.index_at(m.start())
        comparative = word in ("more", "less", "higher", "lower", "fewer", "cheaper")
        if comparative and (
            q.has(r"\bthan\b") or not re.match(r"^\W*(which|what|where|in which|who)\b", q.low)
        ):
            continue
        if q.low[max(0, m.start() - 3) : m.start()] == "at ":
            continue
        if word in ("maximum", "max", "highest", "minimum", "min", "lowest") and any(
            c.start == index and c.end - c.start >= 2 for c in q.links.columns
        ):
            continue  # "the average maximum temperature" names `temp_max`: a column, not a ranking
        if (
            word == "most"
            and _BOOL_START.match(q.text)
            and re.match(r"most\s+(of|students|people|employees|applicants)\b", q.low[m.start() :])
        ):
            continue
        return Superlative(index, m.group("desc") is not None, False, _ordinal_before(q, index))
    return None


def _ordinal_before(q: Question, index: int) -> int:
    for t in q.tokens[max(0, index - 2) : index]:
        if t.text in ORDINALS and ORDINALS[t.text] > 1:
            return ORDINALS[t.text] - 1
    return 0


_VOCABULARY = sorted(
    STRUCTURAL
    | {
        "average",
        "median",
        "maximum",
        "minimum",
        "highest",
        "lowest",
        "percentage",
        "correlation",
        "between",
        "distinct",
        "different",
        "frequent",
        "common",
        "deviation",
        "standard",
        "greater",
        "smaller",
        "largest",
        "smallest",
        "proportion",
        "outliers",
        "significant",
        "transactions",
        "employees",
        "department",
    }
)


def _corrected(question: str) -> str:
    """Typos in the words that carry structure ("avrage", "hihgest") fixed against a small vocabulary."""

    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        low = word.lower()
        if len(low) < 5 or low in STRUCTURAL:
            return word
        close = difflib.get_close_matches(low, [v for v in _VOCABULARY if v[0] == low[0]], n=1, cutoff=0.85)
        if not close or same_word(stem(low), stem(close[0])):
            return word  # "named" is a form of "name", not a typo
        return close[0]

    # "8pm", "10 p.m." → "8 pm", "10 pm": a clock time is a number and its half of the day
    question = re.sub(r"\b(\d{1,2})\s*([AaPp])\.?\s?[Mm]\b\.?", lambda m: f"{m[1]} {m[2].lower()}m", question)
    return re.sub(r"\b[A-Za-z]+\b", fix, question)


_QUANTILE = re.compile(
    r"\b(?:(?P<k>\d{1,2})(?:st|nd|rd|th)?\s*(?:percentile|pctl)"
    r"|(?P<q>first|lower|1st|third|upper|3rd)\s+quartile)\b"
)


def _quantile(q: Question) -> str | None:
    """ "the 90th percentile", "the upper quartile" → q.agg "p90" / "p75"; its number is no filter."""
    m = _QUANTILE.search(q.low)
    if m is None:
        return None
    if m.group("k") is not None:
        k = int(m.group("k"))
        if not 1 <= k <= 99:
            return None
    else:
        k = 25 if m.group("q") in ("first", "lower", "1st") else 75
    q.agg, q.agg_index = f"p{k}", q.index_at(m.start())
    q.used.update(range(q.agg_index, q.index_at(m.end() - 1) + 1))  # "upper quartile" names no column
    q.links.numbers = [n for n in q.links.numbers if n.index != q.agg_index]
    return q.agg


def parse(question: str, schema: Schema) -> Question:
    """Reads `question` against `schema`."""
    # the finders live in `filters`, which needs this module's types: imported here, not at the top
    from services.orchestrator.builtin.filters import (
        _k_numbers,
        _num_sql,
        _numeric_filters,
        _ordinal_filters,
        _perfect_filters,
        _sign_filters,
        _time_filters,
        _value_filters,
    )

    question = _corrected(question)
    links = link(question, schema)
    q = Question(
        text=question, low=question.lower(), schema=schema, links=links, answer_type=_answer_type(question)
    )
    quantile = _quantile(q)
    for pattern, agg in AGG_WORDS if quantile is None else []:
        found = None
        for m in re.finditer(pattern, q.low):
            index = q.index_at(m.start())
            inside = next(
                (c for c in links.columns if c.start <= index < c.end and c.end - c.start >= 2), None
            )
            if inside is None:  # "grade point average" names a column, it asks for no average
                found = index
                break
        if found is not None:
            q.agg, q.agg_index = agg, found
            break
    q.distinct = q.has(r"\b(unique|distinct|different)\b")
    if q.distinct:
        links.columns = [
            c
            for c in links.columns
            if not (
                all(t.text in ("unique", "distinct", "different") for t in links.tokens[c.start : c.end])
                and c.score < 3.0
                and len(links.columns) > 1
            )
        ]
    q.superlative = None if quantile is not None else _superlative(q)  # "lower quartile" ranks nothing
    k_idx = _k_numbers(q)
    if k_idx:
        q.k = int(next(n.value for n in links.numbers if n.index in k_idx))
    elif q.superlative is not None:
        for n in links.numbers:
            if 0 < q.superlative.index - n.index <= 2 and float(n.value).is_integer():
                q.k = int(n.value)
                k_idx.add(n.index)
    _value_filters(q)
    _time_filters(q)
    _perfect_filters(q)
    q.k_numbers = k_idx
    _ordinal_filters(q, k_idx)
    _sign_filters(q)
    placed = k_idx | {n.index for n in links.numbers if n.index in q.used}  # "in 2000" is a year already
    for index, op, value, col in _numeric_filters(q, placed):
        if op == "between":
            q.used.add(index)
            continue
        if op == "between_hi":
            lo = next(v for i, o, v, c in _numeric_filters(q, placed) if o == "between" and c is col)
            sql = f"{col.sql} BETWEEN {_num_sql(lo)} AND {_num_sql(value)}"
            text = f"`{col.name}` between {lo:g} and {value:g}"
        else:
            sql = f"{col.sql} {op} {_num_sql(value)}"
            text = f"`{col.name}` {op} {value:g}"
        q.filters.append(Filter(col, sql, text, index, index + 1, op, value))
        q.used.add(index)
        for c in links.columns:
            if (c.column is col or col in [cc for cc, _ in c.candidates]) and (
                abs(c.end - index) <= 4 or abs(c.start - index) <= 1
            ):
                q.used.update(range(c.start, c.end))
    return q


def add_flag_filters(q: Question, target_index: int | None) -> None:
    """Flag columns named outside the target become filters ("applicants with research experience")."""
    from services.orchestrator.builtin.filters import _flag_filters

    _flag_filters(q, target_index)


def number_of(token: Token) -> float | None:
    return word_number(token.text)
