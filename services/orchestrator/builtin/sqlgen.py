"""The generator: a `form.Query` rendered to DuckDB SQL. The only place that quotes names and values.

Why: one renderer means one set of quoting and normalization rules, so a value with a quote, a header with
spaces, or a number stored as text ("12,467", "17 years") is handled the same way in every reading.
Row order is the table's own (`row_number() OVER ()` on the stored Parquet, read in order).
"""

from __future__ import annotations

from services.orchestrator.builtin.form import AGGREGATES, MONTH_NAMES, Filter, Query
from services.orchestrator.builtin.schema import Column, Schema

ROW = "__row"


def ident(name: str) -> str:
    """A SQL identifier in double quotes, exactly as uploaded."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def folded(expr: str) -> str:
    """Text folded for matching: lower case, no accents (cheap enough to run on every cell)."""
    return f"lower(strip_accents(CAST({expr} AS VARCHAR)))"


def fold_text(text: str) -> str:
    """The same folding in Python, for the literal side."""
    import unicodedata

    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower().strip()


def numeric(col: Column) -> str:
    """The column as a number: itself when numeric, else the number its text starts with ("1,234 m",
    "£103.3 million", a currency sign skipped)."""
    if col.numeric:
        return ident(col.name)
    return (
        f"TRY_CAST(replace(regexp_extract(CAST({ident(col.name)} AS VARCHAR), "
        f"'^\\s*[£$€¥₹]?\\s*(-?[0-9][0-9,]*(\\.[0-9]+)?)', 1), ',', '') AS DOUBLE)"
    )


def _match(expr: str, value: str) -> str:
    v = fold_text(value)
    cell = folded(expr)
    return f"contains({cell}, {literal(v)})"


def _exact_else_part(columns: list[Column], value: str, schema: Schema) -> str:
    """A value the profile did not show: the cells equal to it (case and accents aside) when the table has
    any, else the cells that contain it ("China" is the country, not also "Hong Kong, China")."""
    v = literal(fold_text(value))
    exact = "(" + " OR ".join(f"{folded(ident(c.name))} = {v}" for c in columns) + ")"
    part = "(" + " OR ".join(_match(ident(c.name), value) for c in columns) + ")"
    return (
        f"(CASE WHEN EXISTS (SELECT 1 FROM {ident(schema.table)} WHERE {exact}) THEN {exact} ELSE {part} END)"
    )


def condition(f: Filter, schema: Schema) -> str:
    """One filter as a SQL predicate."""
    if f.column is None:
        texts = [c for c in schema.columns if c.textual and c.distinct > 1] or schema.columns
        return _exact_else_part(texts, str(f.value), schema)
    col = ident(f.column.name)
    if f.op in ("=", "match") and isinstance(f.value, str):
        if f.verified:
            return f"{col} = {literal(f.value)}"
        return _exact_else_part([f.column], f.value, schema)
    if f.op == "!=" and isinstance(f.value, str):
        return f"({col} IS DISTINCT FROM {literal(f.value)})"
    if f.op == "month":
        return month_condition(f.column, int(f.value))
    value = number(float(f.value))
    if f.op == "decade":
        return f"{numeric(f.column)} BETWEEN {value} AND {number(float(f.value) + 9)}"
    return f"{numeric(f.column)} {'=' if f.op == 'match' else f.op} {value}"


def month_condition(col: Column, month: int) -> str:
    """Rows in `month`: the month of a date, or text dates that name it ("8 Apr", "April 5-8")."""
    if col.temporal:
        return f"month({ident(col.name)}) = {month}"
    name = MONTH_NAMES[month - 1].lower()
    words = f"{name[:3]}|{name}" + ("|sept" if month == 9 else "")
    return f"regexp_matches(lower(CAST({ident(col.name)} AS VARCHAR)), '\\b({words})\\b')"


_TOTALS = "'^\\s*(total|totals|sum|all|overall|grand total)\\b'"


def not_a_totals_row(schema: Schema) -> str | None:
    """Spreadsheets and wiki tables often end with a "Total" row; it is not one of the rows counted,
    ranked or aggregated. The predicate looks at the first text column only (cheap on large tables)."""
    first = next((c for c in schema.columns if c.textual), None)
    if first is None:
        return None
    return f"NOT coalesce(regexp_matches(lower(CAST({ident(first.name)} AS VARCHAR)), {_TOTALS}), false)"


def where(filters: tuple[Filter, ...] | list[Filter], schema: Schema, totals: bool = False) -> str:
    preds = [condition(f, schema) for f in filters]
    if totals:
        guard = not_a_totals_row(schema)
        if guard is not None:
            preds.append(guard)
    return " WHERE " + " AND ".join(preds) if preds else ""


def render(q: Query, schema: Schema) -> str:
    """The SQL of one reading; its first column is the answer."""
    ordered = q.op in ("first", "last", "next", "previous")
    # the row number costs a window over the whole table: only the readings about row order pay for it
    table = (
        f"(SELECT *, row_number() OVER () AS {ROW} FROM {ident(schema.table)})"
        if ordered
        else ident(schema.table)
    )
    w = where(q.filters, schema, totals=q.op not in ("values", "next", "previous"))
    a = ident(q.answer.name) if q.answer is not None else "NULL"
    if q.op == "values":
        return f"SELECT {a} AS answer FROM {table} t{w} LIMIT 200"
    if q.op in ("first", "last"):
        order = "" if q.op == "first" else " DESC"
        return f"SELECT {a} AS answer FROM {table} t{w} ORDER BY {ROW}{order} LIMIT 1"
    if q.op in ("argmax", "argmin"):
        assert q.measure is not None
        m = numeric(q.measure)
        extra = f" AND {m} IS NOT NULL" if w else f" WHERE {m} IS NOT NULL"
        if q.limit:
            order = "DESC" if q.op == "argmax" else "ASC"
            return f"SELECT {a} AS answer FROM {table} t{w}{extra} ORDER BY {m} {order} LIMIT {q.limit}"
        best = f"max({m})" if q.op == "argmax" else f"min({m})"
        # every row tied for the best value answers
        return (
            f"SELECT {a} AS answer FROM {table} t{w}{extra} AND {m} = "
            f"(SELECT {best} FROM {table} s{w}) LIMIT 20"
        )
    if q.op in ("group_argmax", "group_argmin"):
        assert q.answer is not None
        value = "count(*)" if q.agg == "count" or q.measure is None else f"{q.agg}({numeric(q.measure)})"
        extra = f" AND {a} IS NOT NULL" if w else f" WHERE {a} IS NOT NULL"
        order = "DESC" if q.op == "group_argmax" else "ASC"
        return (
            f"SELECT {a} AS answer FROM {table} t{w}{extra} GROUP BY {a} "
            f"ORDER BY {value} {order} NULLS LAST, {a} LIMIT {q.limit or 1}"
        )
    if q.op == "count":
        return f"SELECT count(*) AS answer FROM {table} t{w}"
    if q.op == "count_distinct":
        return f"SELECT count(DISTINCT {a}) AS answer FROM {table} t{w}"
    if q.op in AGGREGATES:
        assert q.measure is not None
        return f"SELECT {q.op}({numeric(q.measure)}) AS answer FROM {table} t{w}"
    if q.op in ("next", "previous"):
        step = "+ 1" if q.op == "next" else "- 1"
        return (
            f"SELECT {a} AS answer FROM {table} t WHERE {ROW} = (SELECT min({ROW}) {step} FROM {table} s{w})"
        )
    if q.op in ("pick_max", "pick_min") and q.agg == "count":
        assert q.pair is not None
        x, y = q.pair
        nx = f"(SELECT count(*) FROM {table} t WHERE {condition(x, schema)})"
        ny = f"(SELECT count(*) FROM {table} t WHERE {condition(y, schema)})"
        more, fewer = (literal(str(x.value)), literal(str(y.value)))
        if q.op == "pick_min":
            more, fewer = fewer, more
        # a tie names neither
        return f"SELECT CASE WHEN {nx} > {ny} THEN {more} WHEN {nx} < {ny} THEN {fewer} END AS answer"
    if q.op in ("pick_max", "pick_min", "difference"):
        assert q.pair is not None and q.measure is not None and q.answer is not None
        m = numeric(q.measure)
        x, y = q.pair
        cx, cy = condition(x, schema), condition(y, schema)
        if q.op == "difference":
            return (
                f"SELECT (SELECT max({m}) FROM {table} t WHERE {cx}) - "
                f"(SELECT max({m}) FROM {table} t WHERE {cy}) AS answer"
            )
        order = "DESC" if q.op == "pick_max" else "ASC"
        return (
            f"SELECT {a} AS answer FROM {table} t WHERE ({cx} OR {cy}) AND {m} IS NOT NULL "
            f"ORDER BY {m} {order} LIMIT 1"
        )
    raise ValueError(f"unknown operation {q.op!r}")
