"""The fair share without a server: caps per key on running and waiting runs, the retry hint."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import ResourceExhausted
from services.py_sandbox.fairshare import Caps, FairShare


def share() -> FairShare:
    return FairShare({"session": Caps(running=2, queued=1), "user": Caps(running=3, queued=0)})


async def hold(
    fair: FairShare, keys: list[tuple[str, str]], release: asyncio.Event, run_s: float = 5.0
) -> None:
    async with fair.admit(keys, run_s, wait_s=5.0):
        await release.wait()


async def test_a_session_over_its_share_is_refused_while_another_session_is_admitted() -> None:
    fair, release = share(), asyncio.Event()
    holders = [asyncio.create_task(hold(fair, [("session", "a")], release)) for _ in range(3)]
    await asyncio.sleep(0.01)  # two running, one waiting
    with pytest.raises(ResourceExhausted) as caught:
        async with fair.admit([("session", "a")], 5.0, wait_s=5.0):
            pass
    assert caught.value.reason == "SANDBOX_SESSION_BUSY"
    assert 4 <= int(caught.value.metadata["retry_after_s"]) <= 5  # when its first run will have ended
    async with fair.admit([("session", "b")], 5.0, wait_s=0.1):
        pass
    release.set()
    await asyncio.gather(*holders)
    assert fair.usage == {}  # nothing left behind


async def test_a_waiting_run_starts_when_a_run_of_its_session_ends() -> None:
    fair, first, second = share(), asyncio.Event(), asyncio.Event()
    running = [asyncio.create_task(hold(fair, [("session", "a")], first)) for _ in range(2)]
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(hold(fair, [("session", "a")], second))
    await asyncio.sleep(0.01)
    assert fair.usage[("session", "a")].queued == 1
    first.set()
    await asyncio.gather(*running)
    await asyncio.sleep(0.01)
    assert fair.usage[("session", "a")].running == 1 and fair.usage[("session", "a")].queued == 0
    second.set()
    await waiting


async def test_a_user_cap_holds_across_sessions_and_times_out_waiting() -> None:
    fair, release = share(), asyncio.Event()
    holders = [
        asyncio.create_task(hold(fair, [("session", f"s{i}"), ("user", "alice")], release)) for i in range(3)
    ]
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted) as caught:
        async with fair.admit([("session", "s9"), ("user", "alice")], 5.0, wait_s=0.05):
            pass
    assert caught.value.reason == "SANDBOX_USER_BUSY"
    release.set()
    await asyncio.gather(*holders)
    assert fair.usage == {}
