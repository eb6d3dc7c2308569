"""`python -m services.py_sandbox` as a process: env-configured, healthy once ready, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.channels import open_channel
from insightx.v1 import py_sandbox_pb2 as pb
from insightx.v1 import py_sandbox_pb2_grpc
from services.py_sandbox.server import SERVICE_NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_service_runs_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "INSIGHTX_PY_SANDBOX_ADDR": f"127.0.0.1:{port}",
        "INSIGHTX_DATA_DIR": str(tmp_path),
        "INSIGHTX_SANDBOX_ZYGOTES": "1",
        "INSIGHTX_INTERNAL_ORCHESTRATOR_TOKEN": os.environ["INSIGHTX_INTERNAL_TOKEN"],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.py_sandbox"], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            for _ in range(300):
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                    status = reply.status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = py_sandbox_pb2_grpc.PySandboxServiceStub(channel)
            sandbox = await stub.GetSandboxStatus(pb.GetSandboxStatusRequest(), timeout=5)
            assert (sandbox.zygotes, sandbox.isolation.level) == (1, "strong")
            given = pb.RunCodeRequest(code="result = 6 * 7", timeout_s=5)
            given.input_table.row_count = 0
            reply = await stub.RunCode(given, timeout=15)
            assert reply.result_json == "42"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
