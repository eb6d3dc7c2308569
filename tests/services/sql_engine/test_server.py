"""SqlEngineService over gRPC on a real in-process server: import, describe, query, cache, cancel, load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common.arrow import ipc_to_table
from common.channels import open_channel
from common.errors import error_info
from common.identity import USER_ID_METADATA_KEY
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from services.sql_engine.server import start
from tests.services.sql_engine.conftest import SALES_CSV, Served, make_settings, upload

pytestmark = pytest.mark.integration

SLOW_SQL = "SELECT count(*) FROM range(1000000000000) a"


async def test_import_describe_and_execute(served: Served) -> None:
    imported = await upload(served.stub, SALES_CSV.encode(), "Sales 2024.csv", chunk=7)
    assert imported.table == "sales_2024" and imported.row_count == 6 and imported.source_format == "csv"
    assert [c.name for c in imported.columns][:3] == ["order_id", "region", "amount (INR)"]
    described = await served.stub.DescribeDataset(pb.DescribeDatasetRequest(session_id=imported.session_id))
    assert described.dataset_hash == imported.dataset_hash and described.filename == "Sales 2024.csv"
    assert described.profile == imported.profile and len(described.profile.columns) == 6
    reply = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(
            session_id=imported.session_id, sql='SELECT sum("amount (INR)") AS s FROM sales_2024'
        )
    )
    assert ipc_to_table(reply.result.arrow_ipc).to_pylist() == [{"s": 797.75}]
    assert not reply.cached and reply.result.row_count == 1


async def test_a_repeated_query_is_served_from_the_cache(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    first = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(session_id=session, sql="SELECT count(*) AS n FROM s")
    )
    again = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(session_id=session, sql="select   count(*) AS n\nfrom s -- same query;")
    )
    bypass = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(session_id=session, sql="SELECT count(*) AS n FROM s", bypass_cache=True)
    )
    assert (first.cached, again.cached, bypass.cached) == (False, True, False)
    assert again.result.arrow_ipc == first.result.arrow_ipc
    status = await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())
    assert status.cached_results == 1 and status.open_databases == 1 and status.cached_result_bytes > 0


async def test_row_cap_sets_truncated(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    reply = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(session_id=session, sql="SELECT * FROM range(1000000)", max_rows=1000)
    )
    assert reply.result.truncated and reply.result.row_count == 1000


async def test_errors_carry_a_reason_and_duckdbs_message(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    cases = [
        ("SELECT nope FROM s", grpc.StatusCode.INVALID_ARGUMENT, "SQL_BINDER", "nope"),
        ("SELEC 1", grpc.StatusCode.INVALID_ARGUMENT, "SQL_SYNTAX", "syntax"),
        ("DELETE FROM s", grpc.StatusCode.INVALID_ARGUMENT, "SQL_NOT_READ_ONLY", "SELECT"),
    ]
    for sql, code, reason, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=sql))
        info = error_info(caught.value)
        assert (caught.value.code(), info.reason) == (code, reason)
        assert text.lower() in info.message.lower()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id="nosuchsession", sql="SELECT 1"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "DATASET_NOT_FOUND"


async def test_a_slow_query_times_out_by_interrupt(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=SLOW_SQL, timeout_ms=300))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(caught.value).reason == "SQL_TIMEOUT"
    assert time.monotonic() - started < 3


async def test_a_cancelled_call_interrupts_its_duckdb_query(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    call = served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=SLOW_SQL, timeout_ms=60_000))
    for _ in range(100):
        if (await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())).running_queries == 1:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the query never started")
    call.cancel()
    started = time.monotonic()
    while (await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())).running_queries:
        assert time.monotonic() - started < 10, "the DuckDB query kept running after the call was cancelled"
        await asyncio.sleep(0.02)


async def test_a_client_deadline_interrupts_its_duckdb_query(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=SLOW_SQL), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    started = time.monotonic()
    while (await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())).running_queries:
        assert time.monotonic() - started < 10  # left alone, it runs to its 30 s timeout
        await asyncio.sleep(0.02)


async def test_fifty_concurrent_queries_over_several_sessions_all_complete(served: Served) -> None:
    sessions = [(await upload(served.stub, SALES_CSV.encode(), f"s{i}.csv")).session_id for i in range(3)]

    async def one(i: int) -> int:
        session = sessions[i % 3]
        sql = f"SELECT count(*) + {i} AS n FROM s{i % 3}, range(20000)"
        reply = await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=sql), timeout=60)
        return int(ipc_to_table(reply.result.arrow_ipc).to_pylist()[0]["n"])

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [120_000 + i for i in range(50)]
    status = await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())
    assert status.running_queries == 0 and status.queued_queries == 0 and status.open_databases == 3


async def test_validate_binds_against_the_session(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    ok = await served.stub.ValidateSql(pb.ValidateSqlRequest(session_id=session, sql="SELECT region FROM s"))
    assert ok.valid and ok.statement_type == "SELECT" and [c.name for c in ok.columns] == ["region"]
    bad = await served.stub.ValidateSql(pb.ValidateSqlRequest(session_id=session, sql="SELECT regio FROM s"))
    assert not bad.valid and bad.reason == "SQL_BINDER" and "regio" in bad.message
    syntax = await served.stub.ValidateSql(pb.ValidateSqlRequest(sql="ATTACH 'x'"))
    assert not syntax.valid and syntax.reason == "SQL_NOT_READ_ONLY"


async def test_bad_uploads_are_invalid_argument_and_leave_nothing(served: Served) -> None:
    data_dir = served.engine.settings.data_dir
    for data, name, reason in [
        (b"", "empty.csv", "EMPTY_FILE"),
        (b"a,b\n1,2\n3\n", "ragged.csv", "RAGGED_ROWS"),
        (b"x" * 5000, "big.csv", "FILE_TOO_LARGE"),
    ]:
        served.engine.settings.max_upload_bytes = 4096
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(served.stub, data, name, chunk=1024)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(caught.value).reason == reason
        assert caught.value.details()
    assert not list((data_dir / "sessions").iterdir())
    assert not [p for p in (data_dir / "spool").rglob("*")]


async def test_the_result_cache_is_scoped_to_the_session(served: Served) -> None:
    """Two sessions holding the same file: one's query never answers `cached` to the other (no oracle)."""
    mine = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    theirs = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    sql = "SELECT count(*) AS n FROM s WHERE region = 'North'"
    first = await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=theirs, sql=sql))
    other = await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=mine, sql=sql))
    again = await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=mine, sql=sql))
    assert (first.cached, other.cached, again.cached) == (False, False, True)


