"""The answer cache: same question, same dataset version, same conversation."""

from __future__ import annotations

import time

from insightx.v1 import common_pb2
from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.cache import AnswerCache, answer_events, cache_key, normalize_question


def _final(text: str) -> list[pb.ChatEvent]:
    return [pb.ChatEvent(seq=9, final_response=pb.FinalResponseEvent(text=text))]


def test_spelling_of_the_same_question_does_not_matter() -> None:
    assert normalize_question("  How many  rows? ") == normalize_question("how many rows")
    assert cache_key("h", "How many rows?", []) == cache_key("h", "how many rows", [])


def test_dataset_version_and_history_change_the_key() -> None:
    turn = [common_pb2.ChatMessage(role="user", content="failure rate for Android?")]
    base = cache_key("h1", "and iOS?", [])
    assert cache_key("h2", "and iOS?", []) != base
    assert cache_key("h1", "and iOS?", turn) != base


def test_lru_bound_and_ttl() -> None:
    cache = AnswerCache(size=2, ttl_s=0.2)
    cache.put("a", _final("A"))
    cache.put("b", _final("B"))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _final("C"))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    time.sleep(0.25)
    assert cache.get("a") is None


def test_size_zero_turns_it_off() -> None:
    cache = AnswerCache(size=0, ttl_s=60)
    cache.put("a", _final("A"))
    assert cache.get("a") is None


def test_only_the_events_carrying_the_answer_are_kept() -> None:
    events = [
        pb.ChatEvent(seq=1, status=pb.StatusEvent(stage="load")),
        pb.ChatEvent(seq=2, orchestrator_result=pb.OrchestratorResultEvent(reasoning="r")),
        pb.ChatEvent(seq=3, sql_result=pb.SqlResultEvent(query="bad", error="no such column")),
        pb.ChatEvent(seq=4, sql_result=pb.SqlResultEvent(query="good")),
        pb.ChatEvent(seq=5, key_rotation=pb.KeyRotationEvent(kind="key_failed")),
        pb.ChatEvent(seq=6, python_result=pb.PythonResultEvent(code="x", results_json="1")),
        pb.ChatEvent(seq=7, final_response=pb.FinalResponseEvent(text="done")),
    ]
    assert [e.seq for e in answer_events(events)] == [2, 4, 6, 7]
