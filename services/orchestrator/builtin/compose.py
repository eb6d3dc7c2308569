"""Turns a step's result table into the typed answer, a sentence with its basis, a chart and follow-ups."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.plan import VEGA_LITE_SCHEMA, Answer, StepResults

Composer = Callable[[StepResults], Answer]


def plain(value: Any) -> Any:
    """A JSON-friendly Python value from an Arrow cell."""
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, float):
        return float(f"{value:.12g}")  # 1165013.49, not 1165013.4900000002
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def unit_of(column: Column | None) -> str:
    if column is None:
        return ""
    name = column.name.lower()
    for key, symbol in (
        ("inr", "₹"),
        ("rupee", "₹"),
        ("usd", "$"),
        ("dollar", "$"),
        ("eur", "€"),
        ("gbp", "£"),
    ):
        if key in name:
            return symbol
    return ""


def fmt(value: Any, unit: str = "", percent: bool = False) -> str:
    """A number for people: thousands separators, at most 2 decimals, unit or percent sign."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        if abs(value) >= 1 or value == 0:
            text = f"{value:,.2f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{value:,.0f}"
        else:
            text = f"{value:.4g}"
    else:
        return str(value)
    if percent:
        return f"{text}%"
    return f"{unit}{text}" if unit else text


def _column(table: pa.Table | None, index: int = 0) -> list[Any]:
    if table is None or table.num_columns <= index:
        return []
    return [plain(v) for v in table.column(index).to_pylist()]


def _nothing(reason: str) -> Answer:
    return Answer(text=reason, answer=None, answer_type="none", confidence=0.0)


def number(
    label: str, follow_ups: list[str], unit: str = "", percent: bool = False, integral: bool = False
) -> Composer:
    """One number: the first cell; a sentence "label: value"."""

    def compose(results: StepResults) -> Answer:
        values = _column(results.sql_table)
        if not values or values[0] is None:
            return _nothing(f"{label}: no rows matched, so there is no value to report.")
        value = values[0]
        if isinstance(value, bool):
            value = int(value)
        if integral and isinstance(value, float) and value.is_integer():
            value = int(value)
        return Answer(
            text=f"{label}: **{fmt(value, unit, percent)}**.",
            answer=value,
            answer_type="number",
            follow_ups=follow_ups,
            confidence=0.9,
        )

    return compose


def category(label: str, follow_ups: list[str], basis: str = "") -> Composer:
    """One value of a column: the first cell (the second, if any, is its basis, e.g. a count)."""

    def compose(results: StepResults) -> Answer:
        table = results.sql_table
        values = _column(table)
        if not values or values[0] is None:
            return _nothing(f"{label}: no rows matched.")
        value = values[0]
        extra = ""
        if table is not None and table.num_columns > 1 and basis:
            extra = f" ({basis} {fmt(_column(table, 1)[0])})"
        kind = "number" if isinstance(value, int | float) and not isinstance(value, bool) else "category"
        if kind == "number" and isinstance(value, float) and value.is_integer():
            value = int(value)
        return Answer(
            text=f"{label}: **{value}**{extra}.",
            answer=value,
            answer_type=kind,
            follow_ups=follow_ups,
            confidence=0.85,
        )

    return compose


def listing(label: str, follow_ups: list[str]) -> Composer:
    """The first column of every row, as a list."""

    def compose(results: StepResults) -> Answer:
        values = _column(results.sql_table)
        if not values:
            return Answer(
                text=f"{label}: no rows matched.",
                answer=[],
                answer_type="list[category]",
                follow_ups=follow_ups,
                confidence=0.6,
            )
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None)
        values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        shown = ", ".join(fmt(v) if numeric else str(v) for v in values[:50])
        more = f" … ({len(values)} in all)" if len(values) > 50 else ""
        return Answer(
            text=f"{label}: {shown}{more}.",
            answer=values,
            answer_type="list[number]" if numeric else "list[category]",
            follow_ups=follow_ups,
            confidence=0.8,
        )

    return compose


def boolean(statement: str, follow_ups: list[str]) -> Composer:
    """A yes/no from an `answer` column; the other columns are the numbers it rests on."""

    def compose(results: StepResults) -> Answer:
        table = results.sql_table
        if table is None or table.num_rows == 0:
            return _nothing("No rows matched, so I cannot say yes or no.")
        row = {name: plain(table.column(name)[0].as_py()) for name in table.column_names}
        value = row.pop("answer")
        if value is None:
            return _nothing(f"{statement}: the data has no values to compare.")
        basis = ", ".join(f"{name} = {fmt(v)}" for name, v in row.items())
        verdict = "Yes" if value else "No"
        return Answer(
            text=f"**{verdict}**. I checked whether {statement[:1].lower()}{statement[1:]}"
            + (f" ({basis})." if basis else "."),
            answer=bool(value),
            answer_type="boolean",
            follow_ups=follow_ups,
            confidence=0.85,
        )

    return compose