async def test_requests_cannot_ask_for_more_than_the_caps(served: Served) -> None:
    session = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    settings = served.engine.settings
    settings.sql_hard_max_rows = 50
    settings.sql_max_timeout_ms = 400
    reply = await served.stub.ExecuteSql(
        pb.ExecuteSqlRequest(session_id=session, sql="SELECT * FROM range(1000)", max_rows=10**9)
    )
    assert reply.result.row_count == 50 and reply.result.truncated
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ExecuteSql(
            pb.ExecuteSqlRequest(session_id=session, sql=SLOW_SQL, timeout_ms=10**9), timeout=30
        )
    assert error_info(caught.value).reason == "SQL_TIMEOUT" and time.monotonic() - started < 5


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Served]:
    """An engine of 3 workers where a session holds at most 2 and may keep 1 more waiting."""
    settings = make_settings(
        tmp_path,
        sql_query_workers=3,
        sql_queries_per_session=2,
        sql_queries_per_user=2,
        sql_queued_per_caller=1,
        sql_default_timeout_ms=20_000,
    )
    running = await start(settings, "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        yield Served(running, channel, sql_engine_pb2_grpc.SqlEngineServiceStub(channel))
    finally:
        await channel.close()
        await running.stop(1)


async def _wait_running(served: Served, count: int, queued: int = 0) -> None:
    """Until `count` queries run (and `queued` wait: the calls are sent concurrently, so one may lag)."""
    for _ in range(500):
        status = await served.stub.GetEngineStatus(pb.GetEngineStatusRequest())
        if status.running_queries >= count and status.queued_queries >= queued:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{count} queries never ran at once with {queued} waiting")


async def test_one_session_cannot_hold_every_worker(capped: Served) -> None:
    hog = (await upload(capped.stub, SALES_CSV.encode(), "s.csv")).session_id
    other = (await upload(capped.stub, SALES_CSV.encode(), "s.csv")).session_id
    slow = [
        asyncio.ensure_future(
            capped.stub.ExecuteSql(
                pb.ExecuteSqlRequest(session_id=hog, sql=SLOW_SQL + f" WHERE a.range > {i}")
            )
        )
        for i in range(3)  # 2 run, 1 waits
    ]
    try:
        await _wait_running(capped, 2, queued=1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # past its waiting cap: refused at once
            await capped.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=hog, sql="SELECT 1"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(refused.value)
        assert info.reason == "TOO_MANY_QUERIES" and "retry" in info.message
        assert int(info.metadata["retry_after_ms"]) > 0
        # The third worker stays free for everyone else.
        started = time.monotonic()
        reply = await capped.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=other, sql="SELECT 7 AS x"))
        assert ipc_to_table(reply.result.arrow_ipc).to_pylist() == [{"x": 7}]
        assert time.monotonic() - started < 1
    finally:
        for call in slow:
            call.cancel()


