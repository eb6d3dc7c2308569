"""Liveness in common.server: health follows the service's own check, and exhaustion reaches the exit hook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

import common.server as server_module
from common.channels import check_health, open_channel
from common.server import LivenessPolicy, RunningServer, create_server, watch_liveness
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["SqlEngineService"].full_name


class _Exhausted(sql_engine_pb2_grpc.SqlEngineServiceServicer):
    async def GetEngineStatus(self, request, context):  # type: ignore[no-untyped-def]
        raise MemoryError("no more memory")

    async def ValidateSql(self, request, context):  # type: ignore[no-untyped-def]
        raise ValueError("an ordinary bug")


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    served = await create_server(
        "127.0.0.1:0",
        [SERVICE],
        lambda s: sql_engine_pb2_grpc.add_SqlEngineServiceServicer_to_server(_Exhausted(), s),
    )
    await served.set_serving()
    yield served
    await served.stop(0)


async def test_health_follows_the_liveness_check(running: RunningServer) -> None:
    alive = {"now": True}

    async def check() -> bool:
        return alive["now"]

    running.liveness = check
    policy = LivenessPolicy(interval_s=0.1, timeout_s=0.5, fail_after_s=3600, stall_after_s=3600)
    watcher = asyncio.ensure_future(watch_liveness(running, policy))
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        alive["now"] = False
        await asyncio.sleep(0.5)
        assert await check_health(channel, SERVICE) == "NOT_SERVING"
        assert await check_health(channel, "") == "NOT_SERVING"
        alive["now"] = True
        await asyncio.sleep(0.5)
        assert await check_health(channel, SERVICE) == "SERVING"
    finally:
        watcher.cancel()
        await channel.close()


async def test_a_check_that_hangs_counts_as_failing(running: RunningServer) -> None:
    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    running.liveness = hangs
    policy = LivenessPolicy(interval_s=0.1, timeout_s=0.2, fail_after_s=3600, stall_after_s=3600)
    watcher = asyncio.ensure_future(watch_liveness(running, policy))
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        await asyncio.sleep(0.6)
        assert await check_health(channel, SERVICE) == "NOT_SERVING"
    finally:
        watcher.cancel()
        await channel.close()


async def test_memory_errors_in_any_handler_reach_the_exit_hook(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(server_module, "_on_exhaustion", seen.append)
    channel = open_channel(f"127.0.0.1:{running.port}")
    stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ValidateSql(pb.ValidateSqlRequest(sql="SELECT 1"))
        assert seen == []  # an ordinary failure is only a failed call
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetEngineStatus(pb.GetEngineStatusRequest())
        assert len(seen) == 1 and isinstance(seen[0], MemoryError)
    finally:
        await channel.close()


def test_only_memory_and_thread_failures_count_as_exhaustion() -> None:
    assert server_module.is_resource_exhaustion(MemoryError())
    assert server_module.is_resource_exhaustion(RuntimeError("can't start new thread"))
    assert not server_module.is_resource_exhaustion(RuntimeError("something else"))


_CHILD = """
import asyncio, sys, threading, time
from common.server import LivenessPolicy, create_server, serve_forever

async def main(mode: str) -> None:
    running = await create_server("127.0.0.1:0", [], lambda server: None)
    await running.set_serving()
    loop = asyncio.get_running_loop()
    if mode == "stall":
        loop.call_later(0.5, time.sleep, 60)  # a handler that blocks the event loop
    elif mode == "thread":
        loop.call_later(0.5, lambda: threading.Thread(target=lambda: bytearray(1 << 62)).start())
    elif mode == "loop":
        async def fails() -> None:
            raise MemoryError("no memory in a task")
        loop.call_later(0.5, lambda: loop.create_task(fails()))
    elif mode == "check":
        async def dead() -> bool:
            return False
        running.liveness = dead
    policy = LivenessPolicy(interval_s=0.2, timeout_s=0.5, fail_after_s=1.5, stall_after_s=1.5)
    await serve_forever(running, liveness=policy)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("mode", ["stall", "thread", "loop", "check"])
def test_a_process_that_cannot_serve_exits_for_its_supervisor(mode: str) -> None:
    """A stalled event loop, a MemoryError in a thread or a task, a failing check: the process exits 70."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 70, done.stderr[-2000:]
    assert time.monotonic() - started < 15
    assert "exiting for a clean restart" in done.stderr or "event loop stalled" in done.stderr