def breakdown(
    label: str,
    group: str,
    value: str,
    follow_ups: list[str],
    percent: bool = False,
    temporal: bool = False,
    unit: str = "",
) -> Composer:
    """Rows (group, value): the groups in order as the answer, a table in the text, and a chart."""

    def compose(results: StepResults) -> Answer:
        table = results.sql_table
        groups, values = _column(table, 0), _column(table, 1)
        if not groups:
            return Answer(
                text=f"{label}: no rows matched.",
                answer=[],
                answer_type="list[category]",
                follow_ups=follow_ups,
                confidence=0.6,
            )
        lines = [f"| {group} | {value} |", "|---|---|"]
        lines += [
            f"| {g} | {fmt(v, unit, percent)} |" for g, v in list(zip(groups, values, strict=False))[:30]
        ]
        more = f"\n\n({len(groups)} groups; the first 30 are shown.)" if len(groups) > 30 else ""
        chart = chart_for(groups, values, group, value, temporal)
        top = (
            ""
            if temporal
            else f" Highest: **{groups[_argmax(values)]}** ({fmt(max_value(values), unit, percent)})."
        )
        text = f"{label}.{top}\n\n" + "\n".join(lines) + more
        return Answer(
            text=text,
            answer=[str(g) if not isinstance(g, int | float) else g for g in groups],
            answer_type="list[category]",
            chart=chart,
            follow_ups=follow_ups,
            confidence=0.85,
        )

    return compose


def _argmax(values: list[Any]) -> int:
    nums = [(v if isinstance(v, int | float) else -math.inf) for v in values]
    return max(range(len(nums)), key=lambda i: nums[i])


def max_value(values: list[Any]) -> Any:
    return values[_argmax(values)]


def chart_for(groups: list[Any], values: list[Any], x: str, y: str, temporal: bool) -> dict[str, Any]:
    """A Vega-Lite spec: a line over time buckets, bars for categories (the first 40 groups at most)."""
    cap = 400 if temporal else 40
    data = [
        {x: g if isinstance(g, int | float) else str(g), y: v}
        for g, v in list(zip(groups, values, strict=False))[:cap]
    ]
    if temporal:
        return {
            "$schema": VEGA_LITE_SCHEMA,
            "data": {"values": data},
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": x, "type": "ordinal", "sort": None},
                "y": {"field": y, "type": "quantitative"},
            },
        }
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"values": data},
        "mark": "bar",
        "encoding": {
            "x": {"field": x, "type": "nominal", "sort": "-y"},
            "y": {"field": y, "type": "quantitative"},
            "tooltip": [{"field": x}, {"field": y}],
        },
    }


def follow_ups_for(schema: Schema, used: set[str]) -> list[str]:
    """Three next questions drawn from this question's columns: drill down by another dimension, the trend
    over time, compare across groups; the profile's general suggestions fill what is left."""
    measures = [c for c in schema.columns if c.measure and c.flag_values is None]
    dims = [c for c in schema.columns if c.textual and not c.listlike and 1 < c.distinct <= 50]
    temporal = next((c for c in schema.columns if c.temporal), None)
    measure = next((c for c in measures if c.name in used), None)
    dim = next((c for c in dims if c.name in used), None)
    others = [d for d in dims if d is not dim]
    out: list[str] = []
    if measure is not None:
        if others:
            out.append(f"What is the average {measure.name} by {others[0].name}?")
        if temporal is not None:
            out.append(f"What is the average {measure.name} by month of {temporal.name}?")
        if dim is not None:
            out.append(f"What is the median {measure.name} by {dim.name}?")
        elif len(others) > 1:
            out.append(f"Which {others[1].name} has the highest total {measure.name}?")
    elif dim is not None:
        if measures:
            out.append(f"What is the average {measures[0].name} by {dim.name}?")
            out.append(f"Which {dim.name} has the highest total {measures[0].name}?")
        if temporal is not None:
            out.append(f"How many rows are there by month of {temporal.name}?")
    for general in _general_follow_ups(measures, dims, temporal, used):
        if len(out) >= 3:
            break
        if general not in out:
            out.append(general)
    return out[:3]


def _general_follow_ups(
    measures: list[Column], dims: list[Column], temporal: Column | None, used: set[str]
) -> list[str]:
    """What the profile suggests whatever was asked, preferring columns the question did not use."""
    measures = sorted(measures, key=lambda c: c.name in used)
    dims = sorted(dims, key=lambda c: c.name in used)
    out: list[str] = []
    if temporal is not None:
        out.append(f"How many rows are there by month of {temporal.name}?")
    if measures and dims:
        out.append(f"What is the average {measures[0].name} by {dims[0].name}?")
    if dims:
        out.append(f"What is the most common {dims[-1].name if len(dims) > 1 else dims[0].name}?")
    if measures:
        out.append(f"What is the median {measures[-1].name}?")
    return out


def nothing_matched(schema: Schema, reason: str) -> Answer:
    """The honest answer when the question does not map onto the data."""
    names = ", ".join(f"`{c.name}`" for c in schema.columns[:8])
    more = f" and {len(schema.columns) - 8} more" if len(schema.columns) > 8 else ""
    return Answer(
        text=(
            f"I could not answer this from the data: {reason} Without a language model I answer questions "
            f"about the columns ({names}{more}): counts, sums, averages, medians, minimum and maximum, "
            'filters on values in the data, breakdowns ("average X by Y"), top and bottom k, '
            "distinct values, "
            "rates and shares, trends over time, yes/no comparisons and correlations."
        ),
        answer=None,
        answer_type="none",
        follow_ups=follow_ups_for(schema, set()),
        confidence=0.0,
    )
