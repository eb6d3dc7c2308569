"""What the profile's numbers mean: a semantic role per column, a health score, questions worth asking."""

from __future__ import annotations

import re
from collections.abc import Sequence

from common.duckdb_types import is_integral, is_numeric, is_temporal
from insightx.v1 import sql_engine_pb2 as pb

_ID_NAME = re.compile(r"(^|[^a-z])(id|uuid|guid|key|code|number|no)$|^id[^a-z]", re.IGNORECASE)
_FLAG_WORDS = {"yes", "no", "y", "n", "true", "false", "t", "f", "0", "1"}


def assign_role(
    name: str, type_name: str, distinct: int, non_null: int, rows: int, samples: Sequence[str] = ()
) -> pb.SemanticRole.ValueType:
    """identifier, measure, dimension, temporal, flag or text, from type, cardinality, name and samples."""
    numeric = is_numeric(type_name)
    integral = is_integral(type_name)
    if type_name == "BOOLEAN" or (distinct == 2 and non_null > 2):
        return pb.SEMANTIC_ROLE_FLAG
    if is_temporal(type_name):
        return pb.SEMANTIC_ROLE_TEMPORAL
    named_like_id = bool(_ID_NAME.search(name))
    key_like = integral or not numeric
    prose = not numeric and any(" " in s.strip() for s in samples)
    near_unique = non_null > 20 and distinct >= 0.95 * non_null
    if key_like and ((named_like_id and distinct > 0.5 * max(non_null, 1)) or (near_unique and not prose)):
        return pb.SEMANTIC_ROLE_IDENTIFIER
    if numeric:
        return pb.SEMANTIC_ROLE_MEASURE
    if distinct <= max(50, rows // 20):
        return pb.SEMANTIC_ROLE_DIMENSION
    return pb.SEMANTIC_ROLE_TEXT


def health(profile: pb.DatasetProfile, rows: int, duplicate_rows: int) -> tuple[float, list[str]]:
    """A score from 0 to 100 and one line per thing that lowered it; a reason always costs at least one
    point, so 100 means nothing to report (never 100 beside a warning)."""
    score = 100.0
    reasons: list[str] = []
    if rows == 0:
        return 0.0, ["The table has no rows."]
    if rows < 10:
        score -= 10
        reasons.append(f"Only {rows} rows: statistics will be fragile.")
    columns = list(profile.columns)
    cells = rows * max(len(columns), 1)
    missing = sum(c.null_count for c in columns)
    if missing:
        share = missing / cells
        score -= max(1.0, min(40.0, share * 100))
        worst = max(columns, key=lambda c: c.null_count)
        reasons.append(
            f"{share:.1%} of all cells are empty; '{worst.name}' is missing"
            f" {worst.null_count / rows:.0%} of its values."
        )
    empty = [c.name for c in columns if c.null_count == rows]
    if empty:
        score -= min(15.0, 5.0 * len(empty))
        reasons.append(f"Columns with no values at all: {', '.join(empty[:5])}.")
    constant = [c.name for c in columns if c.distinct_count == 1 and c.null_count < rows]
    if constant:
        score -= min(10.0, 3.0 * len(constant))
        reasons.append(f"Columns holding a single value: {', '.join(constant[:5])}.")
    if duplicate_rows > 0:
        share = duplicate_rows / rows
        score -= max(1.0, min(20.0, share * 100))
        reasons.append(f"About {duplicate_rows:,} rows ({share:.1%}) are exact duplicates of another row.")
    if not any(c.role == pb.SEMANTIC_ROLE_MEASURE for c in columns):
        reasons.append("No numeric measure was found: only counts can be computed.")
        score -= 5
    return max(0.0, round(score, 1)), reasons


def suggested_questions(profile: pb.DatasetProfile, limit: int = 6) -> list[str]:
    """Questions a person could ask first, built from the roles the profiler found."""
    by_role: dict[int, list[pb.ColumnProfile]] = {}
    for column in profile.columns:
        by_role.setdefault(column.role, []).append(column)
    measures = by_role.get(pb.SEMANTIC_ROLE_MEASURE, [])
    dimensions = sorted(by_role.get(pb.SEMANTIC_ROLE_DIMENSION, []), key=lambda c: c.distinct_count)
    temporal = by_role.get(pb.SEMANTIC_ROLE_TEMPORAL, [])
    flags = by_role.get(pb.SEMANTIC_ROLE_FLAG, [])
    questions = ["How many rows are there?"]
    if measures and dimensions:
        questions.append(f"What is the total {measures[0].name} by {dimensions[0].name}?")
        questions.append(f"Which {dimensions[0].name} has the highest average {measures[0].name}?")
    elif dimensions:
        questions.append(f"How many rows are there for each {dimensions[0].name}?")
    if measures and temporal:
        questions.append(f"How has {measures[0].name} changed over {temporal[0].name} by month?")
    if measures:
        questions.append(f"What are the average, median and maximum {measures[0].name}?")
    if flags:
        questions.append(_share_question(flags[0]))
    strong = sorted(profile.correlations, key=lambda c: -abs(c.coefficient))
    if strong and abs(strong[0].coefficient) >= 0.3:
        questions.append(f"How are {strong[0].column_a} and {strong[0].column_b} related?")
    if len(dimensions) > 1 and measures:
        questions.append(f"What are the top 5 {dimensions[1].name} by {measures[0].name}?")
    return questions[:limit]


def _share_question(flag: pb.ColumnProfile) -> str:
    """Asks for the share of the flag's rarer value (FAILED, 1, true): usually the interesting one."""
    if len(flag.top_values) >= 2:
        rarer = min(flag.top_values, key=lambda v: v.count).value
        return f"What share of rows have {flag.name} = {rarer}?"
    return f"What share of rows have {flag.name} set?"
