"""Answer streams over the event store: followers resume by seq; an answer outlives its followers; an
explicit stop cancels it (ending in an `error` CANCELLED); a dead producer's answer is taken over and
answered again with seq going on, each seq stored once; a live producer elsewhere is followed, not
duplicated. Each "replica" is its own `AnswerStreams` on one store (the in-memory backend here: the
PostgreSQL path is tests/common/store/test_events_contract.py and tests/e2e/test_replica_failover.py)."""

from __future__ import annotations

import asyncio

from common.chat_events import is_terminal
from common.store.events import MemoryEventStore
from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.events import EventBuilder
from services.orchestrator.streams import STOPPED_CODE, AnswerStreams, Produce, Publish

LEASE = 0.3


def replica(store: MemoryEventStore, name: str = "r1") -> AnswerStreams:
    return AnswerStreams(store, name, lease_s=LEASE, poll_s=0.02)


async def read(streams: AnswerStreams, after: int, produce: Produce, chat: str = "c1") -> list[pb.ChatEvent]:
    return [e async for e in streams.answer(chat, "s1", "q", after, produce)]


def three_events(calls: list[int]) -> Produce:
    async def produce(start_seq: int, resumed: bool, publish: Publish) -> None:
        calls.append(start_seq)
        events = EventBuilder("c1", start_seq, sink=publish)
        if resumed:
            events.status("again", "resume")
        events.status("one", "load")
        events.status("two", "sql")
        events.final_response("done", 1, "number", None, [], "", 1.0)

    return produce


async def test_resume_replays_events_after_the_seq() -> None:
    streams, calls = replica(MemoryEventStore()), list[int]()
    produce = three_events(calls)
    assert [e.seq for e in await read(streams, 0, produce)] == [1, 2, 3]
    assert [e.seq for e in await read(streams, 1, produce)] == [2, 3]
    assert await read(streams, 3, produce) == []  # past the end: nothing (the gateway answers 204)
    assert calls == [0]  # replayed, never answered again


async def test_leaving_does_not_cancel_the_answer() -> None:
    streams = replica(MemoryEventStore())
    release = asyncio.Event()

    async def produce(start_seq: int, resumed: bool, publish: Publish) -> None:
        events = EventBuilder("c1", start_seq, sink=publish)
        events.status("working", "sql")
        await release.wait()
        events.final_response("done", 1, "number", None, [], "", 1.0)

    stream = streams.answer("c1", "s1", "q", 0, produce)
    first = await anext(stream)
    await stream.aclose()  # the client leaves
    assert first.seq == 1 and streams.producing == 1
    release.set()
    rest = await asyncio.wait_for(read(streams, 1, produce), 2)
    assert [e.WhichOneof("payload") for e in rest] == ["final_response"]
    assert streams.producing == 0


async def test_an_explicit_stop_cancels_it_with_a_cancelled_error() -> None:
    streams = replica(MemoryEventStore())
    cancelled = asyncio.Event()

    async def produce(start_seq: int, resumed: bool, publish: Publish) -> None:
        EventBuilder("c1", start_seq, sink=publish).status("working", "sql")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    reader = asyncio.create_task(read(streams, 0, produce))
    await asyncio.sleep(0.05)
    assert not await streams.stop("c1", "another-session")
    assert await streams.stop("c1", "s1")
    await asyncio.wait_for(cancelled.wait(), 1)
    events = await asyncio.wait_for(reader, 2)
    assert [e.seq for e in events] == [1, 2]
    assert events[-1].error.code == STOPPED_CODE
    assert not await streams.stop("c1", "s1")  # nothing runs any more


async def test_a_stop_asked_of_another_replica_reaches_the_owner() -> None:
    store = MemoryEventStore()
    owner, other = replica(store, "owner"), replica(store, "other")

    async def produce(start_seq: int, resumed: bool, publish: Publish) -> None:
        EventBuilder("c1", start_seq, sink=publish).status("working", "sql")
        await asyncio.sleep(30)

    reader = asyncio.create_task(read(owner, 0, produce))
    await asyncio.sleep(0.05)
    other._producing.clear()
    assert await other.stop("c1", "s1")
    events = await asyncio.wait_for(reader, LEASE * 3)  # the owner hears it on its heartbeat
    assert events[-1].error.code == STOPPED_CODE


async def test_a_dead_producer_is_taken_over_with_seq_going_on() -> None:
    store = MemoryEventStore()
    dead, alive = replica(store, "dead"), replica(store, "alive")
    release = asyncio.Event()

    async def hangs(start_seq: int, resumed: bool, publish: Publish) -> None:
        events = EventBuilder("c1", start_seq, sink=publish)
        events.status("one", "load")
        events.status("two", "sql")
        await release.wait()

    stream = dead.answer("c1", "s1", "q", 0, hangs)
    seen = [await anext(stream), await anext(stream)]
    await stream.aclose()
    for production in list(dead._producing.values()):
        production.heartbeat.cancel()
        production.writer.cancel()
        production.task.cancel()
    calls: list[int] = []
    rest = await asyncio.wait_for(read(alive, 1, three_events(calls)), LEASE * 10)
    assert calls == [2]  # answered again after the last stored seq
    assert [e.seq for e in rest] == [2, 3, 4, 5, 6]  # 2 stored by the dead one, then the new answer
    assert rest[1].status.stage == "resume" and is_terminal(rest[-1].WhichOneof("payload"))
    assert [e.seq for e in seen] == [1, 2]


async def test_a_live_producer_elsewhere_is_followed_not_duplicated() -> None:
    store = MemoryEventStore()
    owner, other = replica(store, "owner"), replica(store, "other")
    release = asyncio.Event()
    calls: list[int] = []

    async def slow(start_seq: int, resumed: bool, publish: Publish) -> None:
        calls.append(start_seq)
        events = EventBuilder("c1", start_seq, sink=publish)
        events.status("one", "load")
        await release.wait()
        events.final_response("done", 1, "number", None, [], "", 1.0)

    first = asyncio.create_task(read(owner, 0, slow))
    await asyncio.sleep(LEASE * 3)  # several leases long: the heartbeat keeps it
    follower = asyncio.create_task(read(other, 1, slow))
    await asyncio.sleep(LEASE)
    release.set()
    assert [e.seq for e in await asyncio.wait_for(follower, 2)] == [2]
    assert [e.seq for e in await first] == [1, 2]
    assert calls == [0]


async def test_an_answer_not_kept_is_answered_again_from_the_seq() -> None:
    streams, calls = replica(MemoryEventStore()), list[int]()
    events = await read(streams, 7, three_events(calls), chat="never-seen")
    assert [e.seq for e in events] == [8, 9, 10, 11] and events[0].status.stage == "resume"


async def test_closing_releases_the_lease_for_another_replica() -> None:
    store = MemoryEventStore()
    stopping, other = replica(store, "stopping"), replica(store, "other")

    async def hangs(start_seq: int, resumed: bool, publish: Publish) -> None:
        EventBuilder("c1", start_seq, sink=publish).status("one", "load")
        await asyncio.sleep(30)

    stream = stopping.answer("c1", "s1", "q", 0, hangs)
    await anext(stream)
    await stream.aclose()
    await stopping.close()
    record = await store.latest("c1")
    assert record is not None and record.orphaned  # at once, not after the lease
    calls: list[int] = []
    rest = await asyncio.wait_for(read(other, 1, three_events(calls)), 1)
    assert calls == [1] and rest[-1].WhichOneof("payload") == "final_response"
