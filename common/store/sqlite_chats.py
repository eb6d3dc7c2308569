"""The embedded chat store: chats, messages and insights in SQLite at `<data_dir>/chats.sqlite3`.

One connection under a lock; blocking work runs in a worker thread. Step 1 of the migrations uses
IF NOT EXISTS, so a database written before migrations were recorded is adopted as it is.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common.store.chats import TITLE_CHARS, Chat, Insight, StoredMessage
from common.store.migrations import Migration, migrate_sqlite

T = TypeVar("T")

MIGRATIONS = (
    Migration(
        1,
        "chats, messages, insights",
        """
        CREATE TABLE IF NOT EXISTS chats (
            chat_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id TEXT NOT NULL REFERENCES chats(chat_id),
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            answer_json TEXT,
            sql TEXT,
            created_at REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id, id);
        CREATE TABLE IF NOT EXISTS insights (
            insight_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            text TEXT NOT NULL,
            sql TEXT NOT NULL DEFAULT '',
            chat_id TEXT NOT NULL DEFAULT '',
            answer_json TEXT,
            created_at REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS insights_by_session ON insights(session_id, created_at)
        """,
    ),
    Migration(
        2, "chats by session", "CREATE INDEX IF NOT EXISTS chats_by_session ON chats(session_id, created_at)"
    ),
    Migration(3, "an answer's card", "ALTER TABLE messages ADD COLUMN card_json TEXT"),
    Migration(
        4,
        "one answer per question",
        """
        ALTER TABLE messages ADD COLUMN reply_to INTEGER;
        CREATE UNIQUE INDEX IF NOT EXISTS messages_one_reply ON messages(reply_to) WHERE reply_to IS NOT NULL
        """,
    ),
)

_COLUMNS = "chat_id, role, content, answer_json, sql, created_at, card_json, id, reply_to"


def _message(row: Any) -> StoredMessage:
    card = json.loads(row[6]) if row[6] else None
    return StoredMessage(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]) if row[3] else None,
        row[4] or "",
        row[5],
        card,
        row[7],
        row[8] or 0,
    )


def _values(message: StoredMessage) -> tuple[Any, ...]:
    return (
        message.chat_id,
        message.role,
        message.content,
        json.dumps(message.answer),
        message.sql,
        message.created_at or time.time(),
        None if message.card is None else json.dumps(message.card),
    )


class SqliteChatRepository:
    """The embedded `ChatRepository`."""

    def __init__(self, data_dir: Path) -> None:
        path = Path(data_dir) / "chats.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        migrate_sqlite(self._conn, "chats", MIGRATIONS)
        self._lock = threading.Lock()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._conn)

        return await asyncio.to_thread(locked)

    async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def atomic(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(atomic)

    @staticmethod
    def _ensure_chat(conn: sqlite3.Connection, chat_id: str, session_id: str, title: str) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO chats(chat_id, session_id, title, created_at) VALUES (?,?,?,?)",
            (chat_id, session_id, title[:TITLE_CHARS], time.time()),
        )

    @staticmethod
    def _add_message(conn: sqlite3.Connection, message: StoredMessage) -> int:
        cursor = conn.execute(  # a message for a chat that is gone (deleted while its answer ran) is dropped
            "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at, card_json)"
            " SELECT ?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM chats WHERE chat_id=?)",
            (*_values(message), message.chat_id),
        )
        return cursor.lastrowid or 0

    async def create_chat(self, session_id: str, title: str = "", chat_id: str | None = None) -> Chat:
        chat_id = chat_id or uuid.uuid4().hex
        await self._run(lambda conn: self._ensure_chat(conn, chat_id, session_id, title))
        chat = await self.get_chat(chat_id)
        assert chat is not None
        return chat

    async def get_chat(self, chat_id: str) -> Chat | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT chat_id, session_id, title, created_at FROM chats WHERE chat_id=?", (chat_id,)
            ).fetchone()
        )
        return Chat(*row) if row else None

    async def list_chats(self, session_id: str) -> list[Chat]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT chat_id, session_id, title, created_at FROM chats WHERE session_id=?"
                " ORDER BY created_at DESC, chat_id",
                (session_id,),
            ).fetchall()
        )
        return [Chat(*row) for row in rows]

    async def add_message(self, message: StoredMessage) -> None:
        await self._run(lambda conn: self._add_message(conn, message))

    async def start_turn(self, chat_id: str, session_id: str, question: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            self._ensure_chat(conn, chat_id, session_id, question[:80])
            return self._add_message(conn, StoredMessage(chat_id, "user", question))

        return await self._transaction(write)

    async def record_answer(self, reply: StoredMessage) -> bool:
        if reply.reply_to <= 0:
            raise ValueError("record_answer needs the message_id of the question answered (reply_to)")

        def write(conn: sqlite3.Connection) -> bool:
            # Only for a question of this chat that is still stored; the unique index on reply_to makes
            # a second recorder (another connection, another process) store nothing.
            cursor = conn.execute(
                "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at, card_json,"
                " reply_to) SELECT ?,?,?,?,?,?,?,? WHERE EXISTS"
                " (SELECT 1 FROM messages WHERE id=? AND chat_id=? AND role='user')"
                " ON CONFLICT DO NOTHING",
                (*_values(reply), reply.reply_to, reply.reply_to, reply.chat_id),
            )
            return cursor.rowcount == 1

        return await self._run(write)

    async def messages(self, chat_id: str) -> list[StoredMessage]:
        rows = await self._run(
            lambda conn: conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE chat_id=? ORDER BY id", (chat_id,)
            ).fetchall()
        )
        return [_message(row) for row in rows]

    async def add_insight(self, session_id: str, text: str, sql: str, chat_id: str, answer: Any) -> Insight:
        insight = Insight(uuid.uuid4().hex, session_id, text, sql, chat_id, answer, time.time())
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO insights VALUES (?,?,?,?,?,?,?)",
                (insight.insight_id, session_id, text, sql, chat_id, json.dumps(answer), insight.created_at),
            )
        )
        return insight

    async def insights(self, session_id: str) -> list[Insight]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT insight_id, session_id, text, sql, chat_id, answer_json, created_at FROM insights"
                " WHERE session_id=? ORDER BY created_at, rowid",
                (session_id,),
            ).fetchall()
        )
        return [Insight(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6]) for r in rows]

    async def delete_chat(self, chat_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM messages WHERE chat_id=?", (chat_id,))
            conn.execute("DELETE FROM chats WHERE chat_id=?", (chat_id,))

        await self._transaction(write)

    async def delete_session(self, session_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM messages WHERE chat_id IN (SELECT chat_id FROM chats WHERE session_id=?)",
                (session_id,),
            )
            conn.execute("DELETE FROM chats WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM insights WHERE session_id=?", (session_id,))

        await self._transaction(write)

    async def close(self) -> None:
        with self._lock:
            self._conn.close()
