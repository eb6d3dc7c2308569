"""Answers whose client left before their end, read to it in the background so each is recorded.

An answer runs to its end in the orchestrator whether or not anyone listens, but only the gateway writes
the chat store. When a stream ends before its answer's reply is recorded (the client left, or the
orchestrator replica answering it was lost), a follower goes on reading the answer — `Chat` again with
`last_event_seq`, on any replica, bounded by the chat's deadline; cancelling nothing — and records the
reply through the same `TurnRecorder`, which stores it once per question however many recorders race (a
resume on this or another gateway). A stream left before its first event has no seq to resume from: its
call itself is handed over.

At most `limit` followers run per gateway; beyond that an answer is left to its resume (logged and
counted). Stopping the gateway cancels its followers: their answers stay resumable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.chats import TurnRecorder
from gateway.stream import sse_events

log = logging.getLogger(__name__)

OpenCall = Callable[[int, float], "grpc.aio.UnaryStreamCall[Any, Any]"]
"""`open_call(last_event_seq, timeout_s)`: the answer's `Chat` call again, resumed after a seq."""

ATTEMPTS = 6  # calls one follower makes (an orchestrator lost mid-answer is resumed on another replica)
RETRY_S = 0.5  # pause between them


@dataclass
class FollowerStats:
    """Followers of this gateway: running now, and how the finished ones ended."""

    running: int = 0
    recorded: int = 0  # the answer's reply was recorded (by the follower or a recorder before it)
    skipped: int = 0  # not started: `limit` followers were running
    gave_up: int = 0  # ended without the reply: deadline, attempts spent, nothing to resume from, shutdown

    def as_json(self) -> dict[str, int]:
        return {
            "running": self.running,
            "recorded": self.recorded,
            "skipped": self.skipped,
            "gave_up": self.gave_up,
        }


class AnswerFollowers:
    """The background followers of one gateway, keyed by chat and question (one per answer)."""

    def __init__(self, limit: int, max_rows: int) -> None:
        self.limit = limit
        self.max_rows = max_rows
        self.stats = FollowerStats()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def follow(
        self,
        key: tuple[str, str],
        recorder: TurnRecorder,
        open_call: OpenCall,
        resume_seq: int,
        deadline: float,
        call: grpc.aio.UnaryStreamCall[Any, Any] | None = None,
        first: asyncio.Future[Any] | None = None,
    ) -> bool:
        """Follows the answer of `key` (chat id, question) to its end unless its reply is recorded, one
        follows it already, or the limit is reached. `deadline` is on the loop's clock. True when the
        handed `call` was taken (else the caller cancels it)."""
        if recorder.finished or key in self._tasks:
            return False
        if len(self._tasks) >= self.limit:
            self.stats.skipped += 1
            log.warning(
                "answer left unrecorded: too many followers (it stays resumable)",
                extra={"chat_id": key[0], "followers": self.limit},
            )
            return False
        task = asyncio.get_running_loop().create_task(
            self._run(recorder, open_call, resume_seq, deadline, call, first), name=f"follow:{key[0]}"
        )
        self._tasks[key] = task
        self.stats.running += 1
        task.add_done_callback(lambda _: self._done(key))
        return call is not None

    def _done(self, key: tuple[str, str]) -> None:
        self._tasks.pop(key, None)
        self.stats.running -= 1

    async def _run(
        self,
        recorder: TurnRecorder,
        open_call: OpenCall,
        seq: int,
        deadline: float,
        call: grpc.aio.UnaryStreamCall[Any, Any] | None,
        first: asyncio.Future[Any] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        chat_id = recorder.chat_id
        try:
            for attempt in range(ATTEMPTS):
                if call is None:
                    remaining = deadline - loop.time()
                    if seq <= 0 or remaining <= 0:
                        break  # nothing to resume from, or past the chat's deadline
                    call = open_call(seq, remaining)
                seq = await self._read(recorder, call, seq, first)
                call = first = None
                if recorder.finished:
                    self.stats.recorded += 1
                    log.info("a left answer was recorded", extra={"chat_id": chat_id, "attempt": attempt})
                    return
                await asyncio.sleep(RETRY_S)
        except asyncio.CancelledError:
            self.stats.gave_up += 1
            raise
        except Exception:
            log.exception("following a left answer failed", extra={"chat_id": chat_id})
        finally:
            if call is not None:
                call.cancel()
        self.stats.gave_up += 1
        log.warning("a left answer could not be recorded", extra={"chat_id": chat_id, "seq": seq})

    async def _read(
        self,
        recorder: TurnRecorder,
        call: grpc.aio.UnaryStreamCall[Any, Any],
        seq: int,
        first: asyncio.Future[Any] | None,
    ) -> int:
        """Reads one call through the recorder; answers the seq the next call resumes after (the last
        non-terminal one: a terminal event whose reply was not recorded is read again)."""
        ended_at = [seq]

        def leave(resume_seq: int, *_: object) -> bool:
            ended_at.append(resume_seq)
            return False  # the follower's own call: cancelled by the stream, like any other

        events = sse_events(
            call,
            max_rows=self.max_rows,
            retry_ms=0,
            after_seq=seq,
            on_event=recorder,
            first=first,
            on_leave=leave,
        )
        async for _ in events:
            pass
        return max(ended_at)

    async def close(self) -> None:
        """Cancels every follower (the gateway stops); their answers stay resumable."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
