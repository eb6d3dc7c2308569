"""The shared access store on PostgreSQL: ownership, API tokens and usage for any number of gateways."""

from __future__ import annotations

from typing import Any

from common.store.access import DatasetRow, TokenRow
from common.store.migrations import Migration
from common.store.postgres import PostgresDatabase

MIGRATIONS = (
    Migration(
        1,
        "datasets, api_tokens, usage",
        """
        CREATE TABLE IF NOT EXISTS datasets (
            session_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            filename TEXT NOT NULL DEFAULT '',
            size_bytes BIGINT NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX IF NOT EXISTS datasets_by_user ON datasets(user_id, created_at);
        CREATE INDEX IF NOT EXISTS datasets_by_age ON datasets(created_at);
        CREATE TABLE IF NOT EXISTS api_tokens (
            token_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            created_at DOUBLE PRECISION NOT NULL,
            last_used_at DOUBLE PRECISION
        );
        CREATE INDEX IF NOT EXISTS api_tokens_by_user ON api_tokens(user_id, created_at);
        CREATE TABLE IF NOT EXISTS usage (
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            day TEXT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (user_id, kind, day)
        )
        """,
    ),
)


class PostgresAccessStore:
    """Each method is one statement on a pooled connection (autocommit), so gateways never hold locks."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: PostgresDatabase) -> PostgresAccessStore:
        await db.migrate("access", MIGRATIONS)
        return cls(db)

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]  # our own literal SQL
            return await cursor.fetchall()

    async def _one(self, sql: str, *params: Any) -> Any:
        rows = await self._all(sql, *params)
        return rows[0] if rows else None

    async def _write(self, sql: str, *params: Any) -> int:
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
            return cursor.rowcount

    async def claim_dataset(
        self, session_id: str, user_id: str, filename: str, size_bytes: int, created_at: float
    ) -> None:
        await self._write(
            "INSERT INTO datasets VALUES (%s,%s,%s,%s,%s) ON CONFLICT (session_id) DO NOTHING",
            session_id,
            user_id,
            filename,
            size_bytes,
            created_at,
        )

    async def owns_dataset(self, user_id: str, session_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM datasets WHERE session_id=%s AND user_id=%s", session_id, user_id
        )
        return row is not None

    async def datasets_of(self, user_id: str) -> list[DatasetRow]:
        rows = await self._all(
            "SELECT session_id, filename, size_bytes, created_at FROM datasets WHERE user_id=%s"
            " ORDER BY created_at DESC, session_id",
            user_id,
        )
        return [DatasetRow(*row) for row in rows]

    async def storage_bytes(self, user_id: str) -> int:
        row = await self._one("SELECT sum(size_bytes) FROM datasets WHERE user_id=%s", user_id)
        return int(row[0] or 0)

    async def forget_dataset(self, session_id: str) -> None:
        await self._write("DELETE FROM datasets WHERE session_id=%s", session_id)

    async def datasets_before(self, cutoff: float) -> list[str]:
        rows = await self._all("SELECT session_id FROM datasets WHERE created_at < %s", cutoff)
        return [row[0] for row in rows]

    async def add_token(self, token_id: str, user_id: str, name: str, digest: str, created_at: float) -> None:
        await self._write(
            "INSERT INTO api_tokens VALUES (%s,%s,%s,%s,%s,NULL)", token_id, user_id, name, digest, created_at
        )

    async def tokens_of(self, user_id: str) -> list[TokenRow]:
        rows = await self._all(
            "SELECT token_id, name, created_at, last_used_at FROM api_tokens WHERE user_id=%s"
            " ORDER BY created_at, token_id",
            user_id,
        )
        return [TokenRow(*row) for row in rows]

    async def revoke_token(self, user_id: str, token_id: str) -> bool:
        count = await self._write(
            "DELETE FROM api_tokens WHERE token_id=%s AND user_id=%s", token_id, user_id
        )
        return count > 0

    async def use_token(self, digest: str, now: float) -> str | None:
        row = await self._one(
            "UPDATE api_tokens SET last_used_at=%s WHERE digest=%s RETURNING user_id", now, digest
        )
        return str(row[0]) if row else None

    async def spend(self, user_id: str, kind: str, day: str, limit: int) -> bool:
        # One statement: the row lock of ON CONFLICT ... DO UPDATE orders concurrent spenders, and the WHERE
        # sees the count each one left, so no gateway counts past the limit.
        row = await self._one(
            "INSERT INTO usage AS u VALUES (%s,%s,%s,1) ON CONFLICT (user_id, kind, day)"
            " DO UPDATE SET count = u.count + 1 WHERE %s <= 0 OR u.count < %s RETURNING u.count",
            user_id,
            kind,
            day,
            limit,
            limit,
        )
        return row is not None

    async def usage(self, user_id: str, kind: str, day: str) -> int:
        row = await self._one(
            "SELECT count FROM usage WHERE user_id=%s AND kind=%s AND day=%s", user_id, kind, day
        )
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Nothing of its own: the pool belongs to the PostgresDatabase."""
