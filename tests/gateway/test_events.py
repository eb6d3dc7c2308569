"""The SSE contract, owned once: an encoder for every ChatEvent kind, its fields as docs/events.md says, an
unknown kind an error (never a bare `{type, seq}`), and one list of terminal events for every reader."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import gateway.cli
import services.orchestrator.streams
from common.arrow import table_to_ipc
from common.channels import open_channel
from common.chat_events import KINDS, TERMINAL
from gateway.events import ENCODERS, UnknownEvent, contract_json, event_to_json
from gateway.stream import sse_events
from insightx.v1 import common_pb2, orchestrator_pb2_grpc
from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.events import EventBuilder

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def proto_kinds() -> list[str]:
    """The kinds of ChatEvent, read from the protobuf descriptor itself."""
    return [f.name for f in pb.ChatEvent.DESCRIPTOR.oneofs_by_name["payload"].fields]


def sample(kind: str) -> pb.ChatEvent:
    """A ChatEvent of each kind with every field set, as the orchestrator makes them."""
    import pyarrow as pa

    events = EventBuilder("chat-1")
    if kind == "status":
        return events.status("Running SQL on DuckDB", "sql")
    if kind == "orchestrator_result":
        return events.orchestrator_result("SQL_ONLY", "one aggregate", "builtin")
    if kind == "sql_result":
        table = pa.table({"n": [1, 2]})
        result = common_pb2.TableResult(arrow_ipc=table_to_ipc(table), row_count=2)
        result.columns.add(name="n", type="BIGINT")
        return pb.ChatEvent(
            seq=4, sql_result=pb.SqlResultEvent(query="SELECT 1", result=result, attempt=1, total_rows=2)
        )
    if kind == "python_result":
        return pb.ChatEvent(
            seq=5,
            python_result=pb.PythonResultEvent(
                code="result = 1",
                results_json="1",
                stdout="hi",
                figures=[common_pb2.Figure(mime_type="image/png", data=b"png")],
            ),
        )
    if kind == "final_response":
        return events.final_response(
            text="**3**",
            answer=3,
            answer_type="number",
            chart=None,
            follow_ups=["And by state?"],
            sql="SELECT 3",
            confidence=0.9,
            clarifications=[],
        )
    if kind == "error":
        return events.error("The query failed.", "SQL_FAILED")
    if kind == "key_rotation":
        return events.key_rotation("key_rotated", "bytez", "ab12", "429")
    raise AssertionError(f"no sample of {kind}: add one")


def payload_fields(kind: str) -> set[str]:
    """The fields an encoder's typed payload declares: `message`, `code`, `data.query`, ..."""
    hints = typing.get_type_hints(typing.get_type_hints(ENCODERS[kind])["return"])
    fields = {name for name in hints if name not in ("type", "seq", "data")}
    if "data" in hints:
        fields |= {f"data.{name}" for name in typing.get_type_hints(hints["data"])}
    return fields


def documented_fields() -> dict[str, set[str]]:
    """docs/events.md: the fields of each `### \\`type\\`` section's table."""
    sections: dict[str, set[str]] = {}
    current: str | None = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"### `([a-z_]+)`", line)
        if heading:
            current = heading.group(1)
            sections[current] = set()
        elif line.startswith("## "):
            current = None
        elif current is not None and (row := re.match(r"\| `([a-z_.]+)` \|", line)):
            sections[current].add(row.group(1))
    return sections


def test_every_kind_of_the_proto_has_an_encoder() -> None:
    missing = [kind for kind in proto_kinds() if kind not in ENCODERS]
    assert not missing, f"ChatEvent kinds without an encoder in gateway/events.py: {missing}"
    assert set(ENCODERS) == set(proto_kinds()) and list(KINDS) == proto_kinds()


@pytest.mark.parametrize("kind", proto_kinds())
def test_each_encoder_sends_exactly_its_typed_fields(kind: str) -> None:
    payload: dict[str, Any] = dict(event_to_json(sample(kind)))
    assert payload["type"] == kind and isinstance(payload["seq"], int)
    sent = {k for k in payload if k not in ("type", "seq", "data")}
    sent |= {f"data.{k}" for k in payload.get("data", {})}
    assert sent == payload_fields(kind)
    json.dumps(payload)  # and it is JSON


def test_docs_describe_every_type_and_field() -> None:
    documented = documented_fields()
    assert set(documented) == set(proto_kinds())
    for kind in proto_kinds():
        assert documented[kind] == payload_fields(kind), kind
    for kind in TERMINAL:
        assert f"### `{kind}` (terminal)" in DOC.read_text()


def test_an_event_without_an_encoder_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownEvent, match="no payload"):
        event_to_json(pb.ChatEvent(seq=3, chat_id="c"))
    monkeypatch.delitem(ENCODERS, "key_rotation")
    with pytest.raises(UnknownEvent, match="key_rotation"):
        event_to_json(sample("key_rotation"))


def test_one_list_of_terminal_events() -> None:
    assert TERMINAL == ("final_response", "error")
    assert gateway.cli.TERMINAL is TERMINAL
    assert services.orchestrator.streams.is_terminal.__module__ == "common.chat_events"
    assert contract_json() == {"types": proto_kinds(), "terminal": ["final_response", "error"]}


class _Orchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Answers a status, then an event with no payload (as a newer orchestrator's unknown kind reads)."""

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        yield EventBuilder(request.chat_id).status("Reading the dataset's profile", "load")
        yield pb.ChatEvent(seq=2, chat_id=request.chat_id)
        yield EventBuilder(request.chat_id, 2).status("never sent", "sql")


@pytest.mark.integration
async def test_an_unknown_kind_ends_the_stream_with_an_error_event() -> None:
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(_Orchestrator(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        call = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Chat(
            pb.ChatRequest(chat_id="c", session_id="s", message="q"), timeout=10
        )
        sent = [m async for m in sse_events(call, max_rows=10, retry_ms=1000)]
    finally:
        await channel.close()
        await server.stop(0)
    data = [json.loads(m["data"]) for m in sent if "data" in m]
    assert [d["type"] for d in data] == ["status", "error"]
    assert data[1] == {
        "type": "error",
        "seq": 3,  # after the unsendable event's seq: ids only ever grow
        "message": "The answer could not be sent to the browser; try again or rephrase the question.",
        "code": "GATEWAY_ENCODING_FAILED",
    }
