"""Fixtures of the SQL engine tests: settings on tmp_path, an engine, servers in-process and as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.channels import open_channel
from common.server import RunningServer
from common.store import LocalDatasetStore
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from services.sql_engine.engine import SqlEngine
from services.sql_engine.server import start
from services.sql_engine.settings import SqlEngineSettings

ROOT = Path(__file__).resolve().parents[3]

SALES_CSV = (
    'order_id,region,"amount (INR)",order_date,select,paid\n'
    "1,North,120.5,2024-01-03,a,true\n"
    "2,South,80,2024-01-17,b,false\n"
    "3,North,200,2024-02-02,a,true\n"
    "4,East,55.25,2024-02-20,c,true\n"
    "5,South,300,2024-03-05,a,false\n"
    "6,North,42,2024-03-09,b,true\n"
)


def make_settings(tmp_path: Path, **overrides: object) -> SqlEngineSettings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "sql_query_workers": 4,
        "sql_memory_limit": "512MB",
        "sql_default_timeout_ms": 5_000,
    }
    values.update(overrides)
    return SqlEngineSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> SqlEngineSettings:
    return make_settings(tmp_path)


@pytest.fixture
def engine(settings: SqlEngineSettings) -> Iterator[SqlEngine]:
    engine = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    yield engine
    engine.close()


@pytest.fixture
def sales_file(tmp_path: Path) -> Path:
    path = tmp_path / "upload" / "Sales 2024.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SALES_CSV)
    return path


def spool_copy(engine: SqlEngine, source: Path | bytes, name: str = "upload.bin") -> Path:
    """Puts an upload where the servicer would spool it (the engine deletes nothing it did not make)."""
    spool = Path(engine.settings.data_dir) / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / name
    target.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    return target


@pytest.fixture
def sales_session(engine: SqlEngine, sales_file: Path) -> str:
    record, _ = engine.import_dataset(spool_copy(engine, sales_file), sales_file.name)
    return record.session_id


@dataclass
class Served:
    """A running engine and a stub on a channel to it."""

    running: RunningServer
    channel: grpc.aio.Channel
    stub: sql_engine_pb2_grpc.SqlEngineServiceStub

    @property
    def engine(self) -> SqlEngine:
        return self.running.engine  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
async def served(settings: SqlEngineSettings) -> AsyncIterator[Served]:
    running = await start(settings, "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        yield Served(running, channel, sql_engine_pb2_grpc.SqlEngineServiceStub(channel))
    finally:
        await channel.close()
        await running.stop(1)


async def upload(
    stub: sql_engine_pb2_grpc.SqlEngineServiceStub,
    data: bytes,
    filename: str,
    sheet: str = "",
    chunk: int = 65536,
) -> pb.ImportDatasetResponse:
    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename=filename, sheet=sheet))
        for offset in range(0, len(data), chunk):
            yield pb.ImportDatasetRequest(chunk=data[offset : offset + chunk])

    return await stub.ImportDataset(messages(), timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class EngineProcess:
    """`python -m services.sql_engine` as a child process, as it runs in production."""

    process: subprocess.Popen[bytes]
    address: str
    data_dir: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_engine_process(data_dir: Path, **env: str) -> EngineProcess:
    port = free_port()
    environment = {
        **os.environ,
        "INSIGHTX_SQL_ENGINE_ADDR": f"127.0.0.1:{port}",
        "INSIGHTX_DATA_DIR": str(data_dir),
        "INSIGHTX_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.sql_engine"], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL
    )
    engine = EngineProcess(process, f"127.0.0.1:{port}", data_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the engine exited with {process.returncode}")
        if health_status(engine.address) == health_pb2.HealthCheckResponse.SERVING:
            return engine
        time.sleep(0.1)
    engine.stop()
    raise RuntimeError("the engine did not report SERVING within 30 s")


def health_status(address: str) -> int:
    """The overall health status (-1 when the server does not answer), using the blocking API."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status)
        except grpc.RpcError:
            return -1
