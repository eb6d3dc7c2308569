"""A provider's key pool: per-key state and counters, round-robin leasing under a per-key in-flight cap.

States: HEALTHY → COOLING (429: until Retry-After, else exponential backoff with jitter) → HEALTHY again;
HEALTHY → DISABLED (401/403: never used again). All mutation happens on the event loop without awaiting in
between, so the pool is safe under asyncio concurrency; callers waiting for a free slot are served first
come, first served.

When no key is usable, `acquire` fails at once with ALL_KEYS_EXHAUSTED saying when the earliest key recovers:
a caller is told quickly instead of hanging.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from services.llm_gateway.events import EventBus, KeyEvent, KeyEventType

log = logging.getLogger(__name__)

ANONYMOUS_FINGERPRINT = "no-key"


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key: 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyState(Enum):
    HEALTHY = "healthy"
    COOLING = "cooling"
    DISABLED = "disabled"


@dataclass(eq=False)
class ApiKey:
    """One key and what happened to it. `secret` is excluded from repr so it never reaches a log."""

    secret: str = field(repr=False)
    fingerprint: str
    state: KeyState = KeyState.HEALTHY
    reason: str = ""
    cooling_until: float | None = None  # monotonic
    cooling_until_utc: datetime | None = None
    consecutive_rate_limits: int = 0
    generation: int = 0  # bumped on every state change, so stale failures do not count twice
    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for a slot; keeps its place in line across wake-ups."""

    future: asyncio.Future[None]


@dataclass(eq=False)
class Lease:
    """The right to send one request with `key`; give it back with `KeyPool.release`."""

    key: ApiKey
    generation: int
    released: bool = False


