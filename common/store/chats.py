"""Chats, their messages and a session's saved insights: the records and the one interface every chat
store keeps (`ChatRepository`).

Two implementations: `SqliteChatRepository` (embedded, `<data_dir>/chats.sqlite3`) and
`PostgresChatRepository` (`INSIGHTX_DATABASE_URL`, shared by every gateway). Their contract is tested
on both (tests/common/store/test_chats_contract.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class StoredMessage:
    """One persisted turn. `card` is how an answer was shown (chart, follow_ups, clarifications,
    confidence, answer_type), kept so any browser draws it again; None for questions and older rows.
    `message_id` is the store's id of the row (0 before it is stored); `reply_to` is, on an answer
    recorded by `record_answer`, the `message_id` of the question it answers (0 otherwise)."""

    chat_id: str
    role: str
    content: str
    answer: Any = None
    sql: str = ""
    created_at: float = 0.0
    card: dict[str, Any] | None = None
    message_id: int = 0
    reply_to: int = 0


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


TITLE_CHARS = 200  # a chat's stored title is cut here


class ChatRepository(Protocol):
    """What the HTTP layer needs from chat persistence (all methods are safe to call from the event loop)."""

    async def create_chat(self, session_id: str, title: str = "", chat_id: str | None = None) -> Chat: ...

    async def get_chat(self, chat_id: str) -> Chat | None: ...

    async def list_chats(self, session_id: str) -> list[Chat]:
        """The chats of a session, newest first."""
        ...

    async def add_message(self, message: StoredMessage) -> None: ...

    async def start_turn(self, chat_id: str, session_id: str, question: str) -> int:
        """Creates the chat if new (titled by its first question) and appends the question; answers the
        question's `message_id`, the key its answer is recorded under."""
        ...

    async def record_answer(self, reply: StoredMessage) -> bool:
        """Appends the answer to the question `reply.reply_to` once: however many recorders race (a
        stream, its resume on another gateway, a background follower), one row is stored (a unique index
        and `INSERT … ON CONFLICT DO NOTHING`). True when this call stored it; False when the question
        already has its answer, or is gone (its chat deleted while the answer ran)."""
        ...

    async def messages(self, chat_id: str) -> list[StoredMessage]:
        """The turns of a chat, oldest first."""
        ...

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
