"""Crash-only recovery: an engine that runs out of address space exits for a clean restart, not limp on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common.channels import open_channel
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from tests.services.sql_engine.conftest import start_engine_process
from tools.stack import CONFIG_PREFIXES, ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOMBS = [
    "SELECT string_agg(repeat('x', 100000), '') FROM range(100000)",
    "SELECT list(range) FROM range(300000000)",
]


async def _upload() -> AsyncIterator[pb.ImportDatasetRequest]:
    yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="a.csv"))
    yield pb.ImportDatasetRequest(chunk=b"a,b\n1,2\n3,4\n")


def _idle_address_space(tmp_path: Path) -> int:
    """Bytes of address space an engine maps once it is SERVING and idle (threads, DuckDB, Python)."""
    idle = start_engine_process(tmp_path / "idle", INSIGHTX_SQL_ADDRESS_SPACE_BYTES="0")
    try:
        status = Path(f"/proc/{idle.process.pid}/status").read_text()
    finally:
        idle.stop()
    (kilobytes,) = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmPeak:")]
    return kilobytes * 1024


async def test_an_engine_out_of_address_space_exits_for_a_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}
    # Enough to start and serve, too little for the bombs or for the threads of later calls. Measured, not
    # fixed: what an idle engine maps depends on the machine (cores, libraries) and on this version.
    limit = _idle_address_space(tmp_path) + (64 << 20)
    env.update(
        INSIGHTX_SQL_ENGINE_ADDR=f"127.0.0.1:{port}",
        INSIGHTX_DATA_DIR=str(tmp_path),
        INSIGHTX_SQL_ADDRESS_SPACE_BYTES=str(limit),
        INSIGHTX_INTERNAL_GATEWAY_TOKEN=os.environ["INSIGHTX_INTERNAL_TOKEN"],
    )
    log = tmp_path / "engine.log"
    sink = log.open("w")
    engine = subprocess.Popen([sys.executable, "-m", "services.sql_engine"], cwd=ROOT, env=env, stderr=sink)
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            await channel.channel_ready()
            session = (await stub.ImportDataset(_upload(), timeout=60)).session_id
            deadline = time.monotonic() + 90
            while engine.poll() is None and time.monotonic() < deadline:
                for sql in BOMBS:
                    try:
                        await stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=sql), timeout=60)
                    except grpc.aio.AioRpcError as exc:
                        # A bomb is refused with a reason, or the engine is already leaving.
                        assert exc.code() in (
                            grpc.StatusCode.INVALID_ARGUMENT,
                            grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.UNKNOWN,
                        ), exc.details()
                try:
                    await stub.ImportDataset(_upload(), timeout=60)
                except grpc.aio.AioRpcError:
                    time.sleep(0.5)
        assert engine.wait(30) == 70
        assert "resource exhaustion; exiting for a clean restart" in log.read_text()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        sink.close()
