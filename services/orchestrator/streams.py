"""The events of recent answers, kept in memory so that a dropped stream can resume from `Last-Event-ID`.

Each answer runs as a task that publishes into its `AnswerStream`; callers follow the stream from a seq.
A follower's stream ends with the answer's terminal event (`common.chat_events.TERMINAL`: final_response
or error). When the last follower goes away before that, the task is cancelled at once (and with it every
downstream call); a later resume of that answer finds it interrupted and answers again.

The buffer is per process, bounded in answers (`resume_max_chats`), events per answer and age
(`resume_retention_s`). With several orchestrator replicas, resume needs sticky routing by chat_id (or a
shared event store behind this interface); otherwise a resumed stream on another replica answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from common.chat_events import is_terminal
from insightx.v1 import orchestrator_pb2 as pb


class AnswerStream:
    """The events of one answer, as they are published, and the task producing them."""

    def __init__(self, chat_id: str, message: str, max_events: int) -> None:
        self.chat_id = chat_id
        self.session_id = ""
        self.message = message
        self.max_events = max_events
        self.events: list[pb.ChatEvent] = []
        self.done = False
        self.followers = 0
        self.task: asyncio.Task[None] | None = None
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self._changed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def complete(self) -> bool:
        """True when the answer ended with final_response or error (not interrupted)."""
        return bool(self.events) and is_terminal(self.events[-1].WhichOneof("payload"))

    def publish(self, event: pb.ChatEvent) -> None:
        """Appends an event and wakes the followers (the oldest non-terminal events go past the cap)."""
        self.events.append(event)
        if len(self.events) > self.max_events:
            del self.events[1 : len(self.events) - self.max_events + 1]
        self._wake()

    def finish(self) -> None:
        self.done = True
        self.finished_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after_seq: int) -> AsyncIterator[pb.ChatEvent]:
        """Events with seq > `after_seq`, live until the answer is done; cancels it if left by everyone."""
        self.followers += 1
        sent = after_seq
        try:
            while True:
                fresh = [e for e in self.events if e.seq > sent]
                for event in fresh:
                    sent = event.seq
                    yield event
                    if is_terminal(event.WhichOneof("payload")):
                        return  # the answer is given; what the task still does (recording) is not waited for
                if self.done and not [e for e in self.events if e.seq > sent]:
                    return
                if not fresh:
                    await self._changed.wait()
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done and not self.complete and self.task is not None:
                self.task.cancel()


class AnswerStreams:
    """Recent answers by chat_id (the newest answer of each chat), bounded in count and age."""

    def __init__(self, retention_s: float, max_chats: int, max_events: int) -> None:
        self.retention_s = retention_s
        self.max_chats = max(1, max_chats)
        self.max_events = max(8, max_events)
        self._streams: OrderedDict[str, AnswerStream] = OrderedDict()

    def _expire(self) -> None:
        now = time.monotonic()
        for chat_id, stream in list(self._streams.items()):
            if stream.done and stream.finished_at is not None and now - stream.finished_at > self.retention_s:
                del self._streams[chat_id]
        while len(self._streams) > self.max_chats:
            self._streams.popitem(last=False)

    def get(self, chat_id: str) -> AnswerStream | None:
        """The chat's latest answer if still retained."""
        self._expire()
        return self._streams.get(chat_id)

    def start(
        self,
        chat_id: str,
        message: str,
        produce: Callable[[Callable[[pb.ChatEvent], None]], Coroutine[Any, Any, None]],
    ) -> AnswerStream:
        """Runs `produce(publish)` as the chat's new answer and returns its stream."""
        stream = AnswerStream(chat_id, message, self.max_events)

        async def run() -> None:
            try:
                await produce(stream.publish)
            finally:
                stream.finish()

        stream.task = asyncio.get_running_loop().create_task(run(), name=f"answer:{chat_id}")
        self._streams[chat_id] = stream
        self._streams.move_to_end(chat_id)
        self._expire()
        return stream

    async def close(self) -> None:
        """Cancels every answer still running (server shutdown)."""
        tasks = [s.task for s in self._streams.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
