"""Which user owns each dataset (session). Chats, messages and insights belong to their session, so to its
owner; a session someone else owns is answered exactly like one that does not exist (404, never 403)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from gateway.accessdb import AccessDb


@dataclass(frozen=True)
class OwnedDataset:
    """A dataset as its owner lists it."""

    session_id: str
    filename: str
    size_bytes: int
    created_at: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Ownership:
    """The datasets table of the access database."""

    def __init__(self, db: AccessDb) -> None:
        self.db = db

    async def claim(self, session_id: str, user_id: str, filename: str, size_bytes: int) -> None:
        """Records a new upload as the user's (a session id is made by the engine, so it is new)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO datasets VALUES (?,?,?,?,?)",
                (session_id, user_id, filename, size_bytes, time.time()),
            )

        await self.db.run(write)

    async def owns(self, user_id: str, session_id: str) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM datasets WHERE session_id=? AND user_id=?", (session_id, user_id)
            ).fetchone()
            return row is not None

        return await self.db.run(read)

    async def datasets(self, user_id: str) -> list[OwnedDataset]:
        """The user's datasets, newest first."""

        def read(conn: sqlite3.Connection) -> list[OwnedDataset]:
            rows = conn.execute(
                "SELECT session_id, filename, size_bytes, created_at FROM datasets WHERE user_id=?"
                " ORDER BY created_at DESC",
                (user_id,),
            ).fetchall()
            return [OwnedDataset(*row) for row in rows]

        return await self.db.run(read)

    async def storage_bytes(self, user_id: str) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT sum(size_bytes) FROM datasets WHERE user_id=?", (user_id,)).fetchone()
            return int(row[0] or 0)

        return await self.db.run(read)

    async def forget(self, session_id: str) -> None:
        await self.db.run(lambda conn: conn.execute("DELETE FROM datasets WHERE session_id=?", (session_id,)))

    async def older_than(self, cutoff: float) -> list[str]:
        """Session ids uploaded before `cutoff` (epoch seconds): retention has ended for them."""

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT session_id FROM datasets WHERE created_at < ?", (cutoff,)).fetchall()
            return [row[0] for row in rows]

        return await self.db.run(read)
