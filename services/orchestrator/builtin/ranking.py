"""Superlatives: the most common value, top/bottom-k, the row or group with the highest value, closest-to."""

from __future__ import annotations

import re

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import (
    _ADDITIVE,
    _AGG_NAME,
    _AGG_SQL,
    _ENTITY_STEMS,
    _Ctx,
    _direction,
    _first,
    _free,
    _order_column,
    _pick,
    _plan,
    c_quote,
)
from services.orchestrator.builtin.lexicon import STOP_STEMS
from services.orchestrator.builtin.question import Question
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.plan import Plan


def _mode_plan(
    ctx: _Ctx, col: Column, desc: bool, k: int | None, offset: int, as_list: bool, counts: bool = False
) -> Plan:
    q = ctx.q
    expr, src = col.sql, ctx.table
    if col.listlike:
        src = (
            f"(SELECT unnest(string_split(trim({col.sql}, '[]'), ', ')) AS {col.sql} FROM {ctx.table}"
            f"{ctx.where()})"
        )
        where = f" WHERE {col.sql} <> ''"
    else:
        where = ctx.where([f"{col.sql} IS NOT NULL"])
    limit = k or 1
    sql = (
        f"SELECT {expr if not counts else 'count(*)'} AS {c_quote(col.name if not counts else 'count')}, "
        f"{'count(*)' if not counts else expr} AS {c_quote('count' if not counts else col.name)} "
        f"FROM {src}{where} GROUP BY {expr} ORDER BY count(*) {'DESC' if desc else 'ASC'}, {expr} "
        f"LIMIT {limit} OFFSET {offset}"
    )
    word = "most" if desc else "least"
    if as_list or k:
        label = (
            f"The {limit} {word} common values of `{col.name}`{ctx.basis()}"
            if not counts
            else f"Row counts of the {limit} {word} common values of `{col.name}`{ctx.basis()}"
        )
        composer = c.listing(label, ctx.follow_ups(col))
    else:
        composer = c.category(f"The {word} common `{col.name}`{ctx.basis()}", ctx.follow_ups(col), "rows:")
    _ = q
    return _plan(ctx, sql, composer, f"Count rows per value of `{col.name}` and take the {word} frequent.")


def _counts_rows(q: Question, index: int) -> bool:
    """Whether "most …" is about how many rows ("most products", "the most", "highest number of")."""
    if q.tokens[index].text not in ("most", "fewest", "least", "more", "less", "top", "bottom"):
        after = q.tokens[index + 1].text if index + 1 < len(q.tokens) else ""
        if after not in ("number", "count", "amount"):
            return False  # "the lowest charges" is about a value, not how many rows
    nxt = q.tokens[index + 1] if index + 1 < len(q.tokens) else None
    if nxt is not None and nxt.text.isdigit():
        index += 1
        nxt = q.tokens[index + 1] if index + 1 < len(q.tokens) else None
    if nxt is not None and nxt.text in ("people", "children", "men", "women", "staff", "personnel", "times"):
        return True
    if nxt is None or nxt.stem in STOP_STEMS or nxt.text in ("number", "count", "amount", "listed", "often"):
        return True
    if q.links.column_at(index + 1) is not None or any(v.start == index + 1 for v in q.links.values):
        return True
    return nxt.text.endswith("s") and len(nxt.text) > 3 and nxt.text.isalpha()


def _noun_after(q: Question, index: int) -> bool:
    """Whether a content word the data does not name follows (the noun a superlative qualifies)."""
    if index >= len(q.tokens):
        return False
    t = q.tokens[index]
    return t.stem not in STOP_STEMS and t.text.isalpha() and not q.links.covered(index)


def _label_column(schema: Schema) -> Column | None:
    """The column that names a row: a mostly distinct text column, one called a name or title first."""
    rows = max(schema.row_count, 1)
    labels = [c for c in schema.columns if c.textual and not c.listlike and c.distinct >= 0.5 * rows]
    named = [c for c in labels if {"name", "title", "label"} & set(c.words)]
    chosen = named or labels
    return chosen[0] if chosen else None


