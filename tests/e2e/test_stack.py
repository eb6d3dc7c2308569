"""The foundation's acceptance, end to end: five processes, health, reflection, the slice, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2_grpc

from common.auth import token_digest
from common.channels import check_health, open_channel
from tests.gateway.stacks import http
from tools.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICE_NAMES = {
    "orchestrator": "insightx.v1.OrchestratorService",
    "llm_gateway": "insightx.v1.LlmGatewayService",
    "sql_engine": "insightx.v1.SqlEngineService",
    "py_sandbox": "insightx.v1.PySandboxService",
}


def read_events(base_url: str, body: dict[str, Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Posts a chat and parses the SSE stream the way the frontend does (split on newlines, data: lines)."""
    events: list[dict[str, Any]] = []
    with http.stream("POST", f"{base_url}/api/chat/stream", json=body, timeout=timeout) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    return events


def upload(base_url: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        reply = http.post(
            f"{base_url}/api/datasets", files={"file": (path.name, handle, "text/csv")}, timeout=120
        )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_health_lists_every_service_as_serving(stack: Stack) -> None:
    reply = http.get(f"{stack.base_url}/health", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["services"] == {name: "SERVING" for name in SERVICE_NAMES}


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
async def test_each_port_answers_health_to_anyone_and_serves_no_reflection(stack: Stack, name: str) -> None:
    # Health is open so that probes need no secret; reflection is off unless INSIGHTX_GRPC_REFLECTION.
    async with open_channel(stack.address(name), token="") as anonymous:
        assert await check_health(anonymous, SERVICE_NAMES[name]) == "SERVING"
    caller = "gateway" if name == "orchestrator" else "orchestrator"
    async with open_channel(stack.address(name), token=stack.tokens[caller]) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        # No request is sent: the server refuses an unknown method on its headers, and a message racing that
        # refusal would fail on the client as INTERNAL instead. A served reflection would keep the call open.
        call = stub.ServerReflectionInfo()
        assert await asyncio.wait_for(call.code(), 10) == grpc.StatusCode.UNIMPLEMENTED


def _one_call(name: str, channel: grpc.aio.Channel) -> Any:
    """A cheap call of each service, of every kind of RPC the services have."""
    from insightx.v1 import (
        llm_gateway_pb2,
        llm_gateway_pb2_grpc,
        orchestrator_pb2,
        orchestrator_pb2_grpc,
        py_sandbox_pb2,
        py_sandbox_pb2_grpc,
        sql_engine_pb2,
        sql_engine_pb2_grpc,
    )

    if name == "orchestrator":  # server stream
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = orchestrator_pb2.ChatRequest(session_id="s" * 16, message="how many rows?")
        return _drain(stub.Chat(request, timeout=10))
    if name == "llm_gateway":
        return llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel).GetKeyStatus(
            llm_gateway_pb2.GetKeyStatusRequest(), timeout=10
        )
    if name == "sql_engine":  # client stream
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        chunks = iter([sql_engine_pb2.ImportDatasetRequest(metadata=sql_engine_pb2.ImportMetadata())])
        return stub.ImportDataset(chunks, timeout=10)
    return py_sandbox_pb2_grpc.PySandboxServiceStub(channel).ValidateCode(
        py_sandbox_pb2.ValidateCodeRequest(code="result = 1"), timeout=10
    )


async def _drain(call: Any) -> list[Any]:
    return [event async for event in call]


async def _code(stack: Stack, name: str, token: str) -> grpc.StatusCode:
    async with open_channel(stack.address(name), token=token) as channel:
        try:
            await _one_call(name, channel)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
async def test_each_service_refuses_calls_without_or_with_wrong_credentials(stack: Stack, name: str) -> None:
    assert await _code(stack, name, token="") == grpc.StatusCode.UNAUTHENTICATED
    assert await _code(stack, name, token="not-the-token-" + "x" * 30) == grpc.StatusCode.UNAUTHENTICATED
    # A service's own verifier (the digest it was given) is not a credential.
    digest = token_digest(stack.tokens["orchestrator"])
    assert await _code(stack, name, token=digest) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("name", "allowed", "refused"),
    [
        ("orchestrator", "gateway", "orchestrator"),
        ("llm_gateway", "orchestrator", "gateway"),
        ("sql_engine", "gateway", None),
        ("sql_engine", "orchestrator", None),
        ("py_sandbox", "gateway", None),
        ("py_sandbox", "orchestrator", None),
    ],
)
async def test_each_service_takes_only_its_callers(
    stack: Stack, name: str, allowed: str, refused: str | None
) -> None:
    # make run gives a service only its callers' digests, so another caller is not even recognised.
    denied = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert await _code(stack, name, stack.tokens[allowed]) not in denied
    if refused is not None:
        assert await _code(stack, name, stack.tokens[refused]) in denied


