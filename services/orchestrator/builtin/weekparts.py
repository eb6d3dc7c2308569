"""Weekdays against weekends: a measure on both sides of a weekend flag, never the weekend alone."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import (
    _AGG_NAME,
    _AGG_SQL,
    _Ctx,
    _free,
    _is_count_question,
    _plan,
    c_quote,
)
from services.orchestrator.builtin.schema import Column
from services.orchestrator.plan import Plan

_WEEKDAY = re.compile(r"\b(weekdays?|week days?|working days?|workdays?)\b")
_WEEKEND = re.compile(r"\bweek-?ends?\b")
_MORE = re.compile(r"\b(higher|more|greater|larger|bigger)\b")
_LESS = re.compile(r"\b(lower|less|smaller|fewer)\b")


def _weekend_flag(ctx: _Ctx) -> Column | None:
    return next(
        (col for col in ctx.schema.columns if "weekend" in col.words and col.flag_values is not None), None
    )


def _weekend_contrast(ctx: _Ctx) -> Plan | None:
    """ "average amount on weekdays vs weekends", "is it higher on weekends than on weekdays?"."""
    q = ctx.q
    weekday, weekend = _WEEKDAY.search(q.low), _WEEKEND.search(q.low)
    if weekday is None or weekend is None or q.loose_numbers():
        return None
    flag = _weekend_flag(ctx)
    if flag is not None and flag.flag_values is not None:
        yes, no = flag.flag_values
        on_weekend, on_weekday, source = f"{flag.sql} = {yes}", f"{flag.sql} = {no}", f"`{flag.name}`"
    else:
        # no weekend flag: the day of the week of the table's only date column says it
        dates = [col for col in ctx.schema.columns if col.temporal]
        if len(dates) != 1:
            return None
        flag = dates[0]
        on_weekend = f"isodow({flag.sql}) IN (6, 7)"
        on_weekday, source = f"isodow({flag.sql}) BETWEEN 1 AND 5", f"day of week of `{flag.name}`"
    measure = next((lk.column for lk in _free(ctx) if lk.column.measure and lk.column is not flag), None)
    agg = q.agg if q.agg in _AGG_SQL else ("avg" if measure is not None else None)
    if _is_count_question(q) and q.agg not in _AGG_SQL:
        value, label = "count(*)", "rows"
    elif measure is not None and agg is not None:
        value, label = _AGG_SQL[agg].format(measure.sql), f"{_AGG_NAME[agg].lower()} {measure.name}"
    else:
        return None
    rest = [f for f in q.filters if f.column is not flag]
    if q.answer_type == "boolean":
        more, less = _MORE.search(q.low), _LESS.search(q.low)
        if (more is None) == (less is None):
            return None
        first_weekend = weekend.start() < weekday.start()
        op = ">" if more is not None else "<"
        a, b = ("weekend", "weekday") if first_weekend else ("weekday", "weekend")
        if "max(" in value and " - min(" in value:
            return None  # a range is two aggregates: FILTER would apply to one only
        sql = (
            f"SELECT {a} {op} {b} AS answer, weekday, weekend FROM (SELECT "
            f"{value} FILTER (WHERE {on_weekday}) AS weekday, "
            f"{value} FILTER (WHERE {on_weekend}) AS weekend FROM {ctx.table}{ctx.where(filters=rest)})"
        )
        word = "higher" if op == ">" else "lower"
        statement = f"the {label} is {word} on {a}s than on {b}s{ctx.basis(rest)}"
        return _plan(
            ctx,
            sql,
            c.boolean(statement, ctx.follow_ups(measure, flag)),
            f"The {label} on weekdays and on weekends ({source}), compared.",
        )
    day = c_quote("day type")
    sql = (
        f"SELECT CASE WHEN {on_weekend} THEN 'weekend' ELSE 'weekday' END AS {day}, "
        f"{value} AS {c_quote(label)} FROM {ctx.table}{ctx.where([f'{flag.sql} IS NOT NULL'], rest)} "
        "GROUP BY 1 ORDER BY 1"
    )
    return _plan(
        ctx,
        sql,
        c.breakdown(
            f"{label[:1].upper()}{label[1:]} on weekdays and weekends ({source}){ctx.basis(rest)}",
            "day type",
            label,
            ctx.follow_ups(measure, flag),
            False,
            False,
            c.unit_of(measure) if measure is not None and label != "rows" else "",
        ),
        f"The {label} on weekdays against weekends, split by {source}.",
    )
