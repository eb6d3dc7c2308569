"""What every question shape needs: the question with its schema, link helpers, and plan construction."""

from __future__ import annotations

import re
from collections.abc import Callable

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.linking import ColumnLink
from services.orchestrator.builtin.question import Filter, Question
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.builtin.text import stem
from services.orchestrator.plan import Answer, Plan, StepResults

_AGG_SQL = {
    "avg": "avg({})",
    "median": "median({})",
    "sum": "sum({})",
    "max": "max({})",
    "min": "min({})",
    "std": "stddev_samp({})",
    "var": "var_samp({})",
    "range": "max({0}) - min({0})",
}


_AGG_NAME = {
    "avg": "Average",
    "median": "Median",
    "sum": "Total",
    "max": "Maximum",
    "min": "Minimum",
    "std": "Standard deviation",
    "var": "Variance",
    "range": "Range (max − min)",
}


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


# "the 90th percentile", "the upper quartile": continuous quantiles, named p1 … p99
_AGG_SQL.update({f"p{k}": f"quantile_cont({{}}, {k / 100})" for k in range(1, 100)})
_AGG_NAME.update({f"p{k}": f"{_ordinal(k)} percentile" for k in range(1, 100)})

_ADDITIVE = re.compile(
    r"amount|revenue|sale|charge|price|cost|profit|income|quantity|total|spend|value|fee", re.I
)


_ENTITY_WORDS = {
    "teenager",
    "child",
    "passenger",
    "player",
    "man",
    "woman",
    "member",
    "individual",
    "person",
    "applicant",
    "student",
    "employee",
    "one",
    "who",
    "customer",
    "product",
    "country",
    "people",
    "patient",
    "user",
    "item",
    "entry",
    "row",
    "record",
    "someone",
    "whose",
}


_ENTITY_STEMS = {stem(w) for w in _ENTITY_WORDS}


class _Ctx:
    """The question plus what every shape needs: table, filters as SQL, follow-ups."""

    def __init__(self, q: Question) -> None:
        self.q = q
        self.schema: Schema = q.schema
        self.table = q.schema.from_sql

    def where(self, extra: list[str] | None = None, filters: list[Filter] | None = None) -> str:
        preds = [f.sql for f in (self.q.filters if filters is None else filters)] + (extra or [])
        return " WHERE " + " AND ".join(preds) if preds else ""

    def basis(self, filters: list[Filter] | None = None) -> str:
        fs = self.q.filters if filters is None else filters
        return (" where " + " and ".join(f.text for f in fs)) if fs else ""

    def follow_ups(self, *cols: Column | None) -> list[str]:
        return c.follow_ups_for(self.schema, {col.name for col in cols if col is not None})


def _plan(
    ctx: _Ctx,
    sql: str,
    composer: c.Composer,
    reasoning: str,
    classification: str = "SQL_ONLY",
    python: str | None = None,
    on_sql: bool = False,
) -> Plan:
    return Plan(
        classification=classification,
        reasoning=reasoning,
        compose=composer,
        sql=sql,
        python_code=python,
        python_on_sql_result=on_sql,
    )


def _free(ctx: _Ctx) -> list[ColumnLink]:
    return ctx.q.free_columns()


def _pick(link: ColumnLink, want: Callable[[Column], bool]) -> Column | None:
    return next((col for col, _ in link.candidates if want(col)), None)


def _first(
    ctx: _Ctx, want: Callable[[Column], bool], after: int = -1, exclude: tuple[Column | None, ...] = ()
) -> Column | None:
    for lk in _free(ctx):
        if lk.end <= after:
            continue
        col = _pick(lk, lambda x: want(x) and x not in exclude)
        if col is not None:
            return col
    return None


def _target(ctx: _Ctx) -> ColumnLink | None:
    free = _free(ctx)
    return free[0] if free else None


def _order_column(ctx: _Ctx, exclude: tuple[Column | None, ...] = ()) -> Column | None:
    sup = ctx.q.superlative
    if sup is None:
        return None
    constant = tuple(c for c in ctx.schema.columns if c.distinct <= 1 or (c.numeric and not c.measure))
    exclude = exclude + constant
    for lk in ctx.q.links.columns:
        if lk.start <= sup.index < lk.end:
            col = _pick(lk, lambda x: x.numeric and x not in exclude)
            nxt = next(
                (o for o in _free(ctx) if lk.end <= o.start <= lk.end + 3 and o.score > lk.score), None
            )
            if nxt is not None and lk.score < 2.5:
                col = _pick(nxt, lambda x: x.numeric and x not in exclude) or col
            if col is not None:
                return col
    after = [lk for lk in _free(ctx) if lk.start > sup.index]
    word = ctx.q.tokens[sup.index].text
    dated = word in ("latest", "earliest", "newest", "oldest", "recent", "first", "last")
    for lk in after:
        # "the most orders" counts rows: a date is ranked only by "latest"/"earliest"
        col = _pick(lk, lambda x: (x.numeric or (x.temporal and dated)) and x not in exclude)
        if col is not None:
            return col
    return None


def _direction(col: Column, desc: bool) -> str:
    """Rank-like columns are best when smallest: "top-ranked" means rank 1."""
    if any(w in ("rank", "position", "place") for w in col.words):
        desc = not desc
    return "DESC" if desc else "ASC"


def _is_count_question(q: Question) -> bool:
    return q.agg == "count" or q.has(r"\bhow many\b")


def _unexplained(q: Question) -> list[str]:
    """Uncovered content words, leaving out the name of the table itself ("in our taxonomy")."""
    names_table = {
        q.tokens[i + 1].text
        for i in range(len(q.tokens) - 1)
        if q.tokens[i].text in ("our", "the", "this", "your")
        and i > 0
        and q.tokens[i - 1].text in ("in", "of")
    }
    return [w for w in q.uncovered() if w not in names_table]


def c_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _why(q: Question) -> str:
    if not q.links.columns and not q.links.values:
        return "no column or value of this dataset is named in the question."
    return "the question names parts of the data, but not in a shape I can compute without a language model."


def unanswerable(schema: Schema, reason: str) -> Plan:
    def compose(_: StepResults) -> Answer:
        return c.nothing_matched(schema, reason)

    return Plan(classification="EXPLAIN_ONLY", reasoning=f"No answerable shape: {reason}", compose=compose)
