"""The dataset store's records and profiles, the same in the local folder and in PostgreSQL; on
PostgreSQL two engine replicas on one shared folder see each other's records and profiles at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from common.errors import InvalidInput, NotFound, Unavailable
from common.store.datasets import DatasetRecord, DatasetStore, LocalDatasetStore, open_dataset_store
from common.store.postgres_datasets import PostgresDatasetStore
from tools.postgres_server import INSTALL_HINT, PostgresServer, bin_dir


def _record(session_id: str) -> DatasetRecord:
    return DatasetRecord(
        session_id, "t", "t.csv", "hash-" + session_id, 3, [{"name": "a", "type": "INTEGER"}], "csv", 1.5
    )


def _parquet(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.parquet"
    path.write_bytes(b"PAR1 not really parquet PAR1")
    return path


@pytest.fixture(params=["local", pytest.param("postgresql", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DatasetStore, DatasetStore]]:
    """Two stores on one shared folder (two engine replicas), on one database when PostgreSQL."""
    root = tmp_path / "shared"
    if request.param == "local":
        yield LocalDatasetStore(root), LocalDatasetStore(root)
        return
    url = request.getfixturevalue("postgres_url")
    first, second = PostgresDatasetStore(root, url), PostgresDatasetStore(root, url)
    yield first, second
    first.close()
    second.close()


def test_a_dataset_and_its_later_profile_are_seen_by_every_replica(
    stores: tuple[DatasetStore, DatasetStore], tmp_path: Path
) -> None:
    first, second = stores
    first.put(_record("s1"), _parquet(tmp_path, "s1"), None)
    assert second.get("s1") == _record("s1")
    assert second.profile("s1") is None  # profiled after the import replied
    assert second.parquet_path("s1").read_bytes().startswith(b"PAR1")
    first.put_profile("s1", b"\x00profile\xff")
    assert second.profile("s1") == b"\x00profile\xff"
    second.put(_record("s2"), _parquet(tmp_path, "s2"), b"inline")
    assert first.profile("s2") == b"inline"


def test_unknown_and_malformed_sessions_are_refused(
    stores: tuple[DatasetStore, DatasetStore], tmp_path: Path
) -> None:
    first, _ = stores
    with pytest.raises(NotFound, match="No dataset for session 'nope'"):
        first.get("nope")
    with pytest.raises(InvalidInput):
        first.get("../etc")
    first.put(_record("s1"), _parquet(tmp_path, "a"), None)
    with pytest.raises(InvalidInput, match="already has a dataset"):
        first.put(_record("s1"), _parquet(tmp_path, "b"), None)


def test_on_postgresql_the_row_is_the_record_and_a_deleted_one_is_gone(
    postgres_url: str, tmp_path: Path
) -> None:
    store = PostgresDatasetStore(tmp_path / "shared", postgres_url)
    try:
        store.put(_record("s1"), _parquet(tmp_path, "s1"), b"p")
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute("SELECT record_json, profile FROM dataset_records").fetchone()
        assert row is not None and '"dataset_hash": "hash-s1"' in row[0] and bytes(row[1]) == b"p"
        store.delete_remote("s1")
        assert store.profile("s1") == b"p"  # the folder's copy, until deletion.py removes the folder
    finally:
        store.close()


def test_a_session_stored_before_the_database_was_configured_is_still_found(
    postgres_url: str, tmp_path: Path
) -> None:
    LocalDatasetStore(tmp_path / "shared").put(_record("old"), _parquet(tmp_path, "old"), b"old profile")
    store = PostgresDatasetStore(tmp_path / "shared", postgres_url)
    try:
        assert store.get("old") == _record("old") and store.profile("old") == b"old profile"
    finally:
        store.close()


def test_the_database_url_selects_the_postgresql_store(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert type(open_dataset_store(tmp_path)) is LocalDatasetStore
    monkeypatch.setenv("INSIGHTX_DATABASE_URL", postgres_url)
    store = open_dataset_store(tmp_path)
    assert isinstance(store, PostgresDatasetStore)
    store.close()


def test_a_database_outage_is_unavailable_and_the_store_reconnects_after_it(tmp_path: Path) -> None:
    binaries = bin_dir()
    assert binaries is not None, INSTALL_HINT
    server = PostgresServer(binaries).start()  # a server of its own: this test stops it
    store = PostgresDatasetStore(tmp_path / "shared", server.new_database())
    try:
        store.put(_record("s1"), _parquet(tmp_path, "s1"), None)
        server.pause()
        with pytest.raises(Unavailable) as down:
            store.get("s1")
        assert down.value.reason == "DATABASE_UNAVAILABLE" and server.password not in down.value.message
        server.resume()
        assert store.get("s1") == _record("s1")
    finally:
        store.close()
        server.stop()
