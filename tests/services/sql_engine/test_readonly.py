"""The dataset files are read-only at the OS level for the threads that run queries, even for root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import duckdb
import pytest

from services.sql_engine.engine import SqlEngine
from services.sql_engine.readonly import enter_read_only_view


def _can_mount() -> bool:
    return os.geteuid() == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="mount namespaces need CAP_SYS_ADMIN")


def _try_write(path: Path) -> str:
    try:
        with path.open("ab") as handle:
            handle.write(b"x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "written"


def test_query_threads_cannot_write_the_dataset_but_imports_can(
    engine: SqlEngine, sales_session: str
) -> None:
    parquet = engine.store.parquet_path(sales_session)
    before = parquet.read_bytes()
    in_query_thread = engine.query_pool.submit(_try_write, parquet).result()
    assert in_query_thread == "EROFS"
    new_file = parquet.parent.parent / "planted.txt"
    assert engine.query_pool.submit(_try_write, new_file).result() == "EROFS"
    assert not new_file.exists()
    assert engine.read_only.active and engine.status().data_read_only
    assert parquet.read_bytes() == before
    # The import side (this thread) keeps its writable view: another import still works.
    scratch = parquet.parent.parent.parent / "scratch.txt"
    assert _try_write(scratch) == "written"
    scratch.unlink()


def test_duckdb_itself_cannot_write_from_a_query_thread(engine: SqlEngine, sales_session: str) -> None:
    parquet = engine.store.parquet_path(sales_session)
    target = parquet.parent / "copy.parquet"

    def unhardened_copy() -> str:
        con = duckdb.connect()  # deliberately NOT hardened: the mount alone must stop the write
        try:
            con.execute(f"COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet)")
        except duckdb.Error as exc:
            return str(exc)
        finally:
            con.close()
        return "written"

    outcome = engine.query_pool.submit(unhardened_copy).result()
    assert "Read-only file system" in outcome
    assert not target.exists()


def test_the_view_is_private_to_the_thread(tmp_path: Path) -> None:
    import threading

    folder = tmp_path / "guarded"
    folder.mkdir()
    results: dict[str, str] = {}

    def worker() -> None:
        enter_read_only_view([folder])
        results["inside"] = _try_write(folder / "a.txt")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results["inside"] == "EROFS"
    assert _try_write(folder / "b.txt") == "written"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(folder) not in mounts
