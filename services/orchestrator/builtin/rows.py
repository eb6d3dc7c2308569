"""Questions about rows themselves: row order, how often values occur, counts per column."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import _Ctx, _first, _plan, c_quote
from services.orchestrator.builtin.text import same_word, stem
from services.orchestrator.plan import Plan

_FIRST_K = re.compile(r"\bfirst\s+(\([^)]*\)\s+)?(?P<k>\w+)\s+(different|unique|distinct)\b")


_FIRST_ROWS = re.compile(r"\b(in|of|from|among) the (first|top) (?P<n>\w+) (rows|records|entries|lines)\b")


_APPEARS_FIRST = re.compile(
    r"\b(appears?|comes?|shows? up|occurs?) first\b|\bfirst (non-null |non-empty )?(value|entry)\b"
)


def _row_order(ctx: _Ctx) -> Plan | None:
    """Questions about the order of the rows: the first k distinct values, values in the first n rows."""
    from services.orchestrator.builtin.text import word_number

    q = ctx.q
    first_k, first_rows, appears = (
        _FIRST_K.search(q.low),
        _FIRST_ROWS.search(q.low),
        _APPEARS_FIRST.search(q.low),
    )
    if not (first_k or first_rows or appears):
        return None
    col = _first(ctx, lambda x: not x.listlike)
    if col is None:
        return None
    source = f"(SELECT *, row_number() OVER () AS __row FROM {ctx.table})"
    if first_rows is not None:
        n = word_number(first_rows.group("n"))
        if n is None:
            return None
        source = f"(SELECT *, row_number() OVER () AS __row FROM {ctx.table} LIMIT {int(n)})"
    where = ctx.where([f"{col.sql} IS NOT NULL"])
    if first_k is not None or q.distinct:
        k = word_number(first_k.group("k")) if first_k is not None else None
        limit_sql = f" LIMIT {int(k)}" if k else ""
        sql = (
            f"SELECT {col.sql} AS {c_quote(col.name)} FROM {source}{where} GROUP BY 1 ORDER BY "
            f"min(__row){limit_sql}"
        )
        label = f"The first distinct values of `{col.name}` in row order{ctx.basis()}"
        return _plan(
            ctx, sql, c.listing(label, ctx.follow_ups(col)), f"Distinct `{col.name}` by first appearance."
        )
    limit = q.k or (1 if appears and q.answer_type != "list" else 1000)
    sql = f"SELECT {col.sql} AS {c_quote(col.name)} FROM {source}{where} ORDER BY __row LIMIT {limit}"
    if q.answer_type == "list":
        return _plan(
            ctx,
            sql,
            c.listing(f"`{col.name}` in row order{ctx.basis()}", ctx.follow_ups(col)),
            f"Read `{col.name}` in row order.",
        )
    return _plan(
        ctx,
        sql,
        c.category(f"The first `{col.name}` in row order{ctx.basis()}", ctx.follow_ups(col)),
        f"Read the first `{col.name}` in row order.",
    )


_TIMES = re.compile(
    r"\b(appears?|occurs?|repeated|shows? up|is listed|are listed|recur)\s+"
    r"(?P<op>exactly |only |more than |at least |fewer than |less than |at most )?"
    r"(?P<n>once|twice|thrice|\w+ times)\b"
)


def _frequency(ctx: _Ctx) -> Plan | None:
    """ "How many Parent IDs appear exactly once?": values counted by how often they occur."""
    from services.orchestrator.builtin.text import word_number

    q = ctx.q
    m = _TIMES.search(q.low)
    if m is None:
        return None
    word = m.group("n").split()[0]
    n = {"once": 1.0, "twice": 2.0, "thrice": 3.0}.get(word) or word_number(word)
    col = _first(ctx, lambda x: not x.temporal)
    if n is None or col is None:
        return None
    op = {"more than ": ">", "at least ": ">=", "fewer than ": "<", "less than ": "<", "at most ": "<="}.get(
        m.group("op") or "", "="
    )
    q.used.update(x.index for x in q.links.numbers if x.index >= q.index_at(m.start()))
    grouped = (
        f"SELECT {col.sql} AS {c_quote(col.name)}, count(*) AS n FROM {ctx.table}"
        f"{ctx.where([f'{col.sql} IS NOT NULL'])} GROUP BY 1 HAVING count(*) {op} {int(n)}"
    )
    label = f"Values of `{col.name}` that occur {op} {int(n)} time(s){ctx.basis()}"
    if q.answer_type == "list" or q.has(r"^\W*(which|what are)\b"):
        sql = f"{grouped} ORDER BY 2 DESC, 1 LIMIT 1000"
        return _plan(
            ctx, sql, c.listing(label, ctx.follow_ups(col)), f"Count each `{col.name}`, keep {op} {n:g}."
        )
    sql = f"SELECT count(*) AS n FROM ({grouped})"
    return _plan(
        ctx,
        sql,
        c.number(label, ctx.follow_ups(col), integral=True),
        f"Count each `{col.name}`, keep {op} {n:g}.",
    )


_PER_COLUMN = re.compile(
    r"\b(?P<what>non-null|non null|not null|missing|null|empty|distinct|unique)\b.*\b(each|every|all|per)\s+"
    r"(?P<word>\w+\s+)?columns?\b"
)


def _per_column(ctx: _Ctx) -> Plan | None:
    """ "List counts of non-null values for each Tier column": one count per column, in table order."""
    q = ctx.q
    m = _PER_COLUMN.search(q.low)
    if m is None:
        return None
    word = (m.group("word") or "").strip()
    cols = [
        col
        for col in ctx.schema.columns
        if not word or same_word(stem(word), col.words[0] if col.words else "")
    ]
    cols = cols or ctx.schema.columns
    what = m.group("what")
    if what in ("distinct", "unique"):
        exprs = [f"count(DISTINCT {col.sql})" for col in cols]
    elif what in ("missing", "null", "empty"):
        exprs = [f"count(*) - count({col.sql})" for col in cols]
    else:
        exprs = [f"count({col.sql})" for col in cols]
    values = ", ".join(exprs)
    sql = f"SELECT unnest([{values}]) AS n FROM (SELECT * FROM {ctx.table}{ctx.where()})"
    names = ", ".join(f"`{col.name}`" for col in cols)
    return _plan(
        ctx,
        sql,
        c.listing(f"{what.title()} counts per column ({names})", ctx.follow_ups()),
        "One count per column.",
    )
