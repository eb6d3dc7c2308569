"""Filters read from a question: values, dates, numeric comparisons, signs, ordinals and flags.

Why a module of its own: each finder looks at the question's links (columns, values, numbers) and appends
`Filter`s to the `Question`, marking the words it used; `question.parse` runs them in order.
"""

from __future__ import annotations

import datetime
import re

from services.orchestrator.builtin.lexicon import STOP_STEMS
from services.orchestrator.builtin.linking import NumberLink
from services.orchestrator.builtin.negation import negated
from services.orchestrator.builtin.normal_forms import MONTHS, WEEKDAYS
from services.orchestrator.builtin.question import _CMP, Filter, Question
from services.orchestrator.builtin.schema import Column, literal
from services.orchestrator.builtin.text import ORDINALS, Token


def _negated(tokens: list[Token], index: int, window: int = 3) -> bool:
    return negated(tokens, index, window)


def _percent_scale(column: Column, value: float, percent: bool) -> float:
    if percent and column.max is not None and column.max <= 1.0 and value > 1:
        return value / 100.0
    return value


def _num_sql(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _value_filters(q: Question) -> None:
    by_column: dict[str, list] = {}
    for v in q.links.values:
        by_column.setdefault(v.column.name, []).append(v)
    for values in by_column.values():
        column = values[0].column
        neg = all(_negated(q.tokens, v.start) for v in values)
        if column.listlike:
            parts = [
                f"list_contains(string_split(trim({column.sql}, '[]'), ', '), {literal(v.value)})"
                for v in values
            ]
            sql = "(" + " OR ".join(parts) + ")"
            if neg:
                sql = f"NOT {sql}"
        else:
            lits = ", ".join(dict.fromkeys(literal(v.value) for v in values))
            sql = f"{column.sql} {'NOT IN' if neg else 'IN'} ({lits})"
        text = " or ".join(f"`{v.value}`" for v in values)
        q.filters.append(
            Filter(
                column, sql, f"`{column.name}` {'≠' if neg else '='} {text}", values[0].start, values[-1].end
            )
        )
        for v in values:
            q.used.update(range(v.start, v.end))
            # the column named next to its value is part of the filter ("the Sales department")
            for c in q.links.columns:
                if c.column is column and (abs(c.start - v.end) <= 1 or abs(v.start - c.end) <= 2):
                    q.used.update(range(c.start, c.end))


_MONTHS = list(MONTHS)
_WEEKDAYS = list(WEEKDAYS)


def _year_columns(q: Question, year: int) -> list[Column]:
    """Whole-number columns of years ("Year", "Season") whose range holds `year`."""
    return [
        c
        for c in q.schema.columns
        if c.integral and c.min is not None and c.max is not None and 1000 <= c.min <= year <= c.max <= 2100
    ]


def _decade_filters(q: Question, temporal: Column | None) -> None:
    """ "in the 1990s": the years 1990 to 1999 of a column of years, else of the date column."""
    for i, t in enumerate(q.tokens):
        m = re.fullmatch(r"(1[5-9]\d0|20\d0)'?s", t.text)
        if m is None or i in q.used or q.links.covered(i):
            continue
        first = int(m.group(1))
        columns = _year_columns(q, first) or _year_columns(q, first + 9)
        named = [c for c in columns if {"year", "season", "yr"} & set(c.content_words)]
        column = (named or columns)[0] if len(named) == 1 or len(columns) == 1 else None
        if column is not None:
            sql = f"{column.sql} BETWEEN {first} AND {first + 9}"
        elif temporal is not None:
            column, sql = temporal, f"year({temporal.time_sql}) BETWEEN {first} AND {first + 9}"
        else:
            continue
        q.filters.append(Filter(column, sql, f"`{column.name}` in the {first}s", i, i + 1))
        q.used.add(i)


def _year_value_filters(q: Question) -> None:
    """ "in 2007" where a column of years holds 2007: that column = 2007 (the first such column named
    "year"-like, or the only one)."""
    for i, t in enumerate(q.tokens):
        if q.links.covered(i) or i in q.used or not t.text.isdigit() or i == 0:
            continue
        if q.tokens[i - 1].text not in ("in", "during", "of", "for", "year"):
            continue
        columns = _year_columns(q, int(t.text))
        named = [c for c in columns if {"year", "season", "yr"} & set(c.content_words)]
        column = (named or columns)[0] if len(named) == 1 or len(columns) == 1 else None
        if column is None:
            continue
        text = f"`{column.name}` = {t.text}"
        q.filters.append(Filter(column, f"{column.sql} = {t.text}", text, i, i + 1))
        q.used.add(i)


_MONTH_NAMES = "|".join(MONTHS)
_DATE_LITERALS = (
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    re.compile(rf"\b(?P<mon>{_MONTH_NAMES}|[a-z]{{3}})\.? (?P<d>\d{{1,2}})(st|nd|rd|th)?,? (?P<y>\d{{4}})\b"),
    re.compile(
        rf"\b(?P<d>\d{{1,2}})(st|nd|rd|th)? (of )?(?P<mon>{_MONTH_NAMES}|[a-z]{{3}})\.?,? (?P<y>\d{{4}})\b"
    ),
)


def _date_filters(q: Question, temporal: Column) -> None:
    """A whole date ("on May 1, 2012", "2012-05-01", "1 May 2012") on the date column: that day."""
    for pattern in _DATE_LITERALS:
        for m in pattern.finditer(q.low):
            month = m.groupdict().get("mon")
            number = int(m.group("m")) if month is None else _month_number(month)
            if number is None:
                continue
            try:
                day = datetime.date(int(m.group("y")), number, int(m.group("d")))
            except ValueError:
                continue
            start, end = q.index_at(m.start()), q.index_at(m.end() - 1) + 1
            if any(i in q.used or q.links.covered(i) for i in range(start, end)):
                continue
            sql = f"CAST({temporal.time_sql} AS DATE) = DATE '{day.isoformat()}'"
            q.filters.append(Filter(temporal, sql, f"`{temporal.name}` on {day.isoformat()}", start, end))
            q.used.update(range(start, end))


def _month_number(word: str) -> int | None:
    full = [m for m in MONTHS if m.startswith(word)]
    return MONTHS.index(full[0]) + 1 if len(full) == 1 else None


def _time_filters(q: Question) -> None:
    """Month and weekday names and years ("in January", "on Sundays", "in 2024") on the first date column."""
    temporal = next((c for c in q.schema.columns if c.temporal), None) or next(
        (c for c in q.schema.columns if c.timelike), None
    )
    if temporal is not None:
        _date_filters(q, temporal)
    _decade_filters(q, temporal)
    _year_value_filters(q)
    if temporal is None:
        return
    for i, t in enumerate(q.tokens):
        if q.links.covered(i) or i in q.used:
            continue
        word = t.text.rstrip("s") if t.text.endswith("days") else t.text
        if word in _MONTHS and (word != "may" or q.text[t.start : t.start + 1] == "M"):
            n = _MONTHS.index(word) + 1
            sql, text = f"month({temporal.time_sql}) = {n}", f"month of `{temporal.name}` = {word.title()}"
        elif word in _WEEKDAYS:
            sql, text = (
                f"isodow({temporal.time_sql}) = {_WEEKDAYS.index(word) + 1}",
                f"`{temporal.name}` on {word.title()}",
            )
        elif (
            t.text.isdigit()
            and 1900 <= int(t.text) <= 2100
            and i > 0
            and q.tokens[i - 1].text in ("in", "during", "of", "for", "year", "from")
            # a column of years that holds it ("Year" = 2007) is meant, not the date's year
            and not _year_columns(q, int(t.text))
        ):
            sql, text = f"year({temporal.time_sql}) = {t.text}", f"year of `{temporal.name}` = {t.text}"
        else:
            continue
        q.filters.append(Filter(temporal, sql, text, i, i + 1))
        q.used.add(i)


def _k_numbers(q: Question) -> set[int]:
    """Numbers that count answers ("top 5", "3 most common", "first 4") rather than filter."""
    out = set()
    toks = q.tokens
    for n in q.links.numbers:
        if re.fullmatch(r"\d+(st|nd|rd|th)", toks[n.index].text):
            continue  # "the 10th place" is a position, not a count of answers
        before = toks[n.index - 1].text if n.index > 0 else ""
        after = toks[n.index + 1].text if n.index + 1 < len(toks) else ""
        if (
            (
                before
                in (
                    "top",
                    "bottom",
                    "first",
                    "last",
                    "lowest",
                    "highest",
                    "best",
                    "worst",
                    "largest",
                    "smallest",
                    "the",
                    "list",
                )
                or after
                in (
                    "most",
                    "least",
                    "highest",
                    "lowest",
                    "largest",
                    "smallest",
                    "best",
                    "worst",
                    "top",
                    "bottom",
                    "biggest",
                    "cheapest",
                    "youngest",
                    "oldest",
                    "different",
                    "unique",
                    "distinct",
                )
            )
            and float(n.value).is_integer()
            and 0 < n.value <= 1000
        ):
            out.add(n.index)
    return out


def _comparison_at(q: Question, index: int) -> tuple[str, int] | None:
    """The comparator ending right before token `index` (the number), as (op, first token of the phrase)."""
    start_char = q.tokens[index].start
    head = q.low[:start_char].rstrip()
    head = re.sub(r"(\$|₹|€|£|rs\.?|inr|usd)\s*$", "", head).rstrip()
    for pattern, op in _CMP:
        m = re.search(
            rf"(?:{pattern})\s*(?:a|an|the)?\s*(?:score|grade|value|rating|total|number)?\s*(?:of)?\s*$", head
        )
        if m:
            return op, q.index_at(m.start())
    return None


def _in_range(col: Column, value: float | None) -> bool:
    """Whether `value` could be compared with `col`: not far outside the column's profiled range.

    A 0/1 flag is never compared with 5000: the number belongs to another column (or to none)."""
    if value is None or col.min is None or col.max is None:
        return True
    span = max(col.max - col.min, 1.0)
    shares = [value, value / 100] if col.max <= 1.0 else [value]  # "above 95 per cent" of a 0..1 share
    return any(col.min - span <= v <= col.max + span for v in shares)


def _nearest_numeric(
    q: Question, index: int, before_only: bool = False, value: float | None = None
) -> Column | None:
    best: tuple[int, Column] | None = None
    for c in q.links.columns:
        # a key ("PassengerId" from "passenger") is compared only when named in full
        col = next(
            (
                cand
                for cand, _ in c.candidates
                if cand.numeric and (cand.measure or c.score >= 3.0) and _in_range(cand, value)
            ),
            None,
        )
        if col is None:
            continue
        if c.start <= index < c.end:
            return col
        dist = index - c.end if c.end <= index else (None if before_only else (c.start - index) + 3)
        if dist is None:
            continue
        if best is None or dist < best[0]:
            best = (dist, col)
    return best[1] if best else None


def _hour_column(q: Question) -> Column | None:
    """The column holding the hour of the day (0..23, named with "hour"), if the table has one."""
    return next(
        (
            c
            for c in q.schema.columns
            if c.integral
            and "hour" in c.words
            and c.min is not None
            and c.max is not None
            and c.min >= 0
            and c.max <= 23
        ),
        None,
    )


def _clock_hour(q: Question, index: int, value: float) -> float | None:
    """The hour of the day that "8 PM" / "6 am" spells (the number at `index`), else None."""
    nxt = q.tokens[index + 1].text if index + 1 < len(q.tokens) else ""
    if nxt not in ("am", "pm", "a.m", "p.m") or not float(value).is_integer() or not 1 <= value <= 12:
        return None
    return value % 12 + (12 if nxt.startswith("p") else 0)


def _clock_range(
    q: Question, start: NumberLink, end: NumberLink | None, found: list[tuple[int, str, float, Column]]
) -> bool:
    """ "between 9 AM and 5 PM": the hours from the first up to (not including) the second, on the hour
    column. True when the two numbers were such a range (filtered, or left unplaced when the table has no
    hour column or the range wraps past midnight, so that the question is refused, not answered wrong)."""
    if end is None or end.index != start.index + 3 or q.tokens[start.index + 2].text not in ("and", "to"):
        return False
    lo, hi = _clock_hour(q, start.index, start.value), _clock_hour(q, end.index, end.value)
    if lo is None or hi is None:
        return False
    hour_col = _hour_column(q)
    if hour_col is not None and lo < hi:
        found.append((start.index, ">=", lo, hour_col))
        found.append((end.index, "<", hi, hour_col))
        q.used.update({start.index - 1, start.index + 1, start.index + 2, end.index + 1})
    return True


def _named_just_before(q: Question, index: int, value: float) -> Column | None:
    """The numeric column a word right before the number names ("hour 0 to 5" → hour_of_day).

    Only a word no link took, naming exactly one numeric column whose range holds the value."""
    if index == 0 or q.links.covered(index - 1):
        return None
    word = q.tokens[index - 1].stem
    if word in STOP_STEMS:
        return None
    named = [c for c in q.schema.columns if c.numeric and word in c.content_words and _in_range(c, value)]
    return named[0] if len(named) == 1 and named[0].min is not None and named[0].min <= value else None


def _numeric_filters(q: Question, skip: set[int]) -> list[tuple[int, str, float, Column]]:
    """Comparisons "column op number" found in the question (not yet turned into filters)."""
    found: list[tuple[int, str, float, Column]] = []
    toks = q.tokens
    numbers = [n for n in q.links.numbers if n.index not in skip]
    i = 0
    while i < len(numbers):
        n = numbers[i]
        between = toks[n.index - 1].text in ("between", "from", "ranked", "rank") if n.index > 0 else False
        if between and _clock_range(q, n, numbers[i + 1] if i + 1 < len(numbers) else None, found):
            i += 2
            continue
        joined = i + 1 < len(numbers) and numbers[i + 1].index == n.index + 2
        if (
            joined
            and toks[n.index + 1].text in ("to", "through", "and", "-")
            and (between or toks[n.index + 1].text in ("to", "through"))
        ):
            col = _named_just_before(q, n.index - 1 if between else n.index, n.value) or _nearest_numeric(
                q, n.index, value=n.value
            )
            if col is not None:
                pct = (
                    any(t.text in ("per", "percent", "cent", "%") for t in toks[n.index : n.index + 3])
                    or n.percent
                )
                lo, hi = _percent_scale(col, n.value, pct), _percent_scale(col, numbers[i + 1].value, pct)
                found.append((n.index, "between", lo, col))
                found.append((numbers[i + 1].index, "between_hi", hi, col))
                i += 2
                continue
        cmp = _comparison_at(q, n.index)
        if cmp is None:
            i += 1
            continue
        op, first = cmp
        hour = _clock_hour(q, n.index, n.value)
        if hour is not None:
            # "after 8 PM" is a time of day: the hour column, or no filter (the number stays unplaced)
            hour_col = _hour_column(q)
            if hour_col is not None:
                found.append((n.index, ">=" if op == ">" else op, hour, hour_col))
                q.used.update({first, n.index + 1})
            i += 1
            continue
        col = _nearest_numeric(q, first if first < n.index else n.index, before_only=False, value=n.value)
        skip_words = ("per", "cent", "percent", "%", "points", "point")
        after = n.index + 1
        while after < len(toks) and toks[after].text in skip_words:
            after += 1
        right = q.links.column_at(after)
        if right is not None and right.start == after and after > n.index + 1:
            col = next((cc for cc, _ in right.candidates if cc.numeric), col)  # "80 per cent chance"
        elif right is not None and right.start == after and right.end == after + 1:
            # a unit right after the number names its column ("above 5000 INR" → amount (INR))
            unit = next(
                (cc for cc, _ in right.candidates if cc.numeric and cc.measure and _in_range(cc, n.value)),
                None,
            )
            col = unit if unit is not None else col
        # a comparator word that itself links a column ("older" → age) decides the column
        for c in q.links.columns:
            if first <= c.start < n.index:
                cand = next((cc for cc, _ in c.candidates if cc.numeric and _in_range(cc, n.value)), None)
                if cand is not None:
                    col = cand
        if col is not None:
            pct = n.percent or any(
                t.text in ("per", "percent", "cent") for t in toks[n.index + 1 : n.index + 3]
            )
            value = _percent_scale(col, n.value, pct)
            if n.index + 1 < len(toks) and toks[n.index + 1].stem == "decade":
                value *= 10
            found.append((n.index, op, value, col))
            q.used.add(first)
        i += 1
    return found


def _sign_filters(q: Question) -> None:
    """ "negative profit" → Profit < 0, "positive balance" → > 0."""
    for c in q.links.columns:
        before = q.tokens[c.start - 1].text if c.start > 0 else ""
        col = next((x for x, _ in c.candidates if x.numeric), None)
        if (
            col is None
            or before not in ("negative", "positive")
            or any(i in q.used for i in range(c.start, c.end))
        ):
            continue
        op = "<" if before == "negative" else ">"
        q.filters.append(Filter(col, f"{col.sql} {op} 0", f"`{col.name}` {op} 0", c.start - 1, c.end))
        q.used.update(range(c.start - 1, c.end))


def _ordinal_filters(q: Question, skip: set[int]) -> None:
    """ "first class" → Pclass = 1; "class 1", "rating 4" → = 1, = 4 (small integer columns only)."""
    for c in q.links.columns:
        if any(i in q.used for i in range(c.start, c.end)):
            continue
        col = next((x for x, _ in c.candidates if x.integral and x.max is not None and x.max <= 20), None)
        if col is None:
            continue
        before = q.tokens[c.start - 1].text if c.start > 0 else ""
        after = next((n for n in q.links.numbers if n.index == c.end and n.index not in skip), None)
        value: float | None = None
        index = -1
        if before in ORDINALS and c.start - 1 not in q.used:
            value, index = float(ORDINALS[before]), c.start - 1
        elif after is not None and _comparison_at(q, after.index) is None:
            value, index = after.value, after.index
        if value is None or (col.min is not None and col.max is not None and not col.min <= value <= col.max):
            continue
        q.filters.append(
            Filter(col, f"{col.sql} = {_num_sql(value)}", f"`{col.name}` = {value:g}", index, index + 1)
        )
        q.used.update({index, *range(c.start, c.end)})


_POSSIBLE = re.compile(
    r"\b((?P<ord>second|third|2nd|3rd)\s+)?(?P<end>worst|lowest|minimum|best|highest|maximum|top)\s+possible\b"
)


def _possible_filters(q: Question) -> None:
    """ "the second worst possible rating" → the column equals its second smallest value."""
    for m in _POSSIBLE.finditer(q.low):
        index = q.index_at(m.start())
        after = q.index_at(m.end())
        link = next((c for c in q.links.columns if after <= c.start <= after + 2), None)
        col = next((x for x, _ in link.candidates if x.numeric), None) if link is not None else None
        if link is None or col is None:
            continue
        offset = {"second": 1, "2nd": 1, "third": 2, "3rd": 2}.get(m.group("ord") or "", 0)
        low = m.group("end") in ("worst", "lowest", "minimum")
        value = (
            f"(SELECT DISTINCT {col.sql} FROM {q.schema.from_sql} WHERE {col.sql} IS NOT NULL "
            f"ORDER BY 1 {'ASC' if low else 'DESC'} LIMIT 1 OFFSET {offset})"
        )
        text = f"`{col.name}` = its {m.group(0).replace(' possible', '')} value"
        q.filters.append(Filter(col, f"{col.sql} = {value}", text, index, link.end))
        q.used.update(range(index, link.end))


def _perfect_filters(q: Question) -> None:
    _possible_filters(q)
    for m in re.finditer(r"\bperfect\b", q.low):
        index = q.index_at(m.start())
        col = None
        for c in q.links.columns:
            if c.start > index and c.start - index <= 6:
                col = next((cc for cc, _ in c.candidates if cc.numeric and cc.max is not None), None)
                if col:
                    q.used.update(range(c.start, c.end))
                    break
        if col is not None and col.max is not None:
            q.filters.append(
                Filter(
                    col,
                    f"{col.sql} = {_num_sql(col.max)}",
                    f"`{col.name}` = {col.max:g} (its maximum)",
                    index,
                    index + 1,
                )
            )
            q.used.add(index)


def _flag_filters(q: Question, target_index: int | None) -> None:
    for c in q.links.columns:
        word = q.tokens[c.start].text
        if word.endswith("less") and len(word) > 6 and c.column.numeric and c.end - c.start == 1:
            # "childless" → children = 0
            q.filters.append(
                Filter(c.column, f"{c.column.sql} = 0", f"`{c.column.name}` = 0", c.start, c.end, "=", 0.0)
            )
            q.used.update(range(c.start, c.end))
    for c in q.links.columns:
        col = c.column
        flags = col.flag_values
        if flags is None or any(i in q.used for i in range(c.start, c.end)):
            continue
        if target_index is not None and c.start == target_index and q.answer_type != "number":
            continue
        neg = _negated(q.tokens, c.start, 4)
        lit = flags[1] if neg else flags[0]
        q.filters.append(
            Filter(col, f"{col.sql} = {lit}", f"`{col.name}` = {lit.strip(chr(39))}", c.start, c.end)
        )
        q.used.update(range(c.start, c.end))
