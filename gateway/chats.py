"""Chats, their messages and a session's saved insights, behind one small interface.

The gateway is the only writer of chats, and this store is the only record of them: it records the user's
question and the final answer as a stream passes through, and sends the stored turns as the history of the
next question (`turn_history`; the orchestrator keeps no transcript). The workspace saves insights. The
embedded implementation keeps them in SQLite under the data directory (common/store/sqlite_chats.py); with
INSIGHTX_DATABASE_URL every gateway shares PostgreSQL's (common/store/postgres_chats.py), behind the same
`ChatRepository` protocol (gateway/stores.py picks one).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from common.store.chats import Chat, ChatRepository, Insight, StoredMessage
from common.store.sqlite_chats import SqliteChatRepository

__all__ = [
    "HISTORY_TURNS",
    "Chat",
    "ChatRepository",
    "Insight",
    "LocalChatRepository",
    "StoredMessage",
    "TurnRecorder",
    "adopt_history",
    "chat_json",
    "insight_json",
    "message_json",
    "open_chat_repository",
    "turn_history",
]


# The embedded repository under its earlier name (the records and the protocol live in common.store).
LocalChatRepository = SqliteChatRepository


# How an answer was shown, stored with it so a reload in any browser draws the same card.
CARD_FIELDS = ("chart", "follow_ups", "clarifications", "confidence", "answer_type")


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
            card = {key: data.get(key) for key in CARD_FIELDS}
            reply = StoredMessage(
                self.chat_id, "assistant", data["text"], data["answer"], data["sql"] or "", card=card
            )
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
    """The embedded repository (gateway/stores.py picks the shared one when a database is configured)."""
    return SqliteChatRepository(data_dir)


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
        "card": message.card,  # chart, follow_ups, clarifications, confidence, answer_type; None if older
    }


def insight_json(insight: Insight) -> dict[str, Any]:
    return asdict(insight)
