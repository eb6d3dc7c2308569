"""An upload is converted while it is received (spool.py): the same table as from the whole file, the file
read instead when the streamed read cannot be kept, and nothing left behind when the upload fails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import grpc
import pytest

from common.channels import open_channel
from common.errors import error_info
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from services.sql_engine import spool
from services.sql_engine.importer import import_file
from services.sql_engine.server import start
from tests.services.sql_engine.conftest import Served, make_settings

pytestmark = pytest.mark.integration
CHUNK = 1 << 18


def _csv(tmp_path: Path, rows: int, late: str = "") -> bytes:
    """A CSV of several MB (more than the sniffed head), with `late` as the last row when given."""
    path = tmp_path / "source.csv"
    duckdb.execute(
        "COPY (SELECT range AS id, 'label ' || (range % 991) AS label, range / 8 AS ratio,"
        " DATE '2021-01-01' + (range % 700)::INT AS day"
        f" FROM range({rows})) TO '{path}' (FORMAT csv, HEADER)"
    )
    return path.read_bytes() + late.encode()


def _fifos(data_dir: Path) -> list[Path]:
    return list((data_dir / "spool").glob("upload-*.fifo"))


def _leftovers(data_dir: Path) -> list[Path]:
    return [*(data_dir / "spool").glob("upload-*"), *(data_dir / "spool").glob("import-*")]


async def _wait(condition, seconds: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


def _data_dir(served: Served) -> Path:
    return Path(served.engine.settings.data_dir)


async def _rows_of(served: Served, reply: pb.ImportDatasetResponse) -> int:
    result = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(
            session_id=reply.session_id, sql=f"SELECT id FROM {reply.table}", max_rows=1_000_000
        ),
        timeout=30,
    )
    return result.result.row_count


async def test_a_csv_is_read_while_it_arrives_into_the_same_table_as_from_the_file(
    served: Served, tmp_path: Path
) -> None:
    data = _csv(tmp_path, 200_000)
    assert len(data) > 4 << 20
    data_dir = _data_dir(served)

    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="orders.csv"))
        last = len(data) - CHUNK
        for offset in range(0, last, CHUNK):
            yield pb.ImportDatasetRequest(chunk=data[offset : min(offset + CHUNK, last)])
        # DuckDB is reading the upload through its FIFO before the last bytes are even sent.
        assert await _wait(lambda: bool(_fifos(data_dir))), "the import did not start before the upload ended"
        yield pb.ImportDatasetRequest(chunk=data[last:])

    reply = await served.stub.ImportDataset(messages(), timeout=60)
    raw = tmp_path / "whole.csv"
    raw.write_bytes(data)
    (tmp_path / "out").mkdir()
    expected = import_file(raw, "orders.csv", tmp_path / "out")
    assert reply.row_count == expected.row_count == 200_000
    assert [(c.name, c.type) for c in reply.columns] == expected.columns
    assert ("day", "DATE") in expected.columns
    assert reply.dataset_hash == expected.sha256  # the same Parquet, byte for byte
    assert await _rows_of(served, reply) == 200_000
    assert await _wait(lambda: not _leftovers(data_dir))


async def test_a_late_value_of_another_type_is_read_again_from_the_file(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The stream's types come from the head; the last row's id does not fit them: the received file is
    # read again with every row sniffed, as an upload read from the file always was.
    data = _csv(tmp_path, 200_000, late="not a number,x,1.5,2021-01-01\n")
    caplog.set_level(logging.INFO, logger="services.sql_engine.importer")
    reply = await _send(served.stub, data, "late.csv", pause=0.03)
    assert _streamed(caplog)
    assert reply.row_count == 200_001
    assert ("id", "VARCHAR") in [(c.name, c.type) for c in reply.columns]
    assert any("streamed read not kept" in r.getMessage() for r in caplog.records)


async def test_a_client_that_stalls_lets_go_of_the_import_threads(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "STALL_S", 0.3)
    caplog.set_level(logging.INFO, logger="services.sql_engine.importer")
    data = _csv(tmp_path, 200_000)

    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="slow.csv"))
        half = len(data) // 2
        yield pb.ImportDatasetRequest(chunk=data[:half])
        await asyncio.sleep(1.5)  # longer than STALL_S: the stream ends, the file is read when complete
        yield pb.ImportDatasetRequest(chunk=data[half:])

    reply = await served.stub.ImportDataset(messages(), timeout=60)
    assert reply.row_count == 200_000
    assert await _rows_of(served, reply) == 200_000
    assert any(getattr(r, "why", "") == "the client stalled" for r in caplog.records)


async def test_a_client_that_leaves_half_way_leaves_nothing(served: Served, tmp_path: Path) -> None:
    data = _csv(tmp_path, 400_000)
    data_dir = _data_dir(served)
    sent = asyncio.Event()

    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="left.csv"))
        for offset in range(0, len(data) // 2, CHUNK):
            yield pb.ImportDatasetRequest(chunk=data[offset : offset + CHUNK])
        sent.set()
        await asyncio.sleep(60)

    call = served.stub.ImportDataset(messages(), timeout=60)
    await asyncio.wait_for(sent.wait(), 30)
    assert await _wait(lambda: bool(_fifos(data_dir))), "the import was not reading the upload"
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await _wait(lambda: not _leftovers(data_dir)), _leftovers(data_dir)
    sessions = data_dir / "sessions"
    assert not sessions.exists() or not any(sessions.iterdir()), "half an upload was stored"
    reply = await _send(served.stub, b"a,b\n1,2\n", "after.csv")  # the engine goes on importing
    assert reply.row_count == 1


async def test_an_upload_past_the_limit_is_refused_while_it_is_read(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=3 << 20)
    running = await start(settings, "127.0.0.1:0")
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            data = _csv(tmp_path, 200_000)

            async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
                yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="big.csv"))
                for offset in range(0, 4 << 20, CHUNK):
                    yield pb.ImportDatasetRequest(chunk=data[offset : offset + CHUNK])
                # Sending on after the refusal would meet grpc#36066 (an aio client's failed write
                # replaces the server's status with INTERNAL): this client waits for the answer.
                await asyncio.sleep(60)

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ImportDataset(messages(), timeout=30)
            assert error_info(refused.value).reason == "FILE_TOO_LARGE"
            assert await _wait(lambda: not _leftovers(settings.data_dir)), _leftovers(settings.data_dir)
            sessions = settings.data_dir / "sessions"
            assert not sessions.exists() or not any(sessions.iterdir())
    finally:
        await running.stop(1)


async def test_a_file_refused_on_its_head_is_answered_before_the_upload_ends(served: Served) -> None:
    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="image.csv"))
        yield pb.ImportDatasetRequest(chunk=bytes(range(256)) * 8192)  # 2 MiB of binary
        await asyncio.sleep(60)  # a client still sending: the answer does not wait for it

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.stub.ImportDataset(messages(), timeout=30)
    assert error_info(refused.value).reason == "UNSUPPORTED_FORMAT"
    assert time.monotonic() - started < 10
    assert await _wait(lambda: not _leftovers(_data_dir(served)))


async def _send(
    stub: sql_engine_pb2_grpc.SqlEngineServiceStub, data: bytes, filename: str, pause: float = 0.0
) -> pb.ImportDatasetResponse:
    """Uploads `data`, pausing `pause` seconds between chunks (a slow client, 256 KiB at a time)."""

    async def messages() -> AsyncIterator[pb.ImportDatasetRequest]:
        yield pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename=filename))
        for offset in range(0, len(data), CHUNK):
            yield pb.ImportDatasetRequest(chunk=data[offset : offset + CHUNK])
            if pause:
                await asyncio.sleep(pause)

    return await stub.ImportDataset(messages(), timeout=60)


def _streamed(caplog: pytest.LogCaptureFixture) -> bool:
    return any("reading the upload as it arrives" in r.getMessage() for r in caplog.records)


async def test_a_fast_upload_is_read_from_the_whole_file_a_slow_one_as_it_arrives(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DuckDB reads a pipe on one thread but a whole file on all: an upload that arrives faster than
    # STREAM_BELOW_BPS is converted once complete; a slower one while it arrives. Same table either way.
    caplog.set_level(logging.INFO, logger="services.sql_engine.importer")
    data = _csv(tmp_path, 200_000)
    monkeypatch.setattr(spool, "STREAM_AFTER_S", 0.2)
    monkeypatch.setattr(spool, "STREAM_BELOW_BPS", 1 << 20)  # a busy machine's loopback is still faster
    fast = await _send(served.stub, data, "fast.csv")
    assert not _streamed(caplog), "an upload arriving at loopback speed was read on one thread"
    monkeypatch.setattr(spool, "STREAM_BELOW_BPS", 48 << 20)
    slow = await _send(served.stub, data, "slow.csv", pause=0.03)  # at most 8 MB/s
    assert _streamed(caplog)
    assert slow.dataset_hash == fast.dataset_hash and slow.row_count == fast.row_count == 200_000


async def test_a_kept_spool_file_goes_with_a_deleted_dataset(served: Served, tmp_path: Path) -> None:
    data_dir = _data_dir(served)
    reply = await _send(served.stub, _csv(tmp_path, 50_000), "kept.csv")
    spares = list((data_dir / "spool").glob("spare-*"))
    assert len(spares) == 1, "the finished upload's file was not kept for the next"
    await served.stub.DeleteDataset(pb.DeleteDatasetRequest(session_id=reply.session_id), timeout=30)
    assert not list((data_dir / "spool").glob("spare-*")), "the raw upload outlived its dataset"
