"""Which user owns each dataset (session). Chats, messages and insights belong to their session, so to its
owner; a session someone else owns is answered exactly like one that does not exist (404, never 403)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from common.store.access import AccessStore


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
    """Dataset owners in the access store."""

    def __init__(self, db: AccessStore) -> None:
        self.db = db

    async def claim(self, session_id: str, user_id: str, filename: str, size_bytes: int) -> None:
        """Records a new upload as the user's (a session id is made by the engine, so it is new)."""
        await self.db.claim_dataset(session_id, user_id, filename, size_bytes, time.time())

    async def owns(self, user_id: str, session_id: str) -> bool:
        return await self.db.owns_dataset(user_id, session_id)

    async def datasets(self, user_id: str) -> list[OwnedDataset]:
        """The user's datasets, newest first."""
        return [OwnedDataset(*row) for row in await self.db.datasets_of(user_id)]

    async def storage_bytes(self, user_id: str) -> int:
        return await self.db.storage_bytes(user_id)

    async def forget(self, session_id: str) -> None:
        await self.db.forget_dataset(session_id)

    async def older_than(self, cutoff: float) -> list[str]:
        """Session ids uploaded before `cutoff` (epoch seconds): retention has ended for them."""
        return await self.db.datasets_before(cutoff)
