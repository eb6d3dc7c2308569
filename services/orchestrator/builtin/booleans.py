"""Yes/no questions: existence, an aggregate against a number, two groups against each other, the top value
against a named one, uniqueness and completeness, and counts against a number.

Every plan computes the verdict in SQL next to the numbers it rests on, so the text can show them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.filters import _comparison_at
from services.orchestrator.builtin.question import Filter
from services.orchestrator.builtin.schema import Column, literal

if TYPE_CHECKING:
    from services.orchestrator.builtin.context import _Ctx
    from services.orchestrator.plan import Plan

_AGG = {
    "avg": "avg",
    "median": "median",
    "sum": "sum",
    "max": "max",
    "min": "min",
    "std": "stddev_samp",
    "var": "var_samp",
}
_EXISTS = re.compile(
    r"^\s*(is|are) there\b|^\s*(does|do|did) (the|this|our) (dataset|data|table|database) "
    r"(contain|have|include)"
    r"|^\s*(is|are|does|do|did|has|have|was|were) (any|anyone|anybody|there)\b|\bany(one|body)\b"
    r"|\bany \w+ (with|who|that|whose|in|from)\b|\bexists?\b|^\s*did \w+ \w+",
    re.I,
)
_MORE = re.compile(r"\b(more|bigger|greater|larger|higher|better|older|longer|exceeds?)\b")
_LESS = re.compile(r"\b(less|fewer|smaller|lower|worse|younger|shorter|cheaper)\b")


def plan(ctx: _Ctx) -> Plan | None:
    for shape in (
        _rate_compare,
        _all_same,
        _two_sided,
        _top_is,
        _most_share,
        _aggregate_vs_number,
        _count_vs_number,
        _exists,
    ):
        result = shape(ctx)
        if result is not None:
            return result
    return None


def _mk(ctx: _Ctx, sql: str, statement: str, reasoning: str, *cols: Column | None) -> Plan:
    from services.orchestrator.builtin.context import _plan

    return _plan(ctx, sql, c.boolean(statement, ctx.follow_ups(*cols)), reasoning)


def _all_same(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    free = ctx.q.free_columns()
    col = free[0].column if free else None
    if q.has(r"\b(same|identical|constant)\b") and col is not None:
        sql = (
            f"SELECT count(DISTINCT {col.sql}) = 1 AS answer, count(DISTINCT {col.sql}) AS distinct_values "
            f"FROM {ctx.table}{ctx.where()}"
        )
        return _mk(ctx, sql, f"`{col.name}` has a single value{ctx.basis()}", "Count distinct values.", col)
    if not q.has(r"\b(all|every|each)\b"):
        return None
    if q.has(r"\b(unique|distinct|different)\b"):
        if col is None:
            return None
        sql = (
            f"SELECT count(DISTINCT {col.sql}) = count(*) AS answer, count(DISTINCT {col.sql}) AS "
            "distinct_values,"
            f" count(*) AS rows FROM {ctx.table}{ctx.where()}"
        )
        return _mk(
            ctx,
            sql,
            f"Every row has its own `{col.name}`{ctx.basis()}",
            "Compare distinct count and rows.",
            col,
        )
    if (
        q.has(r"\b(named|have an? \w+|filled|non[- ]?null|not null|present|complete|known)\b")
        and col is not None
        and not q.filters
    ):
        sql = (
            f"SELECT count({col.sql}) = count(*) AS answer, count(*) - count({col.sql}) AS missing "
            f"FROM {ctx.table}"
        )
        return _mk(ctx, sql, f"No row is missing `{col.name}`", "Count missing values.", col)
    if len(q.filters) >= 2:
        cond, pred = q.filters[:-1], q.filters[-1]
        sql = (
            f"SELECT coalesce(bool_and({pred.sql}), false) AS answer, count(*) AS rows, "
            f"sum(CASE WHEN {pred.sql} THEN 1 ELSE 0 END) AS matching FROM "
            f"{ctx.table}{ctx.where(filters=cond)}"
        )
        return _mk(
            ctx,
            sql,
            f"All rows{ctx.basis(cond)} have {pred.text}",
            "Check a predicate on every row.",
            pred.column,
        )
    return None


def _side_quantity(ctx: _Ctx, filters: list[Filter]) -> tuple[str, str]:
    q = ctx.q
    measure = None
    m = re.search(r"\bthan\b", q.low)
    comparative = (
        max(
            (
                q.index_at(x.start())
                for x in (*_MORE.finditer(q.low[: m.start()]), *_LESS.finditer(q.low[: m.start()]))
            ),
            default=-1,
        )
        if m
        else -1
    )
    for lk in q.free_columns():
        col = next(
            (x for x, _ in lk.candidates if x.measure and x.flag_values is None and x.distinct > 1), None
        )
        # "more employees" counts rows; "average income … less than" or "more purchasing power" use a measure
        right_after = lk.start <= comparative + 2 and lk.end > comparative  # "higher income"
        right_before = comparative >= 0 and 0 <= comparative - lk.end <= 1  # "is the income higher"
        if col is not None and (q.agg in _AGG or right_after or right_before):
            measure = col
            break
    if measure is None and comparative >= 0:
        # "is the murder rate in California higher than …": the one measure named before the comparative
        named = {
            x.name: x
            for lk in q.free_columns()
            if lk.end <= comparative
            for x in [lk.candidates[0][0]]
            if x.measure and x.flag_values is None and x.distinct > 1
        }
        if len(named) == 1:
            measure = next(iter(named.values()))
    where = ctx.where(filters=filters)
    if measure is not None:
        agg = q.agg if q.agg in _AGG else "avg"
        return f"(SELECT {_AGG[agg]}({measure.sql}) FROM {ctx.table}{where})", f"{agg} {measure.name}"
    return f"(SELECT count(*) FROM {ctx.table}{where})", "rows"


def _split_value_filters(filters: list[Filter], values: list) -> list[Filter]:
    """One filter per named value, so that values on both sides of "than" stay apart."""
    out: list[Filter] = []
    for f in filters:
        inside = [v for v in values if f.start <= v.start < f.end and v.column is f.column and not v.element]
        if len(inside) > 1 and " IN (" in f.sql and "NOT IN" not in f.sql:
            for v in inside:
                out.append(
                    Filter(
                        v.column,
                        f"{v.column.sql} = {literal(v.value)}",
                        f"`{v.column.name}` = `{v.value}`",
                        v.start,
                        v.end,
                    )
                )
        else:
            out.append(f)
    return out


def _rate_compare(ctx: _Ctx) -> Plan | None:
    """ "Is the failure rate higher on weekends?": the rate where a condition holds against where it does "
    "not."""
    q = ctx.q
    if not q.has(r"\b(rate|share|percentage|proportion|ratio)\b") or len(q.filters) < 2:
        return None
    if q.has(r"\bthan\b"):
        return _rate_than(ctx)
    op = ">" if _MORE.search(q.low) else "<" if _LESS.search(q.low) else None
    if op is None:
        return None
    event, cond = q.filters[0], q.filters[1]
    rate = f"100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END)"
    inside = f"(SELECT {rate} FROM {ctx.table} WHERE {cond.sql})"
    outside = f"(SELECT {rate} FROM {ctx.table} WHERE NOT ({cond.sql}))"
    sql = f"SELECT {inside} {op} {outside} AS answer, {inside} AS rate_where, {outside} AS rate_elsewhere"
    return _mk(
        ctx,
        sql,
        f"The share of {event.text} where {cond.text} is {'higher' if op == '>' else 'lower'} than elsewhere",
        "Compare a rate inside and outside a group.",
        event.column,
        cond.column,
    )


