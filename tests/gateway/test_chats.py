"""The embedded chat repository and the stream's TurnRecorder, without servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.chats import (
    HISTORY_TURNS,
    LocalChatRepository,
    TurnRecorder,
    adopt_history,
    resumed_question,
    turn_history,
)


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[LocalChatRepository]:
    repository = LocalChatRepository(tmp_path)
    yield repository
    await repository.close()


def final(text: str, answer: object = 1) -> dict[str, object]:
    return {"type": "final_response", "data": {"text": text, "answer": answer, "sql": "SELECT 1"}}


async def test_a_turn_stores_the_question_then_the_answer(repo: LocalChatRepository) -> None:
    record = TurnRecorder(repo, "c1")
    record.start("s1", "how many rows?")
    await record({"type": "status", "message": "working", "data": {"stage": "sql"}})
    await record(final("There are 3 rows.", 3))
    messages = await repo.messages("c1")
    assert [(m.role, m.content, m.answer) for m in messages] == [
        ("user", "how many rows?", None),
        ("assistant", "There are 3 rows.", 3),
    ]
    chat = await repo.get_chat("c1")
    assert chat is not None and chat.session_id == "s1" and chat.title == "how many rows?"


async def test_a_resumed_turn_does_not_store_its_reply_twice(repo: LocalChatRepository) -> None:
    first = TurnRecorder(repo, "c2")
    first.start("s1", "q")
    await first(final("A."))
    assert first.finished
    resumed = TurnRecorder(repo, "c2")
    resumed.resume(await resumed_question(repo, "c2", "s1", "q"))
    await resumed(final("A."))
    assert resumed.finished  # recorded already: nothing added
    await resumed(
        {"type": "error", "message": "The SQL engine is unreachable.", "code": "UPSTREAM_UNAVAILABLE"}
    )
    assert [(m.role, m.content) for m in await repo.messages("c2")] == [("user", "q"), ("assistant", "A.")]


async def test_a_resumed_turn_whose_question_is_not_the_newest_stores_it(repo: LocalChatRepository) -> None:
    await _answered(repo, "c3", "q1", "A1.")
    await _answered(repo, "c3", "q2", "A2.")
    resumed = TurnRecorder(repo, "c3")
    resumed.resume(await resumed_question(repo, "c3", "s1", "q1"))  # the orchestrator answers it again
    await resumed(final("A1 again."))
    assert [m.content for m in await repo.messages("c3")] == ["q1", "A1.", "q2", "A2.", "q1", "A1 again."]


async def test_two_recorders_of_one_answer_store_it_once(repo: LocalChatRepository) -> None:
    """The stream and the follower of a left answer (or a resume elsewhere) racing on one question."""
    stream = TurnRecorder(repo, "c4")
    stream.start("s1", "q")
    resume = TurnRecorder(repo, "c4")
    await stream({"type": "status", "message": "working", "data": {"stage": "sql"}})
    while not (stored := await repo.messages("c4")):  # the question is written off the stream's path
        await asyncio.sleep(0.01)
    resume.resume(stored[0].message_id)
    await asyncio.gather(stream(final("A.")), resume(final("A.")))
    assert stream.finished and resume.finished
    assert [m.content for m in await repo.messages("c4")] == ["q", "A."]


async def test_chats_and_insights_belong_to_their_session(repo: LocalChatRepository) -> None:
    await repo.create_chat("s1", "first", chat_id="a")
    await repo.create_chat("s2", "other", chat_id="b")
    assert [c.chat_id for c in await repo.list_chats("s1")] == ["a"]
    assert await repo.get_chat("missing") is None
    await repo.add_insight("s1", "one", "", "a", {"k": 1})
    await repo.add_insight("s1", "two", "SELECT 2", "", None)
    await repo.add_insight("s2", "elsewhere", "", "", None)
    insights = await repo.insights("s1")
    assert [(i.text, i.answer) for i in insights] == [("one", {"k": 1}), ("two", None)]


async def _answered(repo: LocalChatRepository, chat_id: str, question: str, reply: str) -> None:
    record = TurnRecorder(repo, chat_id)
    record.start("s1", question)
    await record(final(reply))


async def test_the_history_of_a_question_is_the_chats_stored_turns(repo: LocalChatRepository) -> None:
    await _answered(repo, "h1", "average amount for SBI?", "68.5")
    history = await turn_history(repo, "h1", "and for HDFC?")
    assert [(m.role, m.content) for m in history] == [
        ("user", "average amount for SBI?"),
        ("assistant", "68.5"),
    ]
    assert await turn_history(repo, "never-made", "q") == []


async def test_a_resumed_question_is_not_its_own_history(repo: LocalChatRepository) -> None:
    await _answered(repo, "h2", "first?", "1")
    await _answered(repo, "h2", "second?", "2")  # stored before the stream was lost
    resumed = await turn_history(repo, "h2", "second?", resumed=True)
    assert [m.content for m in resumed] == ["first?", "1"]
    TurnRecorder(repo, "h2").start("s1", "third?")  # lost before its reply was stored
    for _ in range(50):
        if len(await repo.messages("h2")) == 5:
            break
        await asyncio.sleep(0.02)
    resumed = await turn_history(repo, "h2", "third?", resumed=True)
    assert [m.content for m in resumed] == ["first?", "1", "second?", "2"]


async def test_a_clients_history_is_stored_for_a_new_chat_and_bounded(repo: LocalChatRepository) -> None:
    chat = await repo.create_chat("s1", "t")
    turns = [("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(HISTORY_TURNS + 10)]
    await adopt_history(repo, chat.chat_id, turns)
    history = await turn_history(repo, chat.chat_id, "next?")
    assert [m.content for m in history] == [c for _, c in turns[-HISTORY_TURNS:]]