def test_upload_returns_session_schema_and_row_count(stack: Stack, small_csv: Path) -> None:
    body = upload(stack.base_url, small_csv)
    assert body["row_count"] == 137
    assert body["table"] == "sales_report_2024"
    assert [c["name"] for c in body["columns"]] == ["order id", "amount (INR)", "Region", "order date"]
    assert len(body["session_id"]) >= 16
    again = http.get(f"{stack.base_url}/api/datasets/{body['session_id']}", timeout=10)
    assert again.status_code == 200 and again.json()["row_count"] == 137


def test_row_count_question_streams_every_step_and_the_true_count(stack: Stack, small_csv: Path) -> None:
    session = upload(stack.base_url, small_csv)["session_id"]
    events = read_events(
        stack.base_url,
        {"session_id": session, "message": "How many rows are there?", "history": []},
    )
    types = [e["type"] for e in events]
    assert types[0] == "status" and types[-1] == "final_response"
    for needed in ("orchestrator_result", "sql_result"):
        assert needed in types
    assert types.index("orchestrator_result") < types.index("sql_result") < types.index("final_response")
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    sql = next(e for e in events if e["type"] == "sql_result")["data"]
    assert "count" in sql["query"].lower() and sql["rows"] and sql["truncated"] is False
    final = events[-1]["data"]
    assert final["answer"] == 137
    assert "137" in final["text"]
    assert final["sql"]


@pytest.mark.parametrize(
    ("name", "content"),
    [("random.csv", bytes(range(256)) * 40), ("empty.csv", b""), ("nothing.csv", b"\n\n")],
)
def test_an_upload_that_is_not_a_table_is_a_4xx_with_a_message(
    stack: Stack, tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with path.open("rb") as handle:
        reply = http.post(f"{stack.base_url}/api/datasets", files={"file": (name, handle)}, timeout=60)
    assert 400 <= reply.status_code < 500, reply.text
    error = reply.json()["error"]
    assert error["code"] and len(error["message"]) > 10


def test_chat_on_unknown_session_is_404_with_a_message(stack: Stack) -> None:
    reply = http.post(
        f"{stack.base_url}/api/chat/stream",
        json={"session_id": "no-such-session", "message": "How many rows?", "history": []},
        timeout=30,
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "DATASET_NOT_FOUND"
    assert "upload" in reply.json()["error"]["message"].lower()


def test_a_service_that_is_down_is_named_by_health_and_chat_fails_fast(stack: Stack, small_csv: Path) -> None:
    session = upload(stack.base_url, small_csv)["session_id"]
    stack.stop_one("sql_engine")
    try:
        reply = http.get(f"{stack.base_url}/health", timeout=10)
        assert reply.status_code == 503
        assert reply.json()["services"]["sql_engine"] != "SERVING"
        assert reply.json()["services"]["orchestrator"] == "SERVING"
        started = time.monotonic()
        events = read_events(
            stack.base_url,
            {"session_id": session, "message": "How many rows are there?", "history": []},
        )
        assert time.monotonic() - started < 35
        assert events[-1]["type"] == "error"
        assert "SQL engine" in events[-1]["message"]
    finally:
        stack.start_one("sql_engine")
        stack.wait_healthy(60)


async def test_grpc_bad_input_is_invalid_argument(stack: Stack) -> None:
    from insightx.v1 import sql_engine_pb2, sql_engine_pb2_grpc

    channel = open_channel(stack.address("sql_engine"), token=stack.tokens["gateway"])
    try:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ExecuteSql(
                sql_engine_pb2.ExecuteSqlRequest(session_id="../etc", sql="SELECT 1"), timeout=5
            )
        assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    finally:
        await channel.close()
