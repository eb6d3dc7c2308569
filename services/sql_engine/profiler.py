"""The dataset's profile ("data DNA"), computed inside DuckDB at import, in two scans of the Parquet.

Scan 1 computes, for every column at once, counts, approximate distinct counts, numeric statistics and
quartiles, date spans, correlations between numeric columns and the number of distinct rows (quartiles
of tables past half a million rows come from a Bernoulli sample of about 200,000 rows).
Scan 2 counts the exact top values of every column of bounded cardinality with one GROUPING SETS query.
A few sample values come from the first rows. Nothing is loaded into Python but these aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from common.duckdb_types import is_nested, is_numeric, is_temporal
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.connection import quote_ident, quote_literal
from services.sql_engine.insights import assign_role, health, suggested_questions

GROUPING_SETS_MAX = 60
TOP_VALUES = 10
MAX_CORRELATED = 12
EXACT_UP_TO = 200_000  # rows up to which the distinct-row count is exact
EXACT_QUANTILES_UP_TO = 500_000  # past this, quartiles come from a sample of about QUANTILE_SAMPLE_ROWS
QUANTILE_SAMPLE_ROWS = 200_000
MAX_GROUPED_DISTINCT = 100_000
APPROX_DUPLICATE_NOISE = 0.03
SAMPLES = 5


@dataclass(frozen=True)
class _Col:
    index: int
    name: str
    type: str

    @property
    def ref(self) -> str:
        quoted = quote_ident(self.name)
        return f"{quoted}::VARCHAR" if is_nested(self.type) else quoted

    @property
    def numeric(self) -> bool:
        return is_numeric(self.type)


def profile_parquet(
    parquet: Path,
    columns: list[tuple[str, str]],
    row_count: int,
    *,
    threads: int = 0,
    database: duckdb.DuckDBPyConnection | None = None,
) -> pb.DatasetProfile:
    """Profiles the Parquet at `parquet` whose schema is `columns`, on a cursor of `database` when given
    (its limits apply), else on a database of its own (with `threads` when set)."""
    if database is not None:
        con = database.cursor()
    else:
        con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
        if threads:
            con.execute(f"SET threads={int(threads)}")
    try:
        con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM read_parquet({quote_literal(str(parquet))})")
        return profile_relation(con, "t", columns, row_count)
    finally:
        con.close()


def profile_relation(
    con: duckdb.DuckDBPyConnection, relation: str, columns: list[tuple[str, str]], row_count: int
) -> pb.DatasetProfile:
    """Profiles `relation` (a table or view name on `con`)."""
    cols = [_Col(i, name, type_name) for i, (name, type_name) in enumerate(columns)]
    numeric = [c for c in cols if c.numeric][:MAX_CORRELATED]
    stats = _scan_statistics(con, relation, cols, numeric, row_count)
    counts = _scan_top_values(con, relation, cols, stats)
    samples = _samples(con, relation, cols)
    profile = pb.DatasetProfile()
    for col in cols:
        profile.columns.append(
            _column_profile(col, stats, counts.get(col.index, []), samples.get(col.index, []), row_count)
        )
    measures = [c for c in numeric if profile.columns[c.index].role == pb.SEMANTIC_ROLE_MEASURE]
    for a_index, a in enumerate(measures):
        for b in measures[a_index + 1 :]:
            value = stats.get(f"corr_{a.index}_{b.index}")
            if value is not None and value == value:
                profile.correlations.append(
                    pb.Correlation(column_a=a.name, column_b=b.name, coefficient=round(float(value), 4))
                )
    duplicates = max(0, row_count - int(stats.get("distinct_rows") or row_count))
    if row_count > EXACT_UP_TO and duplicates < row_count * APPROX_DUPLICATE_NOISE:
        duplicates = 0  # within the error of the HyperLogLog estimate
    score, reasons = health(profile, row_count, duplicates)
    profile.health_score = score
    profile.health_reasons.extend(reasons)
    profile.suggested_questions.extend(suggested_questions(profile))
    return profile


def _scan_statistics(
    con: duckdb.DuckDBPyConnection, relation: str, cols: list[_Col], numeric: list[_Col], rows: int
) -> dict[str, Any]:
    exprs: list[str] = []
    sampled = rows > EXACT_QUANTILES_UP_TO
    for c in cols:
        i, ref = c.index, c.ref
        exprs += [f"count({ref}) AS nn_{i}", f"approx_count_distinct({ref}) AS nd_{i}"]
        if c.numeric:
            x = f"{ref}::DOUBLE"
            exprs += [
                f"min({x}) AS min_{i}",
                f"max({x}) AS max_{i}",
                f"avg({x}) AS mean_{i}",
                f"stddev_samp({x}) AS std_{i}",
            ]
            if not sampled:
                exprs.append(f"quantile_cont({x}, [0.25, 0.5, 0.75]) AS q_{i}")
        elif is_temporal(c.type):
            exprs += [f"min({ref})::VARCHAR AS min_{i}", f"max({ref})::VARCHAR AS max_{i}"]
    for a_index, a in enumerate(numeric):
        for b in numeric[a_index + 1 :]:
            exprs.append(f"corr({a.ref}::DOUBLE, {b.ref}::DOUBLE) AS corr_{a.index}_{b.index}")
    if cols:
        row_hash = f"hash({', '.join(c.ref for c in cols)})"
        distinct = "count(DISTINCT" if rows <= EXACT_UP_TO else "approx_count_distinct("
        exprs.append(f"{distinct} {row_hash}) AS distinct_rows")
    stats = _one_row(con, f"SELECT {', '.join(exprs)} FROM {relation}")
    measured = [c for c in cols if c.numeric]
    if sampled and measured:
        # Quartiles of a large table from a Bernoulli sample: a cheap filter, where exact ones sort it all.
        quartiles = ", ".join(
            f"quantile_cont({c.ref}::DOUBLE, [0.25, 0.5, 0.75]) AS q_{c.index}" for c in measured
        )
        share = max(1.0, min(100.0, 100.0 * QUANTILE_SAMPLE_ROWS / rows))
        sample = f"USING SAMPLE {share:.3f}% (bernoulli)"
        stats.update(_one_row(con, f"SELECT {quartiles} FROM {relation} {sample}"))
    return stats


def _one_row(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or ()]
    rows = cursor.fetchall()
    return dict(zip(names, rows[0] if rows else (), strict=False))


def _scan_top_values(
    con: duckdb.DuckDBPyConnection, relation: str, cols: list[_Col], stats: dict[str, Any]
) -> dict[int, list[tuple[str, int]]]:
    """Exact top values of every column of bounded cardinality, one scan per GROUPING_SETS_MAX columns."""
    grouped = [c for c in cols if 0 < int(stats.get(f"nd_{c.index}") or 0) <= MAX_GROUPED_DISTINCT]
    out: dict[int, list[tuple[str, int]]] = {}
    # DuckDB refuses more than 64 grouping keys in one statement: wide tables take several scans.
    for start in range(0, len(grouped), GROUPING_SETS_MAX):
        out.update(_scan_top_values_of(con, relation, grouped[start : start + GROUPING_SETS_MAX]))
    return out


def _scan_top_values_of(
    con: duckdb.DuckDBPyConnection, relation: str, grouped: list[_Col]
) -> dict[int, list[tuple[str, int]]]:
    """Top values of up to GROUPING_SETS_MAX columns in one scan (GROUPING SETS)."""
    if not grouped:
        return {}
    keys = ", ".join(c.ref for c in grouped)
    sets = ", ".join(f"({c.ref})" for c in grouped)
    rendered = ", ".join(f"{c.ref}::VARCHAR" for c in grouped)
    sql = (
        f"SELECT gid, v, n FROM (SELECT grouping_id({keys}) AS gid, coalesce({rendered}) AS v, count(*) AS n"
        f" FROM {relation} GROUP BY GROUPING SETS ({sets})) WHERE v IS NOT NULL"
        f" QUALIFY row_number() OVER (PARTITION BY gid ORDER BY n DESC, v) <= {TOP_VALUES}"
        " ORDER BY gid, n DESC, v"
    )
    # grouping_id sets a bit for every key NOT in the set; the first key is the highest bit.
    width = len(grouped)
    by_gid = {((1 << width) - 1) ^ (1 << (width - 1 - k)): c.index for k, c in enumerate(grouped)}
    out: dict[int, list[tuple[str, int]]] = {}
    for gid, value, count in con.execute(sql).fetchall():
        index = by_gid.get(int(gid))
        if index is not None:
            out.setdefault(index, []).append((str(value), int(count)))
    return out


def _samples(con: duckdb.DuckDBPyConnection, relation: str, cols: list[_Col]) -> dict[int, list[str]]:
    """The first few distinct non-null values per column, in the order of the first rows (deterministic,
    so the same data always gets the same profile)."""
    if not cols:
        return {}
    order = "__insightx_row"
    lists = ", ".join(
        f"list({c.ref}::VARCHAR ORDER BY {order}) FILTER (WHERE {c.ref} IS NOT NULL)" for c in cols
    )
    row = (
        con.execute(
            f"SELECT {lists} FROM (SELECT *, row_number() OVER () AS {order}"
            f" FROM (SELECT * FROM {relation} LIMIT 1000))"
        ).fetchone()
        or ()
    )
    return {
        c.index: list(dict.fromkeys(values or []))[:SAMPLES] for c, values in zip(cols, row, strict=False)
    }


def _column_profile(
    col: _Col, stats: dict[str, Any], top: list[tuple[str, int]], samples: list[str], rows: int
) -> pb.ColumnProfile:
    i = col.index
    column = pb.ColumnProfile(name=col.name, type=col.type)
    non_null = int(stats.get(f"nn_{i}") or 0)
    column.null_count = rows - non_null
    column.distinct_count = min(int(stats.get(f"nd_{i}") or 0), non_null)
    if col.numeric and stats.get(f"min_{i}") is not None:
        column.min, column.max, column.mean = stats[f"min_{i}"], stats[f"max_{i}"], stats[f"mean_{i}"]
        if stats.get(f"std_{i}") is not None:
            column.std = stats[f"std_{i}"]
        quantiles = stats.get(f"q_{i}") or []
        if len(quantiles) == 3 and None not in quantiles:
            column.p25, column.p50, column.p75 = (float(q) for q in quantiles)
    elif is_temporal(col.type) and stats.get(f"min_{i}") is not None:
        column.min_time = str(stats[f"min_{i}"]).replace(" ", "T")
        column.max_time = str(stats[f"max_{i}"]).replace(" ", "T")
    column.top_values.extend(pb.ValueCount(value=v, count=n) for v, n in top)
    column.samples.extend(samples)
    column.role = assign_role(col.name, col.type, column.distinct_count, non_null, rows, samples)
    return column
