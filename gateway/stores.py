"""Which stores the gateway keeps its state in: SQLite files under the data directory (the default: one
gateway), or one PostgreSQL database when INSIGHTX_DATABASE_URL is set (any number of gateways).

Both stores open at start and run their schema migrations then, so a gateway that cannot reach or
migrate its database does not start (the error names the server, never the password).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from fastapi import Request
from fastapi.responses import JSONResponse

from common.store.access import AccessStore
from common.store.chats import ChatRepository
from common.store.postgres import PostgresDatabase
from common.store.postgres_access import PostgresAccessStore
from common.store.postgres_chats import PostgresChatRepository
from common.store.sqlite_access import SqliteAccessStore
from common.store.sqlite_chats import SqliteChatRepository
from gateway.errors import error_response
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

#: What a store raises when PostgreSQL is down or refuses (the pool's wait for a connection included).
DATABASE_ERRORS = (psycopg.OperationalError,)


@dataclass
class Stores:
    """The gateway's chats and access state, and the shared database under them (if any)."""

    chats: ChatRepository
    access: AccessStore
    database: PostgresDatabase | None = None

    @property
    def kind(self) -> str:
        return "postgresql" if self.database is not None else "sqlite"

    async def close(self) -> None:
        await self.chats.close()
        self.access.close()
        if self.database is not None:
            await self.database.close()


async def open_stores(settings: GatewaySettings) -> Stores:
    """The configured stores, migrated."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        database = await PostgresDatabase.open(
            settings.database_url.get_secret_value(),
            max_size=settings.database_pool_size,
            timeout_s=settings.database_connect_timeout_s,
        )
        try:
            chats = await PostgresChatRepository.open(database)
            access = await PostgresAccessStore.open(database)
        except BaseException:
            await database.close()
            raise
        return Stores(chats, access, database)
    data_dir = Path(settings.data_dir)
    return Stores(SqliteChatRepository(data_dir), SqliteAccessStore(data_dir / "gateway" / "access.sqlite3"))


async def database_unavailable_handler(_: Request, exc: Exception) -> JSONResponse:
    """A database outage answers 503 with a message a person can act on (never the server's own words,
    which may name hosts and users), and the gateway keeps serving: the pool reconnects when it is back."""
    log.warning("database unavailable", extra={"error": type(exc).__name__})
    return error_response(
        503,
        "DATABASE_UNAVAILABLE",
        "The database is unreachable right now; try again shortly.",
        {"Retry-After": "5"},
    )
