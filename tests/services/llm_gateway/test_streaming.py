"""StreamComplete: tokens as they arrive, retries only before the first token, never duplicated text."""

from __future__ import annotations

import time

import grpc
import pytest

from common.errors import RemoteError, error_info
from insightx.v1 import llm_gateway_pb2 as pb
from services.llm_gateway.keys import fingerprint
from tests.fakes.fake_llm_server import (
    FakeLlmServer,
    Reply,
    cut_stream,
    error_in_body,
    rate_limited,
    server_error,
    unauthorized,
)
from tests.services.llm_gateway.conftest import GatewayFactory
from tests.services.llm_gateway.support import KEYS, stream_request

pytestmark = pytest.mark.integration

K1, K2, _ = KEYS
ANSWER = "The average fare is 32.2 dollars across 891 passengers."


def _answer(messages: list[dict[str, str]], model: str) -> str:
    return ANSWER


async def _read(
    stub: object, request: pb.StreamCompleteRequest, timeout: float = 10
) -> tuple[list[pb.StreamCompleteResponse], RemoteError | None]:
    received: list[pb.StreamCompleteResponse] = []
    try:
        async for message in stub.StreamComplete(request, timeout=timeout):  # type: ignore[attr-defined]
            received.append(message)
    except grpc.aio.AioRpcError as exc:
        return received, error_info(exc)
    return received, None


async def test_stream_passes_every_token_once_then_done(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = _answer
    async with gateway(KEYS[:1]) as stub:
        received, error = await _read(stub, stream_request())
    assert error is None
    assert "".join(m.delta for m in received) == ANSWER
    assert len([m for m in received if m.delta]) == len(ANSWER.split()), "one message per upstream chunk"
    assert received[0].provider == "bytez" and received[0].key_fingerprint == fingerprint(K1)
    assert received[-1].done and received[-1].usage.completion_tokens == len(ANSWER.split())
    assert fake_llm.requests[0].stream, "asked upstream for a stream"


async def test_tokens_arrive_before_the_stream_ends(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    fake_llm.responder = lambda messages, model: Reply(text="a b c d e", chunk_delay_s=0.25)
    async with gateway(KEYS[:1]) as stub:
        started = time.monotonic()
        arrivals = []
        async for message in stub.StreamComplete(stream_request(), timeout=10):
            if message.delta:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[0] < 0.6 and arrivals[-1] - arrivals[0] > 0.8, "passed on as they come, not buffered"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (unauthorized(), "http 401"),
        (rate_limited(retry_after=5), "http 429"),
        (server_error(503), "http 503"),
    ],
    ids=["401", "429", "503"],
)
async def test_failure_before_the_first_token_moves_to_another_key(
    fake_llm: FakeLlmServer, gateway: GatewayFactory, failure: Reply, reason: str
) -> None:
    fake_llm.responder = _answer
    fake_llm.script(K1, failure)
    async with gateway(KEYS[:2]) as stub:
        received, error = await _read(stub, stream_request())
    assert error is None and "".join(m.delta for m in received) == ANSWER
    first = received[0]
    assert first.key_fingerprint == fingerprint(K2)
    rotation = first.key_events[-1]
    assert rotation.type == pb.KEY_EVENT_TYPE_KEY_ROTATED and rotation.reason == reason


async def test_connection_cut_before_any_token_is_retried(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = _answer
    fake_llm.script(K1, cut_stream(after=0))
    async with gateway(KEYS[:2]) as stub:
        received, error = await _read(stub, stream_request())
    assert error is None and "".join(m.delta for m in received) == ANSWER
    assert [r.key for r in fake_llm.requests] == [K1, K2]


async def test_stream_cut_midway_ends_with_an_error_and_no_duplicated_tokens(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = _answer
    fake_llm.script(K1, cut_stream(after=3))
    async with gateway(KEYS[:2]) as stub:
        received, error = await _read(stub, stream_request())
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
    text = "".join(m.delta for m in received)
    assert error is not None
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "STREAM_INTERRUPTED"
    assert text == "The average fare ", "exactly the first 3 chunks, once"
    assert ANSWER.startswith(text) and not any(m.done for m in received)
    assert len(fake_llm.requests) == 1, "never restarted on another key once text went out"
    assert error.metadata["sent_chars"] == str(len(text))
    key = next(k for k in status.providers[0].keys if k.fingerprint == fingerprint(K1))
    assert key.failures == 1 and key.in_flight == 0


async def test_stream_cut_after_the_last_token_but_before_done_is_an_error(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = lambda messages, model: Reply(text="x y", cut_after=2)
    async with gateway(KEYS[:1]) as stub:
        received, error = await _read(stub, stream_request())
    assert "".join(m.delta for m in received) == "x y"
    assert error is not None and error.reason == "STREAM_INTERRUPTED"


async def test_stream_when_all_keys_are_out_fails_fast(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, rate_limited(retry_after=20))
    async with gateway(KEYS[:1]) as stub:
        started = time.monotonic()
        received, error = await _read(stub, stream_request())
    assert not received and error is not None
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "ALL_KEYS_EXHAUSTED"
    assert time.monotonic() - started < 1.0


async def test_a_200_error_body_instead_of_a_stream_is_retried(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = _answer
    fake_llm.script(K1, error_in_body("Model is loading"))
    async with gateway(KEYS[:2]) as stub:
        received, error = await _read(stub, stream_request())
    assert error is None and "".join(m.delta for m in received) == ANSWER
    assert received[0].key_fingerprint == fingerprint(K2)


async def test_a_server_ignoring_stream_true_still_streams_one_piece(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.responder = lambda messages, model: Reply(text=ANSWER, no_stream=True)
    async with gateway(KEYS[:1]) as stub:
        received, error = await _read(stub, stream_request())
    assert error is None and [m.delta for m in received] == [ANSWER, ""]
    assert received[-1].done and received[-1].usage.completion_tokens > 0
