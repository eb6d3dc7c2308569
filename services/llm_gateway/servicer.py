"""The gRPC adapter of the LLM gateway: protobuf in, plain calls with the caller's deadline, protobuf out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2

from common.errors import InsightError, abort_with
from insightx.v1 import llm_gateway_pb2 as pb
from insightx.v1 import llm_gateway_pb2_grpc
from services.llm_gateway.events import KeyEvent
from services.llm_gateway.gateway import CompletionRequest, LlmGateway
from services.llm_gateway.keys import KeyPool, KeyState
from services.llm_gateway.upstream import Usage

_KEY_STATES = {
    KeyState.HEALTHY: pb.KEY_STATE_HEALTHY,
    KeyState.COOLING: pb.KEY_STATE_COOLING,
    KeyState.DISABLED: pb.KEY_STATE_DISABLED,
}
_EVENT_TYPES = {
    "key_failed": pb.KEY_EVENT_TYPE_KEY_FAILED,
    "key_rotated": pb.KEY_EVENT_TYPE_KEY_ROTATED,
    "key_recovered": pb.KEY_EVENT_TYPE_KEY_RECOVERED,
    "all_keys_exhausted": pb.KEY_EVENT_TYPE_ALL_KEYS_EXHAUSTED,
}
# A "deadline" further than a day away is how grpc reports a call without one.
_NO_DEADLINE_S = 86_400.0


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _usage(usage: Usage | None) -> pb.Usage | None:
    if usage is None:
        return None
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def event_message(event: KeyEvent) -> pb.WatchKeyEventsResponse:
    return pb.WatchKeyEventsResponse(
        type=_EVENT_TYPES[event.type.value],
        provider=event.provider,
        fingerprint=event.fingerprint,
        next_fingerprint=event.next_fingerprint,
        reason=event.reason,
        time=_timestamp(event.time),
        recovers_at=_timestamp(event.recovers_at),
    )


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the monotonic clock, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


def _request(request: pb.CompleteRequest | pb.StreamCompleteRequest) -> CompletionRequest:
    return CompletionRequest(
        agent=request.agent,
        messages=[(m.role, m.content) for m in request.messages],
        model=request.model,
        provider=request.provider,
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens,
    )


def _provider_status(name: str, base_url: str, pool: KeyPool) -> pb.ProviderStatus:
    usable = pool.usable()
    if not pool.configured:
        state = pb.PROVIDER_STATE_NOT_CONFIGURED
    else:
        state = pb.PROVIDER_STATE_AVAILABLE if usable else pb.PROVIDER_STATE_EXHAUSTED
    recovery = pool.earliest_recovery() if pool.configured and not usable else None
    return pb.ProviderStatus(
        name=name,
        state=state,
        base_url=base_url,
        recovers_at=_timestamp(recovery[1]) if recovery else None,
        max_in_flight_per_key=pool.max_in_flight,
        keys=[
            pb.KeyStatus(
                fingerprint=key.fingerprint,
                state=_KEY_STATES[key.state],
                cooling_until=_timestamp(key.cooling_until_utc),
                reason=key.reason,
                requests=key.requests,
                failures=key.failures,
                usage=_usage(Usage(key.prompt_tokens, key.completion_tokens)),
                in_flight=key.in_flight,
            )
            for key in pool.keys
        ],
    )


def _events(events: Sequence[KeyEvent]) -> list[pb.WatchKeyEventsResponse]:
    return [event_message(e) for e in events]


class LlmGatewayServicer(llm_gateway_pb2_grpc.LlmGatewayServiceServicer):
    """Translates LlmGatewayService calls to LlmGateway."""

    def __init__(self, gateway: LlmGateway) -> None:
        self.gateway = gateway

    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        try:
            result = await self.gateway.complete(_request(request), _deadline(context))
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        return pb.CompleteResponse(
            content=result.content,
            model=result.model,
            usage=_usage(result.usage),
            provider=result.provider,
            key_fingerprint=result.key_fingerprint,
            key_events=_events(result.key_events),
            attempts=result.attempts,
        )

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        pieces = self.gateway.stream(_request(request), _deadline(context))
        try:
            async for piece in pieces:
                yield pb.StreamCompleteResponse(
                    delta=piece.delta,
                    model=piece.model,
                    usage=_usage(piece.usage),
                    provider=piece.provider,
                    key_fingerprint=piece.key_fingerprint,
                    key_events=_events(piece.key_events),
                    done=piece.done,
                )
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        finally:
            await pieces.aclose()

    async def GetKeyStatus(
        self, request: pb.GetKeyStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetKeyStatusResponse:
        providers = [
            _provider_status(name, provider.base_url, provider.pool)
            for name, provider in self.gateway.providers.items()
        ]
        agents = [
            pb.AgentUsage(
                agent=name,
                requests=books.requests,
                usage=_usage(Usage(books.prompt_tokens, books.completion_tokens)),
            )
            for name, books in sorted(self.gateway.agent_usage.items())
        ]
        return pb.GetKeyStatusResponse(providers=providers, agents=agents)

    async def WatchKeyEvents(
        self, request: pb.WatchKeyEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchKeyEventsResponse]:
        events = self.gateway.events.watch(replay_recent=request.replay_recent)
        try:
            async for event in events:
                yield event_message(event)
        finally:
            await events.aclose()
