"""An import whose client leaves stops in the engine, instead of running on and storing a dataset nobody
will ever ask for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

from insightx.v1 import sql_engine_pb2 as pb
from tests.services.sql_engine.conftest import Served

pytestmark = pytest.mark.integration


async def test_an_import_is_stopped_when_its_client_cancels(served: Served, tmp_path: Path) -> None:
    csv = tmp_path / "large.csv"  # 2M rows: about 2 s to import
    duckdb.execute(
        "COPY (SELECT range AS id, range % 97 AS v, 'item ' || range AS label,"
        " DATE '2020-01-01' + (range % 900)::INT AS day"
        f" FROM range(2000000)) TO '{csv}' (FORMAT csv, HEADER)"
    )
    data = csv.read_bytes()
    sent = asyncio.Event()

    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="large.csv"))
        for offset in range(0, len(data), 1 << 20):
            yield pb.ImportDatasetRequest(chunk=data[offset : offset + (1 << 20)])
        sent.set()

    call = served.stub.ImportDataset(messages(), timeout=60)
    await asyncio.wait_for(sent.wait(), 30)
    await asyncio.sleep(0.3)  # the engine is converting the upload now
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The engine's import work folders go away once the import has stopped; none of it is stored.
    spool = Path(served.engine.settings.data_dir)
    deadline = time.monotonic() + 30
    while any(spool.rglob("import-*")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    sessions = spool / "sessions"
    assert not sessions.exists() or not any(sessions.iterdir()), "the cancelled import was stored anyway"
    # ... and the engine goes on serving imports.
    reply = await served.stub.ImportDataset(_one_file(b"a,b\n1,2\n"), timeout=30)
    assert reply.row_count == 1


async def _one_file(data: bytes) -> AsyncIterator[pb.ImportDatasetRequest]:
    yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="small.csv"))
    yield pb.ImportDatasetRequest(chunk=data)