async def test_one_user_cannot_hold_every_worker_through_many_sessions(capped: Served) -> None:
    sessions = [(await upload(capped.stub, SALES_CSV.encode(), "s.csv")).session_id for _ in range(3)]
    alice = ((USER_ID_METADATA_KEY, "alice"),)
    slow = [
        asyncio.ensure_future(
            capped.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=s, sql=SLOW_SQL), metadata=alice)
        )
        for s in sessions[:2]
    ]
    try:
        await _wait_running(capped, 2)
        waiting = asyncio.ensure_future(
            capped.stub.ExecuteSql(
                pb.ExecuteSqlRequest(session_id=sessions[2], sql="SELECT 1"), metadata=alice
            )
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()  # alice's third session waits: alice holds her 2 workers
        bob = ((USER_ID_METADATA_KEY, "bob"),)
        reply = await capped.stub.ExecuteSql(
            pb.ExecuteSqlRequest(session_id=sessions[2], sql="SELECT 8 AS x"), metadata=bob, timeout=5
        )
        assert ipc_to_table(reply.result.arrow_ipc).to_pylist() == [{"x": 8}]
        slow[0].cancel()
        assert (await asyncio.wait_for(waiting, 10)).result.row_count == 1
    finally:
        for call in slow:
            call.cancel()


async def test_a_worker_past_its_high_water_mark_is_replaced(tmp_path: Path) -> None:
    from common.store import LocalDatasetStore
    from services.sql_engine.engine import SqlEngine

    settings = make_settings(tmp_path, sql_query_workers=2, sql_worker_recycle_rss_bytes=1)
    engine = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    try:
        await asyncio.to_thread(engine.start_workers)
        before = set(engine.workers.worker_pids())
        spool = settings.data_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        (spool / "s.csv").write_text(SALES_CSV)
        record, _ = await asyncio.to_thread(engine.import_dataset, spool / "s.csv", "s.csv")
        reply = await engine.execute_async(record.session_id, "SELECT count(*) AS n FROM s")
        assert reply.table.to_pylist() == [{"n": 6}]
        await asyncio.sleep(0.1)  # the replacement is handed back on the loop
        after = set(engine.workers.worker_pids())
        assert len(after) == 2 and len(after - before) == 1  # the worker that ran it is a new process
        assert engine.workers.counts.replaced == 1
        again = await engine.execute_async(record.session_id, "SELECT count(*) AS n FROM s", use_cache=False)
        assert again.table.to_pylist() == [{"n": 6}]
    finally:
        engine.close()


async def test_a_worker_that_could_not_be_replaced_is_started_again_later(tmp_path: Path) -> None:
    from common.store import LocalDatasetStore
    from services.sql_engine.engine import SqlEngine

    settings = make_settings(tmp_path, sql_query_workers=2, sql_worker_recycle_rss_bytes=1)
    engine = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    try:
        await asyncio.to_thread(engine.start_workers)
        spawn = engine.workers._spawn
        failures = []

        def fails_once():  # type: ignore[no-untyped-def]
            if not failures:
                failures.append(1)
                raise OSError("fork failed")
            return spawn()

        engine.workers._spawn = fails_once  # type: ignore[method-assign]
        spool = settings.data_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        (spool / "s.csv").write_text(SALES_CSV)
        record, _ = await asyncio.to_thread(engine.import_dataset, spool / "s.csv", "s.csv")
        await engine.execute_async(record.session_id, "SELECT count(*) AS n FROM s")
        await asyncio.sleep(0.1)
        assert len(engine.workers.worker_pids()) == 1  # retired, and its replacement failed to start
        assert await engine.alive(2.0)  # the liveness probe starts the missing worker
        for _ in range(50):
            if len(engine.workers.worker_pids()) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(engine.workers.worker_pids()) == 2
    finally:
        engine.close()
