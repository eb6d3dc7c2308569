"""A real PySandboxService on loopback over a real session dataset, shared by a test module.

The servers are started in-process with `start(settings, "127.0.0.1:0")`; their zygotes and children are
real processes with the real isolation. A canary secret sits in the server's environment and in files the
children must never see.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio

from common.channels import open_channel
from common.server import RunningServer
from common.store import DatasetRecord, LocalDatasetStore
from insightx.v1 import py_sandbox_pb2 as pb
from insightx.v1 import py_sandbox_pb2_grpc
from services.py_sandbox.server import start
from services.py_sandbox.settings import PySandboxSettings

SESSION = "sales"
ENV_CANARY = "canary-env-7d1c9e4b"
FILE_CANARY = "canary-file-51ab77f0"
ROWS = 2_000


def sample_frame(rows: int = ROWS) -> pd.DataFrame:
    """Sales with a region, a channel, a numeric amount with a few outliers, and a daily date."""
    rng = np.random.default_rng(42)
    amount = rng.normal(100.0, 15.0, rows)
    amount[:5] = [400.0, 420.0, -150.0, 380.0, 500.0]
    region = rng.choice(["north", "south", "east", "west"], rows)
    return pd.DataFrame(
        {
            "region": region,
            "channel": rng.choice(["web", "store"], rows),
            "amount": amount,
            "units": rng.integers(1, 10, rows),
            "day": pd.date_range("2024-01-01", periods=rows, freq="D").date,
            "price": amount / 3.0 + rng.normal(0, 1, rows),
        }
    )


def write_session(store: LocalDatasetStore, session_id: str, frame: pd.DataFrame, scratch: Path) -> Path:
    """Puts a dataset in the store exactly as the SQL engine leaves it (read-only Parquet)."""
    source = scratch / f"{session_id}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
    store.put(DatasetRecord(session_id, "data", source.name, session_id, len(frame)), source, b"")
    return store.parquet_path(session_id)


def zygote_pids() -> set[int]:
    """Zygotes started by this test process (children whose command line names the zygote module)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"services.py_sandbox.zygote" in cmdline:
            pids.add(int(entry))
    return pids


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Sandbox:
    """A running service and what the tests need to check it."""

    running: RunningServer
    stub: py_sandbox_pb2_grpc.PySandboxServiceStub
    channel: grpc.aio.Channel
    settings: PySandboxSettings
    data_dir: Path
    dataset: Path
    canary_files: list[Path]
    zygote_pids: set[int]

    async def run(self, code: str, timeout_s: float = 5.0, session_id: str = SESSION) -> pb.RunCodeResponse:
        request = pb.RunCodeRequest(session_id=session_id, code=code, timeout_s=timeout_s)
        return await self.stub.RunCode(request, timeout=timeout_s + 10)

    async def status(self) -> pb.GetSandboxStatusResponse:
        return await self.stub.GetSandboxStatus(pb.GetSandboxStatusRequest(), timeout=5)


async def start_sandbox(root: Path, **overrides: Any) -> Sandbox:
    """Writes the dataset and canaries under `root`, puts a canary in the environment, starts the service."""
    data_dir = root / "data"
    store = LocalDatasetStore(data_dir)
    dataset = write_session(store, SESSION, sample_frame(), root)
    canaries = [data_dir / "secret.txt", root / "canary.txt"]
    for path in canaries:
        path.write_text(FILE_CANARY)
        os.chmod(path, 0o644)  # world-readable: only the child's private filesystem hides it
    os.environ["BYTEZ_API_KEY_1"] = ENV_CANARY
    others = zygote_pids()
    try:
        defaults: dict[str, Any] = {
            "sandbox_zygotes": 2,
            "sandbox_runs_per_zygote": 6,
            "sandbox_memory_mb": 512,
            # A uid range of this test process's own: stacks other tests run on this host keep theirs.
            "sandbox_uid": 1_900_000_000 + (os.getpid() % 40_000) * 4096,
        }
        settings = PySandboxSettings(data_dir=data_dir, **{**defaults, **overrides})
        running = await start(settings, "127.0.0.1:0")
    finally:
        del os.environ["BYTEZ_API_KEY_1"]
    channel = open_channel(f"127.0.0.1:{running.port}")
    return Sandbox(
        running=running,
        stub=py_sandbox_pb2_grpc.PySandboxServiceStub(channel),
        channel=channel,
        settings=settings,
        data_dir=data_dir,
        dataset=dataset,
        canary_files=canaries,
        zygote_pids=zygote_pids() - others,
    )


async def stop_sandbox(sandbox: Sandbox) -> None:
    await sandbox.channel.close()
    await sandbox.running.stop(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    """The policy enforced, as in production."""
    running = await start_sandbox(tmp_path_factory.mktemp("sandbox"))
    yield running
    await stop_sandbox(running)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bare_sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    """The policy switched off, so every snippet meets the operating-system boundary itself."""
    running = await start_sandbox(tmp_path_factory.mktemp("bare"), sandbox_enforce_policy=False)
    yield running
    await stop_sandbox(running)
