"""Chats, their messages and a session's saved insights, behind one small interface.

The gateway is the only writer of chats, and this store is the only record of them: it records the user's
question and the final answer as a stream passes through, and sends the stored turns as the history of the
next question (`turn_history`; the orchestrator keeps no transcript). The workspace saves insights. The
embedded implementation keeps them in SQLite under the data directory (common.store.ChatStore plus an
insights table); a deployment with several gateways puts a shared implementation (e.g. Supabase) behind the
same `ChatRepository` protocol.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from common.store import ChatStore, StoredMessage


@dataclass(frozen=True)
class Chat:
    """A conversation about one session's dataset."""

    chat_id: str
    session_id: str
    title: str
    created_at: float


@dataclass(frozen=True)
class Insight:
    """A finding a person pinned to a session."""

    insight_id: str
    session_id: str
    text: str
    sql: str
    chat_id: str
    answer: Any
    created_at: float


class ChatRepository(Protocol):
    """What the HTTP layer needs from chat persistence (all methods are safe to call from the event loop)."""

    async def create_chat(self, session_id: str, title: str = "", chat_id: str | None = None) -> Chat: ...

    async def get_chat(self, chat_id: str) -> Chat | None: ...

    async def list_chats(self, session_id: str) -> list[Chat]: ...

    async def add_message(self, message: StoredMessage) -> None: ...

    async def start_turn(self, chat_id: str, session_id: str, question: str) -> None:
        """Creates the chat if new (titled by its first question) and appends the question."""
        ...

    async def messages(self, chat_id: str) -> list[StoredMessage]: ...

    async def add_insight(
        self, session_id: str, text: str, sql: str, chat_id: str, answer: Any
    ) -> Insight: ...

    async def insights(self, session_id: str) -> list[Insight]: ...

    async def delete_chat(self, chat_id: str) -> None:
        """Removes a chat and its messages (its pinned insights stay with the session)."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """Removes every chat, message and insight of a session."""
        ...

    async def close(self) -> None: ...


_INSIGHTS = """
CREATE TABLE IF NOT EXISTS insights (
    insight_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    text TEXT NOT NULL,
    sql TEXT NOT NULL DEFAULT '',
    chat_id TEXT NOT NULL DEFAULT '',
    answer_json TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS insights_by_session ON insights(session_id, created_at);
"""


class LocalChatRepository:
    """The embedded repository: `<data_dir>/chats.sqlite3`; blocking SQLite work runs in a thread."""

    def __init__(self, data_dir: Path) -> None:
        path = Path(data_dir) / "chats.sqlite3"
        self._store = ChatStore(path)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_INSIGHTS)
        self._lock = threading.Lock()

    async def create_chat(self, session_id: str, title: str = "", chat_id: str | None = None) -> Chat:
        chat_id = chat_id or uuid.uuid4().hex
        await asyncio.to_thread(self._store.ensure_chat, chat_id, session_id, title)
        chat = await self.get_chat(chat_id)
        assert chat is not None
        return chat

    async def get_chat(self, chat_id: str) -> Chat | None:
        def read() -> Chat | None:
            with self._lock:
                row = self._conn.execute(
                    "SELECT chat_id, session_id, title, created_at FROM chats WHERE chat_id=?", (chat_id,)
                ).fetchone()
            return Chat(*row) if row else None

        return await asyncio.to_thread(read)

    async def list_chats(self, session_id: str) -> list[Chat]:
        rows = await asyncio.to_thread(self._store.list_chats, session_id)
        return [Chat(**row) for row in rows]

    async def add_message(self, message: StoredMessage) -> None:
        await asyncio.to_thread(self._store.add_message, message)

    async def start_turn(self, chat_id: str, session_id: str, question: str) -> None:
        def write() -> None:
            self._store.ensure_chat(chat_id, session_id, question[:80])
            self._store.add_message(StoredMessage(chat_id, "user", question))

        await asyncio.to_thread(write)

    async def messages(self, chat_id: str) -> list[StoredMessage]:
        return await asyncio.to_thread(self._store.messages, chat_id)

    async def add_insight(self, session_id: str, text: str, sql: str, chat_id: str, answer: Any) -> Insight:
        insight = Insight(uuid.uuid4().hex, session_id, text, sql, chat_id, answer, time.time())

        def write() -> None:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO insights VALUES (?,?,?,?,?,?,?)",
                    (
                        insight.insight_id,
                        session_id,
                        text,
                        sql,
                        chat_id,
                        json.dumps(answer),
                        insight.created_at,
                    ),
                )

        await asyncio.to_thread(write)
        return insight

    async def insights(self, session_id: str) -> list[Insight]:
        def read() -> list[Insight]:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT insight_id, session_id, text, sql, chat_id, answer_json, created_at FROM insights"
                    " WHERE session_id=? ORDER BY created_at, rowid",
                    (session_id,),
                ).fetchall()
            return [
                Insight(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6]) for r in rows
            ]

        return await asyncio.to_thread(read)

    async def delete_chat(self, chat_id: str) -> None:
        def write() -> None:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute("DELETE FROM messages WHERE chat_id=?", (chat_id,))
                    self._conn.execute("DELETE FROM chats WHERE chat_id=?", (chat_id,))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

        await asyncio.to_thread(write)

    async def delete_session(self, session_id: str) -> None:
        def write() -> None:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute(
                        "DELETE FROM messages WHERE chat_id IN"
                        " (SELECT chat_id FROM chats WHERE session_id=?)",
                        (session_id,),
                    )
                    self._conn.execute("DELETE FROM chats WHERE session_id=?", (session_id,))
                    self._conn.execute("DELETE FROM insights WHERE session_id=?", (session_id,))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

        await asyncio.to_thread(write)

    async def close(self) -> None:
        self._store.close()
        with self._lock:
            self._conn.close()


class TurnRecorder:
    """Stores one answer's turn as its stream passes: the question while the answer starts (off the first
    event's path), then the reply — the final answer or the error — once, before the client sees it."""

    _pending: ClassVar[set[asyncio.Task[None]]] = set()  # strong references until each write is done

    def __init__(self, repo: ChatRepository, chat_id: str, resumed: bool = False) -> None:
        self.repo = repo
        self.chat_id = chat_id
        self.resumed = resumed
        self._question: asyncio.Task[None] | None = None

    def start(self, session_id: str, question: str) -> None:
        """Begins storing the question (and the chat, if new) in the background."""
        self._question = asyncio.create_task(self.repo.start_turn(self.chat_id, session_id, question))
        self._pending.add(self._question)
        self._question.add_done_callback(self._pending.discard)

    async def __call__(self, payload: dict[str, Any]) -> None:
        """The stream's hook for each SSE payload."""
        if payload["type"] == "final_response":
            data = payload["data"]
            reply = StoredMessage(self.chat_id, "assistant", data["text"], data["answer"], data["sql"] or "")
        elif payload["type"] == "error":
            reply = StoredMessage(self.chat_id, "assistant", payload["message"])
        else:
            return
        if self._question is not None:
            await self._question  # the question is stored before its answer
        if self.resumed and await self._already_stored(reply):
            return
        await self.repo.add_message(reply)

    async def _already_stored(self, reply: StoredMessage) -> bool:
        """A resumed stream whose reply reached the store before the client lost it."""
        history = await self.repo.messages(self.chat_id)
        return bool(history) and history[-1].role == "assistant" and history[-1].content == reply.content


HISTORY_TURNS = 50  # the most earlier turns sent with a question (the orchestrator trims further for prompts)


async def turn_history(
    repo: ChatRepository, chat_id: str, question: str, resumed: bool = False
) -> list[StoredMessage]:
    """The conversation before `question`, from the store (the only record of a chat: the orchestrator
    keeps none). A resumed answer's own question (and a reply already stored for it) is not history."""
    turns = await repo.messages(chat_id)
    if resumed:
        if turns and turns[-1].role == "assistant" and len(turns) > 1 and turns[-2].content == question:
            turns = turns[:-2]
        elif turns and turns[-1].role == "user" and turns[-1].content == question:
            turns = turns[:-1]
    return turns[-HISTORY_TURNS:]


async def adopt_history(repo: ChatRepository, chat_id: str, turns: list[tuple[str, str]]) -> None:
    """Stores the turns a client sent for a chat the store did not know (an older client keeps its own
    history), so that the chat's next turns read them from the store like any other."""
    for role, content in turns[-HISTORY_TURNS:]:
        await repo.add_message(StoredMessage(chat_id, role, content))


def open_chat_repository(data_dir: Path) -> ChatRepository:
    """The configured repository (the embedded one; a shared one plugs in here)."""
    return LocalChatRepository(data_dir)


def chat_json(chat: Chat) -> dict[str, Any]:
    return asdict(chat)


def message_json(message: StoredMessage) -> dict[str, Any]:
    return {
        "chat_id": message.chat_id,
        "role": message.role,
        "content": message.content,
        "answer": message.answer,
        "sql": message.sql or None,
        "created_at": message.created_at,
    }


def insight_json(insight: Insight) -> dict[str, Any]:
    return asdict(insight)
