"""Answers that outlive their connection: each answer's events go to an event store as they come, and
every stream of it, first or resumed, on this replica or another, is read from that store.

- **An answer runs to its end** (its deadline bounds it) whether or not anyone follows it: a client that
  leaves only stops its own stream. Only an explicit stop (`StopAnswer`, `POST /api/chat/stop`) cancels
  it; the stopped answer ends with an `error` event, code `CANCELLED`.
- **Stored before seen.** The producing task publishes into a queue; a writer appends the events in order
  (`common.store.events.EventStore.append`), and followers read only what is stored. So whatever a client
  has seen survives the replica that produced it.
- **Resume anywhere.** `Last-Event-ID` looks the chat's newest answer up in the store: the events after
  that seq are replayed, then followed live until the terminal event (`common.chat_events.TERMINAL`).
- **Leases.** The producing replica owns the answer under a lease it renews with each append and a
  heartbeat (every `lease_s / 3`). A follower that sees the lease run out on an unfinished answer (its
  producer died) tries to take it over; exactly one replica wins (the store decides), answers again and
  numbers on after the last stored seq, the first new event a `status` with stage `resume`. A live producer
  elsewhere is followed, never duplicated; a replica stopping gracefully releases its leases at once.
- **Stops travel through the store** too: the stop marks the answer, and its owner's heartbeat (or this
  replica at once, when it owns it) cancels the task and every downstream call with it.

With nothing configured the store is `MemoryEventStore` (this process's recent answers, bounded by
`resume_retention_s`, `resume_max_chats`, `resume_max_events`); with `INSIGHTX_DATABASE_URL` it is
PostgreSQL, shared by every replica (`common/store/events_postgres.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from common.chat_events import is_terminal
from common.store.events import AnswerRecord, EventStore
from insightx.v1 import orchestrator_pb2 as pb

log = logging.getLogger(__name__)

Publish = Callable[[pb.ChatEvent], None]
Produce = Callable[[int, bool, Publish], Coroutine[Any, Any, None]]
"""`produce(start_seq, resumed, publish)`: publishes one answer's events, numbered after `start_seq`."""

STOPPED_MESSAGE = "The answer was stopped."
STOPPED_CODE = "CANCELLED"

_STOP, _SHUTDOWN, _LOST = "stop", "shutdown", "lost"


