"""The shared chat store on PostgreSQL: chats, messages and insights for any number of gateways.

Answers are stored as JSON text (not jsonb): an answer may hold NaN or an infinity, which jsonb refuses.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import psycopg

from common.store.chats import TITLE_CHARS, Chat, Insight, StoredMessage
from common.store.migrations import Migration
from common.store.postgres import PostgresDatabase

MIGRATIONS = (
    Migration(
        1,
        "chats, messages, insights",
        """
        CREATE TABLE IF NOT EXISTS chats (
            chat_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX IF NOT EXISTS chats_by_session ON chats(session_id, created_at);
        CREATE TABLE IF NOT EXISTS messages (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            chat_id TEXT NOT NULL REFERENCES chats(chat_id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            answer_json TEXT,
            sql TEXT,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id, id);
        CREATE TABLE IF NOT EXISTS insights (
            id BIGINT GENERATED ALWAYS AS IDENTITY,
            insight_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            text TEXT NOT NULL,
            sql TEXT NOT NULL DEFAULT '',
            chat_id TEXT NOT NULL DEFAULT '',
            answer_json TEXT,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX IF NOT EXISTS insights_by_session ON insights(session_id, created_at)
        """,
    ),
    Migration(2, "an answer's card", "ALTER TABLE messages ADD COLUMN IF NOT EXISTS card_json TEXT"),
    Migration(
        3,
        "one answer per question",
        """
        ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_to BIGINT;
        CREATE UNIQUE INDEX IF NOT EXISTS messages_one_reply ON messages(reply_to) WHERE reply_to IS NOT NULL
        """,
    ),
)

_ENSURE_CHAT = (
    "INSERT INTO chats(chat_id, session_id, title, created_at) VALUES (%s,%s,%s,%s)"
    " ON CONFLICT (chat_id) DO NOTHING"
)
# A message for a chat that is gone (deleted while its answer ran) is dropped, as in the embedded store.
_ADD_MESSAGE = (
    "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at, card_json)"
    " SELECT %(chat_id)s, %(role)s, %(content)s, %(answer)s, %(sql)s, %(created_at)s, %(card)s"
    " WHERE EXISTS (SELECT 1 FROM chats WHERE chat_id=%(chat_id)s)"
)


# An answer to a question still stored, once: a second recorder's row meets the unique index on reply_to
# (waiting for the first one's commit) and stores nothing.
_RECORD_ANSWER = (
    "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at, card_json, reply_to)"
    " SELECT %(chat_id)s, %(role)s, %(content)s, %(answer)s, %(sql)s, %(created_at)s, %(card)s, %(reply_to)s"
    " WHERE EXISTS (SELECT 1 FROM messages WHERE id=%(reply_to)s AND chat_id=%(chat_id)s AND role='user')"
    " ON CONFLICT DO NOTHING"
)


def _message_params(message: StoredMessage) -> dict[str, Any]:
    return {
        "chat_id": message.chat_id,
        "role": message.role,
        "content": message.content,
        "answer": json.dumps(message.answer),
        "sql": message.sql,
        "created_at": message.created_at or time.time(),
        "card": None if message.card is None else json.dumps(message.card),
        "reply_to": message.reply_to or None,
    }


class PostgresChatRepository:
    """The shared `ChatRepository`: one pooled connection per operation, a transaction where two writes
    must land together."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: PostgresDatabase) -> PostgresChatRepository:
        await db.migrate("chats", MIGRATIONS)
        return cls(db)

    async def _all(self, sql: str, *params: Any) -> list[Any]:
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]  # our own literal SQL
            return await cursor.fetchall()

    async def create_chat(self, session_id: str, title: str = "", chat_id: str | None = None) -> Chat:
        chat_id = chat_id or uuid.uuid4().hex
        # One round trip: the new row (RETURNING), or the existing one (the statement's snapshot).
        rows = await self._all(
            "WITH made AS (" + _ENSURE_CHAT + " RETURNING chat_id, session_id, title, created_at)"
            " SELECT * FROM made UNION ALL"
            " SELECT chat_id, session_id, title, created_at FROM chats WHERE chat_id=%s",
            chat_id,
            session_id,
            title[:TITLE_CHARS],
            time.time(),
            chat_id,
        )
        return Chat(*rows[0])

    async def get_chat(self, chat_id: str) -> Chat | None:
        rows = await self._all(
            "SELECT chat_id, session_id, title, created_at FROM chats WHERE chat_id=%s", chat_id
        )
        return Chat(*rows[0]) if rows else None

    async def list_chats(self, session_id: str) -> list[Chat]:
        rows = await self._all(
            "SELECT chat_id, session_id, title, created_at FROM chats WHERE session_id=%s"
            " ORDER BY created_at DESC, chat_id",
            session_id,
        )
        return [Chat(*row) for row in rows]

    async def add_message(self, message: StoredMessage) -> None:
        async with self.db.pool.connection() as conn:
            with contextlib.suppress(psycopg.errors.ForeignKeyViolation):  # its chat went meanwhile
                await conn.execute(_ADD_MESSAGE, _message_params(message))

    async def start_turn(self, chat_id: str, session_id: str, question: str) -> int:
        # One statement, so one round trip and atomic: the chat (if new), then its question (the foreign
        # key is checked at the statement's end, when the chat row is there).
        params = _message_params(StoredMessage(chat_id, "user", question))
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(
                "WITH chat AS (INSERT INTO chats(chat_id, session_id, title, created_at)"
                " VALUES (%(chat_id)s, %(session_id)s, %(title)s, %(created_at)s)"
                " ON CONFLICT (chat_id) DO NOTHING)"
                " INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at, card_json)"
                " VALUES (%(chat_id)s, %(role)s, %(content)s, %(answer)s, %(sql)s, %(created_at)s,"
                " %(card)s) RETURNING id",
                {**params, "session_id": session_id, "title": question[:80]},
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def record_answer(self, reply: StoredMessage) -> bool:
        if reply.reply_to <= 0:
            raise ValueError("record_answer needs the message_id of the question answered (reply_to)")
        async with self.db.pool.connection() as conn:
            try:
                cursor = await conn.execute(_RECORD_ANSWER, _message_params(reply))
            except psycopg.errors.ForeignKeyViolation:  # its chat went meanwhile
                return False
            return cursor.rowcount == 1

    async def messages(self, chat_id: str) -> list[StoredMessage]:
        rows = await self._all(
            "SELECT chat_id, role, content, answer_json, sql, created_at, card_json, id, reply_to"
            " FROM messages WHERE chat_id=%s ORDER BY id",
            chat_id,
        )
        return [
            StoredMessage(
                r[0],
                r[1],
                r[2],
                json.loads(r[3]) if r[3] else None,
                r[4] or "",
                r[5],
                json.loads(r[6]) if r[6] else None,
                r[7],
                r[8] or 0,
            )
            for r in rows
        ]

    async def add_insight(self, session_id: str, text: str, sql: str, chat_id: str, answer: Any) -> Insight:
        insight = Insight(uuid.uuid4().hex, session_id, text, sql, chat_id, answer, time.time())
        async with self.db.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO insights(insight_id, session_id, text, sql, chat_id, answer_json, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (insight.insight_id, session_id, text, sql, chat_id, json.dumps(answer), insight.created_at),
            )
        return insight

    async def insights(self, session_id: str) -> list[Insight]:
        rows = await self._all(
            "SELECT insight_id, session_id, text, sql, chat_id, answer_json, created_at FROM insights"
            " WHERE session_id=%s ORDER BY created_at, id",
            session_id,
        )
        return [Insight(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6]) for r in rows]

    async def delete_chat(self, chat_id: str) -> None:
        async with self.db.pool.connection() as conn:
            await conn.execute("DELETE FROM chats WHERE chat_id=%s", (chat_id,))  # messages cascade

    async def delete_session(self, session_id: str) -> None:
        async with self.db.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM chats WHERE session_id=%s", (session_id,))
            await conn.execute("DELETE FROM insights WHERE session_id=%s", (session_id,))

    async def close(self) -> None:
        """Nothing of its own: the pool belongs to the PostgresDatabase."""
