"""Per-user quotas: uploads, chat answers (each spends model calls), sandbox runs and SQL queries per UTC
day, and the storage of a user's datasets. A spent quota answers 429 with a message that says which
limit, its size, and when it resets."""

from __future__ import annotations

import time
from dataclasses import dataclass

from common.store.access import AccessStore

KINDS = {
    "uploads": "uploads",
    "chats": "chat answers",
    "python_runs": "Python runs",
    "sql_queries": "SQL queries",
}


@dataclass
class QuotaExceeded(Exception):
    """A limit the user has reached."""

    kind: str
    limit: int

    @property
    def message(self) -> str:
        if self.kind == "storage":
            return (
                f"Your datasets use the storage you are allowed ({self.limit:,} bytes): delete one "
                "(DELETE /api/datasets/{session_id}) before uploading more."
            )
        return (
            f"You have used your {self.limit:,} {KINDS[self.kind]} for today; the count resets at 00:00 UTC."
        )


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


class Quotas:
    """Daily counters in the access store (atomic across gateways); a limit of 0 means unlimited."""

    def __init__(self, db: AccessStore, limits: dict[str, int], storage_bytes: int) -> None:
        self.db = db
        self.limits = limits
        self.storage_limit = storage_bytes

    async def spend(self, user_id: str, kind: str) -> None:
        """Counts one use of `kind`, or raises QuotaExceeded (and counts nothing) when the day's is spent."""
        limit = self.limits.get(kind, 0)
        if not await self.db.spend(user_id, kind, today(), limit):
            raise QuotaExceeded(kind, limit)

    def check_storage(self, used_bytes: int) -> None:
        """Raises QuotaExceeded when a user's datasets already fill the storage quota."""
        if self.storage_limit and used_bytes >= self.storage_limit:
            raise QuotaExceeded("storage", self.storage_limit)