def _rate_than(ctx: _Ctx) -> Plan | None:
    """ "Is the failure rate on 3G higher than on 5G?": one event's share on each side of "than"."""
    from services.orchestrator.builtin.breakdowns import _event_filter

    q = ctx.q
    event = _event_filter(ctx)
    m = re.search(r"\bthan\b", q.low)
    if event is None or m is None:
        return None
    than = q.index_at(m.start())
    head = q.low[: m.start()]
    last = max(
        [(x.start(), ">") for x in _MORE.finditer(head)] + [(x.start(), "<") for x in _LESS.finditer(head)],
        default=None,
    )
    others = _split_value_filters([f for f in q.filters if f is not event], q.links.values)
    left = [f for f in others if f.start < than]
    right = [f for f in others if f.start > than]
    if last is None or not left or not right:
        return None
    rate = f"100.0 * avg(CASE WHEN {event.sql} THEN 1 ELSE 0 END)"
    lq = f"(SELECT {rate} FROM {ctx.table}{ctx.where(filters=left)})"
    rq = f"(SELECT {rate} FROM {ctx.table}{ctx.where(filters=right)})"
    op = last[1]
    sql = f"SELECT {lq} {op} {rq} AS answer, {lq} AS left_rate, {rq} AS right_rate"
    statement = (
        f"The share of {event.text} where {' and '.join(f.text for f in left)} is "
        f"{'higher' if op == '>' else 'lower'} than where {' and '.join(f.text for f in right)}"
    )
    return _mk(ctx, sql, statement, "Compare one rate over two sets of rows.", event.column)


