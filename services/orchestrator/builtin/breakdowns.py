"""Breakdowns: values per group or per time bucket, rates and shares, with charts."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import (
    _ADDITIVE,
    _AGG_NAME,
    _AGG_SQL,
    _Ctx,
    _first,
    _free,
    _is_count_question,
    _plan,
    c_quote,
)
from services.orchestrator.builtin.question import Filter, Question
from services.orchestrator.builtin.schema import Column
from services.orchestrator.plan import Plan

_ALONE = (
    r"(?=\s*(\?|$|trend|breakdown|totals?|counts?|volumes?|basis))"  # "monthly?" but not "monthly income"
)


_BUCKETS = [
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(hour|hours)\b|\bhourly"
        + _ALONE
        + r"|\bhour of (the )?day\b",
        "hour",
        "hour({})",
    ),
    (r"\bday of (the )?week\b|\bweekday|\bby day of\b", "day of week", "dayname({})"),
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(day|date|days)\b|\bdaily" + _ALONE,
        "day",
        "CAST({} AS DATE)",
    ),
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(week|weeks)\b|\bweekly" + _ALONE,
        "week",
        "CAST(date_trunc('week', {}) AS DATE)",
    ),
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(month|months)\b|\bmonthly"
        + _ALONE
        + r"|\bmonth over month\b|\btrend\b"
        r"|\bover time\b",
        "month",
        "strftime({}, '%Y-%m')",
    ),
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(quarter|quarters)\b|\bquarterly" + _ALONE,
        "quarter",
        "strftime({}, '%Y') || '-Q' || quarter({})::VARCHAR",
    ),
    (
        r"\b(by|per|each|every|over|across)\s+(the\s+)?(year|years)\b|\byearly(?=\s*(\?|$|trend|totals?))|\bannually\b",
        "year",
        "year({})",
    ),
]


def _time_buckets(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    temporal = [col for col in ctx.schema.columns if col.timelike]
    if not temporal:
        return None
    for pattern, name, expr in _BUCKETS:
        unit = "(day of (the )?week|weekday)" if name == "day of week" else name
        asked = rf"\b(which|what|busiest|quietest|peak)\s+(\w+\s+)?{unit}\b"
        if not q.has(pattern) and not q.has(asked):
            continue
        tcol = next((lk.column for lk in q.links.columns if lk.column.timelike), temporal[0])
        tsql = tcol.time_sql
        bucket = expr.format(tsql, tsql) if name == "quarter" else expr.format(tsql)
        same = tuple(
            col for col in ctx.schema.columns if name.split()[0] in col.words
        )  # hour_of_day for "hour"
        value_sql, value_label, percent, unit = _measure_expr(ctx, exclude=(tcol, *same))
        if q.superlative is not None and q.superlative.mode:
            value_sql, value_label, percent, unit = "count(*)", "rows", False, ""  # "the busiest hour"
        order = "min(" + tsql + ")" if name == "day of week" else "1"
        sql = (
            f'SELECT {bucket} AS "{name}", {value_sql} AS "{value_label}" FROM {ctx.table}'
            f"{ctx.where([f'{tsql} IS NOT NULL'])} GROUP BY 1 ORDER BY {order}"
        )
        if name == "day of week":
            sql = (
                f'SELECT {bucket} AS "{name}", {value_sql} AS "{value_label}" FROM {ctx.table}'
                f"{ctx.where([f'{tsql} IS NOT NULL'])} GROUP BY 1, isodow({tsql}) ORDER BY "
                f"isodow({tsql})"
            )
        label = f"{value_label} by {name} of `{tcol.name}`{ctx.basis()}"
        sup = q.superlative
        if sup is not None and q.answer_type != "list" and not q.k:
            top = f"SELECT * FROM ({sql}) ORDER BY 2 {'DESC' if sup.desc else 'ASC'}, 1 LIMIT 1"
            word = "highest" if sup.desc else "lowest"
            return _plan(
                ctx,
                top,
                c.category(
                    f"The {name} with the {word} {value_label}{ctx.basis()}",
                    ctx.follow_ups(tcol),
                    value_label,
                ),
                f"Bucket `{tcol.name}` by {name} and take the {word}.",
            )
        return _plan(
            ctx,
            sql,
            c.breakdown(label, name, value_label, ctx.follow_ups(tcol), percent, True, unit),
            f"A time series: {value_label} per {name} of `{tcol.name}`.",
        )
    return None


def _event_filter(ctx: _Ctx) -> Filter | None:
    """The event a rate or share counts: a value filter ("failed") or a flag column ("fraud")."""
    q = ctx.q
    m = re.search(r"\b(rate|share|percentage|proportion|percent|fraction|ratio)\b", q.low)
    if m is not None:
        at = q.index_at(m.start())
        named = next((f for f in q.filters if f.end in (at, at - 1) and f.op in ("", "=")), None)
        if named is not None:
            return named  # "fraud rate", "failure rate"
        flag = next((lk for lk in _free(ctx) if lk.end in (at, at - 1) and lk.column.flag_values), None)
        if flag is not None and flag.column.flag_values is not None:
            positive = flag.column.flag_values[0]
            return Filter(
                flag.column,
                f"{flag.column.sql} = {positive}",
                f"`{flag.column.name}` = {positive}",
                flag.start,
                flag.end,
            )
        # "What percentage of P2M transactions are in Food?": the base comes before the verb, the event after
        verb = re.search(r"\b(are|is|were|was|belong|belongs|fall|falls|come|comes)\b", q.low[m.end() :])
        if verb is not None:
            at_verb = q.index_at(m.end() + verb.start())
            values = [f for f in q.filters if not f.op and f.start >= 0]
            base = [f for f in values if at < f.start < at_verb]
            event = [f for f in values if f.start > at_verb]
            if base and event:
                return event[0]
    for f in q.filters:
        if not f.op:
            return f
    for lk in _free(ctx):
        flags = lk.column.flag_values
        if flags is not None:
            return Filter(
                lk.column,
                f"{lk.column.sql} = {flags[0]}",
                f"`{lk.column.name}` = {flags[0]}",
                lk.start,
                lk.end,
            )
    for f in q.filters:
        return f
    return None


def _measure_expr(ctx: _Ctx, exclude: tuple[Column | None, ...] = ()) -> tuple[str, str, bool, str]:
    """The value of a breakdown: count, a rate, or an aggregate of a measure."""
    q = ctx.q
    if q.has(r"\b(rate|share|percentage|proportion|percent|ratio)\b|%"):
        event = _event_filter(ctx)
        if event is not None:
            q.filters = [f for f in q.filters if f is not event]
            word = re.search(r"\b(\w+)\s+(rate|share|percentage|proportion|ratio)\b", q.low)
            name = f"{word.group(1)} {word.group(2)}" if word else "share"
            return f"round(100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END), 2)", f"{name} (%)", True, ""
    measure = _first(ctx, lambda x: x.measure and x.flag_values is None, exclude=exclude)
    agg = q.agg if q.agg in _AGG_SQL else None
    if measure is not None and (agg or not _is_count_question(q)):
        agg = agg or ("sum" if _ADDITIVE.search(measure.name) else "avg")
        label = f"{_AGG_NAME[agg].lower()} {measure.name}"
        return _AGG_SQL[agg].format(measure.sql), label, False, c.unit_of(measure)
    return "count(*)", "rows", False, ""


def _names_a_measured_rate(q: Question) -> bool:
    """Whether "<words> rate/share/ratio" names a numeric column (the data holds the rate itself)."""
    for i, t in enumerate(q.tokens):
        if t.text not in ("rate", "rates", "share", "ratio", "percentage") or i == 0:
            continue
        link = q.links.column_at(i - 1) or q.links.column_at(i)
        # a 0/1 flag's rate is the share of its rows, which the rate shape computes
        if link is not None and link.column.numeric and not 0 < link.column.distinct <= 2:
            return True
    return False


_SHARE_OF = re.compile(
    r"\b(share|percentage|percent|proportion|fraction|part)\s+of\s+(the\s+)?(total\s+|overall\s+|all\s+)?"
)


def _share_measure(q: Question, event_column: Column | None) -> Column | None:
    """The additive measure a share is taken of ("the share of total sales"): a numeric column, not a 0/1
    flag and not the event's own column, named right after "share of"."""
    for m in _SHARE_OF.finditer(q.low):
        link = q.links.column_at(q.index_at(m.end()))
        if link is None:
            continue
        col = link.column
        if col.numeric and col is not event_column and not 0 < col.distinct <= 2:
            return col
    return None


