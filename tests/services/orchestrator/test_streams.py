"""Answer streams: followers resume by seq; when every follower leaves, the answer is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.events import EventBuilder
from services.orchestrator.streams import AnswerStreams


async def test_resume_replays_events_after_the_seq() -> None:
    streams = AnswerStreams(retention_s=60, max_chats=10, max_events=100)

    async def produce(publish: Callable[[pb.ChatEvent], None]) -> None:
        events = EventBuilder("c1", sink=publish)
        events.status("one", "load")
        events.status("two", "sql")
        events.final_response("done", 1, "number", None, [], "", 1.0)

    stream = streams.start("c1", "q", produce)
    first = [e.seq async for e in stream.follow(0)]
    assert first == [1, 2, 3]
    again = streams.get("c1")
    assert again is stream and again.complete
    assert [e.seq async for e in again.follow(1)] == [2, 3]


async def test_leaving_cancels_the_running_answer() -> None:
    streams = AnswerStreams(retention_s=60, max_chats=10, max_events=100)
    cancelled = asyncio.Event()

    async def produce(publish: Callable[[pb.ChatEvent], None]) -> None:
        EventBuilder("c1", sink=publish).status("working", "sql")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = streams.start("c1", "q", produce)

    async def consume() -> None:
        async for _ in stream.follow(0):
            pass

    reader = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    reader.cancel()
    await asyncio.wait_for(cancelled.wait(), 1.0)
    await asyncio.sleep(0)
    assert stream.done and not stream.complete


async def test_two_followers_keep_it_running_until_both_leave() -> None:
    streams = AnswerStreams(retention_s=60, max_chats=10, max_events=100)
    release = asyncio.Event()

    async def produce(publish: Callable[[pb.ChatEvent], None]) -> None:
        events = EventBuilder("c1", sink=publish)
        events.status("working", "sql")
        await release.wait()
        events.error("stop", "X")

    stream = streams.start("c1", "q", produce)
    seen: list[int] = []

    async def consume() -> None:
        async for event in stream.follow(0):
            seen.append(event.seq)

    one = asyncio.create_task(consume())
    two = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    one.cancel()
    await asyncio.sleep(0.05)
    assert not stream.done
    release.set()
    await asyncio.wait_for(two, 1.0)
    assert stream.complete and seen.count(2) == 1


async def test_bounded_in_chats_and_expired_after_retention() -> None:
    streams = AnswerStreams(retention_s=0.05, max_chats=2, max_events=100)

    async def produce(publish: Callable[[pb.ChatEvent], None]) -> None:
        EventBuilder("x", sink=publish).error("e", "E")

    for chat in ("a", "b", "c"):
        stream = streams.start(chat, "q", produce)
        assert stream.task is not None
        await stream.task
    assert streams.get("a") is None and streams.get("c") is not None
    await asyncio.sleep(0.1)
    assert streams.get("c") is None
