"""An upload while it is received: appended to a spool file, and fed to DuckDB through a pipe as it grows.

Why: receiving a 148 MB upload costs 0.15 to 1 s on this VM (fresh pages for every new file), time in which
the import could already be converting. The receiver appends chunks to the spool file (`append`, on the
event loop, as before); the import thread waits for the head it sniffs (`wait_for`) and, for an upload
that arrives slowly (`slow`: DuckDB reads a pipe on one thread, a whole file on all), reads the CSV
through a FIFO (`stream`) that a pump thread fills from the spool file as the upload grows, with
`sendfile` (no copy through Python). The spool file stays the source of truth: when the streamed read
fails for any reason, the importer reads the complete file as before (`wait_complete`).

The pipe holds DuckDB's threads while the client is slow: a stream that starves for STALL_S seconds is
ended (`abandoned`), so a stalled client cannot hold the import database, and the import reads the file
once it is complete. A failed upload (the client left, too large) ends the pipe at once; the importer then
discards what DuckDB made of the truncated stream (`wait_complete` raises UploadIncomplete).

The spool files themselves are kept for the next uploads (SpoolFiles): on this VM a new file's pages cost
up to ten times a rewrite of a kept file's (148 MB: 270-360 ms against 30-45 ms), as fresh memory is
faulted in from the host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from common.errors import InvalidInput

STALL_S = 1.0  # a stream waiting this long for the client's next bytes is ended; the file is read after
# DuckDB reads a pipe on one thread (its CSV scan gets one thread per 8 MB of file size, and a pipe has
# none), at about 100 MB/s for a 17-column CSV, while it reads a whole file on every thread: stream only
# an upload that arrives slower than that, seen STREAM_AFTER_S after it began (a browser's, not a
# neighbour's on loopback, which is converted sooner in parallel once complete).
STREAM_AFTER_S = 0.5
STREAM_BELOW_BPS = 48 << 20
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: fewer wake-ups than the default 64 KiB (the unprivileged maximum)
_SEND_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_POLL_S = 0.05  # how often a blocked pump looks at whether its reader is gone


class UploadIncomplete(InvalidInput):
    """The upload ended without being complete (the client left, or it was refused while received)."""

    def __init__(self) -> None:
        super().__init__("UPLOAD_INCOMPLETE", "The upload ended before the whole file was received.")


class SpoolFiles:
    """Spool files kept for reuse: an upload rewrites a kept file from its start (then cuts it to its own
    size), so its pages are already in memory. Only a finished upload's file is kept, at most `keep` of
    them, each at most `keep_bytes`, for `keep_s` seconds; `clear` (a dataset was deleted) and `close`
    delete them, so a raw upload does not outlive its dataset on disk."""

    def __init__(
        self, spool_dir: Path, keep: int = 2, keep_bytes: int = 512 << 20, keep_s: float = 60.0
    ) -> None:
        self.spool_dir = spool_dir
        self.keep, self.keep_bytes, self.keep_s = keep, keep_bytes, keep_s
        self._idle: list[tuple[Path, float]] = []  # (path, when it was given back)
        self._lock = threading.Lock()

    def take(self) -> tuple[int, Path]:
        """An open (write-only, at offset 0) spool file named upload-*: a kept one, else a new one."""
        self._expire()
        with self._lock:
            kept = self._idle.pop()[0] if self._idle else None
        if kept is not None:
            path = kept.with_name("upload-" + kept.name.removeprefix("spare-"))
            try:
                os.replace(kept, path)
                return os.open(path, os.O_WRONLY), path
            except OSError:  # removed meanwhile (clear): make a new one
                pass
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
        return fd, Path(name)

    def give_back(self, path: Path, size: int) -> None:
        """Keeps the file of a finished upload (renamed spare-*), or deletes it when enough are kept."""
        self._expire()
        with self._lock:
            if size <= self.keep_bytes and len(self._idle) < self.keep:
                spare = path.with_name("spare-" + path.name.removeprefix("upload-"))
                os.replace(path, spare)
                self._idle.append((spare, time.monotonic()))
                return
        path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Deletes every kept file."""
        with self._lock:
            idle, self._idle = self._idle, []
        for path, _ in idle:
            path.unlink(missing_ok=True)

    close = clear

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [path for path, since in self._idle if now - since > self.keep_s]
            self._idle = [(path, since) for path, since in self._idle if now - since <= self.keep_s]
        for path in old:
            path.unlink(missing_ok=True)


