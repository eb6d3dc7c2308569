"""Question shapes → SQL (and sandbox code) with a composer; the first shape that fits answers.

Each shape is a function `(Question) -> Plan | None`. Shapes are tried from the most specific to the most
general; a question no shape fits gets an honest "cannot answer" plan, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin import followups, stats
from services.orchestrator.builtin.lexicon import GENERIC, STOP_STEMS
from services.orchestrator.builtin.linking import ColumnLink
from services.orchestrator.builtin.question import Filter, Question, add_flag_filters, parse
from services.orchestrator.builtin.schema import Column, Schema, literal, schema_of
from services.orchestrator.builtin.text import same_word, stem
from services.orchestrator.plan import Answer, DatasetContext, Plan, StepResults

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


# ---- helpers over links ----------------------------------------


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
    if any(w in ("rank", "position", "place") for w in col.words) and not ctx_is_value_question(col):
        desc = not desc
    return "DESC" if desc else "ASC"


def ctx_is_value_question(col: Column) -> bool:
    return False


def _is_count_question(q: Question) -> bool:
    return q.agg == "count" or q.has(r"\bhow many\b")


# ---- shapes ----------------------------------------


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


def _correlation(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\bcorrelat|\brelationship between\b|\brelated to each other\b|\bassociation between\b"):
        return None
    cols = [col for lk in _free(ctx) + q.links.columns for col in [_pick(lk, lambda x: x.measure)] if col]
    cols = [col for i, col in enumerate(cols) if all(col is not other for other in cols[:i])]
    if len(cols) < 2:
        return None
    a, b = cols[0], cols[1]
    sql = (
        f"SELECT corr({a.sql}, {b.sql}) AS correlation, count(*) AS n FROM {ctx.table}"
        f"{ctx.where([f'{a.sql} IS NOT NULL', f'{b.sql} IS NOT NULL'])}"
    )
    label = f"Pearson correlation between `{a.name}` and `{b.name}`{ctx.basis()}"

    def compose(results: StepResults) -> Answer:
        answer = c.number(label, ctx.follow_ups(a, b))(results)
        if isinstance(answer.answer, float):
            r = answer.answer
            strength = (
                "strong"
                if abs(r) >= 0.7
                else "moderate"
                if abs(r) >= 0.4
                else "weak"
                if abs(r) >= 0.1
                else "no meaningful"
            )
            direction = "positive" if r > 0 else "negative"
            answer.text += (
                " There is no meaningful linear relationship."
                if strength == "no meaningful"
                else f" That is a {strength} {direction} linear relationship."
            )
        return answer

    return _plan(ctx, sql, compose, f"Correlation of two measures: corr(`{a.name}`, `{b.name}`).")


def _outliers(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\boutlier|\banomal|\bunusual(ly)?\b|\bextreme values?\b"):
        return None
    col = _first(ctx, lambda x: x.measure)
    if col is None:
        return None
    sql = f"SELECT {col.sql} AS value FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])}"
    return _plan(
        ctx,
        sql,
        stats.outliers_composer(col, ctx.follow_ups(col)),
        f"Outliers of `{col.name}` by the 1.5×IQR rule, computed in the sandbox.",
        "SQL_THEN_PY",
        stats.OUTLIERS_CODE,
        True,
    )


def _significance(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\bsignifican|\bstatistically\b|\bt-test\b|\bp-value\b|\bchi"):
        return None
    measure = _first(ctx, lambda x: x.measure)
    group = _first(ctx, lambda x: x.textual and not x.listlike and 1 < x.distinct <= 50, exclude=(measure,))
    if group is None:
        fcol = next((f.column for f in q.filters if f.column is not None and f.column.textual), None)
        group = fcol
    if group is None:
        return None
    if measure is not None:
        sql = (
            f"SELECT {group.sql}::VARCHAR AS grp, {measure.sql} AS value FROM {ctx.table} "
            f"WHERE {measure.sql} IS NOT NULL AND {group.sql} IS NOT NULL"
        )
        code = stats.ANOVA_CODE
        reasoning = (
            f"Does `{measure.name}` differ across `{group.name}`? Welch t-test / ANOVA in the sandbox."
        )
    else:
        other = _first(ctx, lambda x: x.textual and 1 < x.distinct <= 50, exclude=(group,))
        if other is None:
            return None
        sql = (
            f"SELECT {group.sql}::VARCHAR AS grp, {other.sql}::VARCHAR AS value FROM {ctx.table} WHERE "
            f"{group.sql} IS NOT NULL AND {other.sql} IS NOT NULL"
        )
        code = stats.CHI2_CODE
        reasoning = f"Are `{group.name}` and `{other.name}` independent? Chi-square test in the sandbox."
    return _plan(
        ctx,
        sql,
        stats.test_composer(reasoning, ctx.follow_ups(group, measure)),
        reasoning,
        "SQL_THEN_PY",
        code,
        True,
    )


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
    temporal = [col for col in ctx.schema.columns if col.temporal]
    if not temporal:
        return None
    for pattern, name, expr in _BUCKETS:
        unit = "(day of (the )?week|weekday)" if name == "day of week" else name
        asked = rf"\b(which|what|busiest|quietest|peak)\s+(\w+\s+)?{unit}\b"
        if not q.has(pattern) and not q.has(asked):
            continue
        tcol = next((lk.column for lk in q.links.columns if lk.column.temporal), temporal[0])
        bucket = expr.format(tcol.sql, tcol.sql) if name == "quarter" else expr.format(tcol.sql)
        same = tuple(
            col for col in ctx.schema.columns if name.split()[0] in col.words
        )  # hour_of_day for "hour"
        value_sql, value_label, percent, unit = _measure_expr(ctx, exclude=(tcol, *same))
        if q.superlative is not None and q.superlative.mode:
            value_sql, value_label, percent, unit = "count(*)", "rows", False, ""  # "the busiest hour"
        order = "min(" + tcol.sql + ")" if name == "day of week" else "1"
        sql = (
            f'SELECT {bucket} AS "{name}", {value_sql} AS "{value_label}" FROM {ctx.table}'
            f"{ctx.where([f'{tcol.sql} IS NOT NULL'])} GROUP BY 1 ORDER BY {order}"
        )
        if name == "day of week":
            sql = (
                f'SELECT {bucket} AS "{name}", {value_sql} AS "{value_label}" FROM {ctx.table}'
                f"{ctx.where([f'{tcol.sql} IS NOT NULL'])} GROUP BY 1, isodow({tcol.sql}) ORDER BY "
                f"isodow({tcol.sql})"
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


_GROUP_WORDS = re.compile(
    r"\b(by|per|for each|for every|each|across|broken down by|grouped by|split by|among the)\s+"
    r"(the\s+|different\s+|each\s+)?",
    re.I,
)


def _groupable(col: Column, rows: int, full: bool) -> bool:
    """Worth grouping by: a category (not an id: "per order"), a small code, or a date named in full."""
    return (
        (col.textual and not col.listlike and col.distinct < 0.5 * rows)
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


def c_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _boolean(ctx: _Ctx) -> Plan | None:
    from services.orchestrator.builtin import booleans

    if ctx.q.answer_type != "boolean":
        return None
    # a yes/no question gets a yes/no answer or an honest "cannot answer", never a number
    return booleans.plan(ctx) or unanswerable(
        ctx.schema, "the yes/no question does not map onto the columns."
    )


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
    if target is order and target_link is not None and target_link.start > sup.index:
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


_NULL_BEFORE = re.compile(
    r"(?<!non-)(?<!non )\b(no|without|missing|null( values)?( in)?|empty|lack(ing)?"
    r"|not have( an?| any)?)\s+$"
)


def _null_filters(ctx: _Ctx) -> None:
    q = ctx.q
    for lk in _free(ctx):
        head = q.low[: q.tokens[lk.start].start]
        if _NULL_BEFORE.search(head) and lk.column.flag_values is None:
            col = lk.column
            sql = f"({col.sql} IS NULL OR trim({col.sql}::VARCHAR) IN ('', '[]'))"
            q.filters.append(Filter(col, sql, f"`{col.name}` is empty", lk.start, lk.end))
            q.used.update(range(lk.start, lk.end))
        elif re.search(r"\bnon[- ]?(null|empty)\s+$|\bnot (null|empty)\s+$", head) or re.search(
            r"^\s*(is|are)?\s*not (null|empty)", q.low[q.tokens[lk.end - 1].end :]
        ):
            col = lk.column
            if _is_count_question(q) and not q.distinct:
                sql = f"({col.sql} IS NOT NULL AND trim({col.sql}::VARCHAR) NOT IN ('', '[]'))"
                q.filters.append(Filter(col, sql, f"`{col.name}` is not empty", lk.start, lk.end))
                q.used.update(range(lk.start, lk.end))


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


def _entity_filters(ctx: _Ctx) -> None:
    """Capitalized words the profile does not know ("Iceland"): a match on the most name-like text column."""
    q = ctx.q
    if not q.links.entities and not q.links.quoted:
        return
    text_cols = [col for col in ctx.schema.columns if col.textual]
    if not text_cols:
        return
    for start, end, text in q.links.quoted:
        if any(f.start >= start and f.end <= end + 1 for f in q.filters if f.start >= 0):
            continue
        near = next(
            (lk.column for lk in q.links.columns if lk.column.textual and abs(lk.end - start) <= 3), None
        )
        holder = next(
            (
                x
                for x in text_cols
                if any(
                    v.strip("[]").lower() == text.lower()
                    or text.lower() in [p.strip().lower() for p in v.strip("[]").split(",")]
                    for v, _ in x.values
                )
            ),
            None,
        )
        col = holder or near or max(text_cols, key=lambda x: x.distinct)
        if col.listlike:
            sql = f"list_contains(string_split(lower(trim({col.sql}, '[]')), ', '), {literal(text.lower())})"
        else:
            sql = f"lower({col.sql}) = {literal(text.lower())}"
        q.filters.append(Filter(col, sql, f"`{col.name}` = '{text}'", start, end, guess=holder is None))
        q.used.update(range(start, end))
        for lk in q.links.columns:
            if lk.column is col and abs(lk.end - start) <= 3:
                q.used.update(range(lk.start, lk.end))
    names = [
        col for col in text_cols if not col.listlike and col.distinct >= 0.5 * max(ctx.schema.row_count, 1)
    ]
    col = max(names or text_cols, key=lambda x: x.distinct)
    groups: list[list[tuple[int, str]]] = []
    for index, word in q.links.entities:
        if any(f.start <= index < f.end for f in q.filters):
            continue
        if groups and groups[-1][-1][0] == index - 1:
            groups[-1].append((index, word))
        else:
            groups.append([(index, word)])
    for group in groups:
        text = " ".join(w for _, w in group)
        first, last = group[0][0], group[-1][0]
        near_link = next(
            (
                lk
                for lk in q.links.columns
                if lk.column.textual and (0 <= first - lk.end <= 1 or 0 <= lk.start - last <= 2)
            ),
            None,
        )
        if near_link is not None:
            ncol = near_link.column
            q.filters.append(
                Filter(
                    ncol,
                    f"lower({ncol.sql}) LIKE {literal('%' + text.lower() + '%')}",
                    f"`{ncol.name}` contains {text}",
                    first,
                    last + 1,
                    guess=True,
                )
            )
            q.used.update(range(near_link.start, near_link.end))
            continue
        q.filters.append(
            Filter(
                col,
                f"lower({col.sql}) LIKE {literal(text.lower() + '%')}",
                f"`{col.name}` = {text}",
                first,
                last + 1,
                guess=True,
            )
        )


_SHAPES: list[Callable[[_Ctx], Plan | None]] = [
    _correlation,
    _outliers,
    _significance,
    _row_order,
    _frequency,
    _per_column,
    _closest,
    _time_buckets,
    _boolean,
    _rate,
    _breakdown,
    _distinct,
    _ranked,
    _row_count,
    _aggregate,
    _lookup,
]


def plan_question(
    question: str, dataset: DatasetContext, history: list[tuple[str, str]] | None = None
) -> Plan:
    """The plan for `question` over `dataset`: the first shape that fits, or an honest "cannot answer"."""
    schema = schema_of(dataset)
    resolved = followups.resolve(question, history, schema)
    plan = _plan_for(resolved, schema)
    if resolved != question:
        plan.reasoning = f"A follow-up, read as: “{resolved}”. {plan.reasoning}"
    return plan


def _plan_for(question: str, schema: Schema) -> Plan:
    q = parse(question, schema)
    ctx = _Ctx(q)
    _entity_filters(ctx)
    _null_filters(ctx)
    target = _target(ctx)
    add_flag_filters(q, target.start if target is not None and q.answer_type != "boolean" else None)
    target = _target(ctx)
    asked = re.match(r"^\W*(what|which)\s+(is|are|was|were)?\s*(the\s+)?([a-z]+)\b", q.low)
    if asked is not None and asked.group(4) in q.uncovered():
        # "What is the region …" with no region in the data: what is asked for is missing
        return unanswerable(schema, f'I found no column for "{asked.group(4)}".')
    unknown = _unknown_identifier(q)
    if unknown is not None:
        return unanswerable(schema, f"there is no column named `{unknown}`.")
    listed = re.match(
        r"^\W*list\s+(all\s+)?(the\s+)?((top|bottom|first|last)\s+)?"
        r"(\d+\s+|two\s+|three\s+|four\s+|five\s+|ten\s+)?(?P<noun>[a-z]+)\b",
        q.low,
    )
    if (
        listed is not None
        and listed.group("noun") in q.uncovered()
        and not _known_word(schema, listed.group("noun"))
    ):
        return unanswerable(schema, f'I found no column for "{listed.group("noun")}".')
    generic_target = target is not None and all(
        t.stem in GENERIC for t in q.tokens[target.start : target.end]
    )
    qualifier = q.tokens[target.start - 1].text if target is not None and target.start > 0 else ""
    # "the most frequent brand name" where only `Name` exists: the qualifier is not in the data
    if (
        target is not None
        and generic_target
        and qualifier in q.uncovered()
        and not _known_word(schema, qualifier)
    ):
        return unanswerable(
            schema,
            f'I found no column for "{q.tokens[target.start - 1].text} '
            f'{q.text[q.tokens[target.start].start : q.tokens[target.end - 1].end]}".',
        )
    for shape in _SHAPES:
        plan = shape(ctx)
        if plan is not None:
            guesses = [f for f in q.filters if f.guess]
            if guesses and plan.sql:
                plan.sql = _with_guess_count(plan.sql, ctx, guesses)
                plan.compose = _guarded(plan.compose, schema, guesses)
            return plan
    return unanswerable(schema, _why(q))


def _known_word(schema: Schema, word: str) -> bool:
    """Whether a word is one of the headers' words or the table's name ("product" in `product_name`)."""
    w = stem(word)
    return any(same_word(w, h) for col in schema.columns for h in col.words) or same_word(
        w, stem(schema.table)
    )


_IDENTIFIER = re.compile(r"\b[A-Za-z]+[a-z][A-Z]\w*|\b[A-Za-z]+_\w+")


def _unknown_identifier(q: Question) -> str | None:
    """A camelCase or snake_case word that links to nothing: the person named a column this data lacks."""
    uncovered = set(q.uncovered())
    for m in _IDENTIFIER.finditer(q.text):
        span = [t for t in q.tokens if m.start() <= t.start < m.end()]
        if span and all(t.text in uncovered or t.stem in STOP_STEMS for t in span):
            return m.group(0)
    return None


def _guarded(compose: c.Composer, schema: Schema, guesses: list[Filter]) -> c.Composer:
    """A name matched by spelling only ("Iceland") that matches no row: more likely a misreading than a zero.

    The plan's SQL is wrapped to also count the rows the guessed filters match on their own (`__guess_rows`).
    """

    def run(results: StepResults) -> Answer:
        table = results.sql_table
        if table is not None and GUESS_COLUMN in table.column_names:
            rows = table.column(GUESS_COLUMN).to_pylist()
            results.sql_table = table.drop_columns([GUESS_COLUMN])
            if not rows or not rows[0]:
                what = " and ".join(f.text for f in guesses)
                return c.nothing_matched(schema, f"no row matches {what}, a name I did not find in the data.")
        return compose(results)

    return run


GUESS_COLUMN = "__guess_rows"


def _with_guess_count(sql: str, ctx: _Ctx, guesses: list[Filter]) -> str:
    preds = " AND ".join(f.sql for f in guesses)
    return (
        f"SELECT __q.*, __g.{GUESS_COLUMN} FROM ({sql}) AS __q, "
        f"(SELECT count(*) AS {GUESS_COLUMN} FROM {ctx.table} WHERE {preds}) AS __g"
    )


def _why(q: Question) -> str:
    if not q.links.columns and not q.links.values:
        return "no column or value of this dataset is named in the question."
    return "the question names parts of the data, but not in a shape I can compute without a language model."


def unanswerable(schema: Schema, reason: str) -> Plan:
    def compose(_: StepResults) -> Answer:
        return c.nothing_matched(schema, reason)

    return Plan(classification="EXPLAIN_ONLY", reasoning=f"No answerable shape: {reason}", compose=compose)
