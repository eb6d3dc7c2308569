"""The service around the children: isolation report and floor, back-pressure, restarts, errors, health."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.errors import error_info
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox.server import SERVICE_NAME
from tests.services.py_sandbox.conftest import ENV_CANARY, Sandbox, start_sandbox, stop_sandbox, zygote_pids

pytestmark = pytest.mark.integration
in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def small(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """One zygote with one slot and no queue: the smallest pool that can be full."""
    running = await start_sandbox(
        tmp_path, sandbox_zygotes=1, sandbox_runs_per_zygote=1, sandbox_queue_size=0
    )
    yield running
    await stop_sandbox(running)


@in_module_loop
async def test_status_reports_the_isolation_in_force(sandbox: Sandbox) -> None:
    status = await sandbox.status()
    iso = status.isolation
    assert iso.level == "strong"
    assert sorted(iso.namespaces) == ["ipc", "mnt", "net", "pid", "uts"]
    assert iso.seccomp and iso.no_new_privs and iso.private_filesystem and iso.clean_environment
    assert (
        iso.uid >= 1_000_000 and iso.uid_first <= iso.uid <= iso.uid_last
    )  # a uid of its own, from the range
    assert not iso.cgroup or {"memory", "pids"} <= set(iso.cgroup_controllers)  # test_limits checks more
    assert sorted(iso.rlimits) == ["AS", "CORE", "CPU", "FSIZE", "NOFILE", "NPROC"]
    assert not [p for p in iso.problems if not p.startswith(("cgroup:", "uids:"))]
    assert (status.zygotes, status.capacity, status.minimum_level) == (2, 12, "strong")
    assert status.accepting_code and not status.weak_isolation_allowed


@in_module_loop
async def test_health_is_serving_once_ready(sandbox: Sandbox) -> None:
    health = health_pb2_grpc.HealthStub(sandbox.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@in_module_loop
async def test_the_server_environment_never_reaches_a_zygote(sandbox: Sandbox) -> None:
    assert len(sandbox.zygote_pids) == 2
    for pid in sandbox.zygote_pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert ENV_CANARY.encode() not in environ and b"BYTEZ" not in environ


@in_module_loop
async def test_an_unknown_session_is_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sandbox.run("result = 1", session_id="nobody")
    info = error_info(caught.value)
    assert (info.code, info.reason) == (grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND")


@in_module_loop
async def test_code_is_refused_below_the_isolation_floor_unless_weak_is_allowed(tmp_path: Path) -> None:
    weak = await start_sandbox(tmp_path / "weak", sandbox_zygotes=1, sandbox_skip_steps=["seccomp"])
    try:
        status = await weak.status()
        assert status.isolation.level == "partial" and not status.isolation.seccomp
        assert any("seccomp" in p for p in status.isolation.problems)
        assert not status.accepting_code
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await weak.run("result = 1")
        info = error_info(caught.value)
        assert (info.code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SANDBOX_ISOLATION_TOO_WEAK")
    finally:
        await stop_sandbox(weak)
    dev = await start_sandbox(
        tmp_path / "dev", sandbox_zygotes=1, sandbox_skip_steps=["seccomp"], sandbox_allow_weak=True
    )
    try:
        status = await dev.status()
        assert status.accepting_code and status.weak_isolation_allowed and status.isolation.level == "partial"
        reply = await dev.run("result = int(df['units'].sum())")
        assert not reply.HasField("error") and json.loads(reply.result_json) > 0
    finally:
        await stop_sandbox(dev)


@in_module_loop
async def test_a_full_pool_answers_resource_exhausted_with_a_retry_hint(small: Sandbox) -> None:
    busy = asyncio.create_task(small.run("import time\ntime.sleep(1.5)\nresult = 1", timeout_s=5))
    for _ in range(100):
        if (await small.status()).running_children == 1:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small.run("result = 2")
    info = error_info(caught.value)
    assert (info.code, info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SANDBOX_BUSY")
    assert float(info.metadata["retry_after_s"]) > 0
    assert json.loads((await busy).result_json) == 1
    assert json.loads((await small.run("result = 3")).result_json) == 3


@in_module_loop
async def test_waiting_runs_queue_until_a_slot_frees(tmp_path: Path) -> None:
    queued = await start_sandbox(tmp_path, sandbox_zygotes=1, sandbox_runs_per_zygote=1, sandbox_queue_size=4)
    try:
        replies = await asyncio.gather(*(queued.run(f"result = {i}") for i in range(4)))
        assert [json.loads(r.result_json) for r in replies] == [0, 1, 2, 3]
    finally:
        await stop_sandbox(queued)


@in_module_loop
async def test_a_dead_zygote_is_restarted_and_its_run_answered(small: Sandbox) -> None:
    (pid,) = small.zygote_pids
    running = asyncio.create_task(small.run("import time\ntime.sleep(30)", timeout_s=30))
    for _ in range(100):
        if (await small.status()).running_children == 1:
            break
        await asyncio.sleep(0.02)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # a zygote this test's server started
    reply = await running
    assert time.monotonic() - started < 5
    assert reply.error.category == pb.RUN_ERROR_CATEGORY_KILLED
    for _ in range(300):
        status = await small.status()
        if status.zygotes == 1:
            break
        await asyncio.sleep(0.05)
    assert status.zygotes == 1 and status.zygote_restarts == 1
    assert pid not in zygote_pids()
    assert json.loads((await small.run("result = 'back'")).result_json) == "back"