def _rate(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if not q.has(
        r"\b(rate|share|percentage|proportion|percent|fraction|ratio)\b(?! "
        r"(their|the|a|an|his|her|its|our|my))"
        r"|%|\bwhat part\b"
    ):
        return None
    if _group_column(ctx) is not None:
        return None
    if _names_a_measured_rate(q):
        return None  # "the poverty rate" where `poverty` holds the rate: an aggregate of that column
    event = _event_filter(ctx)
    if event is None:
        return None
    rest = [f for f in q.filters if f is not event]
    target = _first(ctx, lambda x: x.textual and not x.listlike and x is not event.column)
    if q.superlative is not None and target is not None and q.answer_type != "boolean":
        # "Which bank has the highest failure rate?": the rate per group, the top group
        desc = q.superlative.desc
        rate = f"round(100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END), 4)"
        limit = q.k or 1
        sql = (
            f"SELECT {target.sql} AS {c_quote(target.name)}, {rate} AS rate_percent FROM {ctx.table}"
            f"{ctx.where([f'{target.sql} IS NOT NULL'], rest)} GROUP BY 1 "
            f"ORDER BY 2 {'DESC' if desc else 'ASC'}, 1 LIMIT {limit}"
        )
        word = "highest" if desc else "lowest"
        label = f"`{target.name}` with the {word} share of {event.text}{ctx.basis(rest)}"
        composer = (
            c.listing(label, ctx.follow_ups(target))
            if q.k or q.answer_type == "list"
            else c.category(label, ctx.follow_ups(target), "rate %")
        )
        return _plan(ctx, sql, composer, f"The share of {event.text} per `{target.name}`, the {word} first.")
    compared = _compared_values(ctx, rest)
    if compared is not None and q.answer_type != "boolean":
        # "Compare the failure rate of Android and iOS": one rate per named value, not a pooled one
        rate = f"round(100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END), 4)"
        sql = (
            f"SELECT {compared.sql} AS {c_quote(compared.name)}, {rate} AS rate_percent FROM {ctx.table}"
            f"{ctx.where(filters=rest)} GROUP BY 1 ORDER BY 1"
        )
        label = f"Share of rows with {event.text} by `{compared.name}`{ctx.basis(rest)}"
        return _plan(
            ctx,
            sql,
            c.breakdown(label, compared.name, "rate %", ctx.follow_ups(compared), True),
            f"The share of {event.text} for each named `{compared.name}`.",
        )
    measure = _share_measure(q, event.column)
    if measure is not None:
        # "the share of total population in the South": a share of the measure, not of the rows
        sql = (
            f"SELECT round(100.0 * sum(CASE WHEN {event.sql} THEN {measure.sql} ELSE 0 END) "
            f"/ nullif(sum({measure.sql}), 0), 4) AS share_percent FROM {ctx.table}{ctx.where(filters=rest)}"
        )
        label = f"Share of total `{measure.name}` with {event.text}{ctx.basis(rest)}"
        return _plan(
            ctx,
            sql,
            c.number(label, ctx.follow_ups(measure), percent=True),
            f"The share of the sum of `{measure.name}` where {event.text}.",
        )
    sql = (
        f"SELECT round(100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END), 4) AS rate_percent, "
        f"count(*) AS n FROM {ctx.table}{ctx.where(filters=rest)}"
    )
    label = f"Share of rows with {event.text}{ctx.basis(rest)}"
    return _plan(
        ctx,
        sql,
        c.number(label, ctx.follow_ups(event.column), percent=True),
        f"A rate: the share of rows where {event.text}.",
    )


def _compared_values(ctx: _Ctx, filters: list) -> Column | None:
    """The column of a filter naming several values to set side by side ("Android and iOS", "A vs B").

    "Android or iOS" pools them; "and"/"vs" or a "compare" word asks for each."""
    q = ctx.q
    for f in filters:
        col = f.column
        if col is None or not col.textual or " IN (" not in f.sql or " NOT IN (" in f.sql or f.start < 0:
            continue
        if len(re.findall(r"'(?:[^']|'')*'", f.sql)) < 2:
            continue
        span = q.low[q.tokens[f.start].start : q.tokens[f.end - 1].end]
        compare = q.has(r"\b(compare|comparison|versus|vs|respectively|each|separately)\b")
        if re.search(r"\b(and|vs|versus)\b", span) or (compare and " or " not in span):
            return col
    return None


_GROUP_WORDS = re.compile(
    r"\b(by|per|for each|for every|each|across|broken down by|grouped by|split by|among the)\s+"
    r"(the\s+|different\s+|each\s+)?",
    re.I,
)


_SIZE_WORDS = {"volume", "count", "frequency", "numb"}  # stems


def _groupable(col: Column, rows: int, full: bool) -> bool:
    """Worth grouping by: a category (not an id: "per order"), a small code, or a date named in full."""
    return (
        (col.textual and not col.listlike and (full or col.distinct < 0.5 * rows))
        or (col.numeric and 1 < col.distinct <= 60)
        or (col.temporal and full)
    )


def _group_column(ctx: _Ctx) -> Column | None:
    q = ctx.q
    for m in _GROUP_WORDS.finditer(q.low):
        index = q.index_at(m.end())
        for lk in q.links.columns:
            if lk.start == index or (lk.start == index + 1 and q.tokens[index].stem in ("the", "different")):
                rows, full = max(ctx.schema.row_count, 1), lk.score >= 3.0
                after = q.tokens[lk.end].stem if lk.end < len(q.tokens) else ""
                if not full and after in _SIZE_WORDS:
                    continue  # "by transaction volume" ranks by a count, it groups by no column
                col = next((x for x, _ in lk.candidates if _groupable(x, rows, full)), None)
                if col is not None:
                    return col
    return None


def _breakdown(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if q.answer_type == "boolean":
        return None
    group = _group_column(ctx)
    if group is None:
        return None
    sup = q.superlative
    named_first = next((lk for lk in _free(ctx) if lk.column.textual and lk.column is not group), None)
    if group.numeric and sup is not None and not sup.mode and named_first is not None:
        return None  # "the top 5 countries by purchasing power" ranks countries by a measure
    value_sql, value_label, percent, unit = _measure_expr(ctx, exclude=(group,))
    desc = q.superlative.desc if q.superlative is not None and not q.superlative.mode else True
    limit = f" LIMIT {q.k}" if q.k else ""
    sql = (
        f"SELECT {group.sql} AS {c_quote(group.name)}, {value_sql} AS {c_quote(value_label)} FROM {ctx.table}"
        f"{ctx.where([f'{group.sql} IS NOT NULL'])} GROUP BY 1 ORDER BY 2 {'DESC' if desc else 'ASC'}, "
        f"1{limit}"
    )
    label = f"{value_label[0].upper()}{value_label[1:]} by `{group.name}`{ctx.basis()}"
    if q.superlative is not None and q.answer_type != "list" and not q.k:
        sql = sql + f" LIMIT 1 OFFSET {q.superlative.offset}"
        return _plan(
            ctx,
            sql,
            c.category(
                f"`{group.name}` with the {'highest' if desc else 'lowest'} {value_label}{ctx.basis()}",
                ctx.follow_ups(group),
                value_label,
            ),
            f"Group by `{group.name}` and take the {'top' if desc else 'bottom'} one.",
        )
    return _plan(
        ctx,
        sql,
        c.breakdown(label, group.name, value_label, ctx.follow_ups(group), percent, False, unit),
        f"A breakdown: {value_label} per `{group.name}`.",
    )
