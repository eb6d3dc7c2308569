"""The chart allow-list: the specs the analysts write pass unchanged; anything that could leave the page
(a data URL, an image, a link, a loader, an expression) is refused, and the SSE event carries no chart."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import struct_pb2

from gateway.chart_policy import ChartRefused, check_chart, safe_chart
from gateway.events import event_to_json
from insightx.v1 import orchestrator_pb2 as pb

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
BARS: dict[str, Any] = {
    "$schema": SCHEMA,
    "data": {"values": [{"bank": "SBI", "n": 3}, {"bank": "see https://evil.example/x.csv", "n": 1}]},
    "mark": "bar",
    "encoding": {
        "x": {"field": "bank", "type": "nominal", "sort": "-y"},
        "y": {"field": "n", "type": "quantitative"},
        "tooltip": [{"field": "bank"}, {"field": "n"}],
    },
}
LINE: dict[str, Any] = {
    "$schema": SCHEMA,
    "data": {"values": [{"day": "2024-01-01", "v": 1.5}]},
    "mark": {"type": "line", "point": True},
    "encoding": {
        "x": {"field": "day", "type": "temporal", "sort": None},
        "y": {"field": "v", "type": "quantitative", "axis": {"title": "value"}},
        "color": {"value": "steelblue"},
    },
    "transform": [{"filter": {"field": "v", "gt": 0}}, {"fold": ["v"]}],
    "title": "Daily value",
    "width": 400,
}
EXFIL = {
    "$schema": SCHEMA,
    "data": {"url": "http://127.0.0.1:19998/exfil.csv?leak=secret"},
    "mark": "bar",
    "encoding": {"x": {"field": "a", "type": "nominal"}},
}


def test_the_analysts_specs_pass_unchanged() -> None:
    for spec in (BARS, LINE):
        assert check_chart(copy.deepcopy(spec)) == spec
    layered = {
        "$schema": SCHEMA,
        "data": BARS["data"],
        "layer": [{"mark": "bar", "encoding": BARS["encoding"]}],
    }
    assert check_chart(layered) == layered


def with_(path: list[str | int], value: Any, base: dict[str, Any] = BARS) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (EXFIL, "data from a URL"),
        (with_(["data"], {"values": [], "url": "data.csv"}), "values beside a URL"),
        (with_(["data"], {"sequence": {"start": 0, "stop": 9}}), "generated data"),
        (with_(["data"], {"name": "table"}), "named data filled later"),
        (with_(["datasets"], {"d": [{"a": 1}]}), "top-level datasets"),
        (with_(["mark"], "image"), "an image mark"),
        (with_(["mark"], {"type": "image", "url": "http://x/y.png"}), "an image mark with a URL"),
        (with_(["encoding", "href"], {"field": "bank"}), "a link channel"),
        (with_(["encoding", "url"], {"value": "http://x/y.png"}), "an image URL channel"),
        (with_(["loader"], {"baseURL": "http://x"}), "a loader"),
        (with_(["usermeta"], {"embedOptions": {"loader": {"baseURL": "http://x"}}}), "embed options"),
        (with_(["params"], [{"name": "p", "expr": "1"}]), "params"),
        (with_(["signals"], [{"name": "s"}]), "signals"),
        (with_(["transform"], [{"calculate": "datum.n * 2", "as": "m"}]), "a calculate expression"),
        (with_(["transform"], [{"filter": "datum.n > 1"}]), "a string filter"),
        (with_(["transform"], [{"lookup": "bank", "from": {"data": {"values": []}, "key": "b"}}]), "lookup"),
        (with_(["encoding", "x", "axis"], {"labelExpr": "datum.label"}), "a label expression"),
        (with_(["encoding", "color"], {"condition": {"test": "datum.n > 1", "value": "red"}}), "a test"),
        (with_(["encoding", "y", "title"], {"expr": "'x'"}), "an expr object"),
        (with_(["title"], "//evil.example/pixel"), "a protocol-relative URL"),
        (with_(["description"], "javascript:alert(1)"), "a javascript URL"),
        (with_(["config"], {"background": "url(http://evil.example/a.png)"}), "a URL in style"),
        (with_(["$schema"], "http://evil.example/schema.json"), "another schema URL"),
        (with_(["projection"], {"type": "mercator"}), "a key outside the allow-list"),
        ([1, 2], "not an object"),
    ],
)
def test_anything_that_can_leave_the_page_is_refused(spec: Any, why: str) -> None:
    with pytest.raises(ChartRefused):
        check_chart(spec)
    assert safe_chart(spec) is None, why


def test_the_final_event_drops_a_refused_chart_and_keeps_an_allowed_one() -> None:
    def final(spec: dict[str, Any]) -> dict[str, Any]:
        chart = struct_pb2.Struct()
        chart.update(spec)
        event = pb.ChatEvent(seq=9, final_response=pb.FinalResponseEvent(text="done", chart=chart))
        return event_to_json(event)["data"]  # type: ignore[no-any-return]

    assert final(EXFIL)["chart"] is None and final(EXFIL)["text"] == "done"
    assert final(BARS)["chart"]["data"]["values"][0] == {"bank": "SBI", "n": 3}