def _ranked(ctx: _Ctx) -> Plan | None:
    """Superlatives: the most common value, top/bottom-k, the row with the highest X, the top group."""
    if ctx.q.loose_numbers():
        return None  # a number in the question was not understood: no guess
    q = ctx.q
    sup = q.superlative
    if sup is None or q.answer_type == "boolean" or q.agg in ("range", "std", "var"):
        return None
    as_list = q.answer_type == "list" or (q.k is not None and q.k > 1)
    free = _free(ctx)
    target_link = free[0] if free else None
    names_row = False
    if target_link is not None and target_link.start == sup.index and len(free) > 1:
        # the superlative names its own measure ("the hottest day"): the answer is the noun it qualifies
        target_link = free[1]
    elif target_link is not None and target_link.start == sup.index and _noun_after(q, target_link.end):
        # "the lightest car", no column for "car": the row is meant, named by the table's label column
        names_row = True
    if sup.mode:
        # "the most common X": X is the column named nearest the words
        col = None
        for lk in sorted(free, key=lambda lk: abs(lk.start - sup.index)):
            col = _pick(lk, lambda x: not x.temporal)
            if col is not None:
                break
        if col is None:
            return None
        m = re.search(r"\b(number|counts?|how many|amount)\b", q.low)
        counts = (
            as_list
            and m is not None
            and q.index_at(m.start()) < min((lk.start for lk in free if lk.column is col), default=0)
        )
        return _mode_plan(ctx, col, sup.desc, q.k, sup.offset, as_list, counts)
    order = _order_column(ctx)
    target = None
    if target_link is not None:
        target = _pick(target_link, lambda x: True)
    if names_row:
        target = _label_column(ctx.schema) or target
    # "which X has the most <rows>" (no measure after the superlative): a count per X
    if order is None or (target is not None and order is target and target.textual):
        if target is None:
            return None
        if target.numeric and order is target:
            pass
        else:
            if not _counts_rows(q, sup.index):
                return None  # "the most satisfied": a quality the data does not have, not a count
            m = re.search(r"\b(number|counts?)\b", q.low)
            before = m is not None and target_link is not None and q.index_at(m.start()) < target_link.start
            return _mode_plan(ctx, target, sup.desc, q.k, sup.offset, as_list, as_list and before)
    if target is None:
        target = order
    # "the maximum amount for Grocery transactions" asks for the value itself, not a row's other column
    asks_value = q.agg in ("max", "min") and target_link is not None and target_link.start == sup.index + 1
    if target is order and target_link is not None and target_link.start > sup.index and not asks_value:
        # "the names of the top 5 ranked countries": the column named after the ranking is the answer
        other = next((lk for lk in free if lk is not target_link and _pick(lk, lambda x: x.textual)), None)
        if other is not None and (as_list or q.answer_type == "unknown"):
            target = _pick(other, lambda x: x.textual)
            target_link = other
            assert target is not None
    if q.agg in ("avg", "sum", "median", "min", "max") and q.k and order is not None and target.numeric:
        direction = _direction(order, sup.desc)
        measure = target if target is not order else order
        sql = (
            f"SELECT {_AGG_SQL[q.agg].format(measure.sql)} AS value FROM (SELECT * FROM {ctx.table}"
            f"{ctx.where([f'{order.sql} IS NOT NULL'])} ORDER BY {order.sql} {direction} LIMIT {q.k})"
        )
        return _plan(
            ctx,
            sql,
            c.number(
                f"{_AGG_NAME[q.agg]} of `{measure.name}` over the {q.k} rows with the "
                f"{'highest' if sup.desc else 'lowest'} `{order.name}`",
                ctx.follow_ups(measure),
            ),
            f"Sort by `{order.name}`, keep {q.k} rows, aggregate `{measure.name}`.",
        )
    if target is order or (q.agg in ("max", "min") and target.numeric):
        # the top values of one column
        col = order
        direction = _direction(col, sup.desc)
        if as_list or q.k:
            sql = (
                f"SELECT {col.sql} AS {c_quote(col.name)} FROM "
                f"{ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])}"
                f" ORDER BY {col.sql} {direction} LIMIT {q.k or 5}"
            )
            return _plan(
                ctx,
                sql,
                c.listing(
                    f"The {'top' if sup.desc else 'bottom'} {q.k or 5} values of `{col.name}`{ctx.basis()}",
                    ctx.follow_ups(col),
                ),
                f"Sort `{col.name}` and keep the first {q.k or 5}.",
            )
        agg = "max" if direction == "DESC" else "min"
        if sup.offset:
            sql = (
                f"SELECT {col.sql} FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])} "
                f"ORDER BY {col.sql} "
                f"{direction} LIMIT 1 OFFSET {sup.offset}"
            )
        else:
            sql = f"SELECT {agg}({col.sql}) AS {c_quote(agg + ' ' + col.name)} FROM {ctx.table}{ctx.where()}"
        return _plan(
            ctx,
            sql,
            c.number(f"{_AGG_NAME[agg]} `{col.name}`{ctx.basis()}", ctx.follow_ups(col), c.unit_of(col)),
            f"The {agg} of `{col.name}`.",
        )
    direction = _direction(order, sup.desc)
    group_level = (
        (q.agg in ("avg", "sum", "median", "count") and not target.numeric)
        or (
            target.textual
            and target.distinct <= 60
            and target.distinct < 0.5 * max(ctx.schema.row_count, 1)
            # "the region the youngest teenager comes from" is about one row, not the youngest region
            and not any(
                t.stem in _ENTITY_STEMS
                for t in q.tokens[target_link.end : sup.index + 3]  # type: ignore[union-attr]
            )
        )
    )
    if group_level and not target.numeric:
        agg = (
            q.agg
            if q.agg in ("avg", "sum", "median", "max", "min")
            else ("sum" if _ADDITIVE.search(order.name) else "avg")
        )
        expr = _AGG_SQL[agg].format(order.sql)
        label = f"{_AGG_NAME[agg].lower()} {order.name}"
        limit = q.k or 1
        sql = (
            f"SELECT {target.sql} AS {c_quote(target.name)}, {expr} AS {c_quote(label)} FROM {ctx.table}"
            f"{ctx.where([f'{target.sql} IS NOT NULL'])} GROUP BY 1 ORDER BY 2 {direction}, 1 LIMIT {limit}"
            f" OFFSET {sup.offset}"
        )
        if as_list:
            composer = c.listing(f"`{target.name}` by {label}{ctx.basis()}", ctx.follow_ups(target, order))
        else:
            composer = c.category(
                f"`{target.name}` with the {'highest' if direction == 'DESC' else 'lowest'} "
                f"{label}{ctx.basis()}",
                ctx.follow_ups(target, order),
                label,
            )
        return _plan(ctx, sql, composer, f"Group by `{target.name}`, {agg} of `{order.name}`, take the top.")
    limit = q.k or 1
    sql = (
        f"SELECT {target.sql} AS {c_quote(target.name)}, {order.sql} AS {c_quote(order.name)} FROM "
        f"{ctx.table}"
        f"{ctx.where([f'{order.sql} IS NOT NULL'])} ORDER BY {order.sql} {direction} LIMIT {limit}"
        f" OFFSET {sup.offset}"
    )
    word = "highest" if sup.desc else "lowest"
    if as_list or q.k:
        composer = c.listing(
            f"`{target.name}` of the {limit} rows with the {word} `{order.name}`{ctx.basis()}",
            ctx.follow_ups(target, order),
        )
    else:
        composer = c.category(
            f"`{target.name}` of the row with the {word} `{order.name}`{ctx.basis()}",
            ctx.follow_ups(target, order),
            f"`{order.name}` =",
        )
    return _plan(ctx, sql, composer, f"Sort by `{order.name}` ({direction}) and read `{target.name}`.")