class KeyPool:
    """The keys of one provider."""

    def __init__(
        self,
        provider: str,
        keys: Iterable[str],
        events: EventBus,
        *,
        max_in_flight: int = 1,
        cooldown_base_s: float = 1.0,
        cooldown_cap_s: float = 300.0,
        slot_wait_s: float = 60.0,
        anonymous: bool = False,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.keys = [ApiKey(secret=k, fingerprint=fingerprint(k)) for k in keys]
        if anonymous and not self.keys:
            # An OpenAI-compatible server that needs no key (Ollama, llama.cpp): one slot without a header.
            self.keys = [ApiKey(secret="", fingerprint=ANONYMOUS_FINGERPRINT)]
        self.events = events
        self.max_in_flight = max_in_flight
        self.cooldown_base_s = cooldown_base_s
        self.cooldown_cap_s = cooldown_cap_s
        self.slot_wait_s = slot_wait_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._next = 0
        self._exhausted = False
        self._waiters: deque[_Waiter] = deque()
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def configured(self) -> bool:
        return bool(self.keys)

    def redact(self, text: str) -> str:
        """`text` with every key of the pool replaced by its fingerprint (for upstream error bodies)."""
        for key in self.keys:
            if key.secret and key.secret in text:
                text = text.replace(key.secret, f"<key {key.fingerprint}>")
        return text

    # -- state ---------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Moves cooling keys whose time has come back to HEALTHY (and says so)."""
        now = self._clock()
        recovered = False
        for key in self.keys:
            if key.state is KeyState.COOLING and key.cooling_until is not None and key.cooling_until <= now:
                key.state, key.reason = KeyState.HEALTHY, ""
                key.cooling_until = key.cooling_until_utc = None
                key.generation += 1
                recovered = True
                self._publish(KeyEvent(KeyEventType.KEY_RECOVERED, self.provider, key.fingerprint))
        if recovered:
            self._exhausted = False
            self._notify()

    def usable(self) -> list[ApiKey]:
        self.refresh()
        return [k for k in self.keys if k.state is KeyState.HEALTHY]

    def earliest_recovery(self) -> tuple[float, datetime] | None:
        """(monotonic, UTC) of the earliest cooling key's recovery, or None when none will recover."""
        cooling = [k for k in self.keys if k.state is KeyState.COOLING and k.cooling_until is not None]
        if not cooling:
            return None
        first = min(cooling, key=lambda k: k.cooling_until or 0.0)
        assert first.cooling_until is not None and first.cooling_until_utc is not None
        return first.cooling_until, first.cooling_until_utc

    # -- leasing -------------------------------------------------------------------------------------------

    async def acquire(self, avoid: set[str] | None = None, deadline: float | None = None) -> Lease:
        """Leases the next healthy key (round-robin) with a free slot, preferring keys not in `avoid`.

        Waits for a slot while every healthy key is busy (bounded by `deadline` and the slot wait); fails
        at once when no key is healthy.
        """
        if not self.keys:
            raise FailedPrecondition(
                "LLM_NOT_CONFIGURED",
                f"No {self.provider} API key is configured.",
                {"provider": self.provider},
            )
        give_up = self._clock() + self.slot_wait_s
        if deadline is not None:
            give_up = min(give_up, deadline)
        waiter: _Waiter | None = None
        try:
            while True:
                usable = self.usable()
                if not usable:
                    raise self.exhausted_error()
                # First come, first served: a caller only takes a slot when nobody waits ahead of it.
                my_turn = not self._waiters if waiter is None else self._waiters[0] is waiter
                preferred = [k for k in usable if k.fingerprint not in (avoid or ())] or usable
                key = self._pick(preferred) if my_turn else None
                if key is not None:
                    key.in_flight += 1
                    key.requests += 1
                    return Lease(key=key, generation=key.generation)
                remaining = give_up - self._clock()
                if remaining <= 0:
                    raise self._busy_error(deadline is not None and give_up >= deadline)
                if waiter is None:
                    waiter = _Waiter(asyncio.get_running_loop().create_future())
                    self._waiters.append(waiter)
                elif waiter.future.done():
                    waiter.future = asyncio.get_running_loop().create_future()
                await asyncio.wait([waiter.future], timeout=remaining)
        finally:
            if waiter is not None:
                self._waiters.remove(waiter)
                self._wake_first()  # the next in line may take a slot this one left (or never took)

    def _busy_error(self, deadline_reached: bool) -> DeadlineExceeded | Unavailable:
        if deadline_reached:
            return DeadlineExceeded(
                "DEADLINE_EXCEEDED", f"Every {self.provider} key stayed busy until the deadline."
            )
        return Unavailable(
            "KEYS_BUSY",
            f"Every {self.provider} key stayed busy for {self.slot_wait_s:.0f} s; try again shortly.",
            {"provider": self.provider},
        )

    def _pick(self, candidates: list[ApiKey]) -> ApiKey | None:
        order = self.keys[self._next :] + self.keys[: self._next]
        for key in order:
            if key in candidates and (self.max_in_flight <= 0 or key.in_flight < self.max_in_flight):
                self._next = (self.keys.index(key) + 1) % len(self.keys)
                return key
        return None

    def release(self, lease: Lease) -> None:
        """Returns the lease's slot (idempotent) to the first caller waiting for one."""
        if not lease.released:
            lease.released = True
            lease.key.in_flight -= 1
            self._wake_first()

    def _wake_first(self) -> None:
        if self._waiters and not self._waiters[0].future.done():
            self._waiters[0].future.set_result(None)

    def _notify(self) -> None:
        """A key changed state: every waiter looks again (to fail fast when none is left)."""
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)

    # -- outcomes ------------------------------------------------------------------------------------------

    def succeeded(self, lease: Lease, prompt_tokens: int, completion_tokens: int) -> None:
        key = lease.key
        key.prompt_tokens += prompt_tokens
        key.completion_tokens += completion_tokens
        if key.state is KeyState.HEALTHY:
            key.consecutive_rate_limits = 0

    def failed(self, lease: Lease) -> None:
        """Counts a failure that says nothing about the key's health (5xx, timeout, connection)."""
        lease.key.failures += 1

    def disable(self, lease: Lease, reason: str) -> list[KeyEvent]:
        """The provider rejected the key (401/403): never use it again. Returns the events published."""
        key = lease.key
        key.failures += 1
        if key.state is KeyState.DISABLED:
            return []
        key.state, key.reason = KeyState.DISABLED, reason
        key.cooling_until = key.cooling_until_utc = None
        key.generation += 1
        published = [
            self._publish(KeyEvent(KeyEventType.KEY_FAILED, self.provider, key.fingerprint, reason=reason))
        ]
        published += self._check_exhausted()
        self._notify()
        return published

    def cool_down(self, lease: Lease, reason: str, retry_after_s: float | None) -> list[KeyEvent]:
        """The key is rate-limited: rest it for `retry_after_s`, else for a growing, jittered backoff."""
        key = lease.key
        key.failures += 1
        if key.state is not KeyState.HEALTHY or key.generation != lease.generation:
            return []  # another request already reported this episode
        key.consecutive_rate_limits += 1
        if retry_after_s is None:
            step = self.cooldown_base_s * 2 ** (key.consecutive_rate_limits - 1)
            retry_after_s = min(self.cooldown_cap_s, step * self._rng.uniform(1.0, 1.5))
        retry_after_s = max(0.0, min(retry_after_s, self.cooldown_cap_s))
        key.state, key.reason = KeyState.COOLING, reason
        key.cooling_until = self._clock() + retry_after_s
        key.cooling_until_utc = datetime.now(UTC) + timedelta(seconds=retry_after_s)
        key.generation += 1
        published = [
            self._publish(
                KeyEvent(
                    KeyEventType.KEY_FAILED,
                    self.provider,
                    key.fingerprint,
                    reason=reason,
                    recovers_at=key.cooling_until_utc,
                )
            )
        ]
        self._schedule_refresh(retry_after_s)
        published += self._check_exhausted()
        self._notify()
        return published

    def rotated(self, previous: ApiKey, lease: Lease, reason: str) -> KeyEvent:
        """Reports that a request moved from `previous` to the leased key."""
        return self._publish(
            KeyEvent(
                KeyEventType.KEY_ROTATED,
                self.provider,
                previous.fingerprint,
                next_fingerprint=lease.key.fingerprint,
                reason=reason,
            )
        )

    def _publish(self, event: KeyEvent) -> KeyEvent:
        return self.events.publish(event)

    def _schedule_refresh(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        # A hair late so that the clock has surely passed cooling_until when the timer fires.
        self._timers.append(loop.call_later(delay_s + 0.001, self.refresh))

    def _check_exhausted(self) -> list[KeyEvent]:
        if self._exhausted or any(k.state is KeyState.HEALTHY for k in self.keys):
            return []
        self._exhausted = True
        recovery = self.earliest_recovery()
        return [
            self._publish(
                KeyEvent(
                    KeyEventType.ALL_KEYS_EXHAUSTED,
                    self.provider,
                    reason=self._exhausted_reason(),
                    recovers_at=recovery[1] if recovery else None,
                )
            )
        ]

    def _exhausted_reason(self) -> str:
        disabled = sum(k.state is KeyState.DISABLED for k in self.keys)
        cooling = sum(k.state is KeyState.COOLING for k in self.keys)
        return f"{cooling} cooling, {disabled} disabled"

    def exhausted_error(self) -> Unavailable:
        """The error a caller gets when no key is usable: when the earliest key recovers, if one will."""
        recovery = self.earliest_recovery()
        count = len(self.keys)
        metadata = {"provider": self.provider, "keys": str(count), "state": self._exhausted_reason()}
        if recovery is None:
            message = (
                f"All {count} {self.provider} keys were rejected by the provider (401/403) and none will "
                "recover: configure a valid key."
            )
        else:
            wait_s = max(0.0, recovery[0] - self._clock())
            at = recovery[1].isoformat(timespec="milliseconds").replace("+00:00", "Z")
            metadata["recovers_at"] = at
            metadata["retry_after_s"] = f"{wait_s:.3f}"
            message = (
                f"All {count} {self.provider} keys are rate-limited or disabled; the earliest recovers at "
                f"{at} (in {wait_s:.1f} s)."
            )
        return Unavailable("ALL_KEYS_EXHAUSTED", message, metadata)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
