"""The composer's reply, the typed answer and the chart of a final_response."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from services.orchestrator.answers import (
    answer_from_table,
    answer_type_of,
    attach_data,
    auto_chart,
    parse_composer,
    typed_answer,
)
from services.orchestrator.replies import UnparseableReply

ROOT = Path(__file__).resolve().parents[3]


def test_markdown_then_json_line() -> None:
    reply = 'Android fails **5.1%** of the time.\n{"answer": 0.051, "follow_ups": ["And iOS?", "By state?"]}'
    parsed = parse_composer(reply)
    assert parsed.text == "Android fails **5.1%** of the time."
    assert parsed.answer == 0.051 and parsed.has_answer
    assert parsed.follow_ups == ["And iOS?", "By state?"]


def test_fenced_json_with_chart_and_confidence() -> None:
    reply = (
        "Top state is Delhi.\n```json\n"
        '{"answer": "Delhi", "answer_type": "category", "confidence": 0.9,'
        ' "chart": {"mark": "bar", "encoding": {}}, "follow_ups": []}\n```'
    )
    parsed = parse_composer(reply)
    assert parsed.text == "Top state is Delhi."
    assert parsed.answer_type == "category" and parsed.confidence == 0.9
    assert parsed.chart == {"mark": "bar", "encoding": {}}


def test_prose_without_json_is_still_an_answer() -> None:
    parsed = parse_composer("There are 12 rows.")
    assert parsed.text == "There are 12 rows." and not parsed.has_answer


def test_json_only_reply_needs_text() -> None:
    assert parse_composer('{"text": "Yes.", "answer": true}').text == "Yes."
    with pytest.raises(UnparseableReply):
        parse_composer('{"answer": true}')
    with pytest.raises(UnparseableReply):
        parse_composer("   ")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "boolean"),
        (3, "number"),
        (2.5, "number"),
        ("Delhi", "category"),
        ([1, 2.0], "list[number]"),
        (["a", "b"], "list[category]"),
        (None, "none"),
        ({"a": 1}, "none"),
        ([], "none"),
    ],
)
def test_answer_types(value: object, kind: str) -> None:
    assert answer_type_of(value) == kind


def test_answer_from_table_shapes() -> None:
    assert answer_from_table(pa.table({"n": [42]})) == 42
    assert answer_from_table(pa.table({"s": ["a", "b"]})) == ["a", "b"]
    assert answer_from_table(pa.table({"s": ["a"], "n": [1]})) is None
    assert answer_from_table(pa.table({"n": pa.array([], pa.int64())})) is None


def test_breakdown_gets_a_bar_chart_with_its_rows() -> None:
    table = pa.table({"device_type": ["Android", "iOS", "Web"], "failure_rate": [0.05, 0.035, 0.03]})
    spec = auto_chart(table)
    assert spec is not None
    assert spec["mark"] == {"type": "bar"}
    assert spec["encoding"]["x"]["field"] == "device_type"
    assert spec["encoding"]["y"]["field"] == "failure_rate"
    assert spec["data"]["values"][0] == {"device_type": "Android", "failure_rate": 0.05}
    # the version the page loads: gateway/web's vega-lite
    page_major = json.loads((ROOT / "gateway/web/package.json").read_text())["dependencies"]["vega-lite"]
    assert spec["$schema"].endswith(f"/v{page_major.lstrip('^~').split('.')[0]}.json")


def test_single_value_gets_no_chart() -> None:
    assert auto_chart(pa.table({"n": [1]})) is None
    assert auto_chart(pa.table({"a": ["x", "y"], "b": ["p", "q"]})) is None


def test_model_chart_gets_the_result_rows_when_it_has_no_data() -> None:
    spec = attach_data({"mark": "bar"}, pa.table({"a": ["x"], "n": [1]}))
    assert spec["data"] == {"values": [{"a": "x", "n": 1}]}
    assert attach_data({"mark": "bar", "data": {"url": "x"}}, None)["data"] == {"url": "x"}


@pytest.mark.parametrize(
    ("value", "typed"),
    [(3, 3), ("x", "x"), ([1, None], [1, None]), ({"a": 1}, None), ([{"a": 1}], None), (float("nan"), None)],
)
def test_typed_answers_are_scalars_or_flat_lists(value: object, typed: object) -> None:
    assert typed_answer(value) == typed
