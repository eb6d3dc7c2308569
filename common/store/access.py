"""The gateway's access state behind one interface: who owns which dataset, API tokens (as digests), and
usage counted for daily quotas.

Two implementations keep the same contract (tests/common/store/test_access_contract.py runs it on both):
`SqliteAccessStore` (embedded, `<data_dir>/gateway/access.sqlite3`, one gateway per data directory) and
`PostgresAccessStore` (`INSIGHTX_DATABASE_URL`: any number of gateways share it). Each keeps its SQL to
itself; callers (gateway/ownership.py, tokens.py, quotas.py) speak only these methods.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class DatasetRow(NamedTuple):
    """An owned dataset as its owner lists it."""

    session_id: str
    filename: str
    size_bytes: int
    created_at: float


class TokenRow(NamedTuple):
    """An API token's public description (its secret is never stored, only its digest)."""

    token_id: str
    name: str
    created_at: float
    last_used_at: float | None


class AccessStore(Protocol):
    """Ownership, API tokens and usage counters (every method is safe to call from the event loop)."""

    async def claim_dataset(
        self, session_id: str, user_id: str, filename: str, size_bytes: int, created_at: float
    ) -> None:
        """Records an upload as the user's; a session already claimed keeps its owner."""
        ...

    async def owns_dataset(self, user_id: str, session_id: str) -> bool: ...

    async def datasets_of(self, user_id: str) -> list[DatasetRow]:
        """The user's datasets, newest first."""
        ...

    async def storage_bytes(self, user_id: str) -> int: ...

    async def forget_dataset(self, session_id: str) -> None: ...

    async def datasets_before(self, cutoff: float) -> list[str]:
        """Session ids uploaded before `cutoff` (epoch seconds)."""
        ...

    async def add_token(
        self, token_id: str, user_id: str, name: str, digest: str, created_at: float
    ) -> None: ...

    async def tokens_of(self, user_id: str) -> list[TokenRow]:
        """The user's tokens, oldest first."""
        ...

    async def revoke_token(self, user_id: str, token_id: str) -> bool:
        """Whether the user's token existed (and is now gone)."""
        ...

    async def use_token(self, digest: str, now: float) -> str | None:
        """The user a token digest acts as (its last use set to `now`), or None."""
        ...

    async def spend(self, user_id: str, kind: str, day: str, limit: int) -> bool:
        """Counts one use of `kind` on `day` unless `limit` (> 0) is reached; whether it was counted.
        Atomic: concurrent spenders on any number of gateways never count past the limit."""
        ...

    async def usage(self, user_id: str, kind: str, day: str) -> int: ...

    def close(self) -> None:
        """Releases what the store holds of its own (a shared PostgreSQL pool is closed by its owner)."""
        ...
