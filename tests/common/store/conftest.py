"""Both backends for the stores' contract tests: each test runs on SQLite and on a real PostgreSQL.

`backend.open_access()` / `open_chats()` open one more store on the test's own database, as one more
gateway would (its own SQLite connection, or its own PostgreSQL pool); all are closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.store.access import AccessStore
from common.store.chats import ChatRepository
from common.store.postgres import PostgresDatabase
from common.store.postgres_access import PostgresAccessStore
from common.store.postgres_chats import PostgresChatRepository
from common.store.sqlite_access import SqliteAccessStore
from common.store.sqlite_chats import SqliteChatRepository


@dataclass
class Backend:
    """Opens stores on one test's database."""

    kind: str
    root: Path
    url: str = ""
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def database(self) -> PostgresDatabase:
        db = await PostgresDatabase.open(self.url, max_size=4)
        self._closers.append(db.close)
        return db

    async def open_access(self) -> AccessStore:
        if self.kind == "sqlite":
            store: AccessStore = SqliteAccessStore(self.root / "gateway" / "access.sqlite3")
        else:
            store = await PostgresAccessStore.open(await self.database())

        async def close() -> None:
            store.close()

        self._closers.insert(0, close)
        return store

    async def open_chats(self) -> ChatRepository:
        if self.kind == "sqlite":
            repo: ChatRepository = SqliteChatRepository(self.root)
        else:
            repo = await PostgresChatRepository.open(await self.database())
        self._closers.insert(0, repo.close)
        return repo

    async def close(self) -> None:
        for close in self._closers:
            await close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    opened = Backend(request.param, tmp_path, url)
    yield opened
    await opened.close()
