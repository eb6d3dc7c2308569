"""The embedded access store: SQLite at `<data_dir>/gateway/access.sqlite3`, one gateway per data directory.

Each statement is small, so work runs under one lock in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common.store.access import DatasetRow, TokenRow
from common.store.migrations import Migration, migrate_sqlite

T = TypeVar("T")

MIGRATIONS = (
    Migration(
        1,
        "datasets, api_tokens, usage",
        """
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
        )
        """,
    ),
)


class SqliteAccessStore:
    """One SQLite connection, used under a lock from worker threads (IF NOT EXISTS in step 1 adopts a
    database made before migrations were recorded)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        migrate_sqlite(self._conn, "access", MIGRATIONS)
        self._lock = threading.Lock()

    def _locked(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return work(*args)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, work, *args)

    def _all(self, sql: str, *params: Any) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, *params: Any) -> Any:
        rows = self._conn.execute(sql, params).fetchall()  # to the end: a RETURNING statement completes
        return rows[0] if rows else None

    def _write(self, sql: str, *params: Any) -> int:
        return self._conn.execute(sql, params).rowcount

    async def claim_dataset(
        self, session_id: str, user_id: str, filename: str, size_bytes: int, created_at: float
    ) -> None:
        await self._run(
            self._write,
            "INSERT OR IGNORE INTO datasets VALUES (?,?,?,?,?)",
            session_id,
            user_id,
            filename,
            size_bytes,
            created_at,
        )

    async def owns_dataset(self, user_id: str, session_id: str) -> bool:
        row = await self._run(
            self._one, "SELECT 1 FROM datasets WHERE session_id=? AND user_id=?", session_id, user_id
        )
        return row is not None

    async def datasets_of(self, user_id: str) -> list[DatasetRow]:
        rows = await self._run(
            self._all,
            "SELECT session_id, filename, size_bytes, created_at FROM datasets WHERE user_id=?"
            " ORDER BY created_at DESC, session_id",
            user_id,
        )
        return [DatasetRow(*row) for row in rows]

    async def storage_bytes(self, user_id: str) -> int:
        row = await self._run(self._one, "SELECT sum(size_bytes) FROM datasets WHERE user_id=?", user_id)
        return int(row[0] or 0)

    async def forget_dataset(self, session_id: str) -> None:
        await self._run(self._write, "DELETE FROM datasets WHERE session_id=?", session_id)

    async def datasets_before(self, cutoff: float) -> list[str]:
        rows = await self._run(self._all, "SELECT session_id FROM datasets WHERE created_at < ?", cutoff)
        return [row[0] for row in rows]

    async def add_token(self, token_id: str, user_id: str, name: str, digest: str, created_at: float) -> None:
        await self._run(
            self._write,
            "INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)",
            token_id,
            user_id,
            name,
            digest,
            created_at,
        )

    async def tokens_of(self, user_id: str) -> list[TokenRow]:
        rows = await self._run(
            self._all,
            "SELECT token_id, name, created_at, last_used_at FROM api_tokens WHERE user_id=?"
            " ORDER BY created_at, token_id",
            user_id,
        )
        return [TokenRow(*row) for row in rows]

    async def revoke_token(self, user_id: str, token_id: str) -> bool:
        count = await self._run(
            self._write, "DELETE FROM api_tokens WHERE token_id=? AND user_id=?", token_id, user_id
        )
        return count > 0

    async def use_token(self, digest: str, now: float) -> str | None:
        row = await self._run(
            self._one, "UPDATE api_tokens SET last_used_at=? WHERE digest=? RETURNING user_id", now, digest
        )
        return str(row[0]) if row else None

    async def spend(self, user_id: str, kind: str, day: str, limit: int) -> bool:
        row = await self._run(
            self._one,
            "INSERT INTO usage VALUES (?,?,?,1) ON CONFLICT(user_id, kind, day)"
            " DO UPDATE SET count = count + 1 WHERE ? <= 0 OR count < ? RETURNING count",
            user_id,
            kind,
            day,
            limit,
            limit,
        )
        return row is not None

    async def usage(self, user_id: str, kind: str, day: str) -> int:
        row = await self._run(
            self._one, "SELECT count FROM usage WHERE user_id=? AND kind=? AND day=?", user_id, kind, day
        )
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
