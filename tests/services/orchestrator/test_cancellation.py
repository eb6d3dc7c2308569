"""A caller that goes away mid-answer does not stop it (the answer runs on, resumable); an explicit
StopAnswer leaves no sandbox child and no running query behind, within a second, and the stream ends with
an `error` CANCELLED.

Checked through the services' own status RPCs (GetSandboxStatus.running_children, GetEngineStatus.
running_queries), with real servers; the work in flight is made slow on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from insightx.v1 import orchestrator_pb2 as opb
from insightx.v1 import py_sandbox_pb2, sql_engine_pb2
from tests.services.orchestrator.conftest import Chat, StartChat

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

SLOW_SQL = (
    'SELECT count(*) AS n FROM "upi_transactions" a, "upi_transactions" b '
    'WHERE (a."hour_of_day" * b."hour_of_day" + a."amount (INR)" * b."amount (INR)") % 7 = 3'
)
SLOW_PYTHON = "x = 0\nwhile True:\n    x += 1\nresult = x"


async def running_queries(chat: Chat) -> int:
    reply = await chat.backend.sql.GetEngineStatus(sql_engine_pb2.GetEngineStatusRequest(), timeout=5)
    return reply.running_queries


async def running_children(chat: Chat) -> int:
    reply = await chat.backend.sandbox.GetSandboxStatus(py_sandbox_pb2.GetSandboxStatusRequest(), timeout=5)
    return reply.running_children


async def wait_for(probe: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Seconds until `probe()` is true; fails after `timeout_s`."""
    started = time.monotonic()
    while not await probe():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def leave_then_stop(chat: Chat, question: str, busy: Callable[[], Awaitable[bool]]) -> float:
    """Starts a chat, waits until the downstream work runs, drops the call (the work goes on), then stops
    the answer; seconds from the stop until the work is gone."""
    request = opb.ChatRequest(chat_id="gone", session_id=chat.backend.session_id, message=question)
    call = chat.stub.Chat(request, timeout=60)
    reader = asyncio.create_task(_drain(call))
    await wait_for(busy, 20)
    assert not reader.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.sleep(0.5)
    assert await busy()  # the client left: the answer still works
    again = opb.ChatRequest()
    again.CopyFrom(request)
    again.last_event_seq = 1
    resumed = chat.stub.Chat(again, timeout=60)
    tail = asyncio.create_task(_collect(resumed))
    reply = await chat.stub.StopAnswer(
        opb.StopAnswerRequest(chat_id="gone", session_id=chat.backend.session_id), timeout=5
    )
    assert reply.stopped
    started = time.monotonic()

    async def idle() -> bool:
        return not await busy()

    await wait_for(idle, 5)
    elapsed = time.monotonic() - started
    events = await asyncio.wait_for(tail, 5)
    assert events[-1].WhichOneof("payload") == "error" and events[-1].error.code == "CANCELLED"
    assert [e.seq for e in events] == list(range(2, 2 + len(events)))
    return elapsed


async def _collect(call: grpc.aio.UnaryStreamCall) -> list[opb.ChatEvent]:  # type: ignore[type-arg]
    return [event async for event in call]


async def _drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    async for _ in call:
        pass


async def test_a_stop_during_python_leaves_no_sandbox_child(start_chat: StartChat) -> None:
    chat = await start_chat(python_timeout_s=60)
    chat.model.queue("classifier", '{"classification": "PY_ONLY", "reasoning": "statistics"}')
    chat.model.queue("python", SLOW_PYTHON)
    assert await running_children(chat) == 0

    async def busy() -> bool:
        return await running_children(chat) > 0

    assert await leave_then_stop(chat, "Fit a model to every transaction", busy) < 1.0


async def test_a_stop_during_sql_leaves_no_running_query(start_chat: StartChat) -> None:
    chat = await start_chat(sql_timeout_ms=60_000)
    chat.model.queue("sql", SLOW_SQL)
    assert await running_queries(chat) == 0

    async def busy() -> bool:
        return await running_queries(chat) > 0

    assert await leave_then_stop(chat, "Count the odd pairs of transactions", busy) < 1.0
