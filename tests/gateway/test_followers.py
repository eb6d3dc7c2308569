"""gateway.followers against a real orchestrator and the embedded chat store: a stream left early is read
on by a follower that records its reply; the follower limit and the gateway's shutdown are kept.

The orchestrator's SQL engine address accepts connections and never answers, so an answer hangs after its
first event until `StopAnswer` ends it with an `error` CANCELLED (what a stop records).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from common.channels import open_channel
from common.store.sqlite_chats import SqliteChatRepository
from gateway.chats import TurnRecorder
from gateway.followers import AnswerFollowers
from gateway.stream import sse_events
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.server import start
from services.orchestrator.settings import OrchestratorSettings

pytestmark = pytest.mark.integration

SESSION, QUESTION = "s" * 8, "how many rows are there?"


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceStub]:
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    hole = f"127.0.0.1:{blackhole.getsockname()[1]}"
    settings = OrchestratorSettings(
        data_dir=tmp_path, sql_engine_addr=hole, llm_gateway_addr=hole, py_sandbox_addr=hole
    )
    running = await start(settings, "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    finally:
        await channel.close()
        await running.stop(0)
        blackhole.close()


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[SqliteChatRepository]:
    repository = SqliteChatRepository(tmp_path / "chats")
    yield repository
    await repository.close()


class Left:
    """One chat stream the way the gateway's route builds it, with its follower hook."""

    def __init__(
        self,
        stub: orchestrator_pb2_grpc.OrchestratorServiceStub,
        repo: SqliteChatRepository,
        followers: AnswerFollowers,
        chat_id: str,
    ) -> None:
        self.stub, self.chat_id, self.followers = stub, chat_id, followers
        self.request = orchestrator_pb2.ChatRequest(chat_id=chat_id, session_id=SESSION, message=QUESTION)
        self.record = TurnRecorder(repo, chat_id)
        self.record.start(SESSION, QUESTION)
        self.call = stub.Chat(self.request, timeout=60)
        self.reopened: list[Any] = []
        self.left: list[tuple[int, bool]] = []
        self.events = sse_events(
            self.call, max_rows=10, retry_ms=1, on_event=self.record, on_leave=self.leave
        )

    def reopen(self, seq: int, timeout_s: float) -> Any:
        request = orchestrator_pb2.ChatRequest()
        request.CopyFrom(self.request)
        request.last_event_seq = seq
        call = self.stub.Chat(request, timeout=timeout_s)
        self.reopened.append(call)
        return call

    def leave(self, resume_seq: int, call: Any, first: Any) -> bool:
        self.left.append((resume_seq, call is not None))
        deadline = asyncio.get_running_loop().time() + 60
        key = (self.chat_id, QUESTION)
        return self.followers.follow(key, self.record, self.reopen, resume_seq, deadline, call, first)

    async def stop(self) -> None:
        """Stops the answer once the orchestrator has begun it."""
        stop = orchestrator_pb2.StopAnswerRequest(chat_id=self.chat_id, session_id=SESSION)
        for _ in range(200):
            if (await self.stub.StopAnswer(stop, timeout=5)).stopped:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the answer never began")


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_a_stream_left_before_its_first_event_hands_its_call_to_a_follower(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, repo: SqliteChatRepository
) -> None:
    followers = AnswerFollowers(limit=4, max_rows=10)
    stream = Left(stub, repo, followers, "c1")
    assert (await anext(stream.events))["retry"] == 1
    await stream.events.aclose()  # the client leaves before the first event: no seq to resume from
    assert stream.left == [(0, True)] and followers.stats.running == 1
    await asyncio.sleep(0.2)
    assert not stream.call.done()  # handed over, not cancelled
    await stream.stop()
    await until(lambda: followers.stats.running == 0)
    assert stream.reopened == []  # the follower read the handed call itself
    assert stream.call.done() and not stream.call.cancelled()
    assert followers.stats.as_json() == {"running": 0, "recorded": 1, "skipped": 0, "gave_up": 0}
    assert [(m.role, m.content) for m in await repo.messages("c1")] == [
        ("user", QUESTION),
        ("assistant", "The answer was stopped."),
    ]


async def test_a_stream_left_after_an_event_is_resumed_by_seq_and_recorded_once(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, repo: SqliteChatRepository
) -> None:
    followers = AnswerFollowers(limit=4, max_rows=10)
    stream = Left(stub, repo, followers, "c2")
    await anext(stream.events)
    assert (await anext(stream.events))["id"] == "1"
    await stream.events.aclose()  # the client leaves after the first event
    assert stream.left == [(1, False)]
    await until(lambda: stream.call.done())
    assert stream.call.cancelled()  # the stream's own call ends with it
    await until(lambda: len(stream.reopened) == 1)
    # A second stream of the same answer left on this gateway (a resume) starts no second follower.
    assert not followers.follow(("c2", QUESTION), TurnRecorder(repo, "c2"), stream.reopen, 1, 1e12)
    assert followers.stats.running == 1
    await stream.stop()
    await until(lambda: followers.stats.running == 0)
    assert len(stream.reopened) == 1 and followers.stats.recorded == 1
    assert [(m.role, m.content) for m in await repo.messages("c2")][-1] == (
        "assistant",
        "The answer was stopped.",
    )


async def test_past_the_limit_an_answer_is_left_and_shutdown_cancels_followers(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, repo: SqliteChatRepository
) -> None:
    followers = AnswerFollowers(limit=1, max_rows=10)
    streams = [Left(stub, repo, followers, f"c{i}") for i in range(3, 5)]
    for stream in streams:
        await anext(stream.events)
        await anext(stream.events)
        await stream.events.aclose()
    assert followers.stats.running == 1 and followers.stats.skipped == 1
    await until(lambda: len(streams[0].reopened) == 1)
    assert streams[1].reopened == []
    await followers.close()  # the gateway stops
    assert followers.stats.as_json() == {"running": 0, "recorded": 0, "skipped": 1, "gave_up": 1}
    await until(lambda: streams[0].reopened[0].done())
    assert streams[0].reopened[0].cancelled()
    assert all(s.call.cancelled() for s in streams)
    for stream in streams:
        await stream.stop()  # the answers themselves ran on (resumable) until stopped here
    assert [m.role for m in await repo.messages("c3")] == ["user"]
