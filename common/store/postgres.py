"""One PostgreSQL database shared by every gateway (`INSIGHTX_DATABASE_URL`): a psycopg 3 connection pool
and the schema migrations each store runs on it at start.

Any PostgreSQL works, Supabase's included (its connection string: the direct one, or the pooler's; in
transaction mode a pooler cannot keep prepared statements, so none are made). The URL carries a password:
it is never logged nor put in an error; `describe` names the server without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from common.store.migrations import Migration, migrate_postgres


class DatabaseUnavailable(RuntimeError):
    """The configured database could not be reached or used (the message names it without secrets)."""


def describe(url: str) -> str:
    """`user@host:port/dbname` of a connection string, without its password or options."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable INSIGHTX_DATABASE_URL (expected postgresql://user:password@host:port/dbname)"
    user, host = parts.get("user") or "(default user)", parts.get("host") or "localhost"
    return f"{user}@{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


class PostgresDatabase:
    """A pool of autocommit connections; stores borrow one per operation (`pool.connection()`)."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        self.pool = pool
        self.name = describe(url)

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10, timeout_s: float = 10.0) -> PostgresDatabase:
        """Connects (waiting up to `timeout_s` for a first connection) or raises DatabaseUnavailable."""
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise DatabaseUnavailable(
                f"INSIGHTX_DATABASE_URL is not a connection string: {describe(url)}"
            ) from None
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={"autocommit": True, "prepare_threshold": None},
            name="insightx",
        )
        try:
            await pool.open(wait=True, timeout=timeout_s)
        except PoolTimeout:
            await pool.close()
            raise DatabaseUnavailable(
                f"no connection to the database {describe(url)} within {timeout_s:g} s"
                " (INSIGHTX_DATABASE_URL): is the server up, and the user, password and database right?"
            ) from None
        return cls(pool, url)

    async def migrate(self, component: str, steps: Sequence[Migration]) -> int:
        """Brings `component`'s tables to the code's version; returns how many steps ran."""
        async with self.pool.connection() as conn:
            return await migrate_postgres(conn, component, steps)

    async def close(self) -> None:
        await self.pool.close()
