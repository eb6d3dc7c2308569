"""Plain aggregates: row counts, distinct values, one aggregate under filters, lookups."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import (
    _AGG_NAME,
    _AGG_SQL,
    _Ctx,
    _first,
    _free,
    _is_count_question,
    _pick,
    _plan,
    _unexplained,
    c_quote,
)
from services.orchestrator.builtin.question import AGG_WORDS
from services.orchestrator.plan import Plan


def _row_count(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if not _is_count_question(q) or q.distinct or q.filters or q.superlative:
        return None
    free = _free(ctx)
    if any(lk.column.textual or lk.column.numeric for lk in free) and not q.has(
        r"\b(rows|records|entries|lines|elements|observations)\b"
    ):
        return None
    if _unexplained(q):
        return None  # "how many people are smokers" without a smoker column is not the row count
    return _plan(
        ctx,
        f"SELECT count(*) AS row_count FROM {ctx.table}",
        c.number(f"Rows in `{ctx.schema.table}`", ctx.follow_ups(), integral=True),
        "Counting rows needs one aggregate over the table.",
    )


def _distinct(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    plain_list = q.answer_type == "list" and q.k is None and q.superlative is None and not q.filters
    if (
        not q.distinct
        and not plain_list
        and not q.has(r"\b(all|possible|every)\b.*\bvalues?\b|\bcategories\b")
    ):
        return None
    if q.superlative is not None and (q.superlative.mode or q.k):
        return None
    col = None
    for lk in _free(ctx):
        col = _pick(lk, lambda x: not x.temporal)
        if col is not None:
            break
    if col is None:
        return None
    if _is_count_question(q) or q.answer_type == "number":
        if col.listlike:
            sql = (
                f"SELECT count(DISTINCT v) FROM (SELECT unnest(string_split(trim({col.sql}, '[]'), ', ')) AS "
                "v "
                f"FROM {ctx.table}{ctx.where()}) WHERE v <> ''"
            )
        else:
            sql = f"SELECT count(DISTINCT {col.sql}) AS distinct_values FROM {ctx.table}{ctx.where()}"
        return _plan(
            ctx,
            sql,
            c.number(f"Distinct values of `{col.name}`{ctx.basis()}", ctx.follow_ups(col), integral=True),
            f"Count the distinct values of `{col.name}`.",
        )
    if q.answer_type not in ("list", "unknown"):
        return None
    sql = (
        f"SELECT {col.sql} AS {c_quote(col.name)} FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])}"
        f" GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1000"
    )
    return _plan(
        ctx,
        sql,
        c.listing(f"Distinct values of `{col.name}`{ctx.basis()}", ctx.follow_ups(col)),
        f"List the distinct values of `{col.name}`.",
    )


_ONE_AGG = r"(average|mean|median|maximum|max|minimum|min|sum|total|standard deviation|std|variance|range)"
_AGG_LIST = re.compile(
    rf"\b{_ONE_AGG}((\s*,\s*|\s+)(the\s+)?{_ONE_AGG})*(\s*,)?\s+(and|&)\s+(the\s+)?{_ONE_AGG}\b"
)


def _several_aggregates(ctx: _Ctx) -> Plan | None:
    """ "What are the average, median and maximum amount?": several aggregates of one measure, in order."""
    q = ctx.q
    listed = _AGG_LIST.search(q.low)
    if listed is None:
        return None
    found: list[tuple[int, str]] = []
    for pattern, agg in AGG_WORDS:
        if agg in _AGG_SQL:
            found += [(m.start(), agg) for m in re.finditer(pattern, listed.group(0))]
    aggs = list(dict.fromkeys(agg for _, agg in sorted(found)))
    if len(aggs) < 2 or q.loose_numbers():
        return None
    col = _first(ctx, lambda x: x.numeric)
    if col is None:
        return None
    values = ", ".join(_AGG_SQL[a].format(col.sql) for a in aggs)
    sql = f"SELECT unnest([{values}]) AS value FROM {ctx.table}{ctx.where()}"
    names = ", ".join(_AGG_NAME[a].lower() for a in aggs)
    return _plan(
        ctx,
        sql,
        c.listing(f"The {names} of `{col.name}`{ctx.basis()}, in that order", ctx.follow_ups(col)),
        f"Several aggregates of `{col.name}`: {names}.",
    )


def _aggregate(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if q.agg in _AGG_SQL:
        col = _first(ctx, lambda x: x.numeric, after=q.agg_index - 1) or _first(ctx, lambda x: x.numeric)
        col = col or next((lk.column for lk in q.links.columns if lk.column.measure), None)
        if col is None:
            return None
        sql = (
            f"SELECT {_AGG_SQL[q.agg].format(col.sql)} AS {c_quote(q.agg + ' ' + col.name)} FROM "
            f"{ctx.table}{ctx.where()}"
        )
        label = f"{_AGG_NAME[q.agg]} of `{col.name}`{ctx.basis()}"
        return _plan(
            ctx,
            sql,
            c.number(label, ctx.follow_ups(col), c.unit_of(col)),
            f"One aggregate: {q.agg}(`{col.name}`){' with filters' if q.filters else ''}.",
        )
    if _is_count_question(q):
        free = _free(ctx)
        if (
            free
            and q.agg_index >= 0
            and not q.has(r"\b(rows|records|entries|elements|observations|people)\b")
        ):
            lk = next((f for f in free if 0 <= f.start - q.agg_index <= 4), None)
            col = _pick(lk, lambda x: x.textual and not x.listlike) if lk is not None else None
            if col is not None and not q.filters:
                sql = f"SELECT count(DISTINCT {col.sql}) AS n FROM {ctx.table}{ctx.where()}"
                return _plan(
                    ctx,
                    sql,
                    c.number(f"Distinct values of `{col.name}`", ctx.follow_ups(col), integral=True),
                    f"Count the distinct `{col.name}`.",
                )
        if (
            not q.filters
            and not q.has(r"\b(rows|records|entries|elements|observations|people|products|items)\b")
            and free
        ):
            return None
        if q.distinct or (not q.filters and _unexplained(q)):
            return None  # "how many different X" with no X in the data
        sql = f"SELECT count(*) AS n FROM {ctx.table}{ctx.where()}"
        return _plan(
            ctx,
            sql,
            c.number(f"Rows{ctx.basis()}", ctx.follow_ups(), integral=True),
            "Count the rows that match the filters.",
        )
    return None


def _lookup(ctx: _Ctx) -> Plan | None:
    """ "What is Iceland's rank?": a value of one column for a row named by a value of another."""
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if not q.filters or q.answer_type in ("boolean",) or q.agg is not None:
        return None  # "total value in Maharashtra" is an aggregate this analyst could not place, not a lookup
    target = _first(ctx, lambda x: True)
    if target is None:
        return None
    sql = f"SELECT {target.sql} AS {c_quote(target.name)} FROM {ctx.table}{ctx.where()} LIMIT 50"
    composer = c.listing if q.answer_type == "list" else None
    if composer is not None:
        return _plan(
            ctx,
            sql,
            composer(f"`{target.name}`{ctx.basis()}", ctx.follow_ups(target)),
            f"Read `{target.name}` of the matching rows.",
        )
    return _plan(
        ctx,
        sql,
        c.category(f"`{target.name}`{ctx.basis()}", ctx.follow_ups(target)),
        f"Read `{target.name}` of the matching row.",
    )
