"""The gateway's access database: who owns which dataset, API tokens, and usage counted for quotas.

Embedded in `<data_dir>/gateway/access.sqlite3` (one gateway per data directory; several gateways put a shared
database behind the same modules). Each statement is small, so work runs under one lock in a thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    filename TEXT NOT NULL DEFAULT '',
    size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_by_user ON datasets(user_id, created_at);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used_at REAL
);
CREATE INDEX IF NOT EXISTS api_tokens_by_user ON api_tokens(user_id, created_at);
CREATE TABLE IF NOT EXISTS usage (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, day)
);
"""


class AccessDb:
    """One SQLite connection, used under a lock from worker threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _locked(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return work(self._conn, *args)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Runs `work(connection, *args)` in a thread, alone on the connection."""
        return await asyncio.to_thread(self._locked, work, *args)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_access_db(data_dir: Path) -> AccessDb:
    return AccessDb(Path(data_dir) / "gateway" / "access.sqlite3")
