"""The Supabase dataset store against a fake speaking Supabase's REST and Storage contract."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import InvalidInput, NotFound, Unavailable
from common.store import DatasetRecord, LocalDatasetStore, open_dataset_store
from common.store.supabase import SupabaseDatasetStore
from tests.fakes.fake_supabase import FakeSupabase

PARQUET = b"PAR1 pretend parquet bytes PAR1"


@pytest.fixture
def fake() -> Iterator[FakeSupabase]:
    with FakeSupabase() as server:
        yield server


def _record(session_id: str = "s1", data: bytes = PARQUET) -> DatasetRecord:
    return DatasetRecord(
        session_id=session_id,
        table="sales",
        filename="Sales.csv",
        dataset_hash=hashlib.sha256(data).hexdigest(),
        row_count=3,
        columns=[{"name": "amount (INR)", "type": "DOUBLE"}],
        source_format="csv",
        created_at=1_700_000_000.0,
    )


def _parquet(tmp_path: Path, data: bytes = PARQUET) -> Path:
    path = tmp_path / "upload.parquet"
    path.write_bytes(data)
    return path


def test_put_then_read_from_a_cold_cache(tmp_path: Path, fake: FakeSupabase) -> None:
    writer = SupabaseDatasetStore(tmp_path / "a", fake.url, fake.key)
    writer.put(_record(), _parquet(tmp_path), b"profile-bytes")
    assert fake.objects["datasets/s1/raw.parquet"] == PARQUET
    assert fake.objects["datasets/s1/profile.pb"] == b"profile-bytes"
    row = fake.rows["sessions"][0]
    assert row["session_id"] == "s1" and row["table_name"] == "sales" and row["row_count"] == 3
    assert row["columns"] == [{"name": "amount (INR)", "type": "DOUBLE"}]
    upload = next(r for r in fake.requests if r.method == "POST" and r.path.endswith("raw.parquet"))
    assert upload.headers["x-upsert"] == "false" and upload.headers["apikey"] == fake.key

    reader = SupabaseDatasetStore(tmp_path / "b", fake.url, fake.key)
    assert reader.get("s1") == _record()
    local = reader.parquet_path("s1")
    assert local.read_bytes() == PARQUET and local.is_relative_to(tmp_path / "b" / "sessions")
    assert reader.profile("s1") == b"profile-bytes"
    downloads = [r for r in fake.requests if r.method == "GET" and r.path.startswith("/storage/")]
    reader.parquet_path("s1")
    assert len([r for r in fake.requests if r.method == "GET" and r.path.startswith("/storage/")]) == len(
        downloads
    )
    writer.close()
    reader.close()


def test_an_unknown_session_is_not_found(tmp_path: Path, fake: FakeSupabase) -> None:
    store = SupabaseDatasetStore(tmp_path, fake.url, fake.key)
    with pytest.raises(NotFound) as caught:
        store.get("missing")
    assert caught.value.reason == "DATASET_NOT_FOUND"


def test_a_failed_row_insert_removes_the_uploaded_objects(tmp_path: Path, fake: FakeSupabase) -> None:
    store = SupabaseDatasetStore(tmp_path / "store", fake.url, fake.key)
    fake.fail_next("/rest/v1/sessions", status=503)
    with pytest.raises(Unavailable):
        store.put(_record(), _parquet(tmp_path), b"p")
    assert fake.objects == {} and fake.rows.get("sessions", []) == []
    assert not list((tmp_path / "store" / "sessions").iterdir())


def test_a_duplicate_session_is_refused(tmp_path: Path, fake: FakeSupabase) -> None:
    store = SupabaseDatasetStore(tmp_path / "store", fake.url, fake.key)
    store.put(_record(), _parquet(tmp_path), b"p")
    with pytest.raises(InvalidInput) as caught:
        store.put(_record(), _parquet(tmp_path), b"p")
    assert caught.value.reason == "SESSION_EXISTS"
    assert fake.objects["datasets/s1/raw.parquet"] == PARQUET


def test_a_corrupted_object_is_not_cached(tmp_path: Path, fake: FakeSupabase) -> None:
    SupabaseDatasetStore(tmp_path / "a", fake.url, fake.key).put(_record(), _parquet(tmp_path), b"p")
    fake.objects["datasets/s1/raw.parquet"] = b"tampered"
    reader = SupabaseDatasetStore(tmp_path / "b", fake.url, fake.key)
    with pytest.raises(Unavailable) as caught:
        reader.parquet_path("s1")
    assert caught.value.reason == "DATASET_CORRUPT"
    assert not list((tmp_path / "b" / "sessions").iterdir())


def test_a_wrong_key_is_reported_without_the_key(tmp_path: Path, fake: FakeSupabase) -> None:
    store = SupabaseDatasetStore(tmp_path, fake.url, "wrong-key")
    with pytest.raises(Unavailable) as caught:
        store.get("s1")
    assert caught.value.reason == "STORE_FORBIDDEN" and "wrong-key" not in caught.value.message


def test_an_unreachable_supabase_is_unavailable(tmp_path: Path) -> None:
    store = SupabaseDatasetStore(tmp_path, "http://127.0.0.1:9", "k", timeout_s=2)
    with pytest.raises(Unavailable) as caught:
        store.get("s1")
    assert caught.value.reason == "STORE_UNAVAILABLE"


def test_open_dataset_store_picks_supabase_when_configured(
    tmp_path: Path, fake: FakeSupabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_dataset_store(tmp_path), LocalDatasetStore)
    monkeypatch.setenv("SUPABASE_URL", fake.url)
    assert isinstance(open_dataset_store(tmp_path), LocalDatasetStore)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", fake.key)
    store = open_dataset_store(tmp_path)
    assert isinstance(store, SupabaseDatasetStore)
    store.close()


async def test_the_engine_imports_to_supabase_and_another_instance_queries_it(
    tmp_path: Path, fake: FakeSupabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.arrow import ipc_to_table
    from common.channels import open_channel
    from insightx.v1 import sql_engine_pb2 as pb
    from insightx.v1 import sql_engine_pb2_grpc
    from services.sql_engine.server import start
    from tests.services.sql_engine.conftest import SALES_CSV, make_settings, upload

    monkeypatch.setenv("SUPABASE_URL", fake.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", fake.key)
    first = await start(make_settings(tmp_path / "one"), "127.0.0.1:0")
    second = await start(make_settings(tmp_path / "two"), "127.0.0.1:0")
    try:
        async with open_channel(f"127.0.0.1:{first.port}") as channel:
            imported = await upload(
                sql_engine_pb2_grpc.SqlEngineServiceStub(channel), SALES_CSV.encode(), "s.csv"
            )
        stored = json.loads(json.dumps(fake.rows["sessions"][0]))
        assert stored["dataset_hash"] == imported.dataset_hash
        async with open_channel(f"127.0.0.1:{second.port}") as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            described = await stub.DescribeDataset(pb.DescribeDatasetRequest(session_id=imported.session_id))
            assert described.profile == imported.profile
            reply = await stub.ExecuteSql(
                pb.ExecuteSqlRequest(session_id=imported.session_id, sql="SELECT count(*) AS n FROM s")
            )
            assert ipc_to_table(reply.result.arrow_ipc).to_pylist() == [{"n": 6}]
    finally:
        await first.stop(1)
        await second.stop(1)


def test_a_profile_stored_after_the_data_reaches_every_replica(tmp_path: Path, fake: FakeSupabase) -> None:
    """A large table's profile is written after its data: until then every replica reads None."""
    writer = SupabaseDatasetStore(tmp_path / "a", fake.url, fake.key)
    reader = SupabaseDatasetStore(tmp_path / "b", fake.url, fake.key)
    writer.put(_record(), _parquet(tmp_path), None)
    assert "datasets/s1/profile.pb" not in fake.objects
    assert writer.profile("s1") is None and reader.profile("s1") is None
    assert reader.parquet_path("s1").read_bytes() == PARQUET  # the data is usable meanwhile

    writer.put_profile("s1", b"late-profile")
    assert fake.objects["datasets/s1/profile.pb"] == b"late-profile"
    assert writer.profile("s1") == b"late-profile"
    assert reader.profile("s1") == b"late-profile"  # fetched once the object exists, then cached
    assert (tmp_path / "b" / "sessions" / "s1" / "profile.pb").read_bytes() == b"late-profile"
    # a second replica that computed the same profile overwrites it instead of failing
    reader.put_profile("s1", b"late-profile")
    upserts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("profile.pb")]
    assert [r.headers["x-upsert"] for r in upserts] == ["true", "true"]
    writer.close()
    reader.close()
