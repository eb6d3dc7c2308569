"""The shared event store on PostgreSQL: every orchestrator replica appends, follows and takes over answers.

Times are the database's own clock (`clock_timestamp()`), so replicas with skewed clocks agree on whose
lease ran out. Each append is one transaction that first renews the owner's lease with an UPDATE (which
row-locks the answer) and only then inserts: a `take_over` (an UPDATE of the same row, only where the
lease has run out) therefore either waits for that append and then sees the lease renewed, or wins first
and the old owner's UPDATE matches no row, so it stores nothing. Each append, finish and release also
sends `NOTIFY insightx_answer_events, '<answer_id>'` (delivered at commit); every replica LISTENs on one
connection of its own and wakes its followers of that answer at once. Followers still poll every
`poll_s`, the fallback while that connection is being re-established, and how a dead owner's lease is
seen to run out.

Finished answers (and orphans nobody resumed) are deleted after `retention_s`, by whichever replica
begins an answer at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from common.store.events import AnswerRecord, StoredEvent, Wakers, follow_store, new_answer_id
from common.store.migrations import Migration
from common.store.postgres import PostgresDatabase

MIGRATIONS = (
    Migration(
        1,
        "answers and their events",
        """
        CREATE TABLE IF NOT EXISTS answers (
            answer_id TEXT PRIMARY KEY,
            n BIGINT GENERATED ALWAYS AS IDENTITY,
            chat_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            message TEXT NOT NULL,
            owner TEXT NOT NULL,
            first_seq BIGINT NOT NULL DEFAULT 0,
            lease_expires_at DOUBLE PRECISION NOT NULL,
            finished BOOLEAN NOT NULL DEFAULT false,
            complete BOOLEAN NOT NULL DEFAULT false,
            stop_requested BOOLEAN NOT NULL DEFAULT false,
            created_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION
        );
        CREATE INDEX IF NOT EXISTS answers_by_chat ON answers(chat_id, n);
        CREATE TABLE IF NOT EXISTS answer_events (
            answer_id TEXT NOT NULL REFERENCES answers(answer_id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            event BYTEA NOT NULL,
            PRIMARY KEY (answer_id, seq)
        )
        """,
    ),
)

log = logging.getLogger(__name__)

CHANNEL = "insightx_answer_events"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', %s)"
_NOW = "extract(epoch from clock_timestamp())"
_RECORD = (
    "a.answer_id, a.chat_id, a.session_id, a.message, a.owner,"
    " coalesce((SELECT max(e.seq) FROM answer_events e WHERE e.answer_id = a.answer_id), a.first_seq),"
    f" a.finished, a.complete, a.stop_requested, (NOT a.finished AND a.lease_expires_at <= {_NOW})"
)
_SWEEP_EVERY_S = 60.0


def _record(row: Any) -> AnswerRecord:
    return AnswerRecord(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5]),
        bool(row[6]), bool(row[7]), bool(row[8]), bool(row[9]),
    )  # fmt: skip


class PostgresEventStore:
    """`EventStore` over a `PostgresDatabase` pool."""

    def __init__(self, db: PostgresDatabase, retention_s: float = 300.0) -> None:
        self.db = db
        self.retention_s = retention_s
        self._wakers = Wakers()
        self._swept = 0.0
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @classmethod
    async def open(cls, db: PostgresDatabase, retention_s: float = 300.0) -> PostgresEventStore:
        """Migrates, and starts listening for other replicas' appends."""
        await db.migrate("events", MIGRATIONS)
        store = cls(db, retention_s)
        store._listener = asyncio.get_running_loop().create_task(store._listen(), name="events:listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.listening.wait(), 10)  # else polling serves until it connects
        return store

    async def _conninfo(self) -> str:
        """The pool's connection string (psycopg_pool also takes one made by a function)."""
        info: Any = self.db.pool.conninfo
        if callable(info):
            info = info()
            if inspect.isawaitable(info):
                info = await info
        return str(info)

    async def _listen(self) -> None:
        """LISTENs on a connection of its own (outside the pool), reconnecting after a failure."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(await self._conninfo(), autocommit=True)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self._wakers.wake(note.payload)
                finally:
                    self.listening.clear()
                    await conn.close()
            except psycopg.Error as exc:
                log.warning("listening for answers' events failed; polling until it is back: %s", type(exc))
            await asyncio.sleep(1.0)

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]  # our own literal SQL
            return await cursor.fetchone()

    async def _record_where(self, where: str, params: Sequence[Any]) -> AnswerRecord | None:
        row = await self._one(f"SELECT {_RECORD} FROM answers a WHERE {where}", params)
        return _record(row) if row is not None else None

    async def begin(
        self, chat_id: str, session_id: str, message: str, owner: str, lease_s: float, first_seq: int = 0
    ) -> AnswerRecord:
        await self._sweep()
        answer_id = new_answer_id()
        await self._one(
            "INSERT INTO answers(answer_id, chat_id, session_id, message, owner, first_seq,"
            f" lease_expires_at, created_at) VALUES (%s,%s,%s,%s,%s,%s,{_NOW} + %s,{_NOW}) RETURNING n",
            (answer_id, chat_id, session_id, message, owner, first_seq, lease_s),
        )
        return AnswerRecord(answer_id, chat_id, session_id, message, owner, first_seq)

    async def latest(self, chat_id: str) -> AnswerRecord | None:
        return await self._record_where("a.chat_id = %s ORDER BY a.n DESC LIMIT 1", (chat_id,))

    async def get(self, answer_id: str) -> AnswerRecord | None:
        return await self._record_where("a.answer_id = %s", (answer_id,))

    async def append(self, answer_id: str, owner: str, events: Sequence[StoredEvent], lease_s: float) -> bool:
        async with self.db.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"UPDATE answers SET lease_expires_at = {_NOW} + %s"
                " WHERE answer_id = %s AND owner = %s AND NOT finished RETURNING 1",
                (lease_s, answer_id, owner),
            )
            if await cursor.fetchone() is None:
                return False
            if events:
                await conn.execute(
                    "INSERT INTO answer_events(answer_id, seq, event)"
                    " SELECT %s, s.seq, s.event FROM unnest(%s::bigint[], %s::bytea[]) AS s(seq, event)",
                    (answer_id, [seq for seq, _ in events], [blob for _, blob in events]),
                )
                await conn.execute(_NOTIFY, (answer_id,))
        self._wakers.wake(answer_id)
        return True

    async def read_after(self, answer_id: str, after_seq: int) -> list[StoredEvent]:
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT seq, event FROM answer_events WHERE answer_id = %s AND seq > %s ORDER BY seq",
                (answer_id, after_seq),
            )
            return [(int(seq), bytes(blob)) for seq, blob in await cursor.fetchall()]

    async def renew(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        row = await self._one(
            f"UPDATE answers a SET lease_expires_at = {_NOW} + %s"
            f" WHERE answer_id = %s AND owner = %s AND NOT finished RETURNING {_RECORD}",
            (lease_s, answer_id, owner),
        )
        return _record(row) if row is not None else None

    async def take_over(self, answer_id: str, owner: str, lease_s: float) -> AnswerRecord | None:
        row = await self._one(
            f"UPDATE answers a SET owner = %s, lease_expires_at = {_NOW} + %s WHERE answer_id = %s"
            f" AND NOT finished AND lease_expires_at <= {_NOW} RETURNING {_RECORD}",
            (owner, lease_s, answer_id),
        )
        return _record(row) if row is not None else None

    async def release(self, answer_id: str, owner: str) -> None:
        await self._notifying(
            "UPDATE answers SET lease_expires_at = 0 WHERE answer_id = %s AND owner = %s AND NOT finished",
            (answer_id, owner),
            answer_id,
        )

    async def finish(self, answer_id: str, owner: str, complete: bool) -> None:
        await self._notifying(
            f"UPDATE answers SET finished = true, complete = %s, finished_at = {_NOW}"
            " WHERE answer_id = %s AND owner = %s AND NOT finished",
            (complete, answer_id, owner),
            answer_id,
        )
        self._wakers.wake(answer_id)

    async def _notifying(self, sql: str, params: Sequence[Any], answer_id: str) -> None:
        """`sql` and a NOTIFY for the answer's followers, in one transaction."""
        async with self.db.pool.connection() as conn, conn.transaction():
            await conn.execute(sql, params)  # type: ignore[arg-type]  # our own literal SQL
            await conn.execute(_NOTIFY, (answer_id,))

    async def request_stop(self, chat_id: str, session_id: str) -> AnswerRecord | None:
        row = await self._one(
            f"UPDATE answers a SET stop_requested = true WHERE answer_id = (SELECT answer_id FROM answers"
            " WHERE chat_id = %s ORDER BY n DESC LIMIT 1) AND session_id = %s AND NOT finished"
            f" RETURNING {_RECORD}",
            (chat_id, session_id),
        )
        return _record(row) if row is not None else None

    def follow(self, answer_id: str, after_seq: int, poll_s: float) -> AsyncIterator[StoredEvent]:
        return follow_store(self, self._wakers, answer_id, after_seq, poll_s)

    async def _sweep(self) -> None:
        """Deletes answers finished (or orphaned) longer ago than the retention, at most once a minute."""
        now = time.monotonic()
        if now - self._swept < _SWEEP_EVERY_S:
            return
        self._swept = now
        await self._one(
            f"DELETE FROM answers WHERE (finished AND finished_at < {_NOW} - %s)"
            f" OR (NOT finished AND lease_expires_at < {_NOW} - %s) RETURNING 1",
            (self.retention_s, self.retention_s),
        )

    async def close(self) -> None:
        """Stops listening; the database is the caller's to close (it may be shared with other stores)."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
