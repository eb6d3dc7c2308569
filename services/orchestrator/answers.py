"""The typed answer, its chart and the composer's reply: what the final_response carries.

The composer writes markdown and ends with a JSON object (`answer`, `follow_ups`, optionally `chart`,
`answer_type`, `confidence`); whatever it leaves out is derived from the result itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from common.arrow import json_safe, to_records
from services.orchestrator.plan import VEGA_LITE_SCHEMA
from services.orchestrator.replies import UnparseableReply, balanced_objects, loads_lenient

ANSWER_TYPES = ("boolean", "number", "category", "list[number]", "list[category]", "none")
CHART_ROWS = 500


@dataclass
class ComposerReply:
    """What the composer said, with the parts it left out set to None."""

    text: str
    answer: Any = None
    has_answer: bool = False
    answer_type: str | None = None
    chart: dict[str, Any] | None = None
    follow_ups: list[str] = field(default_factory=list)
    confidence: float | None = None


def parse_composer(reply: str) -> ComposerReply:
    """Splits the composer's reply into its markdown and its trailing JSON (either may be missing)."""
    text = (reply or "").strip()
    if not text:
        raise UnparseableReply("a markdown answer followed by a JSON object with `answer` and `follow_ups`")
    data: dict[str, Any] | None = None
    span = ""
    fenced = list(re.finditer(r"```(?:json)?\s*\n?(\{.*?\})\s*```", text, re.DOTALL))
    for match in reversed(fenced):
        try:
            value = loads_lenient(match.group(1))
        except ValueError:
            continue
        if isinstance(value, dict):
            data, span = value, match.group(0)
            break
    if data is None:
        for chunk in reversed(balanced_objects(text)):
            try:
                value = loads_lenient(chunk)
            except ValueError:
                continue
            if isinstance(value, dict):
                data, span = value, chunk
                break
    prose = text.replace(span, "").strip() if span else text
    if data is None:
        return ComposerReply(text=prose)
    if isinstance(data.get("text"), str) and data["text"].strip():
        prose = data["text"].strip()
    if not prose:
        raise UnparseableReply("a markdown answer before the JSON object")
    chart = data.get("chart")
    confidence = data.get("confidence")
    follow_ups = data.get("follow_ups") or []
    return ComposerReply(
        text=prose,
        answer=data.get("answer"),
        has_answer="answer" in data,
        answer_type=data.get("answer_type") if data.get("answer_type") in ANSWER_TYPES else None,
        chart=chart if isinstance(chart, dict) and chart.get("mark") else None,
        follow_ups=[str(f) for f in follow_ups if isinstance(f, str | int | float)][:5]
        if isinstance(follow_ups, list)
        else [],
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
    )


def answer_from_table(table: pa.Table | None) -> Any:
    """The answer a result states by itself: one cell → that value, one column → the list, else None."""
    if table is None or table.num_rows == 0 or table.num_columns == 0:
        return None
    if table.num_rows == 1 and table.num_columns == 1:
        return json_safe(table.column(0)[0].as_py())
    if table.num_columns == 1 and table.num_rows <= 50:
        return json_safe(table.column(0).to_pylist())
    return None


def typed_answer(value: Any) -> Any:
    """The answer as the frontend types it: a scalar or a flat list; anything else (dict, table) is None."""
    if value is None or isinstance(value, bool | int | float | str):
        return json_safe(value)
    if isinstance(value, list) and all(v is None or isinstance(v, bool | int | float | str) for v in value):
        return json_safe(value)
    return None


def answer_type_of(value: Any) -> str:
    """The answer's type name as the frontend expects it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "none" if isinstance(value, float) and math.isnan(value) else "number"
    if isinstance(value, str):
        return "category"
    if isinstance(value, list) and value:
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return "list[number]"
        if all(isinstance(v, str) for v in value):
            return "list[category]"
    return "none"


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _is_temporal(kind: pa.DataType) -> bool:
    return pa.types.is_temporal(kind)


def auto_chart(table: pa.Table | None) -> dict[str, Any] | None:
    """A Vega-Lite spec for a result that is a breakdown: one label or time column and one number column."""
    if table is None or not 2 <= table.num_rows <= CHART_ROWS or table.num_columns < 2:
        return None
    fields = list(table.schema)
    measures = [f for f in fields if _is_numeric(f.type)]
    labels = [f for f in fields if not _is_numeric(f.type)]
    if not measures:
        return None
    measure = measures[-1]
    if labels:
        label = labels[0]
    elif len(measures) >= 2:
        label = measures[0]
        measure = measures[1]
    else:
        return None
    temporal = _is_temporal(label.type)
    x_type = "temporal" if temporal else ("ordinal" if _is_numeric(label.type) else "nominal")
    spec: dict[str, Any] = {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"values": to_records(table.select([label.name, measure.name]), CHART_ROWS)},
        "mark": {"type": "line", "point": True} if temporal else {"type": "bar"},
        "encoding": {
            "x": {
                "field": label.name,
                "type": x_type,
                "sort": None if temporal or x_type == "ordinal" else "-y",
            },
            "y": {"field": measure.name, "type": "quantitative"},
            "tooltip": [
                {"field": label.name, "type": x_type},
                {"field": measure.name, "type": "quantitative"},
            ],
        },
    }
    return spec


def attach_data(chart: dict[str, Any], table: pa.Table | None) -> dict[str, Any]:
    """A model's spec with the result's rows inlined when it names no data of its own."""
    spec = dict(chart)
    spec["$schema"] = VEGA_LITE_SCHEMA  # a model may name another version; the page loads this one
    if "data" not in spec and table is not None:
        spec["data"] = {"values": to_records(table, CHART_ROWS)}
    return spec
