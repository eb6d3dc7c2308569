"""Two orchestrator replicas over one PostgreSQL event store (real servers, a real database): a resume that
reaches the other replica follows the live answer (the same events, each once; the question answered
once), and a stop asked of either replica stops it where it runs. An event store that cannot be reached
stops the start with a message naming the server, never its password; an outage later answers
UNAVAILABLE (EVENT_STORE_UNAVAILABLE) and passes when the database is back."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from common.errors import error_info
from insightx.v1 import orchestrator_pb2 as opb
from services.orchestrator.server import start as start_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from tests.services.orchestrator.conftest import StartChat, kinds
from tools.postgres_server import PostgresServer, bin_dir

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

COUNT_SQL = 'SELECT count(*) AS n FROM "upi_transactions" WHERE "device_type" = \'Web\''


async def _rest(call: grpc.aio.UnaryStreamCall) -> list[opb.ChatEvent]:  # type: ignore[type-arg]
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def test_a_resume_on_another_replica_follows_the_live_answer(
    start_chat: StartChat, postgres_url: str
) -> None:
    one = await start_chat(database_url=postgres_url)
    two = await start_chat(database_url=postgres_url)
    model = two.model  # the fake model's responder for both (the last started)
    release = threading.Event()

    def composer(_: str) -> str:
        release.wait(20)
        return 'Done.\n{"follow_ups": []}'

    model.handlers["sql"] = lambda _: COUNT_SQL
    model.handlers["composer"] = composer
    request = opb.ChatRequest(chat_id="across", session_id=one.backend.session_id, message="Web count?")
    original = one.stub.Chat(request, timeout=60)
    seen = [await original.read() for _ in range(4)]
    resume = opb.ChatRequest()
    resume.CopyFrom(request)
    resume.last_event_seq = seen[1].seq  # it missed two events it must now get from the store
    joined = two.stub.Chat(resume, timeout=60)
    replayed = [await joined.read() for _ in range(2)]
    assert replayed == seen[2:]
    release.set()
    tail, rest = await asyncio.gather(_rest(joined), _rest(original))
    assert tail == rest and kinds(tail)[-1] == "final_response"
    assert [e.seq for e in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    assert model.count("composer") == 1  # followed, never answered twice


async def test_a_stop_asked_of_another_replica_stops_the_answer(
    start_chat: StartChat, postgres_url: str
) -> None:
    one = await start_chat(database_url=postgres_url)
    two = await start_chat(database_url=postgres_url)
    release = threading.Event()

    def composer(_: str) -> str:
        release.wait(20)
        return 'Done.\n{"follow_ups": []}'

    two.model.handlers["sql"] = lambda _: COUNT_SQL
    two.model.handlers["composer"] = composer
    try:
        request = opb.ChatRequest(chat_id="stopped", session_id=one.backend.session_id, message="Web?")
        call = one.stub.Chat(request, timeout=60)
        first = await call.read()
        reply = await two.stub.StopAnswer(
            opb.StopAnswerRequest(chat_id="stopped", session_id=one.backend.session_id), timeout=10
        )
        assert reply.stopped
        rest = await asyncio.wait_for(_rest(call), 5)  # the owner hears it on its heartbeat (1 s)
        assert rest[-1].error.code == "CANCELLED"
        assert [e.seq for e in [first, *rest]] == list(range(1, len(rest) + 2))
    finally:
        release.set()


async def test_an_unreachable_event_store_stops_the_start_with_a_message(tmp_path: Path) -> None:
    url = "postgresql://insightx:hunter2-secret@127.0.0.1:1/insightx"
    settings = OrchestratorSettings(
        data_dir=tmp_path, database_url=url, database_connect_timeout_s=0.5, internal_token="t" * 32
    )
    with pytest.raises(SystemExit) as stopped:
        await start_orchestrator(settings, "127.0.0.1:0")
    message = str(stopped.value)
    assert "insightx@127.0.0.1:1/insightx" in message and "INSIGHTX_DATABASE_URL" in message
    assert "hunter2" not in message


async def test_an_event_store_outage_is_unavailable_and_passes(start_chat: StartChat) -> None:
    binaries = bin_dir()
    assert binaries is not None, "PostgreSQL is not installed: make system-deps"
    server = PostgresServer(binaries).start()
    try:
        chat = await start_chat(database_url=server.new_database())
        chat.model.handlers["sql"] = lambda _: COUNT_SQL
        assert kinds(await chat.ask("Web count?", chat_id="before"))[-1] == "final_response"
        server.pause()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await chat.ask("Web count?", chat_id="during", timeout=30)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(down.value).reason == "EVENT_STORE_UNAVAILABLE"
        assert server.password not in str(down.value)
        server.resume()
        for _ in range(60):  # the pool replaces the connections the outage broke
            try:
                events = await chat.ask("Web count?", chat_id="after", timeout=30)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
        assert kinds(events)[-1] == "final_response"
    finally:
        server.stop()
