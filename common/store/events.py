"""Where each answer's events are kept as they come, so a stream resumes by seq on any orchestrator replica.

An *answer* is one run of the pipeline for one question of a chat (`answer_id`, the newest per `chat_id`).
Its events are opaque bytes (serialized `ChatEvent`s) numbered by `seq`, appended in order by the one
replica that owns the answer. Ownership is a lease: the owner renews it while it works (each append and a
heartbeat do); when the owner dies the lease runs out and exactly one other replica may take the answer
over (`take_over`), continuing the numbering after the last stored seq. An append by a replica that is no
longer the owner stores nothing and answers False, so two producers never interleave their events.

    store.begin(chat, session, message, owner, lease_s)  → AnswerRecord (the chat's newest answer)
    store.append(answer_id, owner, [(seq, bytes), ...], lease_s) → False once the answer is not ours
    store.follow(answer_id, after_seq, poll_s)            → the events after a seq, live, until finished
                                                            or orphaned (lease run out, unfinished)
    store.finish(answer_id, owner, complete)               → followers end; kept for `retention_s`

`MemoryEventStore` (here) is the embedded default of one process, what `make run` uses with nothing
configured; `events_postgres.PostgresEventStore` is shared by every replica (`INSIGHTX_DATABASE_URL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

StoredEvent = tuple[int, bytes]
"""(seq, the serialized event)."""


@dataclass(frozen=True)
class AnswerRecord:
    """One answer as the store knows it now."""

    answer_id: str
    chat_id: str
    session_id: str
    message: str
    owner: str
    last_seq: int  # the highest stored seq (the first seq minus one while none is stored)
    finished: bool = False  # the owner is done (complete or not); no event follows
    complete: bool = False  # finished with a terminal event (final_response or error)
    stop_requested: bool = False  # an explicit stop asked for it; its owner cancels it
    lease_expired: bool = False  # unfinished and its owner has not renewed in time: it may be taken over

    @property
    def orphaned(self) -> bool:
        return not self.finished and self.lease_expired


class EventStore(Protocol):
    """The contract both backends keep (tests/common/store/test_events_contract.py)."""

    async def begin(
        self, chat_id: str, session_id: str, message: str, owner: str, lease_s: float, first_seq: int = 0
    ) -> AnswerRecord:
        """A new answer owned by `owner`, now the chat's newest; its events start after `first_seq`."""
        ...

    async def latest(self, chat_id: str) -> AnswerRecord | None:
        """The chat's newest answer still kept."""
        ...

    async def get(self, answer_id: str) -> AnswerRecord | None: ...

    async def append(self, answer_id: str, owner: str, events: Sequence[StoredEvent], lease_s: float) -> bool:
        """Stores the events (and renews the lease) if `owner` still owns the unfinished answer."""
        ...

    async def read_after(self, answer_id: str, after_seq: int) -> list[StoredEvent]:
        """The stored events with a seq greater than `after_seq`, in order."""
        ...

    async def renew(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        """The heartbeat: extends the lease; None when the answer is no longer `owner`'s (or finished)."""
        ...

    async def take_over(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        """Makes `owner` the owner of an orphaned answer; None unless this call won it."""
        ...

    async def release(self, answer_id: str, owner: str) -> None:
        """Lets the lease run out now (a replica stopping), so another replica takes over at once."""
        ...

    async def finish(self, answer_id: str, owner: str, complete: bool) -> None:
        """Marks the answer done; `complete` when its last event is terminal."""
        ...

    async def request_stop(self, chat_id: str, session_id: str) -> AnswerRecord | None:
        """Asks the chat's newest unfinished answer (of that session) to stop; None when none runs."""
        ...

    def follow(self, answer_id: str, after_seq: int, poll_s: float) -> AsyncIterator[StoredEvent]:
        """The events after `after_seq`, then each new one as it is stored, until the answer is finished
        or orphaned (the caller reads `get()` to know which)."""
        ...

    async def close(self) -> None: ...


def new_answer_id() -> str:
    return uuid.uuid4().hex


class Wakers:
    """Wakes the followers of an answer in this process when its events are stored (by this process, or,
    for PostgreSQL, by any: its NOTIFY), so a follower polls only as a fallback."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def arm(self, answer_id: str) -> asyncio.Event:
        """What the next `wake(answer_id)` sets: armed before reading, so no wake between is missed."""
        return self._events.setdefault(answer_id, asyncio.Event())

    def wake(self, answer_id: str) -> None:
        event = self._events.pop(answer_id, None)
        if event is not None:
            event.set()

    def forget(self, answer_id: str) -> None:
        """The answer ended: nothing waits for it any more (wakes whoever still does)."""
        self.wake(answer_id)

    @staticmethod
    async def wait(armed: asyncio.Event, timeout_s: float) -> None:
        """Until `armed` is set or `timeout_s` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(armed.wait(), timeout_s)


async def follow_store(
    store: EventStore, wakers: Wakers, answer_id: str, after_seq: int, poll_s: float
) -> AsyncIterator[StoredEvent]:
    """`EventStore.follow` on `read_after` and `get`: both backends share it."""
    sent = after_seq
    while True:
        armed = wakers.arm(answer_id)
        fresh = await store.read_after(answer_id, sent)
        for seq, blob in fresh:
            sent = seq
            yield seq, blob
        if fresh:
            continue
        record = await store.get(answer_id)
        if record is None or record.finished or record.lease_expired:
            wakers.forget(answer_id)
            for seq, blob in await store.read_after(answer_id, sent):  # stored before it ended
                sent = seq
                yield seq, blob
            return
        await wakers.wait(armed, poll_s)


@dataclass
class _Answer:
    record: AnswerRecord
    lease_until: float
    events: list[StoredEvent] = field(default_factory=list)
    finished_at: float | None = None


class MemoryEventStore:
    """The embedded store: this process's recent answers, bounded in answers, events and age.

    Finished answers are dropped after `retention_s`, and the oldest finished ones past `max_answers`; an
    answer keeps its first event and its newest `max_events`.
    """

    def __init__(self, retention_s: float = 300.0, max_answers: int = 500, max_events: int = 1000) -> None:
        self.retention_s = retention_s
        self.max_answers = max(1, max_answers)
        self.max_events = max(8, max_events)
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._latest: dict[str, str] = {}
        self._wakers = Wakers()

    def _expire(self) -> None:
        now = time.monotonic()
        finished = [(k, a) for k, a in self._answers.items() if a.finished_at is not None]
        excess = len(self._answers) - self.max_answers
        for answer_id, answer in finished:
            assert answer.finished_at is not None
            if excess > 0 or now - answer.finished_at > self.retention_s:
                self._drop(answer_id)
                excess -= 1

    def _drop(self, answer_id: str) -> None:
        answer = self._answers.pop(answer_id)
        if self._latest.get(answer.record.chat_id) == answer_id:
            del self._latest[answer.record.chat_id]

    def _view(self, answer: _Answer) -> AnswerRecord:
        expired = not answer.record.finished and time.monotonic() >= answer.lease_until
        return replace(answer.record, lease_expired=expired)

    def _owned(self, answer_id: str, owner: str) -> _Answer | None:
        answer = self._answers.get(answer_id)
        if answer is None or answer.record.owner != owner or answer.record.finished:
            return None
        return answer

    async def begin(
        self, chat_id: str, session_id: str, message: str, owner: str, lease_s: float, first_seq: int = 0
    ) -> AnswerRecord:
        self._expire()
        record = AnswerRecord(new_answer_id(), chat_id, session_id, message, owner, first_seq)
        self._answers[record.answer_id] = _Answer(record, time.monotonic() + lease_s)
        self._latest[chat_id] = record.answer_id
        return record

    async def latest(self, chat_id: str) -> AnswerRecord | None:
        self._expire()
        answer_id = self._latest.get(chat_id)
        return self._view(self._answers[answer_id]) if answer_id is not None else None

    async def get(self, answer_id: str) -> AnswerRecord | None:
        answer = self._answers.get(answer_id)
        return self._view(answer) if answer is not None else None

    async def append(self, answer_id: str, owner: str, events: Sequence[StoredEvent], lease_s: float) -> bool:
        answer = self._owned(answer_id, owner)
        if answer is None:
            return False
        for seq, blob in events:
            if seq <= answer.record.last_seq:
                raise ValueError(f"seq {seq} of answer {answer_id} is not after {answer.record.last_seq}")
            answer.events.append((seq, blob))
            answer.record = replace(answer.record, last_seq=seq)
        if len(answer.events) > self.max_events:
            del answer.events[1 : len(answer.events) - self.max_events + 1]
        answer.lease_until = time.monotonic() + lease_s
        self._wakers.wake(answer_id)
        return True

    async def read_after(self, answer_id: str, after_seq: int) -> list[StoredEvent]:
        answer = self._answers.get(answer_id)
        return [e for e in answer.events if e[0] > after_seq] if answer is not None else []

    async def renew(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        answer = self._owned(answer_id, owner)
        if answer is None:
            return None
        answer.lease_until = time.monotonic() + lease_s
        return self._view(answer)

    async def take_over(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        answer = self._answers.get(answer_id)
        if answer is None or not self._view(answer).orphaned:
            return None
        answer.record = replace(answer.record, owner=owner)
        answer.lease_until = time.monotonic() + lease_s
        return self._view(answer)

    async def release(self, answer_id: str, owner: str) -> None:
        answer = self._owned(answer_id, owner)
        if answer is not None:
            answer.lease_until = 0.0
            self._wakers.wake(answer_id)

    async def finish(self, answer_id: str, owner: str, complete: bool) -> None:
        answer = self._owned(answer_id, owner)
        if answer is None:
            return
        answer.record = replace(answer.record, finished=True, complete=complete)
        answer.finished_at = time.monotonic()
        self._wakers.wake(answer_id)

    async def request_stop(self, chat_id: str, session_id: str) -> AnswerRecord | None:
        answer_id = self._latest.get(chat_id)
        answer = self._answers.get(answer_id) if answer_id is not None else None
        if answer is None or answer.record.finished or answer.record.session_id != session_id:
            return None
        answer.record = replace(answer.record, stop_requested=True)
        return self._view(answer)

    def follow(self, answer_id: str, after_seq: int, poll_s: float) -> AsyncIterator[StoredEvent]:
        return follow_store(self, self._wakers, answer_id, after_seq, poll_s)

    async def close(self) -> None:
        self._answers.clear()
        self._latest.clear()
