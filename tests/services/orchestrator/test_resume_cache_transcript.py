"""Resuming a stream by seq, the answer cache, and history taken from the request alone (no transcript)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from insightx.v1 import orchestrator_pb2 as opb
from tests.services.orchestrator.conftest import StartChat, kinds, of_kind

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

COUNT_SQL = 'SELECT count(*) AS n FROM "upi_transactions" WHERE "device_type" = \'Web\''


async def test_resume_sends_only_the_events_after_last_seq(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    first = await chat.ask("How many Web transactions?", chat_id="resume-1")
    calls = len(chat.model.calls)
    rest = await chat.ask("How many Web transactions?", chat_id="resume-1", last_event_seq=3)
    assert [e.seq for e in rest] == [e.seq for e in first][3:]
    assert rest == first[3:]
    assert len(chat.model.calls) == calls  # replayed, not answered again


async def test_a_resume_joins_an_answer_still_running(start_chat: StartChat) -> None:
    chat = await start_chat()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def composer(_: str) -> str:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        return 'Done.\n{"follow_ups": []}'

    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    chat.model.handlers["composer"] = composer
    request = opb.ChatRequest(chat_id="resume-2", session_id=chat.backend.session_id, message="Web count?")
    original = chat.stub.Chat(request, timeout=30)
    seen = [await original.read() for _ in range(4)]
    joined = chat.stub.Chat(
        opb.ChatRequest(
            chat_id="resume-2",
            session_id=chat.backend.session_id,
            message="Web count?",
            last_event_seq=seen[-1].seq,
        ),
        timeout=30,
    )
    await asyncio.sleep(0.3)  # the joining call reaches the orchestrator while the composer is still busy
    release.set()
    tail = [e async for e in joined]
    rest = []
    while (event := await original.read()) is not grpc.aio.EOF:
        rest.append(event)
    assert [e.seq for e in tail] == [e.seq for e in rest]
    assert kinds(tail)[-1] == "final_response"


async def test_an_expired_stream_is_answered_again_with_seq_going_on(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    events = await chat.ask("How many Web transactions?", chat_id="never-seen", last_event_seq=7)
    assert events[0].seq == 8 and events[0].status.stage == "resume"
    assert [e.seq for e in events] == list(range(8, 8 + len(events)))
    assert kinds(events)[-1] == "final_response"


async def test_the_same_question_on_the_same_data_comes_from_the_cache(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    first = await chat.ask("How many Web transactions?", chat_id="a")
    calls = len(chat.model.calls)
    second = await chat.ask("  how many web transactions ", chat_id="b")
    assert len(chat.model.calls) == calls
    assert not first[-1].final_response.cached and second[-1].final_response.cached
    assert any(s.stage == "cache" for s in of_kind(second, "status"))
    cached, original = second[-1].final_response, first[-1].final_response
    assert (cached.text, cached.sql, cached.answer) == (original.text, original.sql, original.answer)
    # the rows the answer rests on come along, renumbered into the new stream
    assert of_kind(second, "sql_result") == of_kind(first, "sql_result")
    assert [e.seq for e in second] == list(range(1, len(second) + 1))
    # another conversation before it is another question
    third = await chat.ask("How many Web transactions?", chat_id="c", history=[("user", "Only in Delhi?")])
    assert not third[-1].final_response.cached and len(chat.model.calls) > calls


async def test_the_cache_can_be_turned_off(start_chat: StartChat) -> None:
    chat = await start_chat(answer_cache_size=0)
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    await chat.ask("How many Web transactions?", chat_id="a")
    again = await chat.ask("How many Web transactions?", chat_id="b")
    assert not again[-1].final_response.cached


async def test_history_comes_only_from_the_request(start_chat: StartChat) -> None:
    """The orchestrator keeps no chat of its own: a turn sent without history is read without one, and
    the same chat's turn with history is read with the history the caller sent (the gateway's store)."""
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    await chat.ask("How many Web transactions?", chat_id="kept")
    await chat.ask("And what share of all is that?", chat_id="kept")
    assert "How many Web transactions?" not in chat.model.prompts("sql")[-1]
    history = [("user", "How many Web transactions?"), ("assistant", "12,345 Web transactions.")]
    await chat.ask("And what share of all is that?", chat_id="kept", history=history)
    assert "How many Web transactions?" in chat.model.prompts("sql")[-1]
    # nothing about chats was written under the data directory by the orchestrator
    assert not (chat.settings.data_dir / "orchestrator").exists()


async def test_a_resume_for_another_session_does_not_replay_the_chat(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: COUNT_SQL
    await chat.ask("How many Web transactions?", chat_id="private")
    request = opb.ChatRequest(
        chat_id="private",
        session_id="another-session",
        message="How many Web transactions?",
        last_event_seq=2,
    )
    events = [e async for e in chat.stub.Chat(request, timeout=30)]
    assert events[0].status.stage == "resume" and kinds(events)[-1] == "error"
    assert not [e for e in events if e.WhichOneof("payload") == "sql_result"]
