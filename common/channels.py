"""Client channels to peer services: one per address, internal credentials and request ids on every call,
deadlines required."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import AUTHORIZATION_METADATA_KEY, bearer_metadata
from common.identity import USER_ID_METADATA_KEY, user_id_var
from common.logging import REQUEST_ID_METADATA_KEY, request_id_var
from common.settings import get_settings

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


DEFAULT_DEADLINE_S = 30.0


class _CallMetadata:
    """Adds this process's internal credential and the current request id and user id to a call."""

    def __init__(self, default_deadline_s: float, token: str | None) -> None:
        self.default_deadline_s = default_deadline_s
        self.credential = bearer_metadata(token)

    def _details(
        self, details: grpc.aio.ClientCallDetails, default_timeout: float | None = None
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self.credential and AUTHORIZATION_METADATA_KEY not in metadata:
            metadata.add(*self.credential[0])
        rid = request_id_var.get()
        if rid and REQUEST_ID_METADATA_KEY not in metadata:
            metadata.add(REQUEST_ID_METADATA_KEY, rid)
        uid = user_id_var.get()
        if uid and USER_ID_METADATA_KEY not in metadata:
            metadata.add(USER_ID_METADATA_KEY, uid)
        timeout = details.timeout if details.timeout is not None else default_timeout
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first call kind it implements, so each kind has its own class.
class _UnaryUnary(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    """A unary call also gets the default deadline when its caller set none."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details, self.default_deadline_s), request)


class _UnaryStream(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_CallMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_CallMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


def internal_token() -> str | None:
    """This process's own internal credential (`INSIGHTX_INTERNAL_TOKEN`), or None."""
    token = get_settings().internal_token
    return token.get_secret_value() if token is not None else None


def internal_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """The credential pair for a call made without `open_channel` (a sync channel, a benchmark)."""
    return bearer_metadata(token if token is not None else internal_token())


def open_channel(
    address: str, default_deadline_s: float = DEFAULT_DEADLINE_S, token: str | None = None
) -> grpc.aio.Channel:
    """A channel to a peer. Every call presents `token` (default: `INSIGHTX_INTERNAL_TOKEN`; "" for none).

    Unary calls made without a timeout get `default_deadline_s` (streams set their own); every call carries
    the current request id and user id.
    The channel is plaintext: the services bind loopback or a private network (TLS terminates at the edge).
    """
    return grpc.aio.insecure_channel(
        address,
        options=CHANNEL_OPTIONS,
        interceptors=[
            kind(default_deadline_s, token if token is not None else internal_token())
            for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
        ],
    )


def call_metadata(extra: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for an outgoing call: the current request id, plus any extra pairs."""
    pairs = dict(extra or {})
    rid = request_id_var.get()
    if rid:
        pairs.setdefault(REQUEST_ID_METADATA_KEY, rid)
    return tuple(pairs.items())


async def check_health(channel: grpc.aio.Channel, service: str = "", timeout_s: float = 2.0) -> str:
    """The peer's health status name (SERVING, NOT_SERVING, ...) or UNREACHABLE when it does not answer."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
