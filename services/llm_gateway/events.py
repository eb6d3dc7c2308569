"""Key events (failed, rotated, recovered, all exhausted) fanned out to watchers, with a short history.

A slow watcher never blocks the gateway: its queue is bounded and drops its oldest event when full.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

log = logging.getLogger(__name__)

HISTORY_SIZE = 256
WATCHER_QUEUE_SIZE = 1024


class KeyEventType(Enum):
    KEY_FAILED = "key_failed"
    KEY_ROTATED = "key_rotated"
    KEY_RECOVERED = "key_recovered"
    ALL_KEYS_EXHAUSTED = "all_keys_exhausted"


@dataclass(frozen=True)
class KeyEvent:
    """One event; fingerprints only, never keys."""

    type: KeyEventType
    provider: str
    fingerprint: str = ""
    next_fingerprint: str = ""
    reason: str = ""
    time: datetime | None = None  # stamped (UTC) when published
    recovers_at: datetime | None = None


class EventBus:
    """Publishes key events to every current watcher and keeps the last few for late ones."""

    def __init__(self, history_size: int = HISTORY_SIZE) -> None:
        self._history: deque[KeyEvent] = deque(maxlen=history_size)
        self._watchers: set[asyncio.Queue[KeyEvent]] = set()

    def publish(self, event: KeyEvent) -> KeyEvent:
        """Records `event` (stamped now, UTC, if it has no time), hands it to every watcher, returns it."""
        if event.time is None:
            event = dataclasses.replace(event, time=datetime.now(UTC))
        self._history.append(event)
        log.info(
            "key event",
            extra={
                "event": event.type.value,
                "provider": event.provider,
                "fingerprint": event.fingerprint,
                "next_fingerprint": event.next_fingerprint,
                "reason": event.reason,
                "recovers_at": event.recovers_at.isoformat() if event.recovers_at else None,
            },
        )
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        return event

    def recent(self) -> list[KeyEvent]:
        return list(self._history)

    async def watch(self, replay_recent: bool = False) -> AsyncGenerator[KeyEvent, None]:
        """Yields events as they happen (after the recent ones, if asked) until the consumer stops."""
        queue: asyncio.Queue[KeyEvent] = asyncio.Queue(maxsize=WATCHER_QUEUE_SIZE)
        backlog = self.recent() if replay_recent else []
        self._watchers.add(queue)
        try:
            for event in backlog:
                yield event
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
