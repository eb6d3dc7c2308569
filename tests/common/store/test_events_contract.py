"""The event store's contract on both backends: the embedded one (one process's memory, what `make run`
uses) and PostgreSQL (a real server; each "replica" its own pool on one database).

Appends are ordered and owner-only; a follower gets every event after its seq exactly once and live ones
as they come; a lease that runs out lets exactly one other replica take the answer over, after which the
old owner stores nothing; a stop request reaches the chat's running answer only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from common.store.events import EventStore, MemoryEventStore
from common.store.events_postgres import PostgresEventStore
from tests.common.store.conftest import Backend

LEASE = 30.0
SHORT = 0.3


async def collect(store: EventStore, answer_id: str, after: int, poll_s: float = 0.05) -> list[int]:
    return [seq async for seq, _ in store.follow(answer_id, after, poll_s)]


@pytest.fixture
async def replicas(backend: Backend) -> Callable[[], asyncio.Future[EventStore]]:
    """`await replicas()` opens one more replica's view of the test's store (memory: the same object)."""
    memory = MemoryEventStore(retention_s=60)

    async def open_one() -> EventStore:
        if backend.kind == "sqlite":
            return memory
        store = await PostgresEventStore.open(await backend.database())
        backend._closers.insert(0, store.close)  # before its database
        return store

    return open_one  # type: ignore[return-value]


async def test_events_after_a_seq_in_order(replicas: Callable[[], asyncio.Future[EventStore]]) -> None:
    store = await replicas()
    answer = await store.begin("chat-1", "s1", "how many?", "r1", LEASE)
    assert (await store.latest("chat-1")) == answer
    assert await store.append(answer.answer_id, "r1", [(1, b"one"), (2, b"two")], LEASE)
    assert await store.append(answer.answer_id, "r1", [(3, b"three")], LEASE)
    assert await store.read_after(answer.answer_id, 1) == [(2, b"two"), (3, b"three")]
    await store.finish(answer.answer_id, "r1", complete=True)
    record = await store.get(answer.answer_id)
    assert record is not None and record.finished and record.complete and record.last_seq == 3
    assert await collect(store, answer.answer_id, 0) == [1, 2, 3]
    assert await collect(store, answer.answer_id, 3) == []
    assert not await store.append(answer.answer_id, "r1", [(4, b"late")], LEASE)  # finished: nothing more


async def test_the_newest_answer_of_a_chat_is_its_latest(
    replicas: Callable[[], asyncio.Future[EventStore]],
) -> None:
    store = await replicas()
    first = await store.begin("chat-2", "s1", "one", "r1", LEASE)
    second = await store.begin("chat-2", "s1", "two", "r1", LEASE, first_seq=7)
    latest = await store.latest("chat-2")
    assert latest is not None and latest.answer_id == second.answer_id and latest.last_seq == 7
    assert first.answer_id != second.answer_id
    assert await store.latest("no-such-chat") is None


async def test_a_follower_on_another_replica_gets_live_events_once(
    replicas: Callable[[], asyncio.Future[EventStore]],
) -> None:
    producer, follower = await replicas(), await replicas()
    answer = await producer.begin("chat-3", "s1", "q", "r1", LEASE)
    await producer.append(answer.answer_id, "r1", [(1, b"a")], LEASE)
    seen = asyncio.create_task(collect(follower, answer.answer_id, 0))
    for seq in range(2, 6):
        await asyncio.sleep(0.03)
        await producer.append(answer.answer_id, "r1", [(seq, b"x")], LEASE)
    assert not seen.done()  # unfinished: the follower waits for more
    await producer.finish(answer.answer_id, "r1", complete=True)
    assert await asyncio.wait_for(seen, 5) == [1, 2, 3, 4, 5]


async def test_only_the_owner_appends(replicas: Callable[[], asyncio.Future[EventStore]]) -> None:
    store = await replicas()
    answer = await store.begin("chat-4", "s1", "q", "r1", LEASE)
    assert not await store.append(answer.answer_id, "r2", [(1, b"x")], LEASE)
    assert await store.read_after(answer.answer_id, 0) == []
    assert await store.renew(answer.answer_id, "r2", LEASE) is None
    assert await store.take_over(answer.answer_id, "r2", LEASE) is None  # its lease is alive


async def test_a_dead_owner_is_taken_over_by_exactly_one_replica(
    replicas: Callable[[], asyncio.Future[EventStore]],
) -> None:
    dead = await replicas()
    answer = await dead.begin("chat-5", "s1", "q", "dead", SHORT)
    await dead.append(answer.answer_id, "dead", [(1, b"a"), (2, b"b")], SHORT)
    follower = await replicas()
    # A follower stops following when the lease runs out, so that it may take over.
    assert await asyncio.wait_for(collect(follower, answer.answer_id, 1), 5) == [2]
    record = await follower.get(answer.answer_id)
    assert record is not None and record.orphaned and record.last_seq == 2
    contenders = [await replicas() for _ in range(4)]
    won = await asyncio.gather(
        *(store.take_over(answer.answer_id, f"r{i}", LEASE) for i, store in enumerate(contenders))
    )
    winners = [w for w in won if w is not None]
    assert len(winners) == 1 and winners[0].last_seq == 2 and not winners[0].lease_expired
    owner = winners[0].owner
    assert not await dead.append(answer.answer_id, "dead", [(3, b"late")], LEASE)  # the old owner is out
    assert await follower.append(answer.answer_id, owner, [(3, b"c")], LEASE)
    assert await follower.read_after(answer.answer_id, 0) == [(1, b"a"), (2, b"b"), (3, b"c")]


async def test_a_renewed_lease_keeps_its_owner(replicas: Callable[[], asyncio.Future[EventStore]]) -> None:
    store, other = await replicas(), await replicas()
    answer = await store.begin("chat-6", "s1", "q", "r1", SHORT)
    for _ in range(4):
        await asyncio.sleep(SHORT / 3)
        assert await store.renew(answer.answer_id, "r1", SHORT) is not None
    assert await other.take_over(answer.answer_id, "r2", LEASE) is None
    await store.release(answer.answer_id, "r1")  # a replica stopping lets it go at once
    taken = await other.take_over(answer.answer_id, "r2", LEASE)
    assert taken is not None and taken.owner == "r2"


async def test_a_stop_request_reaches_the_running_answer_of_that_session_only(
    replicas: Callable[[], asyncio.Future[EventStore]],
) -> None:
    store, other = await replicas(), await replicas()
    answer = await store.begin("chat-7", "s1", "q", "r1", LEASE)
    assert await other.request_stop("chat-7", "another-session") is None
    assert await other.request_stop("no-such-chat", "s1") is None
    stopped = await other.request_stop("chat-7", "s1")
    assert stopped is not None and stopped.answer_id == answer.answer_id
    renewed = await store.renew(answer.answer_id, "r1", LEASE)
    assert renewed is not None and renewed.stop_requested  # the owner learns it on its heartbeat
    await store.finish(answer.answer_id, "r1", complete=False)
    assert await other.request_stop("chat-7", "s1") is None  # nothing runs any more


async def test_a_follower_is_woken_by_an_append_elsewhere_not_by_its_poll(
    replicas: Callable[[], asyncio.Future[EventStore]],
) -> None:
    producer, follower = await replicas(), await replicas()
    answer = await producer.begin("chat-9", "s1", "q", "r1", LEASE)
    seen: list[float] = []

    async def follow() -> None:
        async for _ in follower.follow(answer.answer_id, 0, poll_s=30):  # PostgreSQL: its NOTIFY
            seen.append(time.monotonic())
            if len(seen) == 3:
                return

    reader = asyncio.create_task(follow())
    for seq in (1, 2, 3):
        await asyncio.sleep(0.2)
        sent = time.monotonic()
        await producer.append(answer.answer_id, "r1", [(seq, b"x")], LEASE)
        while len(seen) < seq:
            assert time.monotonic() - sent < 2, f"event {seq} not seen within 2 s"
            await asyncio.sleep(0.01)
    await asyncio.wait_for(reader, 2)


async def test_events_are_bytes_kept_exactly(replicas: Callable[[], asyncio.Future[EventStore]]) -> None:
    store = await replicas()
    answer = await store.begin("chat-8", "s1", "q", "r1", LEASE)
    blob = bytes(range(256)) * 64
    await store.append(answer.answer_id, "r1", [(1, blob), (2, b"")], LEASE)
    other = await replicas()
    assert await other.read_after(answer.answer_id, 0) == [(1, blob), (2, b"")]
