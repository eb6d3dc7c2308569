"""The chat store's contract, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import sqlite3

import pytest

from common.store import postgres_chats, sqlite_chats
from common.store.chats import StoredMessage
from common.store.migrations import migrate_sqlite
from tests.common.store.conftest import Backend


async def test_a_chat_keeps_its_turns_in_order_with_their_answers(backend: Backend) -> None:
    repo = await backend.open_chats()
    await repo.start_turn("c1", "s1", "How many rows?" + "x" * 100)
    await repo.start_turn("c1", "s1", "And columns?")  # the chat exists: only the question is added
    await repo.add_message(
        StoredMessage("c1", "assistant", "**42**", {"value": 42, "nan": math.inf}, "SELECT 1")
    )
    chat = await repo.get_chat("c1")
    assert chat is not None and (chat.session_id, chat.title) == ("s1", "How many rows?" + "x" * 66)
    turns = await repo.messages("c1")
    assert [(t.role, t.content[:12]) for t in turns] == [
        ("user", "How many row"),
        ("user", "And columns?"),
        ("assistant", "**42**"),
    ]
    assert turns[2].answer == {"value": 42, "nan": math.inf} and turns[2].sql == "SELECT 1"
    assert turns[0].answer is None and turns[0].sql == "" and turns[0].created_at > 0
    assert await repo.get_chat("missing") is None
    assert await repo.messages("missing") == []


async def test_chats_are_listed_per_session_newest_first(backend: Backend) -> None:
    repo = await backend.open_chats()
    first = await repo.create_chat("s1", "first")
    await asyncio.sleep(0.01)
    second = await repo.create_chat("s1", "second", chat_id="chosen-id")
    await repo.create_chat("s2", "elsewhere")
    assert second.chat_id == "chosen-id" and second.title == "second"
    assert [c.chat_id for c in await repo.list_chats("s1")] == ["chosen-id", first.chat_id]
    again = await repo.create_chat("s9", "renamed?", chat_id="chosen-id")  # an existing id is kept as it is
    assert (again.session_id, again.title) == ("s1", "second")


async def test_deleting_a_chat_keeps_its_insights_and_a_session_takes_everything(backend: Backend) -> None:
    repo = await backend.open_chats()
    await repo.start_turn("c1", "s1", "q1")
    await repo.start_turn("c2", "s1", "q2")
    await repo.start_turn("c3", "s2", "q3")
    pinned = await repo.add_insight("s1", "Revenue peaked in May", "SELECT 2", "c1", [1, "two", None])
    await repo.add_insight("s2", "other", "", "c3", None)
    assert [(i.insight_id, i.answer) for i in await repo.insights("s1")] == [
        (pinned.insight_id, [1, "two", None])
    ]
    await repo.delete_chat("c1")
    assert await repo.get_chat("c1") is None and await repo.messages("c1") == []
    assert len(await repo.insights("s1")) == 1
    await repo.add_message(StoredMessage("c1", "assistant", "late answer"))  # its chat is gone: dropped
    assert await repo.messages("c1") == []
    await repo.delete_session("s1")
    assert await repo.list_chats("s1") == [] and await repo.insights("s1") == []
    assert await repo.messages("c2") == []
    assert [c.chat_id for c in await repo.list_chats("s2")] == ["c3"] and len(await repo.insights("s2")) == 1


async def test_two_gateways_write_one_chat_and_both_read_every_turn(backend: Backend) -> None:
    first, second = await backend.open_chats(), await backend.open_chats()
    await first.start_turn("c1", "s1", "question 0")
    writes = [
        (first if i % 2 else second).add_message(StoredMessage("c1", "assistant", f"turn {i}"))
        for i in range(30)
    ]
    await asyncio.gather(*writes)
    await asyncio.gather(first.start_turn("c2", "s1", "a"), second.start_turn("c2", "s1", "b"))
    for repo in (first, second):
        turns = await repo.messages("c1")
        assert len(turns) == 31 and sorted(t.content for t in turns[1:]) == sorted(
            f"turn {i}" for i in range(30)
        )
        assert sorted(t.content for t in await repo.messages("c2")) == ["a", "b"]  # one chat, both turns
        assert len(await repo.list_chats("s1")) == 2


CARD = {
    "chart": {"mark": "bar", "data": {"values": [{"os": "Android", "n": 3}, {"os": "iOS", "n": 1}]}},
    "follow_ups": ["And by month?"],
    "clarifications": [],
    "confidence": 0.9,
    "answer_type": "table",
}


async def test_an_answer_keeps_its_card_for_any_reader(backend: Backend) -> None:
    first, second = await backend.open_chats(), await backend.open_chats()
    await first.start_turn("c1", "s1", "Count by os")
    await first.add_message(StoredMessage("c1", "assistant", "Android leads", [3, 1], "SELECT 1", card=CARD))
    await first.add_message(StoredMessage("c1", "assistant", "no card"))
    turns = await second.messages("c1")  # another gateway reads what the first stored
    assert [t.card for t in turns] == [None, CARD, None]


async def test_a_database_from_before_cards_gains_the_column_and_keeps_its_rows(backend: Backend) -> None:
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.root / "chats.sqlite3", isolation_level=None)
        migrate_sqlite(conn, "chats", sqlite_chats.MIGRATIONS[:2])  # the release before cards
        conn.execute("INSERT INTO chats VALUES ('c1', 's1', 'old', 1.0)")
        conn.execute(
            "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at)"
            " VALUES ('c1', 'assistant', 'old answer', '42', 'SELECT 42', 2.0)"
        )
        conn.close()
    else:
        db = await backend.database()
        await db.migrate("chats", postgres_chats.MIGRATIONS[:1])
        async with db.pool.connection() as pg:
            await pg.execute("INSERT INTO chats VALUES ('c1', 's1', 'old', 1.0)")
            await pg.execute(
                "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at)"
                " VALUES ('c1', 'assistant', 'old answer', '42', 'SELECT 42', 2.0)"
            )
    repo = await backend.open_chats()  # the new code migrates the existing database
    [old] = await repo.messages("c1")
    assert (old.content, old.answer, old.sql, old.card) == ("old answer", 42, "SELECT 42", None)
    await repo.add_message(StoredMessage("c1", "assistant", "new", card=CARD))
    assert (await repo.messages("c1"))[-1].card == CARD


async def test_an_answer_is_recorded_once_however_many_recorders_race(backend: Backend) -> None:
    first, second = await backend.open_chats(), await backend.open_chats()  # two gateways
    question = await first.start_turn("c1", "s1", "How many rows?")
    assert question > 0
    reply = StoredMessage("c1", "assistant", "**42**", 42, "SELECT 42", card=CARD, reply_to=question)
    stored = await asyncio.gather(*((first if i % 2 else second).record_answer(reply) for i in range(20)))
    assert stored.count(True) == 1  # one recorder stored it; the others met the unique index
    turns = await second.messages("c1")
    assert [(t.role, t.content, t.reply_to) for t in turns] == [
        ("user", "How many rows?", 0),
        ("assistant", "**42**", question),
    ]
    assert turns[0].message_id == question and turns[1].message_id > question
    assert (turns[1].answer, turns[1].sql, turns[1].card) == (42, "SELECT 42", CARD)
    # The chat's next question has an answer of its own.
    follow_up = await second.start_turn("c1", "s1", "How many rows?")
    assert follow_up > question
    assert await first.record_answer(StoredMessage("c1", "assistant", "**42**", reply_to=follow_up))
    assert not await second.record_answer(StoredMessage("c1", "assistant", "other", reply_to=follow_up))
    assert [t.content for t in await first.messages("c1")] == ["How many rows?", "**42**"] * 2


async def test_an_answer_to_a_question_that_is_not_there_is_dropped(backend: Backend) -> None:
    repo = await backend.open_chats()
    question = await repo.start_turn("c1", "s1", "q")
    other = await repo.start_turn("c2", "s1", "q2")
    assert not await repo.record_answer(StoredMessage("c1", "assistant", "a", reply_to=other))  # c2's
    assert not await repo.record_answer(StoredMessage("c1", "assistant", "a", reply_to=question + 99))
    assert await repo.record_answer(StoredMessage("c1", "assistant", "a", reply_to=question))
    answer = (await repo.messages("c1"))[-1].message_id
    assert not await repo.record_answer(StoredMessage("c1", "assistant", "b", reply_to=answer))  # no question
    await repo.delete_chat("c2")  # deleted while its answer ran: the answer is dropped, nothing recreated
    assert not await repo.record_answer(StoredMessage("c2", "assistant", "late", reply_to=other))
    assert await repo.messages("c2") == [] and await repo.get_chat("c2") is None
    with pytest.raises(ValueError, match="reply_to"):
        await repo.record_answer(StoredMessage("c1", "assistant", "no key"))
