"""Makes the dataset folders read-only, at the OS level, for the threads that run queries.

Root ignores permission bits, so a chmod is no protection. Instead each query thread enters a private
mount namespace of its own (`unshare(CLONE_NEWNS)` is allowed per thread: it also unshares the thread's
filesystem context) where the store's folder is bind-mounted onto itself read-only. DuckDB starts its
worker threads from the thread that opens the database, so they inherit that view. Imports run on other
threads, which keep the writable view. Where the process lacks CAP_SYS_ADMIN the step is skipped, logged
and reported (`data_read_only=false` in GetEngineStatus).
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


def enter_read_only_view(paths: Sequence[Path]) -> None:
    """Moves the calling thread into a mount namespace where each of `paths` is read-only.

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


class ReadOnlyState:
    """Remembers whether every query thread got its read-only view (one failure turns it off)."""

    def __init__(self) -> None:
        self.attempted = 0
        self.failures = 0
        self.last_error = ""

    @property
    def active(self) -> bool:
        return self.attempted > 0 and self.failures == 0

    def initializer(self, paths: Sequence[Path]) -> None:
        """ThreadPoolExecutor initializer: best effort, logged once per failure."""
        self.attempted += 1
        try:
            enter_read_only_view(paths)
        except OSError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.warning("dataset folders stay writable for queries", extra={"error": str(exc)})
