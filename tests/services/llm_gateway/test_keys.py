"""The key pool on its own, with a hand-driven clock: leasing, states, backoff, exhaustion, concurrency."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from services.llm_gateway.events import EventBus, KeyEventType
from services.llm_gateway.keys import KeyPool, KeyState, fingerprint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(keys: list[str], clock: Clock | None = None, **kwargs: object) -> KeyPool:
    return KeyPool(
        "bytez",
        keys,
        EventBus(),
        clock=clock or Clock(),
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )


def test_fingerprint_is_short_stable_and_not_the_key() -> None:
    key = "sk-very-secret-key-0123456789"
    assert fingerprint(key) == fingerprint(key) and len(fingerprint(key)) == 8
    assert fingerprint(key) not in key and fingerprint(key) != fingerprint(key + "x")
    keys = pool([key])
    assert key not in repr(keys.keys[0]) and key not in repr(keys.keys)


async def test_healthy_keys_share_the_load_round_robin() -> None:
    keys = pool(["a", "b", "c"], max_in_flight=0)
    order = []
    for _ in range(6):
        lease = await keys.acquire()
        order.append(lease.key.secret)
        keys.release(lease)
    assert order == ["a", "b", "c", "a", "b", "c"]


async def test_avoid_prefers_another_key_but_falls_back_to_the_only_one() -> None:
    keys = pool(["a", "b"], max_in_flight=0)
    first = await keys.acquire()
    second = await keys.acquire(avoid={first.key.fingerprint})
    assert second.key is not first.key
    alone = pool(["a"], max_in_flight=0)
    lease = await alone.acquire()
    assert (await alone.acquire(avoid={lease.key.fingerprint})).key is lease.key


async def test_in_flight_cap_makes_callers_wait_for_a_slot() -> None:
    keys = pool(["a"], max_in_flight=1)
    held = await keys.acquire()
    waiter = asyncio.create_task(keys.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done(), "the only slot is taken"
    keys.release(held)
    lease = await asyncio.wait_for(waiter, 1)
    assert lease.key.in_flight == 1 and lease.key.requests == 2


async def test_many_concurrent_leases_never_exceed_the_cap() -> None:
    keys = pool(["a", "b", "c"], max_in_flight=2)
    peak = {k.fingerprint: 0 for k in keys.keys}

    async def one() -> None:
        lease = await keys.acquire()
        peak[lease.key.fingerprint] = max(peak[lease.key.fingerprint], lease.key.in_flight)
        await asyncio.sleep(0.001)
        keys.release(lease)

    await asyncio.gather(*(one() for _ in range(300)))
    assert max(peak.values()) == 2
    assert all(k.in_flight == 0 for k in keys.keys) and sum(k.requests for k in keys.keys) == 300


async def test_cooling_key_recovers_after_retry_after_and_not_before() -> None:
    clock = Clock()
    keys = pool(["a", "b"], clock, max_in_flight=0)
    lease = await keys.acquire()
    keys.cool_down(lease, "http 429", 2.0)
    keys.release(lease)
    clock.now += 1.999
    assert {(await keys.acquire()).key.secret for _ in range(4)} == {"b"}
    clock.now += 0.002
    assert {(await keys.acquire()).key.secret for _ in range(4)} == {"a", "b"}
    kinds = [e.type for e in keys.events.recent()]
    assert kinds == [KeyEventType.KEY_FAILED, KeyEventType.KEY_RECOVERED]


async def test_recovery_is_announced_by_timer_without_any_request() -> None:
    keys = KeyPool("bytez", ["a"], EventBus())
    lease = await keys.acquire()
    keys.cool_down(lease, "http 429", 0.05)
    keys.release(lease)
    await asyncio.sleep(0.15)
    assert keys.keys[0].state is KeyState.HEALTHY
    assert [e.type for e in keys.events.recent()][-1] is KeyEventType.KEY_RECOVERED
    keys.close()


async def test_429_without_retry_after_backs_off_exponentially_with_jitter_capped() -> None:
    clock = Clock()
    keys = pool(["a"], clock, max_in_flight=0, cooldown_base_s=1.0, cooldown_cap_s=5.0)
    waits = []
    for _ in range(5):
        lease = await keys.acquire()
        keys.cool_down(lease, "http 429", None)
        keys.release(lease)
        cooling_until = keys.keys[0].cooling_until
        assert cooling_until is not None
        waits.append(cooling_until - clock.now)
        clock.now = cooling_until + 0.001
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 3.0 and 4.0 <= waits[2] <= 5.0
    assert waits[3] == waits[4] == 5.0, "capped"
    assert len({round(w, 6) for w in waits[:3]}) == 3
    lease = await keys.acquire()
    keys.succeeded(lease, 1, 1)
    assert keys.keys[0].consecutive_rate_limits == 0, "a success resets the backoff"


async def test_concurrent_429s_on_one_key_count_once() -> None:
    keys = pool(["a", "b"], max_in_flight=0)
    first, second = await keys.acquire(), await keys.acquire(avoid={fingerprint("b")})
    assert first.key is second.key
    keys.cool_down(first, "http 429", 3.0)
    keys.cool_down(second, "http 429", 3.0)
    failed = [e for e in keys.events.recent() if e.type is KeyEventType.KEY_FAILED]
    assert len(failed) == 1 and first.key.consecutive_rate_limits == 1 and first.key.failures == 2


async def test_all_out_fails_at_once_with_the_earliest_recovery() -> None:
    clock = Clock()
    keys = pool(["a", "b", "c"], clock, max_in_flight=0)
    for retry_after in (30.0, 12.0):
        lease = await keys.acquire()
        keys.cool_down(lease, "http 429", retry_after)
    keys.disable(await keys.acquire(), "http 401")
    with pytest.raises(Unavailable) as caught:
        await keys.acquire()
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "ALL_KEYS_EXHAUSTED"
    assert error.metadata["retry_after_s"] == "12.000" and error.metadata["recovers_at"] in error.message
    exhausted = [e for e in keys.events.recent() if e.type is KeyEventType.ALL_KEYS_EXHAUSTED]
    assert len(exhausted) == 1 and exhausted[0].recovers_at == keys.keys[1].cooling_until_utc


async def test_disabled_keys_never_come_back() -> None:
    clock = Clock()
    keys = pool(["a", "b"], clock, max_in_flight=0)
    keys.disable(await keys.acquire(), "http 403")
    clock.now += 10_000
    assert {(await keys.acquire()).key.secret for _ in range(5)} == {"b"}
    keys.disable(await keys.acquire(), "http 401")
    with pytest.raises(Unavailable, match="none will recover"):
        await keys.acquire()


async def test_waiters_fail_fast_when_the_last_key_goes_out() -> None:
    keys = pool(["a"], max_in_flight=1)
    held = await keys.acquire()
    waiter = asyncio.create_task(keys.acquire())
    await asyncio.sleep(0.02)
    keys.cool_down(held, "http 429", 60.0)
    keys.release(held)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiter, 1)


async def test_no_keys_is_not_configured() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await pool([]).acquire()
    assert caught.value.reason == "LLM_NOT_CONFIGURED"


def test_redact_replaces_keys_with_fingerprints() -> None:
    keys = pool(["sk-abc-123456"])
    assert keys.redact("denied for sk-abc-123456!") == f"denied for <key {fingerprint('sk-abc-123456')}>!"


async def test_busy_keys_end_the_wait_at_the_slot_bound_or_the_deadline() -> None:
    keys = KeyPool("bytez", ["a"], EventBus(), max_in_flight=1, slot_wait_s=0.1)
    await keys.acquire()
    with pytest.raises(Unavailable) as busy:
        await keys.acquire()
    assert busy.value.reason == "KEYS_BUSY"
    with pytest.raises(DeadlineExceeded):
        await keys.acquire(deadline=asyncio.get_running_loop().time() + 0.05)


async def test_callers_waiting_for_a_slot_are_served_in_arrival_order() -> None:
    keys = pool(["a"], max_in_flight=1)
    held = await keys.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        lease = await keys.acquire()
        order.append(name)
        await asyncio.sleep(0.005)
        keys.release(lease)

    waiting = [asyncio.create_task(take(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0.01)
    keys.release(held)
    late = asyncio.create_task(take("late"))  # arrives while "first" is being woken: it must not jump in
    await asyncio.wait_for(asyncio.gather(*waiting, late), 2)
    assert order == ["first", "second", "third", "late"]
    assert not keys._waiters and keys.keys[0].in_flight == 0


async def test_a_waiter_that_gives_up_hands_its_turn_on() -> None:
    keys = pool(["a"], max_in_flight=1)
    held = await keys.acquire()
    impatient = asyncio.create_task(keys.acquire())
    patient = asyncio.create_task(keys.acquire())
    await asyncio.sleep(0.01)
    impatient.cancel()
    await asyncio.sleep(0)
    keys.release(held)
    lease = await asyncio.wait_for(patient, 1)
    assert lease.key.in_flight == 1 and impatient.cancelled()
