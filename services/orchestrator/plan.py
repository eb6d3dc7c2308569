"""What an analyst (built-in or model-driven) decides, and what it answers: plain data, no gRPC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from insightx.v1 import sql_engine_pb2

CLASSIFICATIONS = ("SQL_ONLY", "PY_ONLY", "SQL_THEN_PY", "EXPLAIN_ONLY")
# Charts are written for the Vega-Lite that the page loads (gateway/web/package.json: vega-lite 6).
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"


@dataclass(frozen=True)
class DatasetContext:
    """The dataset a question is about: its table, schema, row count and profile."""

    session_id: str
    table: str
    row_count: int
    columns: list[tuple[str, str]]
    profile: sql_engine_pb2.DatasetProfile
    dataset_hash: str = ""


@dataclass
class StepResults:
    """What the pipeline learned while executing a plan."""

    sql_table: pa.Table | None = None
    sql_truncated: bool = False
    python_result: Any = None
    python_table: pa.Table | None = None
    python_stdout: str = ""


@dataclass
class Answer:
    """The final answer as the composer states it."""

    text: str
    answer: Any = None
    answer_type: str = "none"
    chart: dict[str, Any] | None = None
    follow_ups: list[str] = field(default_factory=list)
    confidence: float = 0.0
    # When the analyst will not guess: the readings it hesitated between, each a full question a person can
    # click to ask instead (the page shows them as chips).
    clarifications: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """How to answer: a classification, SQL and/or Python to run, and how to compose the answer."""

    classification: str
    reasoning: str
    compose: Callable[[StepResults], Answer]
    sql: str | None = None
    python_code: str | None = None
    python_on_sql_result: bool = False