class Upload:
    """A spool file being written by the receiver (`append`, then `finish` or `fail`) and read meanwhile
    by the import thread. Thread-safe; `discard` deletes the file, or gives it back to `files`."""

    def __init__(self, files: SpoolFiles | Path) -> None:
        self._files = files if isinstance(files, SpoolFiles) else SpoolFiles(files, keep=0)
        fd, self.path = self._files.take()
        self._fd: int | None = fd
        self._size = 0
        self._started = time.monotonic()
        self._state = "receiving"  # then "complete" or "failed"
        self._changed = threading.Condition()
        # held while the file descriptor is written or closed: `fail` may come from another thread than
        # `append`/`finish`, and a descriptor closed twice closes whatever file reused its number
        self._fd_lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    @property
    def complete(self) -> bool:
        return self._state == "complete"

    def append(self, chunk: bytes | memoryview) -> None:
        """Writes `chunk` at the end of the spool file (a blocking write, as any file write)."""
        view = memoryview(chunk)
        with self._fd_lock:
            assert self._fd is not None, "append after finish"
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        with self._changed:
            self._size += len(chunk)
            self._changed.notify_all()

    def finish(self) -> None:
        """The whole file is received."""
        self._end("complete")

    def fail(self) -> None:
        """The upload will not be complete: readers waiting on it stop (UploadIncomplete)."""
        self._end("failed")

    def _end(self, state: str) -> None:
        with self._fd_lock:
            fd, self._fd = self._fd, None
            if state == "complete" and fd is not None and self._state == "receiving":
                os.ftruncate(fd, self._size)  # a kept file may be longer: the upload is what was written
            if fd is not None:
                os.close(fd)  # once: the descriptor is taken under the lock
        with self._changed:
            if self._state == "receiving":
                self._state = state
            self._changed.notify_all()

    def discard(self, keep: bool = False) -> None:
        """Ends the upload (failed, unless finished) and deletes the spool file, or, with `keep` (its
        import was stored), gives a finished one back for reuse. Call it once nothing reads the file."""
        self.fail()
        if keep and self.complete:
            self._files.give_back(self.path, self._size)
        else:
            self.path.unlink(missing_ok=True)

    def wait_for(self, size: int, seconds_from_start: float | None = None) -> None:
        """Blocks until `size` bytes are received or the upload has ended (or, given `seconds_from_start`,
        that long after the upload began); raises UploadIncomplete when it failed."""
        timeout = None
        if seconds_from_start is not None:
            timeout = max(0.0, self._started + seconds_from_start - time.monotonic())
        with self._changed:
            self._changed.wait_for(lambda: self._size >= size or self._state != "receiving", timeout)
            if self._state == "failed":
                raise UploadIncomplete()

    def wait_complete(self) -> None:
        """Blocks until the upload is complete; raises UploadIncomplete when it failed."""
        with self._changed:
            self._changed.wait_for(lambda: self._state != "receiving")
            if self._state == "failed":
                raise UploadIncomplete()

    def slow(self) -> bool:
        """Whether the upload is worth converting while it arrives: still arriving STREAM_AFTER_S after it
        began (then again every STREAM_AFTER_S), below STREAM_BELOW_BPS. Waits until it can tell; False
        once complete; raises UploadIncomplete when it failed."""
        looks = 1
        with self._changed:
            while True:
                timeout = self._started + looks * STREAM_AFTER_S - time.monotonic()
                self._changed.wait_for(lambda: self._state != "receiving", max(0.0, timeout))
                if self._state == "failed":
                    raise UploadIncomplete()
                if self._state == "complete":
                    return False
                if self._size / (time.monotonic() - self._started) < STREAM_BELOW_BPS:
                    return True
                looks += 1

    def stream(self) -> Stream:
        """A FIFO next to the spool file, fed with the upload as it arrives (use it as a context manager)."""
        return Stream(self)

    def _wait_beyond(self, offset: int, timeout: float) -> tuple[int, str]:
        """(size, state) once the upload holds more than `offset` bytes or has ended, or after `timeout`."""
        with self._changed:
            self._changed.wait_for(lambda: self._size > offset or self._state != "receiving", timeout)
            return self._size, self._state


class Stream:
    """A FIFO a reader (DuckDB's read_csv) opens by path, fed from the upload by a pump thread.

    The reader sees end-of-file when the upload is complete and every byte was sent, when the upload
    failed, when the client stalled (`abandoned`), or when `close` is called. `whole` says whether the
    reader was given the complete upload, the only case in which what it read may be kept.
    """

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.path = upload.path.with_name(upload.path.name + ".fifo")
        os.mkfifo(self.path, 0o600)
        self.sent = 0
        self.abandoned = False
        self._failed = False
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._run, name="import-stream", daemon=True)
        self._pump.start()

    @property
    def whole(self) -> bool:
        upload = self.upload
        return upload.complete and not (self.abandoned or self._failed) and self.sent == upload.size

    def close(self) -> None:
        """Stops the pump (the reader is done with the pipe) and removes the FIFO."""
        self._closed.set()
        self._pump.join()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        pipe = self._open_writer()
        if pipe is None:
            return  # the reader never came (its statement failed first) and was closed
        try:
            with open(self.upload.path, "rb") as source:
                self._pump_from(source.fileno(), pipe)
        except OSError:  # EPIPE: the reader stopped reading (DuckDB's statement ended)
            self._failed = True
        finally:
            os.close(pipe)  # the reader's end of file

    def _open_writer(self) -> int | None:
        """The pipe's write end, once a reader has it open (opening it before would block, or would lose the
        data if closed before the reader came)."""
        while not self._closed.is_set():
            try:
                pipe = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                self._closed.wait(0.002)
                continue
            with contextlib.suppress(OSError):  # a lower pipe-max-size: the default works, more wake-ups
                fcntl.fcntl(pipe, _F_SETPIPE_SZ, _PIPE_BYTES)
            return pipe
        return None

    def _pump_from(self, source: int, pipe: int) -> None:
        starved = 0.0
        while not self._closed.is_set():
            waited = time.monotonic()
            size, state = self.upload._wait_beyond(self.sent, min(_POLL_S, STALL_S - starved))
            if state == "failed":
                self._failed = True
                return
            if size == self.sent:
                if state == "complete":
                    return  # all sent: end of file
                starved += time.monotonic() - waited
                if starved >= STALL_S:
                    self.abandoned = True
                    return
                continue
            starved = 0.0
            # The pipe may be full while the reader works: wait for room, looking at _closed meanwhile.
            _, writable, _ = select.select([], [pipe], [], _POLL_S)
            if not writable:
                continue
            try:
                self.sent += os.sendfile(pipe, source, self.sent, min(size - self.sent, _SEND_BYTES))
            except BlockingIOError:
                continue