def _closest(ctx: _Ctx) -> Plan | None:
    """ "Which X has a Y closest to 80?": sort by the distance to the number."""
    q = ctx.q
    m = re.search(r"\b(closest|nearest|close|near)\s+(to\s+)?", q.low)
    if m is None:
        return None
    after = q.index_at(m.end())
    number = next((n for n in q.links.numbers if after <= n.index <= after + 1), None)
    if number is None:
        return None
    q.filters = [f for f in q.filters if not (f.start <= number.index < f.end)]
    col = _nearest_measure(ctx, m.start())
    if col is None:
        return None
    q.used.difference_update(range(q.index_at(m.start()) - 6, q.index_at(m.start())))
    target = _first(ctx, lambda x: x is not col) if q.answer_type != "list" or not q.k else None
    if q.k and q.answer_type == "list":
        target = _first(ctx, lambda x: x is not col and x.textual) or col
    target = target or col
    limit = q.k or 1
    sql = (
        f"SELECT {target.sql} AS {c_quote(target.name)}, {col.sql} AS {c_quote(col.name)} "
        f"FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])} "
        f"ORDER BY abs({col.sql} - {number.value!r}), {col.sql} LIMIT {limit}"
    )
    label = (
        f"`{target.name}` of the {limit if limit > 1 else ''} row{'s' if limit > 1 else ''} "
        f"with `{col.name}` closest to {number.value:g}"
    )
    composer = (
        c.listing(label, ctx.follow_ups(col))
        if limit > 1 or q.answer_type == "list"
        else c.category(label, ctx.follow_ups(col), f"`{col.name}` =")
    )
    return _plan(ctx, sql, composer, f"Sort by the distance of `{col.name}` to {number.value:g}.")


def _nearest_measure(ctx: _Ctx, char: int) -> Column | None:
    index = ctx.q.index_at(char)
    best = None
    for lk in ctx.q.links.columns:
        col = _pick(lk, lambda x: x.numeric)
        if col is None:
            continue
        dist = abs(index - lk.end) if lk.end <= index else abs(lk.start - index) + 2
        if best is None or dist < best[0]:
            best = (dist, col)
    return best[1] if best else None
