"""No wasted calls: without a usable key the orchestrator asks the LLM gateway's key status, not the model.

A real LLM gateway (keyless, or with keys on the fake Bytez server) sits behind a counting proxy, so each
test sees exactly which calls the orchestrator made.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import timestamp_pb2

from insightx.v1 import llm_gateway_pb2 as lpb
from services.llm_gateway.server import start as start_llm_gateway
from services.llm_gateway.settings import LlmGatewaySettings
from services.orchestrator.availability import state_from_status
from tests.fakes.fake_llm_server import rate_limited
from tests.services.orchestrator.conftest import StartChat, kinds, of_kind

QUESTION = "How many rows are there?"


def _status(*states: int, recovers_in_s: float | None = None) -> lpb.GetKeyStatusResponse:
    providers = []
    for state in states:
        provider = lpb.ProviderStatus(name="p", state=state)
        if recovers_in_s is not None and state == lpb.PROVIDER_STATE_EXHAUSTED:
            provider.recovers_at.CopyFrom(timestamp_pb2.Timestamp(seconds=int(1_000 + recovers_in_s)))
        providers.append(provider)
    return lpb.GetKeyStatusResponse(providers=providers)


@pytest.mark.parametrize(
    ("states", "reason"),
    [
        ((lpb.PROVIDER_STATE_NOT_CONFIGURED, lpb.PROVIDER_STATE_NOT_CONFIGURED), "LLM_NOT_CONFIGURED"),
        ((lpb.PROVIDER_STATE_NOT_CONFIGURED, lpb.PROVIDER_STATE_EXHAUSTED), "ALL_KEYS_EXHAUSTED"),
        ((lpb.PROVIDER_STATE_EXHAUSTED, lpb.PROVIDER_STATE_AVAILABLE), None),
        ((lpb.PROVIDER_STATE_NOT_CONFIGURED, lpb.PROVIDER_STATE_AVAILABLE), None),
        ((), None),  # a status that names no provider says nothing: try the model
        ((lpb.PROVIDER_STATE_UNSPECIFIED,), None),
    ],
)
def test_the_key_status_says_whether_a_model_may_answer(states: tuple[int, ...], reason: str | None) -> None:
    state, _ = state_from_status(_status(*states), now_s=1_000.0)
    assert state.reason == reason
    assert state.usable is (reason is None)


def test_exhausted_keys_are_kept_only_until_the_first_recovers() -> None:
    _, until = state_from_status(_status(lpb.PROVIDER_STATE_EXHAUSTED, recovers_in_s=3), now_s=1_000.0)
    assert until == pytest.approx(3.0)
    _, past = state_from_status(_status(lpb.PROVIDER_STATE_EXHAUSTED, recovers_in_s=-5), now_s=1_000.0)
    assert past == 0.0


def _answered_by_builtin(events: list, reason_words: str) -> None:  # type: ignore[type-arg]
    fallback = [s for s in of_kind(events, "status") if s.stage == "fallback"]
    assert len(fallback) == 1 and reason_words in fallback[0].message, fallback
    assert of_kind(events, "orchestrator_result")[-1].source == "builtin"
    assert kinds(events)[-1] == "final_response"  # what it answers is the built-in analyst's tests' concern


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_without_a_key_no_completion_is_asked_for(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    for n in range(3):
        events = await chat.ask(QUESTION, chat_id=f"no-key-{n}")
        _answered_by_builtin(events, "No language model is configured")
    assert chat.model_calls == 0
    assert chat.proxy.calls["GetKeyStatus"] == 1  # kept for model_status_ttl_s, not asked per chat
    assert chat.fake.requests == []


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_concurrent_chats_share_one_status_call(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    answers = await asyncio.gather(*(chat.ask(QUESTION, chat_id=f"together-{n}") for n in range(4)))
    for events in answers:
        _answered_by_builtin(events, "No language model is configured")
    assert chat.proxy.calls["GetKeyStatus"] == 1 and chat.model_calls == 0


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_with_keys_the_model_answers(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: 'SELECT count(*) AS n FROM "upi_transactions"'
    events = await chat.ask(QUESTION)
    assert kinds(events)[-1] == "final_response", events[-1]
    assert "fallback" not in [s.stage for s in of_kind(events, "status")]
    assert of_kind(events, "orchestrator_result")[0].source == "llm"
    assert chat.model_calls >= 3 and len(chat.fake.requests) == chat.model_calls
    assert chat.proxy.calls["GetKeyStatus"] == 1


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_keys_that_ran_out_are_not_tried_again_until_they_recover(start_chat: StartChat) -> None:
    chat = await start_chat(model_status_ttl_s=30.0)
    chat.fake.always("key-one", rate_limited(retry_after=2))
    chat.fake.always("key-two", rate_limited(retry_after=2))
    first = await chat.ask(QUESTION, chat_id="out-1")
    _answered_by_builtin(first, "Every language-model key is out")
    calls, requests = chat.model_calls, len(chat.fake.requests)
    assert calls > 0  # the status said AVAILABLE: this chat found out by trying
    second = await chat.ask(QUESTION, chat_id="out-2")
    _answered_by_builtin(second, "Every language-model key is out")
    assert chat.model_calls == calls and len(chat.fake.requests) == requests
    # the keys recover (recovers_at bounds the keep, not the 30 s TTL): the model answers again
    chat.fake.always("key-one", None)
    chat.fake.always("key-two", None)
    chat.model.handlers["sql"] = lambda _: 'SELECT count(*) AS n FROM "upi_transactions"'
    deadline = time.monotonic() + 15
    source = "builtin"
    while source != "llm" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        events = await chat.ask(QUESTION, chat_id=f"back-{time.monotonic_ns()}")
        source = of_kind(events, "orchestrator_result")[0].source
    assert source == "llm"


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_a_gateway_restarted_with_keys_is_used_after_the_ttl(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None, model_status_ttl_s=0.5)
    _answered_by_builtin(await chat.ask(QUESTION, chat_id="before"), "No language model is configured")
    gateway = await start_llm_gateway(
        LlmGatewaySettings(
            data_dir=chat.settings.data_dir,
            BYTEZ_BASE_URL=chat.fake.base_url,
            BYTEZ_API_KEYS="key-one",
            llm_retry_backoff_s=0.0,
        ),
        "[::]:0",
    )
    try:
        chat.proxy.target = f"127.0.0.1:{gateway.port}"
        chat.model.handlers["sql"] = lambda _: 'SELECT count(*) AS n FROM "upi_transactions"'
        await asyncio.sleep(0.6)
        events = await chat.ask(QUESTION, chat_id="after")
        assert of_kind(events, "orchestrator_result")[0].source == "llm"
        assert kinds(events)[-1] == "final_response"
        assert chat.proxy.calls["GetKeyStatus"] == 2
    finally:
        await gateway.stop(0)
