"""The dataset's profile ("data DNA"), computed inside DuckDB at import."""

from __future__ import annotations

from pathlib import Path

import duckdb

from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.connection import quote_ident, quote_literal

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UBIGINT",
            "UINTEGER", "USMALLINT", "UTINYINT")
_TEMPORAL = ("DATE", "TIMESTAMP", "TIME")
TOP_VALUES = 10


def _is_numeric(type_name: str) -> bool:
    return type_name.startswith(_NUMERIC)


def _is_temporal(type_name: str) -> bool:
    return type_name.startswith(_TEMPORAL)


def profile_parquet(parquet: Path, columns: list[tuple[str, str]], row_count: int) -> pb.DatasetProfile:
    """Per-column statistics and top values; one scan per column group, all inside DuckDB."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({quote_literal(str(parquet))})")
        profile = pb.DatasetProfile()
        for name, type_name in columns:
            profile.columns.append(_profile_column(con, name, type_name, row_count))
        return profile
    finally:
        con.close()


def _profile_column(con: duckdb.DuckDBPyConnection, name: str, type_name: str, rows: int) -> pb.ColumnProfile:
    col = quote_ident(name)
    column = pb.ColumnProfile(name=name, type=type_name)
    nulls, distinct = con.execute(f"SELECT count(*) - count({col}), approx_count_distinct({col}) FROM t").fetchone()
    column.null_count, column.distinct_count = int(nulls), int(distinct)
    if _is_numeric(type_name):
        stats = con.execute(
            f"SELECT min({col})::DOUBLE, max({col})::DOUBLE, avg({col})::DOUBLE, stddev_samp({col})::DOUBLE,"
            f" quantile_cont({col}, [0.25, 0.5, 0.75]) FROM t"
        ).fetchone()
        if stats and stats[0] is not None:
            column.min, column.max, column.mean = stats[0], stats[1], stats[2]
            if stats[3] is not None:
                column.std = stats[3]
            column.p25, column.p50, column.p75 = (float(q) for q in stats[4])
    if _is_temporal(type_name):
        span = con.execute(f"SELECT min({col})::VARCHAR, max({col})::VARCHAR FROM t").fetchone()
        if span and span[0] is not None:
            column.min_time, column.max_time = span[0], span[1]
    top = con.execute(
        f"SELECT {col}::VARCHAR AS v, count(*) AS n FROM t WHERE {col} IS NOT NULL"
        f" GROUP BY 1 ORDER BY n DESC, v LIMIT {TOP_VALUES}"
    ).fetchall()
    column.top_values.extend(pb.ValueCount(value=str(v), count=int(n)) for v, n in top)
    column.samples.extend(str(v) for v, _ in top[:3])
    column.role = _role(type_name, column.distinct_count, rows)
    return column


def _role(type_name: str, distinct: int, rows: int) -> pb.SemanticRole.ValueType:
    if type_name == "BOOLEAN" or distinct == 2:
        return pb.SEMANTIC_ROLE_FLAG
    if _is_temporal(type_name):
        return pb.SEMANTIC_ROLE_TEMPORAL
    if rows > 0 and distinct >= 0.95 * rows and (not _is_numeric(type_name) or type_name.endswith("INT")):
        return pb.SEMANTIC_ROLE_IDENTIFIER
    if _is_numeric(type_name):
        return pb.SEMANTIC_ROLE_MEASURE
    return pb.SEMANTIC_ROLE_DIMENSION if distinct <= max(50, rows // 20) else pb.SEMANTIC_ROLE_TEXT
