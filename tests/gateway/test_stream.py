"""gateway.stream against a real orchestrator: closing the SSE generator at a `yield` cancels the gRPC call.

DESIGN.md §5: a generator closed while suspended at `yield` does not cancel a grpc.aio call by itself (the
call is not being awaited then); the stream's `finally` must. The orchestrator's SQL engine address here
accepts connections and never answers, so its answer hangs after the first event.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.channels import open_channel
from gateway.stream import StreamStats, sse_events
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.server import start
from services.orchestrator.settings import OrchestratorSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def hanging_orchestrator(tmp_path: Path) -> AsyncIterator[str]:
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    settings = OrchestratorSettings(
        data_dir=tmp_path,
        sql_engine_addr=f"127.0.0.1:{blackhole.getsockname()[1]}",
        llm_gateway_addr=f"127.0.0.1:{blackhole.getsockname()[1]}",
        py_sandbox_addr=f"127.0.0.1:{blackhole.getsockname()[1]}",
    )
    running = await start(settings, "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0)
        blackhole.close()


async def test_closing_the_stream_at_a_yield_cancels_the_call(hanging_orchestrator: str) -> None:
    channel = open_channel(hanging_orchestrator)
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    request = orchestrator_pb2.ChatRequest(
        chat_id="c", session_id="s" * 8, message="how many rows are there?"
    )
    call = stub.Chat(request, timeout=60)
    stats = StreamStats()
    stats.track(call)
    events = sse_events(call, max_rows=10, retry_ms=1500, stats=stats)
    first = await anext(events)
    assert first["retry"] == 1500
    status = await anext(events)
    assert json.loads(status["data"])["type"] == "status" and status["id"] == "1"
    assert not call.done() and stats.open == 1
    await events.aclose()  # the generator is suspended at its yield, as when the client leaves mid-send
    for _ in range(100):
        if call.done():
            break
        await asyncio.sleep(0.02)
    assert call.done() and call.cancelled()
    assert stats.as_json() == {"open": 0, "completed": 0, "cancelled": 1, "failed": 0}
    await channel.close()
