"""Large tables are answered before their profile, which follows: over gRPC, across replicas, on failure."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import grpc
import pytest

from common.channels import open_channel
from common.store import DatasetRecord, LocalDatasetStore
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from services.sql_engine.engine import SqlEngine
from services.sql_engine.importer import import_file
from services.sql_engine.profiler import profile_parquet
from services.sql_engine.profiles import ProfileJobs
from services.sql_engine.server import start
from tests.services.sql_engine.conftest import SALES_CSV, make_settings, upload


async def _describe(
    stub: sql_engine_pb2_grpc.SqlEngineServiceStub, session_id: str, wait: bool, timeout: float = 60
) -> pb.DescribeDatasetResponse:
    return await stub.DescribeDataset(
        pb.DescribeDatasetRequest(session_id=session_id, wait_for_profile=wait), timeout=timeout
    )


def _big_csv(path: Path, rows: int) -> bytes:
    duckdb.execute(
        f"COPY (SELECT i AS id, 'r' || (i % 7) AS region, (i % 1000) / 10.0 AS amount,"
        f" DATE '2020-01-01' + (i % 900)::INT AS day FROM range({rows}) t(i)) TO '{path}' (HEADER)"
    )
    return path.read_bytes()


async def test_a_large_table_is_queryable_before_its_profile(tmp_path: Path) -> None:
    deferred = await start(make_settings(tmp_path / "a", sql_profile_inline_rows=0), "127.0.0.1:0")
    inline = await start(make_settings(tmp_path / "b"), "127.0.0.1:0")
    try:
        async with (
            open_channel(f"127.0.0.1:{deferred.port}") as a,
            open_channel(f"127.0.0.1:{inline.port}") as b,
        ):
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(a)
            reference = sql_engine_pb2_grpc.SqlEngineServiceStub(b)
            reply = await upload(stub, SALES_CSV.encode(), "sales.csv")
            assert reply.profile_state == pb.PROFILE_STATE_PENDING
            assert not reply.profile.columns and reply.row_count == 6

            query = pb.ExecuteSqlRequest(session_id=reply.session_id, sql="SELECT count(*) AS n FROM sales")
            count = await stub.ExecuteSql(query, timeout=30)
            assert count.result.row_count == 1

            waited = await _describe(stub, reply.session_id, wait=True)
            assert waited.profile_state == pb.PROFILE_STATE_READY and not waited.profile.failure
            # the same profile as a small table's, made while importing
            made_inline = await upload(reference, SALES_CSV.encode(), "sales.csv")
            assert made_inline.profile_state == pb.PROFILE_STATE_READY
            assert waited.profile == made_inline.profile
            assert [c.null_count for c in waited.profile.columns] == [0] * 6
            regions = {v.value: v.count for v in waited.profile.columns[1].top_values}
            assert regions == {"North": 3, "South": 2, "East": 1}

            again = await _describe(stub, reply.session_id, wait=False)  # stored now: no waiting needed
            assert again.profile_state == pb.PROFILE_STATE_READY and again.profile == waited.profile
            data_dir = Path(deferred.engine.settings.data_dir)  # type: ignore[attr-defined]
            stored = data_dir / "sessions" / reply.session_id / "profile.pb"
            assert pb.DatasetProfile.FromString(stored.read_bytes()) == waited.profile
    finally:
        await deferred.stop(1)
        await inline.stop(1)


async def test_a_caller_that_stops_waiting_does_not_cancel_the_profile(tmp_path: Path) -> None:
    data = _big_csv(tmp_path / "big.csv", 400_000)
    running = await start(make_settings(tmp_path, sql_profile_inline_rows=0), "127.0.0.1:0")
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            reply = await upload(stub, data, "big.csv", chunk=1 << 20)
            assert reply.profile_state == pb.PROFILE_STATE_PENDING and reply.row_count == 400_000
            status = await stub.GetEngineStatus(pb.GetEngineStatusRequest(), timeout=5)
            assert status.pending_profiles == 1  # 400k rows take longer than this round trip
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _describe(stub, reply.session_id, wait=True, timeout=0.001)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            waited = await _describe(stub, reply.session_id, wait=True)
            assert waited.profile_state == pb.PROFILE_STATE_READY
            assert waited.profile.columns[0].distinct_count > 300_000  # approximate on this size
            assert waited.profile.columns[2].max == pytest.approx(99.9)
            status = await stub.GetEngineStatus(pb.GetEngineStatusRequest(), timeout=5)
            assert status.pending_profiles == 0
    finally:
        await running.stop(1)


def test_another_replica_computes_a_profile_that_was_never_stored(tmp_path: Path) -> None:
    """The importing replica died after storing the data, before profiling it: any replica that reads the
    session computes the profile, and stores it for the others."""
    settings = make_settings(tmp_path, sql_profile_inline_rows=0)
    store = LocalDatasetStore(settings.data_dir)
    raw, work = tmp_path / "sales.csv", tmp_path / "work"
    raw.write_text(SALES_CSV)
    work.mkdir()
    imported = import_file(raw, raw.name, work, profile_rows=0)
    assert imported.profile is None
    record = DatasetRecord(
        "s1",
        imported.table,
        raw.name,
        imported.sha256,
        imported.row_count,
        [{"name": n, "type": t} for n, t in imported.columns],
    )
    store.put(record, imported.parquet, None)  # what the dead replica left

    replica = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    try:
        assert replica.describe("s1") == (record, None)
        computed = replica.profiles.start("s1").result(30)
        expected = profile_parquet(store.parquet_path("s1"), imported.columns, imported.row_count)
        assert computed == expected and len(computed.columns) == 6
        assert replica.describe("s1")[1] == computed
        assert store.profile("s1") == computed.SerializeToString()
    finally:
        replica.close()


def _one_row_session(tmp_path: Path) -> LocalDatasetStore:
    """A store holding session s1 (one row), stored without a profile, as a large import leaves it."""
    store = LocalDatasetStore(tmp_path)
    parquet = tmp_path / "x.parquet"
    duckdb.execute(f"COPY (SELECT 1 AS a) TO '{parquet}' (FORMAT parquet)")
    store.put(DatasetRecord("s1", "t", "t.csv", "h", 1, [{"name": "a", "type": "INTEGER"}]), parquet, None)
    return store


def test_a_failed_profile_is_reported_not_stored_and_not_retried_in_a_loop(tmp_path: Path) -> None:
    store = _one_row_session(tmp_path)
    calls: list[str] = []

    def failing(session_id: str) -> pb.DatasetProfile:
        calls.append(session_id)
        return pb.DatasetProfile(failure="out of memory while profiling")

    jobs = ProfileJobs(store, failing)
    try:
        first = jobs.start("s1").result(10)
        assert first.failure == "out of memory while profiling"
        assert jobs.start("s1").result(10) is first and calls == ["s1"]
        assert store.profile("s1") is None
    finally:
        jobs.close()


def test_a_profile_that_raises_is_retried_by_the_next_caller(tmp_path: Path) -> None:
    store = _one_row_session(tmp_path)
    attempts = threading.Semaphore(0)

    def flaky(session_id: str) -> pb.DatasetProfile:
        attempts.release()
        if not hasattr(flaky, "failed"):
            flaky.failed = True  # type: ignore[attr-defined]
            raise OSError("the store was unreachable")
        return pb.DatasetProfile(health_score=100)

    jobs = ProfileJobs(store, flaky)
    try:
        with pytest.raises(OSError):
            jobs.start("s1").result(10)
        assert jobs.start("s1").result(10).health_score == 100
        assert pb.DatasetProfile.FromString(store.profile("s1") or b"").health_score == 100
        assert attempts.acquire(timeout=0) and attempts.acquire(timeout=0)
    finally:
        jobs.close()


def test_a_failed_profile_is_tried_again_once_its_failure_has_expired(tmp_path: Path) -> None:
    store = _one_row_session(tmp_path)
    outcomes = [pb.DatasetProfile(failure="out of memory"), pb.DatasetProfile(health_score=90)]
    jobs = ProfileJobs(store, lambda _: outcomes.pop(0), failed_kept_s=0.0)
    try:
        assert jobs.start("s1").result(10).failure == "out of memory"
        assert jobs.start("s1").result(10).health_score == 90  # expired at once: computed again
        assert store.profile("s1") is not None and jobs.running("s1") is None
    finally:
        jobs.close()


async def test_a_replica_that_is_not_asked_to_wait_does_not_start_a_profile(tmp_path: Path) -> None:
    """Describe without waiting on a replica that did not import the table answers PENDING and leaves the
    profiling to the importing replica (or to whoever waits), instead of every replica profiling it."""
    settings = make_settings(tmp_path, sql_profile_inline_rows=0)
    raw, work = tmp_path / "sales.csv", tmp_path / "work"
    raw.write_text(SALES_CSV)
    work.mkdir()
    imported = import_file(raw, raw.name, work, profile_rows=0)
    columns = [{"name": n, "type": t} for n, t in imported.columns]
    record = DatasetRecord("s1", imported.table, raw.name, imported.sha256, imported.row_count, columns)
    LocalDatasetStore(settings.data_dir).put(record, imported.parquet, None)
    running = await start(settings, "127.0.0.1:0")
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            now = await _describe(stub, "s1", wait=False)
            assert now.profile_state == pb.PROFILE_STATE_PENDING and not now.profile.columns
            assert running.engine.profiles.running("s1") is None  # type: ignore[attr-defined]
            waited = await _describe(stub, "s1", wait=True)
            assert waited.profile_state == pb.PROFILE_STATE_READY and len(waited.profile.columns) == 6
    finally:
        await running.stop(1)
