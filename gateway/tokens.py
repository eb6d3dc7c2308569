"""API tokens for scripts: made by a signed-in user, shown once, stored only as a SHA-256 digest, revocable.

A token (`ixt_…`) acts as the user who made it. Revoking one answers 404 for a token that is not the
caller's, like every other resource.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from common.store.access import AccessStore

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
    """API tokens in the access store."""

    def __init__(self, db: AccessStore) -> None:
        self.db = db

    async def create(self, user_id: str, name: str) -> tuple[ApiToken, str]:
        """A new token for `user_id`, and its secret (shown to the caller once)."""
        secret = PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(secrets.token_hex(8), name, time.time(), None)
        await self.db.add_token(token.token_id, user_id, name, digest(secret), token.created_at)
        return token, secret

    async def list(self, user_id: str) -> list[ApiToken]:
        return [ApiToken(*row) for row in await self.db.tokens_of(user_id)]

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """Whether the user's token existed (and is now gone)."""
        return await self.db.revoke_token(user_id, token_id)

    async def user_for(self, secret: str) -> str | None:
        """The user a token secret acts as, or None for an unknown (or revoked) one."""
        if not secret.startswith(PREFIX):
            return None
        return await self.db.use_token(digest(secret), time.time())
