"""The orchestrator's record of each chat: questions, answers (typed value) and the SQL they rest on.

Kept with common.store.ChatStore in its own SQLite file (default `<data_dir>/orchestrator/chats.sqlite3`,
apart from the gateway's chat list so that no message is stored twice). It also gives a chat's history to
callers that send none (gRPC clients other than the gateway).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from common.store import ChatStore, StoredMessage
from insightx.v1 import common_pb2

log = logging.getLogger(__name__)


class Transcript:
    """Async access to the chat store; a write that fails is logged, never fatal to an answer."""

    def __init__(self, path: Path) -> None:
        self.store = ChatStore(path)

    async def history(self, chat_id: str, session_id: str, limit: int) -> list[common_pb2.ChatMessage]:
        """The chat's last `limit` turns on this session, oldest first."""
        messages = await asyncio.to_thread(self.store.messages, _scoped(chat_id, session_id))
        return [common_pb2.ChatMessage(role=m.role, content=m.content) for m in messages[-limit:]]

    async def record(
        self, chat_id: str, session_id: str, question: str, text: str, answer: Any, sql: str
    ) -> None:
        """Stores one question and its answer."""

        key = _scoped(chat_id, session_id)

        def write() -> None:
            self.store.ensure_chat(key, session_id, title=question)
            self.store.add_message(StoredMessage(key, "user", question))
            self.store.add_message(StoredMessage(key, "assistant", text, answer=answer, sql=sql))

        try:
            await asyncio.to_thread(write)
        except Exception:
            log.exception("could not record the chat turn", extra={"chat_id": chat_id})

    def close(self) -> None:
        self.store.close()


def _scoped(chat_id: str, session_id: str) -> str:
    """Chat ids are chosen by clients: scoping them by session keeps one session's turns out of another's."""
    return f"{session_id}/{chat_id}"