class Production:
    """One answer this replica produces: its task, the writer that stores its events in order, and the
    heartbeat that keeps its lease (and hears a stop asked on another replica)."""

    def __init__(self, streams: AnswerStreams, record: AnswerRecord, produce: Produce, resumed: bool) -> None:
        self.streams = streams
        self.record = record
        self.last_seq = record.last_seq
        self.last_kind: str | None = None
        self.reason: str | None = None
        self._queue: asyncio.Queue[pb.ChatEvent | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        name = f"answer:{record.chat_id}"
        self.task = loop.create_task(produce(record.last_seq, resumed, self.publish), name=name)
        self.task.add_done_callback(self._produced)
        self.writer = loop.create_task(self._write(), name=f"{name}:writer")
        self.heartbeat = loop.create_task(self._beat(), name=f"{name}:heartbeat")

    @property
    def answer_id(self) -> str:
        return self.record.answer_id

    def _produced(self, task: asyncio.Task[None]) -> None:
        """The producer is done: the writer stores what is queued, then ends the answer."""
        if not task.cancelled() and (failure := task.exception()) is not None:
            log.error("an answer's producer failed", exc_info=failure, extra={"chat_id": self.record.chat_id})
        self._queue.put_nowait(None)

    def publish(self, event: pb.ChatEvent) -> None:
        self.last_seq = event.seq
        self.last_kind = event.WhichOneof("payload")
        self._queue.put_nowait(event)

    def cancel(self, reason: str) -> None:
        """Cancels the task (once); `reason` says what the writer does after it: stop, shutdown, lost."""
        if not self.task.done() and self.reason is None:
            self.reason = reason
            self.task.cancel()

    async def _write(self) -> None:
        store, owner = self.streams.store, self.streams.owner
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                events = [e for e in batch if e is not None]
                if events and not await self._append(events):
                    log.info("answer taken over elsewhere", extra={"chat_id": self.record.chat_id})
                    self.cancel(_LOST)
                    return
                if None in batch:
                    break
            if self.reason == _LOST:
                return
            if self.reason == _SHUTDOWN:
                await store.release(self.answer_id, owner)
                return
            if self.reason == _STOP and not is_terminal(self.last_kind):
                stopped = pb.ChatEvent(
                    seq=self.last_seq + 1,
                    chat_id=self.record.chat_id,
                    error=pb.ErrorEvent(message=STOPPED_MESSAGE, code=STOPPED_CODE),
                )
                self.publish(stopped)
                if not await self._append([stopped]):
                    return
            await store.finish(self.answer_id, owner, complete=is_terminal(self.last_kind))
        except Exception:
            log.exception("storing an answer's events failed", extra={"chat_id": self.record.chat_id})
            self.cancel(_LOST)
        finally:
            self.heartbeat.cancel()
            self.streams._done(self)

    async def _append(self, events: list[pb.ChatEvent]) -> bool:
        """Stores the events; retried while the lease lasts (a database that blinks loses nothing)."""
        streams = self.streams
        payload = [(e.seq, e.SerializeToString()) for e in events]
        give_up = time.monotonic() + streams.lease_s
        while True:
            try:
                return await streams.store.append(self.answer_id, streams.owner, payload, streams.lease_s)
            except Exception:
                if time.monotonic() > give_up:
                    raise
                log.warning("the event store refused an append; retrying", exc_info=True)
                await asyncio.sleep(0.2)

    async def _beat(self) -> None:
        streams = self.streams
        while True:
            await asyncio.sleep(streams.lease_s / 3)
            try:
                record = await streams.store.renew(self.answer_id, streams.owner, streams.lease_s)
            except Exception:
                log.warning("the answer's lease could not be renewed", exc_info=True)
                continue
            if record is None:
                self.cancel(_LOST)
                return
            if record.stop_requested:
                self.cancel(_STOP)


class AnswerStreams:
    """This replica's answers in production, and every stream read from the event store."""

    def __init__(self, store: EventStore, owner: str, lease_s: float = 3.0, poll_s: float = 0.5) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._producing: dict[str, Production] = {}

    @property
    def producing(self) -> int:
        """Answers this replica is producing now."""
        return len(self._producing)

    def _start(self, record: AnswerRecord, produce: Produce, resumed: bool) -> Production:
        production = Production(self, record, produce, resumed)
        self._producing[record.answer_id] = production
        return production

    def _done(self, production: Production) -> None:
        self._producing.pop(production.answer_id, None)

    async def answer(
        self, chat_id: str, session_id: str, message: str, after_seq: int, produce: Produce
    ) -> AsyncGenerator[pb.ChatEvent, None]:
        """The events of the chat's answer after `after_seq`: a new answer (after_seq 0), or the rest of
        the chat's newest one (the same session and question), or, when that one is gone or ended without
        a terminal event, the question answered again with seq going on from `after_seq`."""
        resumed, first_seq = False, 0
        if after_seq > 0 and chat_id:
            resumed, first_seq = True, after_seq
            earlier = await self.store.latest(chat_id)
            same = (
                earlier is not None
                and earlier.session_id == session_id
                and (not message or earlier.message == message)
            )
            if earlier is not None and same:
                if earlier.complete or not earlier.finished:
                    async for event in self._follow(earlier, after_seq, produce):
                        yield event
                    return
                first_seq = max(after_seq, earlier.last_seq)
        record = await self.store.begin(chat_id, session_id, message, self.owner, self.lease_s, first_seq)
        self._start(record, produce, resumed)
        async for event in self._follow(record, after_seq, produce):
            yield event

    async def _follow(
        self, record: AnswerRecord, after_seq: int, produce: Produce
    ) -> AsyncGenerator[pb.ChatEvent, None]:
        """Stored events after `after_seq` until the terminal one; takes the answer over if orphaned."""
        sent = after_seq
        while True:
            async for seq, blob in self.store.follow(record.answer_id, sent, self.poll_s):
                event = pb.ChatEvent.FromString(blob)
                sent = seq
                yield event
                if is_terminal(event.WhichOneof("payload")):
                    return
            now = await self.store.get(record.answer_id)
            if now is None or now.finished:
                return
            if now.orphaned:
                await self._take_over(now, produce)

    async def _take_over(self, record: AnswerRecord, produce: Produce) -> None:
        """Answers again an answer whose producer died, if this replica wins it (else follows the winner)."""
        taken = await self.store.take_over(record.answer_id, self.owner, self.lease_s)
        if taken is None:
            await asyncio.sleep(self.poll_s)
            return
        log.info("answer taken over", extra={"chat_id": taken.chat_id, "after_seq": taken.last_seq})
        production = self._start(taken, produce, resumed=True)
        if taken.stop_requested:
            production.cancel(_STOP)

    async def stop(self, chat_id: str, session_id: str) -> bool:
        """Stops the chat's running answer, wherever it runs; False when none runs."""
        record = await self.store.request_stop(chat_id, session_id)
        if record is None:
            return False
        local = self._producing.get(record.answer_id)
        if local is not None:
            local.cancel(_STOP)
        elif record.orphaned:
            taken = await self.store.take_over(record.answer_id, self.owner, self.lease_s)
            if taken is not None:
                self._start(taken, _nothing, resumed=True).cancel(_STOP)
        return True  # an owner elsewhere cancels it on its next heartbeat

    async def close(self) -> None:
        """Stops producing (server shutdown): every answer's lease is released for another replica."""
        productions = list(self._producing.values())
        for production in productions:
            production.cancel(_SHUTDOWN)
        for production in productions:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(production.writer), 5.0)


async def _nothing(start_seq: int, resumed: bool, publish: Publish) -> None:
    """The producer of an answer stopped before it could run again."""