def _two_sided(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    m = re.search(r"\bthan\b", q.low)
    if m is None:
        return None
    head = q.low[: m.start()]
    last = max(
        [(x.start(), ">") for x in _MORE.finditer(head)] + [(x.start(), "<") for x in _LESS.finditer(head)],
        default=None,
    )
    if last is None:
        return None
    op = last[1]
    than = q.index_at(m.start())
    filters = _split_value_filters(q.filters, q.links.values)
    left = [f for f in filters if f.start < than]
    right = [f for f in filters if f.start > than]
    if not left:
        return None
    if not right:
        tail = q.tokens[than + 1 :]
        named = next((lk for lk in q.free_columns() if lk.start > than and lk.column.textual), None)
        if any(t.text in ("not", "non", "without", "no") for t in tail) and len(left) == 1:
            right = [Filter(left[0].column, f"NOT ({left[0].sql})", f"not {left[0].text}")]
        elif named is not None:
            # "… than third tier entities": rows that have a `Tier 3`
            right = [Filter(named.column, f"{named.column.sql} IS NOT NULL", f"`{named.column.name}` is set")]
        else:
            return None
    lq, label = _side_quantity(ctx, left)
    rq, _ = _side_quantity(ctx, right)
    sql = (
        f"SELECT {lq} {op} {rq} AS answer, {lq} AS left_{label.split()[0]}, {rq} AS right_{label.split()[0]}"
    )
    statement = (
        f"{label} where {' and '.join(f.text for f in left)} is {'greater' if op == '>' else 'less'} than "
        f"where {' and '.join(f.text for f in right)}"
    )
    return _mk(ctx, sql, statement, "Compare one quantity over two sets of rows.", left[0].column)


def _top_is(ctx: _Ctx) -> Plan | None:
    """ "Is the most frequent X Y?", "Is Switzerland the country with the highest Z?"."""
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    from services.orchestrator.builtin.context import _order_column

    q = ctx.q
    sup = q.superlative
    candidates = [f for f in q.filters if f.op == "" and f.column is not None and f.column.textual]
    if sup is None or not candidates:
        return None
    pred = candidates[0]
    col = pred.column
    assert col is not None
    rest = [f for f in q.filters if f is not pred]
    if sup.mode:
        sub = (
            f"SELECT {col.sql} FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'], rest)} GROUP BY 1 "
            f"ORDER BY count(*) {'DESC' if sup.desc else 'ASC'} LIMIT 1 OFFSET {sup.offset}"
        )
        sql = f"SELECT bool_and({pred.sql}) AS answer, any_value({col.sql}) AS top_value FROM ({sub})"
        return _mk(
            ctx,
            sql,
            f"The {'most' if sup.desc else 'least'} common `{col.name}` is {pred.text}",
            "Find the most frequent value, then compare.",
            col,
        )
    order = _order_column(ctx, exclude=(col,))
    if order is None:
        return None
    from services.orchestrator.builtin.context import _direction

    sub = (
        f"SELECT * FROM {ctx.table}{ctx.where([f'{order.sql} IS NOT NULL'], rest)} ORDER BY {order.sql} "
        f"{_direction(order, sup.desc)} LIMIT 1 OFFSET {sup.offset}"
    )
    sql = f"SELECT bool_and({pred.sql}) AS answer, any_value({col.sql}) AS top_row FROM ({sub})"
    return _mk(
        ctx,
        sql,
        f"The row with the {'highest' if sup.desc else 'lowest'} `{order.name}` has {pred.text}",
        "Sort, take the first row, compare.",
        col,
        order,
    )


def _most_share(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if (
        not q.has(r"^\s*(do|does|are|is|have|has)\s+(the\s+)?most\b|\bmost of\b|\bmajority\b")
        or not q.filters
    ):
        return None
    preds = " AND ".join(f.sql for f in q.filters)
    sql = (
        f"SELECT avg(CASE WHEN {preds} THEN 1 ELSE 0 END) > 0.5 AS answer, round(100.0 * avg(CASE WHEN "
        f"{preds} "
        f"THEN 1 ELSE 0 END), 2) AS percent FROM {ctx.table}"
    )
    return _mk(
        ctx, sql, f"More than half of the rows have {ctx.basis()[7:]}", "Share of rows above one half."
    )


def _aggregate_vs_number(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    sup = q.superlative
    agg = q.agg if q.agg in _AGG else None
    if agg is None and sup is not None and not sup.mode:
        agg = "max" if sup.desc else "min"
    if agg is None or _EXISTS.search(q.text):
        return None
    numeric = [f for f in q.filters if f.op and f.number is not None and f.op != "between"]
    target: Filter | None = numeric[-1] if numeric else None
    number: float | None
    sign = None
    if target is None:
        if q.has(r"\bnegative\b"):
            sign = ("<", 0.0)
        elif q.has(r"\bpositive\b"):
            sign = (">", 0.0)
        elif q.has(r"\bzero\b"):
            sign = ("=", 0.0)
        if sign is None:
            return None
        col = next((x for lk in q.free_columns() for x, _ in lk.candidates if x.numeric), None)
        if col is None:
            return None
        op, number = sign
    else:
        col, op, number = target.column, target.op, target.number
    assert col is not None and number is not None
    if sup is not None and not sup.mode and q.agg is None:
        from services.orchestrator.builtin.context import _direction

        agg = "max" if _direction(col, sup.desc) == "DESC" else "min"
    rest = [f for f in q.filters if f is not target]
    value = f"{_AGG[agg]}({col.sql})"
    sql = (
        f"SELECT {value} {'=' if op == '=' else op} {number!r} AS answer, {value} AS {agg}_value FROM "
        f"{ctx.table}"
        f"{ctx.where(filters=rest)}"
    )
    return _mk(
        ctx,
        sql,
        f"{agg}(`{col.name}`){ctx.basis(rest)} {op} {number:g}",
        "Compare an aggregate with a number.",
        col,
    )


_ROW_WORDS = {"rows", "entries", "records", "elements", "observations", "items", "lines", "entities"}


def _counted(ctx: _Ctx, index: int) -> Column | str | None:
    """What a number in "more than 5 X" counts: a column's distinct values, rows, or (None) something "
    "unknown."""
    q = ctx.q
    toks = q.tokens
    free = q.free_columns()
    m = re.search(r"\bnumber of\s+", q.low)
    if m is not None:
        at = q.index_at(m.end())
        lk = next((lk for lk in free if lk.start == at), None)
        if lk is not None:
            return next((x for x, _ in lk.candidates if x.textual or x.role == 1), None)
    nxt = index + 1
    while nxt < len(toks) and toks[nxt].text in ("a", "an", "the", "different", "unique", "distinct"):
        nxt += 1
    lk = next((lk for lk in free if nxt <= lk.start <= nxt + 2), None)
    if lk is not None:
        return next((x for x, _ in lk.candidates if x.textual or x.role == 1), None)
    if nxt < len(toks) and toks[nxt].text in _ROW_WORDS:
        return "rows"
    grounded = [f for f in q.filters if not f.guess]
    if nxt < len(toks) and toks[nxt].text.endswith("s") and grounded:
        return "rows"  # "more than 1000 products sold in Mercadona stores"
    return None


def _count_vs_number(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if (q.superlative is not None and not q.superlative.mode) or q.agg in _AGG:
        return None  # "is the highest X equal to 1499" compares a value, not a count
    for n in q.links.numbers:
        if n.index in q.used:
            continue
        cmp = _comparison_at(q, n.index)
        if cmp is None and not q.has(r"\b(exactly|at least|at most)\b"):
            continue
        op = cmp[0] if cmp else "="
        exact = cmp is not None and q.tokens[cmp[1]].text in ("exactly", "equal", "equals")
        if op == "=" and cmp is not None and not exact and not q.has(r"\b(contain|have|has|include)s?\b"):
            continue
        counted = _counted(ctx, n.index)
        if counted is None:
            continue
        col = counted if isinstance(counted, Column) else None
        if col is not None:
            value = f"count(DISTINCT {col.sql})"
            label = f"distinct `{col.name}`"
        else:
            value, label = "count(*)", "rows"
        sql = f"SELECT {value} {op} {n.value!r} AS answer, {value} AS n FROM {ctx.table}{ctx.where()}"
        return _mk(
            ctx,
            sql,
            f"Number of {label}{ctx.basis()} {op} {n.value:g}",
            "Compare a count with a number.",
            col,
        )
    return None


def _unresolved_comparison(ctx: _Ctx) -> bool:
    """ "bigger than sales" that no comparison shape took: answering "exists" instead would be a guess."""
    m = re.search(r"\bthan\b", ctx.q.low)
    if m is None:
        return False
    after = ctx.q.index_at(m.end())
    return not any(after <= n.index <= after + 2 for n in ctx.q.links.numbers)


def _exists(ctx: _Ctx) -> Plan | None:
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    if not q.filters and q.has(
        r"^\W*(are|is) there any\b|^\W*(does|do) (it|the data|the dataset) have any\b"
    ):
        # "Are there any fourth level entities?": rows where that column has a value
        named = next((lk.column for lk in q.free_columns()), None)
        if named is not None and not _unresolved_comparison(ctx):
            q.filters = [Filter(named, f"{named.sql} IS NOT NULL", f"`{named.name}` is set")]
    if not q.filters or _unresolved_comparison(ctx):
        return None
    none = q.has(r"\bthere (are|is) no\b|\bno one\b|\bnobody\b|\bnone\b")
    sql = (
        f"SELECT count(*) {'= 0' if none else '> 0'} AS answer, count(*) AS matching_rows FROM "
        f"{ctx.table}{ctx.where()}"
    )
    return _mk(
        ctx,
        sql,
        f"Rows{ctx.basis()}" + (" do not exist" if none else " exist"),
        "Check whether any row matches.",
    )
