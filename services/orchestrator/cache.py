"""The answer cache: the same question, on the same dataset version, after the same conversation.

Keyed by (dataset_hash, normalized question, digest of the history the prompts would carry); holds the events
that carry an answer (classification, the SQL rows and Python result it rests on, the final response) of
answers the model path produced (the built-in analyst is cheap and is not cached, so that an
answer given while every key was out does not outlive the outage). In memory, bounded, with a time to live.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Sequence

from insightx.v1 import common_pb2
from insightx.v1 import orchestrator_pb2 as pb

_SPACE = re.compile(r"\s+")
_REPLAYED = ("orchestrator_result", "sql_result", "python_result", "final_response")


def normalize_question(text: str) -> str:
    """Case, spacing and trailing punctuation do not make a new question."""
    return _SPACE.sub(" ", text).strip().lower().rstrip("?!. ")


def answer_events(events: list[pb.ChatEvent]) -> list[pb.ChatEvent]:
    """The events worth replaying from an answer: the last classification, successful SQL and Python result,
    and the final response (progress, failed attempts and key events are left out)."""
    kept: dict[str, pb.ChatEvent] = {}
    for event in events:
        kind = event.WhichOneof("payload")
        failed = (kind == "sql_result" and event.sql_result.error) or (
            kind == "python_result" and event.python_result.error
        )
        if kind in _REPLAYED and not failed:
            kept[kind] = event
    return [kept[k] for k in _REPLAYED if k in kept]


def cache_key(dataset_hash: str, question: str, history: Sequence[common_pb2.ChatMessage]) -> str:
    turns = [(m.role, normalize_question(m.content)) for m in history if m.content.strip()]
    blob = json.dumps([dataset_hash, normalize_question(question), turns], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """LRU of answers (their events, final_response last) with a time to live; size 0 turns it off."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, list[pb.ChatEvent]]] = OrderedDict()

    def get(self, key: str) -> list[pb.ChatEvent] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, events = entry
        if time.monotonic() - stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return events

    def put(self, key: str, events: list[pb.ChatEvent]) -> None:
        if self.size <= 0:
            return
        self._entries[key] = (time.monotonic(), list(events))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
