"""The embedded dataset store: layout, atomic writes, the old layout, and refusing unsafe ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from common.errors import InvalidInput, NotFound
from common.store import DatasetRecord, LocalDatasetStore


def _record(session_id: str = "abc") -> DatasetRecord:
    return DatasetRecord(
        session_id, "sales", "Sales.csv", "h" * 64, 3, [{"name": "a", "type": "BIGINT"}], "csv", 1.0
    )


def test_the_parquet_sits_alone_in_its_folder(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path)
    upload = tmp_path / "x.parquet"
    upload.write_bytes(b"PAR1")
    store.put(_record(), upload, b"profile")
    parquet = store.parquet_path("abc")
    assert parquet == tmp_path / "sessions" / "abc" / "data" / "raw.parquet"
    assert [p.name for p in parquet.parent.iterdir()] == ["raw.parquet"]
    assert not os.stat(parquet).st_mode & 0o222
    assert store.get("abc") == _record() and store.profile("abc") == b"profile"
    assert not upload.exists()
    assert [p.name for p in (tmp_path / "sessions").iterdir()] == ["abc"]


def test_a_failed_put_leaves_nothing(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.put(_record(), tmp_path / "missing.parquet", b"p")
    assert list((tmp_path / "sessions").iterdir()) == []
    with pytest.raises(NotFound):
        store.get("abc")


def test_sessions_written_before_the_data_folder_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "sessions" / "old"
    folder.mkdir(parents=True)
    (folder / "raw.parquet").write_bytes(b"PAR1")
    (folder / "profile.pb").write_bytes(b"")
    meta = {**_record("old").__dict__, "some_future_field": 1}
    (folder / "meta.json").write_text(json.dumps(meta))
    store = LocalDatasetStore(tmp_path)
    assert store.parquet_path("old") == folder / "raw.parquet"
    assert store.get("old").table == "sales"


@pytest.mark.parametrize("session_id", ["../etc", "", "a/b", "x" * 65])
def test_unsafe_session_ids_are_refused(tmp_path: Path, session_id: str) -> None:
    with pytest.raises(InvalidInput):
        LocalDatasetStore(tmp_path).get(session_id)


def test_a_session_is_written_once(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path)
    first, second = tmp_path / "1.parquet", tmp_path / "2.parquet"
    first.write_bytes(b"PAR1 first")
    second.write_bytes(b"PAR1 second")
    store.put(_record(), first, b"p")
    with pytest.raises(InvalidInput) as caught:
        store.put(_record(), second, b"p")
    assert caught.value.reason == "SESSION_EXISTS"
    assert store.parquet_path("abc").read_bytes() == b"PAR1 first"
    assert [p.name for p in (tmp_path / "sessions").iterdir()] == ["abc"]


def test_a_profile_can_follow_the_data(tmp_path: Path) -> None:
    """A large table is stored before its profile: profile() is None until put_profile, and the data's
    folder stays untouched and read-only."""
    store = LocalDatasetStore(tmp_path)
    upload = tmp_path / "x.parquet"
    upload.write_bytes(b"PAR1")
    store.put(_record(), upload, None)
    assert store.profile("abc") is None
    store.put_profile("abc", b"late")
    assert store.profile("abc") == b"late"
    assert sorted(p.name for p in (tmp_path / "sessions" / "abc").iterdir()) == [
        "data",
        "meta.json",
        "profile.pb",
    ]
    assert [p.name for p in store.parquet_path("abc").parent.iterdir()] == ["raw.parquet"]
    with pytest.raises(NotFound):
        store.put_profile("nobody", b"x")
