"""Garbage replies, key rotation, and the built-in analyst taking over when no model can answer."""

from __future__ import annotations

import time

import pytest
from google.protobuf import json_format

from insightx.v1 import orchestrator_pb2 as opb
from tests.fakes.fake_llm_server import rate_limited, slow, unauthorized
from tests.services.orchestrator.conftest import DEMO_ROWS, StartChat, kinds, of_kind

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ROW_COUNT_QUESTION = "How many rows are there?"


def assert_builtin_answered(events: list, reason_words: str) -> None:  # type: ignore[type-arg]
    fallback = [s for s in of_kind(events, "status") if s.stage == "fallback"]
    assert len(fallback) == 1 and reason_words in fallback[0].message
    assert of_kind(events, "orchestrator_result")[-1].source == "builtin"
    assert kinds(events)[-1] == "final_response"
    assert json_format.MessageToDict(events[-1].final_response.answer) == DEMO_ROWS
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_garbage_classifier_replies_end_in_a_clear_error(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["classifier"] = lambda _: "Lorem ipsum dolor sit amet, banana."
    events = await chat.ask("What is the failure rate for Android users?")
    assert kinds(events)[-1] == "error" and "final_response" not in kinds(events)
    error = events[-1].error
    assert error.code == "LLM_BAD_REPLY"
    assert "classifier" in error.message and "could not be understood" in error.message
    # the unparseable reply was sent back once with what was expected, not crashed on
    assert chat.model.count("classifier") == 2
    correction = [messages for agent, messages in chat.model.calls if agent == "classifier"][1]
    assert correction[-2]["role"] == "assistant" and "banana" in correction[-2]["content"]
    assert "expected" in correction[-1]["content"]


async def test_garbage_sql_replies_are_attempts_that_end_in_an_error(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: "I'd rather not write SQL today."
    events = await chat.ask("What is the failure rate for Android users?")
    attempts = of_kind(events, "sql_result")
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert all(a.error_reason == "LLM_BAD_REPLY" for a in attempts)
    assert kinds(events)[-1] == "error" and events[-1].error.code == "SQL_FAILED"
    assert "3 tries" in events[-1].error.message


async def test_sql_that_never_runs_stops_after_three_tries(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: 'SELECT "nope" FROM "upi_transactions"'
    events = await chat.ask("What is the failure rate for Android users?")
    attempts = of_kind(events, "sql_result")
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert {a.error_reason for a in attempts} == {"SQL_BINDER"}
    assert events[-1].error.code == "SQL_FAILED" and "nope" in events[-1].error.message


async def test_every_key_exhausted_lets_the_builtin_analyst_answer(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.fake.always("key-one", rate_limited(retry_after=120))
    chat.fake.always("key-two", rate_limited(retry_after=120))
    started = time.monotonic()
    events = await chat.ask(ROW_COUNT_QUESTION)
    assert time.monotonic() - started < 10
    assert_builtin_answered(events, "Every language-model key is out")
    rotations = of_kind(events, "key_rotation")
    assert rotations and rotations[-1].kind == "all_keys_exhausted"
    assert kinds(events).index("key_rotation") < kinds(events).index("final_response")


async def test_no_key_configured_lets_the_builtin_analyst_answer(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    events = await chat.ask(ROW_COUNT_QUESTION)
    assert_builtin_answered(events, "No language model is configured")
    assert chat.fake.requests == []


async def test_an_unreachable_gateway_lets_the_builtin_analyst_answer(start_chat: StartChat) -> None:
    chat = await start_chat(llm_gateway_addr="127.0.0.1:9")
    events = await chat.ask(ROW_COUNT_QUESTION)
    assert_builtin_answered(events, "unavailable")


async def test_a_rotated_key_shows_up_in_the_chat(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.fake.always("key-one", unauthorized())
    chat.model.handlers["sql"] = lambda _: 'SELECT count(*) FROM "upi_transactions"'
    events = await chat.ask("How many transactions are there in total?")
    assert kinds(events)[-1] == "final_response", events[-1]
    rotations = of_kind(events, "key_rotation")
    assert any(r.kind == "key_failed" and r.reason for r in rotations)
    assert all("key-one" not in r.fingerprint and "key-two" not in r.fingerprint for r in rotations)
    assert of_kind(events, "orchestrator_result")[0].source == "llm"


async def test_a_slow_model_ends_in_an_error_event_not_a_hang(start_chat: StartChat) -> None:
    chat = await start_chat(llm_timeout_s=1.0)
    chat.fake.script("key-one", slow(10.0))
    chat.fake.script("key-two", slow(10.0))
    started = time.monotonic()
    events = await chat.ask("What is the failure rate for Android users?", timeout=30)
    assert time.monotonic() - started < 5
    assert kinds(events)[-1] == "error"
    assert events[-1].error.code == "DEADLINE_EXCEEDED" and "in time" in events[-1].error.message


async def test_the_callers_deadline_bounds_the_answer(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.fake.always("key-one", slow(10.0))
    chat.fake.always("key-two", slow(10.0))
    started = time.monotonic()
    events = await chat.ask("What is the failure rate for Android users?", timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert kinds(events)[-1] == "error" and events[-1].error.code == "DEADLINE_EXCEEDED"


async def test_builtin_python_steps_run_on_the_whole_sql_result(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None, sql_max_rows=1_000)
    events = await chat.ask("Are there any outliers in the amount?")
    assert kinds(events)[-1] == "final_response", events[-1]
    assert of_kind(events, "orchestrator_result")[0].classification == opb.CLASSIFICATION_SQL_THEN_PY
    sql = of_kind(events, "sql_result")[0]
    assert sql.total_rows == DEMO_ROWS  # not cut at sql_max_rows: Python needs every row
    runs = of_kind(events, "python_result")
    assert len(runs) == 1 and runs[0].error == "" and runs[0].results_json
    assert kinds(events).index("sql_result") < kinds(events).index("python_result")


async def test_an_unknown_session_is_an_error_a_person_can_act_on(start_chat: StartChat) -> None:
    chat = await start_chat()
    request = opb.ChatRequest(chat_id="x", session_id="no-such-session", message="How many rows?")
    events = [e async for e in chat.stub.Chat(request, timeout=30)]
    assert kinds(events) == ["status", "error"]
    assert "NOT_FOUND" in events[-1].error.code and events[-1].error.message
    assert chat.fake.requests == []


async def test_an_empty_question_is_refused(start_chat: StartChat) -> None:
    chat = await start_chat()
    events = await chat.ask("   ")
    assert kinds(events) == ["error"] and events[0].error.code == "EMPTY_QUESTION" and events[0].seq == 1


async def test_an_unreachable_sandbox_ends_in_an_error_event(start_chat: StartChat) -> None:
    chat = await start_chat(py_sandbox_addr="127.0.0.1:9")
    chat.model.queue("classifier", '{"classification": "PY_ONLY", "reasoning": "statistics"}')
    chat.model.queue("python", "result = len(df)")
    events = await chat.ask("How many rows, counted in Python?")
    assert kinds(events)[-1] == "error"
    assert events[-1].error.code == "UPSTREAM_UNAVAILABLE" and "sandbox" in events[-1].error.message
    assert of_kind(events, "python_result")[0].error


async def test_the_builtin_analysts_look_at_its_readings_is_not_shown_as_steps(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    events = await chat.ask("What is the average amount for Android users?")
    final = events[-1].final_response
    assert kinds(events)[-1] == "final_response" and final.sql, events[-1]
    shown = of_kind(events, "sql_result")
    # the top readings ran before the decision, but the chat shows one SQL step: the answer's own
    assert [s.query for s in shown] == [final.sql] and shown[0].total_rows == 1
