"""Chats, their messages and a session's saved insights, behind one small interface.

The gateway is the only writer of chats, and this store is the only record of them: it records the user's
question and the final answer as a stream passes through (or, when the client left first, as a background
follower reads the answer to its end: gateway/followers.py), and sends the stored turns as the history of the
next question (`turn_history`; the orchestrator keeps no transcript). The workspace saves insights. The
embedded implementation keeps them in SQLite under the data directory (common/store/sqlite_chats.py); with
INSIGHTX_DATABASE_URL every gateway shares PostgreSQL's (common/store/postgres_chats.py), behind the same
`ChatRepository` protocol (gateway/stores.py picks one).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
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
    "resumed_question",
    "turn_history",
]


# The embedded repository under its earlier name (the records and the protocol live in common.store).
LocalChatRepository = SqliteChatRepository


# How an answer was shown, stored with it so a reload in any browser draws the same card.
CARD_FIELDS = ("chart", "follow_ups", "clarifications", "confidence", "answer_type")


class TurnRecorder:
    """Stores one answer's turn: the question while the answer starts (off the first event's path), then
    the reply — the final answer or the error — under the question's id, before the client sees it.

    One recorder serves the stream and, when its client leaves first, the background follower that reads
    the answer to its end (gateway/followers.py). The store records a reply once per question
    (`ChatRepository.record_answer`), so a resume on another gateway recording the same answer adds
    nothing."""

    _pending: ClassVar[set[asyncio.Task[int]]] = set()  # strong references until each write is done

    def __init__(self, repo: ChatRepository, chat_id: str) -> None:
        self.repo = repo
        self.chat_id = chat_id
        self.finished = False  # a terminal event passed and its reply was recorded (by this or another)
        self._question: asyncio.Task[int] | None = None
        self._question_id = 0

    def start(self, session_id: str, question: str) -> None:
        """Begins storing the question (and the chat, if new) in the background."""
        self._question = asyncio.create_task(self.repo.start_turn(self.chat_id, session_id, question))
        self._pending.add(self._question)
        self._question.add_done_callback(self._pending.discard)

    def resume(self, question_id: int) -> None:
        """A resumed stream answers a question already stored (`resumed_question`)."""
        self._question_id = question_id

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
            # The question is stored before its answer; shielded, so a client leaving now does not
            # cancel the question's write.
            self._question_id = await asyncio.shield(self._question)
        if self._question_id <= 0:
            raise RuntimeError("the question of this answer was not stored")
        await self.repo.record_answer(replace(reply, reply_to=self._question_id))
        self.finished = True


async def resumed_question(repo: ChatRepository, chat_id: str, session_id: str, question: str) -> int:
    """The stored question a resumed stream answers: the chat's newest question, when it is this one (the
    orchestrator resumes the chat's newest answer); otherwise the question is stored now, so that its
    answer has a question to belong to."""
    for turn in reversed(await repo.messages(chat_id)):
        if turn.role == "user":
            if turn.content == question:
                return turn.message_id
            break
    return await repo.start_turn(chat_id, session_id, question)


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
