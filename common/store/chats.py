"""Chats and their messages in an embedded SQLite database (`<data_dir>/chats.sqlite3`)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
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
"""


@dataclass(frozen=True)
class StoredMessage:
    """One persisted turn."""

    chat_id: str
    role: str
    content: str
    answer: Any = None
    sql: str = ""
    created_at: float = 0.0


class ChatStore:
    """Thread-safe access to chats and messages; one connection guarded by a lock (writes are tiny)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def ensure_chat(self, chat_id: str, session_id: str, title: str = "") -> None:
        """Creates the chat if it does not exist yet."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO chats(chat_id, session_id, title, created_at) VALUES (?,?,?,?)",
                (chat_id, session_id, title[:200], time.time()),
            )

    def add_message(self, message: StoredMessage) -> None:
        """Appends a turn to its chat."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (
                    message.chat_id,
                    message.role,
                    message.content,
                    json.dumps(message.answer),
                    message.sql,
                    message.created_at or time.time(),
                ),
            )

    def list_chats(self, session_id: str) -> list[dict[str, Any]]:
        """The chats of a session, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT chat_id, session_id, title, created_at FROM chats WHERE session_id=?"
                " ORDER BY created_at DESC",
                (session_id,),
            ).fetchall()
        return [dict(zip(("chat_id", "session_id", "title", "created_at"), r, strict=True)) for r in rows]

    def messages(self, chat_id: str) -> list[StoredMessage]:
        """The turns of a chat, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT chat_id, role, content, answer_json, sql, created_at FROM messages"
                " WHERE chat_id=? ORDER BY id",
                (chat_id,),
            ).fetchall()
        return [
            StoredMessage(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4] or "", r[5])
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
