"""The dataset files are read-only at the OS level for the processes that run queries, even for root.

The checks run inside a real query worker's own mount namespace (entered with nsenter), so they show what
any code in that worker, DuckDB included and hardened or not, could do to the files.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.sql_engine.engine import SqlEngine
from services.sql_engine.readonly import enter_read_only_view
from services.sql_engine.settings import SqlEngineSettings


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("nsenter") is not None


pytestmark = pytest.mark.skipif(not _can_mount(), reason="mount namespaces need CAP_SYS_ADMIN (and nsenter)")


def _try_write(path: Path) -> str:
    try:
        with path.open("ab") as handle:
            handle.write(b"x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "written"


def _in_worker(pid: int, code: str) -> str:
    """Runs Python `code` in the mount namespace of worker `pid`; answers what it printed."""
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (done.stdout + done.stderr).strip()


_WRITE = """
import errno, sys
try:
    open(sys.argv[1] if len(sys.argv) > 1 else {path!r}, "ab").write(b"x")
    print("written")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc)))
"""


@pytest.fixture
async def started(engine: SqlEngine, sales_session: str) -> AsyncIterator[SqlEngine]:
    await engine.execute_async(sales_session, "SELECT 1")  # starts the workers
    yield engine


async def test_query_workers_cannot_write_the_dataset_but_imports_can(
    started: SqlEngine, sales_session: str
) -> None:
    engine = started
    parquet = engine.store.parquet_path(sales_session)
    before = parquet.read_bytes()
    for pid in engine.workers.worker_pids():
        assert _in_worker(pid, _WRITE.format(path=str(parquet))) == "EROFS"
        assert _in_worker(pid, _WRITE.format(path=str(parquet.parent.parent / "planted.txt"))) == "EROFS"
        # The neutral path queries see is the same store, read-only too.
        neutral = f"/mnt/{sales_session}/data/raw.parquet"
        assert _in_worker(pid, _WRITE.format(path=neutral)) == "EROFS"
    assert not (parquet.parent.parent / "planted.txt").exists()
    assert engine.workers.read_only.active and engine.status().data_read_only
    assert parquet.read_bytes() == before
    # The engine process (imports) keeps its writable view.
    scratch = parquet.parent.parent.parent / "scratch.txt"
    assert _try_write(scratch) == "written"
    scratch.unlink()


async def test_duckdb_itself_cannot_write_from_a_query_worker(started: SqlEngine, sales_session: str) -> None:
    parquet = started.store.parquet_path(sales_session)
    target = parquet.parent / "copy.parquet"
    code = (
        "import duckdb\n"
        "con = duckdb.connect()  # deliberately NOT hardened: the mount alone must stop the write\n"
        "try:\n"
        f"    con.execute(\"COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet)\")\n"
        "    print('written')\n"
        "except duckdb.Error as exc:\n"
        "    print(exc)\n"
    )
    outcome = _in_worker(started.workers.worker_pids()[0], code)
    assert "Read-only file system" in outcome
    assert not target.exists()


async def test_without_the_mount_the_status_says_so(tmp_path: Path) -> None:
    from common.store import LocalDatasetStore
    from tests.services.sql_engine.conftest import make_settings

    settings: SqlEngineSettings = make_settings(tmp_path, sql_read_only_mount=False, sql_query_workers=1)
    engine = SqlEngine(LocalDatasetStore(settings.data_dir), settings)
    try:
        engine.start_workers()
        assert not engine.status().data_read_only
    finally:
        engine.close()


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
