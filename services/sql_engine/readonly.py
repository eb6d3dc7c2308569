"""Makes the dataset folders read-only, at the OS level, for the processes that run queries.

Root ignores permission bits, so a chmod is no protection. Instead each query worker process (worker.py)
enters a private mount namespace of its own (`unshare(CLONE_NEWNS)`, called while it has a single thread)
where the store's folder is bind-mounted onto itself read-only, and again, read-only, at a neutral path so
that what a query can print never names the data directory. DuckDB's threads, started later, share that
view. The engine process itself (imports) keeps the writable view. Where the process lacks CAP_SYS_ADMIN
the step is skipped, logged and reported (`data_read_only=false` in GetEngineStatus).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_read_only_view(paths: Sequence[Path], alias: Path | None = None) -> None:
    """Moves the calling thread into a mount namespace where each of `paths` is read-only.

    With `alias`, the first path is also mounted (read-only) over `alias`, an existing folder.
    Raises OSError when the kernel refuses (no CAP_SYS_ADMIN, seccomp, ...).
    """
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Without this a mount made here could propagate back to the host's namespace.
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    for path in paths:
        target = os.fsencode(str(Path(path).absolute()))
        _check(_libc.mount(target, target, None, MS_BIND | MS_REC, None), f"bind {path}")
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        _check(_libc.mount(None, target, None, flags, None), f"remount {path} read-only")
    if alias is not None and paths:
        source = os.fsencode(str(Path(paths[0]).absolute()))
        target = os.fsencode(str(alias))
        _check(_libc.mount(source, target, None, MS_BIND | MS_REC, None), f"bind {alias}")
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        _check(_libc.mount(None, target, None, flags, None), f"remount {alias} read-only")


class ReadOnlyState:
    """Remembers whether every query worker got its read-only view (one failure turns it off)."""

    def __init__(self) -> None:
        self.attempted = 0
        self.failures = 0
        self.last_error = ""

    @property
    def active(self) -> bool:
        return self.attempted > 0 and self.failures == 0

    def record(self, read_only: bool, error: str = "") -> None:
        """One worker's outcome; a failure is logged (the data stays protected by DuckDB's settings only)."""
        self.attempted += 1
        if not read_only:
            self.failures += 1
            self.last_error = error
            log.warning("dataset folders stay writable for queries", extra={"error": error})
