"""API tokens for scripts: made by a signed-in user, shown once, stored only as a SHA-256 digest, revocable.

A token (`ixt_…`) acts as the user who made it. Revoking one answers 404 for a token that is not the
caller's, like every other resource.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from gateway.accessdb import AccessDb

PREFIX = "ixt_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """A token's public description (never its secret)."""

    token_id: str
    name: str
    created_at: float
    last_used_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


class ApiTokens:
    """The api_tokens table of the access database."""

    def __init__(self, db: AccessDb) -> None:
        self.db = db

    async def create(self, user_id: str, name: str) -> tuple[ApiToken, str]:
        """A new token for `user_id`, and its secret (shown to the caller once)."""
        secret = PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(secrets.token_hex(8), name, time.time(), None)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)",
                (token.token_id, user_id, name, digest(secret), token.created_at),
            )

        await self.db.run(write)
        return token, secret

    async def list(self, user_id: str) -> list[ApiToken]:
        def read(conn: sqlite3.Connection) -> list[ApiToken]:
            rows = conn.execute(
                "SELECT token_id, name, created_at, last_used_at FROM api_tokens WHERE user_id=?"
                " ORDER BY created_at",
                (user_id,),
            ).fetchall()
            return [ApiToken(*row) for row in rows]

        return await self.db.run(read)

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """Whether the user's token existed (and is now gone)."""

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM api_tokens WHERE token_id=? AND user_id=?", (token_id, user_id)
            )
            return cursor.rowcount > 0

        return await self.db.run(write)

    async def user_for(self, secret: str) -> str | None:
        """The user a token secret acts as, or None for an unknown (or revoked) one."""
        if not secret.startswith(PREFIX):
            return None

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT user_id FROM api_tokens WHERE digest=?", (digest(secret),)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE api_tokens SET last_used_at=? WHERE digest=?", (time.time(), digest(secret)))
            return str(row[0])

        return await self.db.run(read)
