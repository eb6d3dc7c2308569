"""The spool of an upload being received: a reader of its FIFO gets the bytes as they arrive, end-of-file
when the upload ends, fails or stalls, and nothing is left on disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from services.sql_engine import spool
from services.sql_engine.spool import SpoolFiles, Upload, UploadIncomplete


class _Reader(threading.Thread):
    """Reads a FIFO to its end, as DuckDB does, keeping what it read."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = b""
        self.start()

    def run(self) -> None:
        with self.path.open("rb", buffering=0) as pipe:  # each read returns what has arrived
            while chunk := pipe.read(1 << 16):
                self.data += chunk


def _eventually(condition, seconds: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_reader_gets_the_upload_as_it_arrives_then_end_of_file(tmp_path: Path) -> None:
    upload = Upload(tmp_path)
    upload.append(b"first,")
    with upload.stream() as stream:
        reader = _Reader(stream.path)
        assert _eventually(lambda: reader.data == b"first,"), "the received bytes were not sent on"
        assert reader.is_alive(), "end of file before the upload ended"
        upload.append(b"second\n" * 100_000)  # more than the pipe holds
        upload.finish()
        reader.join(5)
        assert not reader.is_alive()
        assert reader.data == b"first," + b"second\n" * 100_000
        assert stream.whole
    assert not stream.path.exists()
    upload.wait_complete()
    assert upload.path.read_bytes() == reader.data
    upload.discard()
    assert not any(tmp_path.iterdir())


def test_a_failed_upload_ends_the_stream_and_is_not_whole(tmp_path: Path) -> None:
    upload = Upload(tmp_path)
    upload.append(b"a,b\n1,2\n")
    with upload.stream() as stream:
        reader = _Reader(stream.path)
        assert _eventually(lambda: len(reader.data) == 8)
        upload.fail()  # the client left
        reader.join(5)
        assert not reader.is_alive(), "the reader still waits for a failed upload"
        assert not stream.whole
    with pytest.raises(UploadIncomplete):
        upload.wait_complete()
    with pytest.raises(UploadIncomplete):
        upload.wait_for(1 << 30)
    upload.discard()
    assert not any(tmp_path.iterdir())


def test_a_stalled_client_ends_the_stream_but_not_the_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "STALL_S", 0.2)
    upload = Upload(tmp_path)
    upload.append(b"a,b\n")
    with upload.stream() as stream:
        reader = _Reader(stream.path)
        reader.join(5)  # no more bytes for 0.2 s: end of file, so the reader lets go of its threads
        assert not reader.is_alive()
        assert stream.abandoned
    upload.append(b"1,2\n")
    upload.finish()
    upload.wait_complete()  # the upload itself goes on, and is read from the file
    assert not stream.whole
    assert upload.path.read_bytes() == b"a,b\n1,2\n"
    upload.discard()


def test_a_stream_nobody_opens_closes_at_once(tmp_path: Path) -> None:
    upload = Upload(tmp_path)
    upload.append(b"a,b\n")
    stream = upload.stream()
    started = time.monotonic()
    stream.close()  # e.g. DuckDB's statement failed before it opened the file
    assert time.monotonic() - started < 1
    assert not stream.path.exists()
    upload.discard()
    assert not any(tmp_path.iterdir())


def test_wait_for_returns_once_the_head_is_there_or_the_upload_ended(tmp_path: Path) -> None:
    upload = Upload(tmp_path)
    waited = threading.Event()

    def wait() -> None:
        upload.wait_for(10)
        waited.set()

    threading.Thread(target=wait, daemon=True).start()
    upload.append(b"12345")
    assert not waited.wait(0.1)
    upload.append(b"67890")
    assert waited.wait(5)
    upload.finish()
    upload.wait_for(1 << 30)  # a complete upload shorter than the head is all there is
    upload.discard()


def test_duckdb_reads_a_growing_csv_through_the_stream(tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    duckdb.execute(
        f"COPY (SELECT range AS id, 'name ' || range AS name, range / 7 AS ratio FROM range(300000))"
        f" TO '{source}' (HEADER)"
    )
    data = source.read_bytes()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    upload = Upload(spool_dir)

    def receive() -> None:
        for offset in range(0, len(data), 1 << 18):
            upload.append(data[offset : offset + (1 << 18)])
            time.sleep(0.002)
        upload.finish()

    with upload.stream() as stream:
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        streamed = duckdb.execute(f"SELECT * FROM read_csv('{stream.path}')").fetchall()
        receiver.join()
        assert stream.whole
    assert streamed == duckdb.execute(f"SELECT * FROM read_csv('{source}')").fetchall()
    upload.discard()


def test_a_finished_upload_file_is_rewritten_by_the_next_and_cut_to_its_size(tmp_path: Path) -> None:
    files = SpoolFiles(tmp_path)
    first = Upload(files)
    first.append(b"x" * 10_000)
    first.finish()
    inode = first.path.stat().st_ino
    first.discard(keep=True)
    assert [p.name.startswith("spare-") for p in tmp_path.iterdir()] == [True]
    second = Upload(files)
    assert second.path.stat().st_ino == inode, "the kept file was not reused"
    assert second.path.name.startswith("upload-")
    second.append(b"short\n")
    second.finish()
    second.wait_complete()
    assert second.path.read_bytes() == b"short\n", "the previous upload's bytes show past the new end"
    second.discard()
    files.clear()  # e.g. a dataset was deleted: no raw upload stays on disk
    assert not any(tmp_path.iterdir())


def test_only_finished_small_recent_uploads_are_kept(tmp_path: Path) -> None:
    files = SpoolFiles(tmp_path, keep=1, keep_bytes=100, keep_s=0.2)
    refused = Upload(files)
    refused.append(b"not a table")
    refused.finish()
    refused.discard()  # its import failed: not kept either
    assert not any(tmp_path.iterdir())
    failed = Upload(files)
    failed.append(b"half")
    failed.discard(keep=True)  # the client left: never kept
    assert not any(tmp_path.iterdir())
    large = Upload(files)
    large.append(b"x" * 101)
    large.finish()
    large.discard(keep=True)
    assert not any(tmp_path.iterdir()), "a file past keep_bytes was kept"
    for _ in range(2):  # one kept at most
        upload = Upload(files)
        upload.append(b"a,b\n")
        upload.finish()
        upload.discard(keep=True)
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1
    time.sleep(0.3)
    Upload(files).discard()  # an upload after keep_s: the old file is not reused but deleted
    assert not any(tmp_path.iterdir())


def test_slow_tells_a_slow_upload_from_a_fast_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "STREAM_AFTER_S", 0.1)
    monkeypatch.setattr(spool, "STREAM_BELOW_BPS", 1 << 20)
    fast = Upload(tmp_path)
    fast.append(b"x" * 1000)
    fast.finish()
    assert not fast.slow()  # complete: read from the file
    fast.discard()
    slow = Upload(tmp_path)
    slow.append(b"x" * 1000)  # 1 KB in 0.1 s: far below 1 MiB/s
    assert slow.slow()
    slow.discard()
    steady = Upload(tmp_path)
    steady.append(b"x" * (1 << 20))  # 1 MiB within the first 0.1 s: fast so far
    finisher = threading.Timer(0.25, steady.finish)
    finisher.start()
    assert not steady.slow(), "an upload faster than the threshold was streamed"
    steady.discard()
    failed = Upload(tmp_path)
    threading.Timer(0.05, failed.fail).start()
    with pytest.raises(UploadIncomplete):
        failed.slow()
    failed.discard()
