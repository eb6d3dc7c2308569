"""Key rotation against the fake Bytez server: the issue's acceptance, through the real gRPC service."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import grpc
import pytest

from insightx.v1 import llm_gateway_pb2 as pb
from tests.fakes.fake_llm_server import (
    FakeLlmServer,
    Reply,
    error_in_body,
    ok,
    rate_limited,
    server_error,
    slow,
    unauthorized,
)
from tests.services.llm_gateway.conftest import GatewayFactory
from tests.services.llm_gateway.support import KEYS, complete_request, rpc_error

pytestmark = pytest.mark.integration

K1, K2, K3 = KEYS


async def _collect(stub: object, sink: list[pb.WatchKeyEventsResponse]) -> None:
    async for event in stub.WatchKeyEvents(pb.WatchKeyEventsRequest(replay_recent=True)):  # type: ignore[attr-defined]
        sink.append(event)


@pytest.mark.slow
async def test_401_then_429_retry_after_then_ok_serves_100_requests(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, unauthorized())
    fake_llm.script(K2, rate_limited(retry_after=2))
    async with gateway(KEYS) as stub:
        events: list[pb.WatchKeyEventsResponse] = []
        watcher = asyncio.create_task(_collect(stub, events))
        first = await stub.Complete(complete_request(text="q0"), timeout=10)
        replies = [first]
        # The other 99 arrive over ~3 s, so that K2's 2 s cool-down ends while they are being served.
        for wave in range(33):
            batch = [stub.Complete(complete_request(text=f"q{wave}-{i}"), timeout=10) for i in range(3)]
            replies += await asyncio.gather(*batch)
            await asyncio.sleep(0.09)
        await asyncio.sleep(0.1)
        watcher.cancel()

    assert len(replies) == 100
    assert all(r.content.startswith("Echo: q") for r in replies)
    assert first.attempts == 3 and first.key_fingerprint == _fp(K3)

    assert len(fake_llm.requests_for(K1)) == 1, "a key answering 401 is never used again"
    k2 = fake_llm.requests_for(K2)
    assert k2[0].status == 429
    reused = [r.time - k2[0].time for r in k2[1:]]
    assert reused, "the cooled key is used again once it recovers"
    assert min(reused) >= 2.0, "not before Retry-After has passed"
    assert min(reused) < 2.6, "and soon after it has"
    assert all(r.status == 200 for r in k2[1:])

    kinds = [(pb.KeyEventType.Name(e.type), e.fingerprint, e.next_fingerprint, e.reason) for e in events]
    assert kinds == [
        ("KEY_EVENT_TYPE_KEY_FAILED", _fp(K1), "", "http 401"),
        ("KEY_EVENT_TYPE_KEY_ROTATED", _fp(K1), _fp(K2), "http 401"),
        ("KEY_EVENT_TYPE_KEY_FAILED", _fp(K2), "", "http 429"),
        ("KEY_EVENT_TYPE_KEY_ROTATED", _fp(K2), _fp(K3), "http 429"),
        ("KEY_EVENT_TYPE_KEY_RECOVERED", _fp(K2), "", ""),
    ]
    times = [e.time.ToDatetime(tzinfo=UTC) for e in events]
    assert times == sorted(times) and all(abs(datetime.now(UTC) - t).total_seconds() < 30 for t in times)
    cooled = events[2]
    assert 1.9 <= (cooled.recovers_at.ToDatetime(tzinfo=UTC) - times[2]).total_seconds() <= 2.1
    assert 1.9 <= (times[4] - times[2]).total_seconds() <= 2.5


async def test_key_status_reports_states_and_usage(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    fake_llm.always(K1, unauthorized())
    fake_llm.script(K2, rate_limited(retry_after=30))
    async with gateway(KEYS) as stub:
        await stub.Complete(complete_request(agent="classifier", text="a b c"), timeout=10)
        await stub.Complete(complete_request(agent="sql", text="d e"), timeout=10)
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)

    bytez = next(p for p in status.providers if p.name == "bytez")
    assert bytez.state == pb.PROVIDER_STATE_AVAILABLE and bytez.base_url == fake_llm.base_url
    by_fp = {k.fingerprint: k for k in bytez.keys}
    assert by_fp[_fp(K1)].state == pb.KEY_STATE_DISABLED and by_fp[_fp(K1)].reason == "http 401"
    assert by_fp[_fp(K2)].state == pb.KEY_STATE_COOLING
    remaining = by_fp[_fp(K2)].cooling_until.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    assert 25 < remaining.total_seconds() <= 30
    healthy = by_fp[_fp(K3)]
    assert healthy.state == pb.KEY_STATE_HEALTHY and healthy.requests == 2 and healthy.failures == 0
    assert healthy.usage.completion_tokens > 0 and healthy.in_flight == 0
    agents = {a.agent: a for a in status.agents}
    assert agents["classifier"].requests == 1 and agents["sql"].requests == 1
    assert agents["sql"].usage.total_tokens > 0
    openai = next(p for p in status.providers if p.name == "openai")
    assert openai.state == pb.PROVIDER_STATE_NOT_CONFIGURED


async def test_all_keys_rate_limited_fails_fast_saying_when(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, rate_limited(retry_after=30))
    fake_llm.always(K2, rate_limited(retry_after=12))
    fake_llm.always(K3, rate_limited(retry_after=45))
    async with gateway(KEYS) as stub:
        started = time.monotonic()
        first = await rpc_error(stub.Complete(complete_request(), timeout=30))
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = await rpc_error(stub.Complete(complete_request(), timeout=30))
        second_s = time.monotonic() - started
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)

    for error in (first, second):
        assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "ALL_KEYS_EXHAUSTED"
        recovers = datetime.fromisoformat(error.metadata["recovers_at"].replace("Z", "+00:00"))
        assert 9 < (recovers - datetime.now(UTC)).total_seconds() <= 12, "the earliest key: K2's 12 s"
        assert error.metadata["recovers_at"] in error.message
    assert first_s < 1.0 and second_s < 0.5, "fast, not a hang"
    assert len(fake_llm.requests) == 3, "once every key is out, nothing more is sent"
    bytez = next(p for p in status.providers if p.name == "bytez")
    assert bytez.state == pb.PROVIDER_STATE_EXHAUSTED and bytez.HasField("recovers_at")


async def test_all_keys_rejected_says_none_will_recover(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, unauthorized())
    fake_llm.always(K2, Reply(status=403, error="Forbidden"))
    async with gateway(KEYS[:2]) as stub:
        error = await rpc_error(stub.Complete(complete_request(), timeout=10))
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "ALL_KEYS_EXHAUSTED"
    assert "recovers_at" not in error.metadata and "none will recover" in error.message


async def test_burst_of_5xx_is_retried_and_succeeds(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    fake_llm.script(K1, server_error(503), server_error(500))
    fake_llm.script(K2, server_error(502))
    async with gateway(KEYS[:2]) as stub:
        reply = await stub.Complete(complete_request(text="after the storm"), timeout=10)
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
    assert reply.content == "Echo: after the storm" and reply.attempts == 4
    assert [r.status for r in fake_llm.requests] == [503, 502, 500, 200]
    assert [r.key for r in fake_llm.requests] == [K1, K2, K1, K2], "each retry moves to the next key"
    bytez = next(p for p in status.providers if p.name == "bytez")
    assert all(k.state == pb.KEY_STATE_HEALTHY for k in bytez.keys), "5xx says nothing about a key"


async def test_endless_5xx_gives_up_after_the_attempt_bound(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, server_error(503))
    async with gateway(KEYS[:1], llm_max_attempts=3) as stub:
        error = await rpc_error(stub.Complete(complete_request(), timeout=10))
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "UPSTREAM_UNAVAILABLE"
    assert error.metadata["last_failure"] == "http 503" and len(fake_llm.requests) == 3


async def test_timeouts_move_to_the_next_key(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    fake_llm.script(K1, slow(3.0))
    async with gateway(KEYS[:2], llm_first_byte_timeout_s=0.3) as stub:
        started = time.monotonic()
        reply = await stub.Complete(complete_request(text="patience"), timeout=10)
    assert reply.content == "Echo: patience" and reply.key_fingerprint == _fp(K2)
    assert time.monotonic() - started < 2.0
    rotation = reply.key_events[0]
    assert rotation.type == pb.KEY_EVENT_TYPE_KEY_ROTATED and rotation.reason == "timeout"


async def test_retries_stop_at_the_callers_deadline(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    fake_llm.always(K1, slow(5.0))
    fake_llm.always(K2, slow(5.0))
    async with gateway(KEYS[:2]) as stub:
        started = time.monotonic()
        error = await rpc_error(stub.Complete(complete_request(), timeout=1.0))
        elapsed = time.monotonic() - started
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5


async def test_a_200_carrying_an_error_is_retried_on_another_key(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.script(K1, error_in_body("Model is loading, try again"))
    async with gateway(KEYS[:2]) as stub:
        reply = await stub.Complete(complete_request(text="warm"), timeout=10)
    assert reply.content == "Echo: warm" and reply.key_fingerprint == _fp(K2)
    assert reply.key_events[-1].reason == "error in body"


async def test_other_4xx_is_the_callers_error_and_not_retried(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.script(K1, Reply(status=400, error="max_tokens is too large for this model"))
    fake_llm.script(K2, Reply(status=404, error="model not found"))
    async with gateway(KEYS[:2]) as stub:
        bad = await rpc_error(stub.Complete(complete_request(), timeout=10))
        missing = await rpc_error(stub.Complete(complete_request(model="no/such-model"), timeout=10))
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and bad.reason == "UPSTREAM_REJECTED_REQUEST"
    assert "max_tokens is too large" in bad.message
    assert missing.code == grpc.StatusCode.NOT_FOUND and missing.reason == "MODEL_NOT_FOUND"
    assert len(fake_llm.requests) == 2, "not retried"
    bytez = next(p for p in status.providers if p.name == "bytez")
    assert all(k.state == pb.KEY_STATE_HEALTHY for k in bytez.keys)


async def test_429_without_retry_after_cools_with_backoff_or_ratelimit_reset(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.script(K1, rate_limited())
    fake_llm.script(K2, rate_limited(reset=7))
    async with gateway(KEYS) as stub:
        reply = await stub.Complete(complete_request(), timeout=10)
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
    assert reply.key_fingerprint == _fp(K3)
    cooling = {k.fingerprint: k.cooling_until.ToDatetime(tzinfo=UTC) for k in status.providers[0].keys}
    now = datetime.now(UTC)
    assert 0.5 < (cooling[_fp(K1)] - now).total_seconds() <= 1.5, "backoff from 1 s, with jitter"
    assert 6 < (cooling[_fp(K2)] - now).total_seconds() <= 7


async def test_in_flight_cap_per_key_under_200_concurrent_calls(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    fake_llm.always(K1, ok(delay_s=0.002))
    fake_llm.always(K2, ok(delay_s=0.002))
    async with gateway(KEYS[:2], llm_bytez_max_in_flight_per_key=2) as stub:
        replies = await asyncio.gather(
            *(stub.Complete(complete_request(text=f"n{i}"), timeout=30) for i in range(200))
        )
    assert sorted(r.content for r in replies) == sorted(f"Echo: n{i}" for i in range(200))
    assert fake_llm.peak_concurrency(K1) == 2 and fake_llm.peak_concurrency(K2) == 2
    counts = [len(fake_llm.requests_for(k)) for k in KEYS[:2]]
    assert abs(counts[0] - counts[1]) <= 20, f"round-robin shares the load: {counts}"


def _fp(key: str) -> str:
    from services.llm_gateway.keys import fingerprint

    return fingerprint(key)
