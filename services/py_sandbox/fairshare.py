"""Fair share of the run slots: caps per session (and per user, once callers send one) on runs running
and runs waiting, so 40 long runs from one caller cannot hold every slot and fill the queue.

A caller over its cap is refused at once with RESOURCE_EXHAUSTED and a retry hint (when its own earliest
run will have ended), while every other caller keeps its share of the pool.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from common.errors import ResourceExhausted

Key = tuple[str, str]  # ("session", id) or ("user", id)


@dataclass(frozen=True)
class Caps:
    """How many runs one caller of a kind may have running and waiting."""

    running: int
    queued: int


@dataclass
class _Usage:
    running: int = 0
    queued: int = 0
    ends: list[float] = field(default_factory=list)  # monotonic deadlines of the running runs


class FairShare:
    """Counts runs per caller and admits a run only while every one of its callers is under its caps."""

    def __init__(self, caps: dict[str, Caps]) -> None:
        self.caps = caps
        self.usage: dict[Key, _Usage] = {}
        self._changed = asyncio.Condition()

    def _of(self, key: Key) -> _Usage:
        return self.usage.setdefault(key, _Usage())

    def _has_room(self, keys: list[Key]) -> bool:
        return all(self._of(k).running < self.caps[k[0]].running for k in keys)

    def _busy(self, keys: list[Key], waiting: bool) -> ResourceExhausted:
        full = next(
            (
                k
                for k in keys
                if self._of(k).running >= self.caps[k[0]].running
                and (waiting or self._of(k).queued >= self.caps[k[0]].queued)
            ),
            keys[0],
        )
        usage, caps = self._of(full), self.caps[full[0]]
        soonest = min(usage.ends, default=time.monotonic() + 1.0)
        retry = max(1, math.ceil(soonest - time.monotonic()))
        return ResourceExhausted(
            f"SANDBOX_{full[0].upper()}_BUSY",
            f"This {full[0]} already has {usage.running} run(s) running and {usage.queued} waiting "
            f"(its share is {caps.running} running and {caps.queued} waiting); retry in about {retry} s, "
            "when one of them has ended.",
            {"retry_after_s": str(retry)},
        )

    def _drop(self, keys: list[Key]) -> None:
        for key in keys:
            usage = self.usage.get(key)
            if usage is not None and usage.running == 0 and usage.queued == 0:
                del self.usage[key]

    @asynccontextmanager
    async def admit(self, keys: list[Key], run_s: float, wait_s: float) -> AsyncIterator[None]:
        """Holds a share of every key for one run of at most `run_s` seconds, waiting up to `wait_s`."""
        if not self._has_room(keys):
            if any(self._of(k).queued >= self.caps[k[0]].queued for k in keys):
                error = self._busy(keys, waiting=False)
                self._drop(keys)  # a refused caller leaves no empty entry behind
                raise error
            for key in keys:
                self._of(key).queued += 1
            try:
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self._has_room(keys)), wait_s)
            except TimeoutError:
                error = self._busy(keys, waiting=True)
                for key in keys:
                    self._of(key).queued -= 1
                self._drop(keys)
                raise error from None
            except BaseException:
                for key in keys:
                    self._of(key).queued -= 1
                self._drop(keys)
                raise
            for key in keys:
                self._of(key).queued -= 1
        end = time.monotonic() + run_s
        for key in keys:
            usage = self._of(key)
            usage.running += 1
            usage.ends.append(end)
        try:
            yield
        finally:
            for key in keys:
                usage = self._of(key)
                usage.running -= 1
                usage.ends.remove(end)
            self._drop(keys)
            async with self._changed:
                self._changed.notify_all()
