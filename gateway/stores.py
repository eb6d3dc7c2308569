"""Which stores the gateway keeps its state in: SQLite files under the data directory (the default: one
gateway), or one PostgreSQL database when INSIGHTX_DATABASE_URL is set (any number of gateways).

Both stores open at start and run their schema migrations then, so a gateway that cannot reach or
migrate its database does not start (the error names the server, never the password).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.store.access import AccessStore
from common.store.chats import ChatRepository
from common.store.postgres import PostgresDatabase
from common.store.postgres_access import PostgresAccessStore
from common.store.postgres_chats import PostgresChatRepository
from common.store.sqlite_access import SqliteAccessStore
from common.store.sqlite_chats import SqliteChatRepository
from gateway.settings import GatewaySettings


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
