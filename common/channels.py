"""Client channels to peer services: one per address, request ids propagated, deadlines required."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.identity import USER_ID_METADATA_KEY, user_id_var
from common.logging import REQUEST_ID_METADATA_KEY, request_id_var

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


class _CallDefaults(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
):
    """Gives every outgoing call a deadline (when the caller set none), the current request id and user id."""

    def __init__(self, default_deadline_s: float) -> None:
        self.default_deadline_s = default_deadline_s

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        rid = request_id_var.get()
        if rid and REQUEST_ID_METADATA_KEY not in metadata:
            metadata.add(REQUEST_ID_METADATA_KEY, rid)
        uid = user_id_var.get()
        if uid and USER_ID_METADATA_KEY not in metadata:
            metadata.add(USER_ID_METADATA_KEY, uid)
        timeout = details.timeout if details.timeout is not None else self.default_deadline_s
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


def open_channel(address: str, default_deadline_s: float = DEFAULT_DEADLINE_S) -> grpc.aio.Channel:
    """An insecure channel to a peer on a trusted network (TLS terminates at the edge).

    Calls made without a timeout get `default_deadline_s`, and carry the current request id.
    """
    return grpc.aio.insecure_channel(
        address, options=CHANNEL_OPTIONS, interceptors=[_CallDefaults(default_deadline_s)]
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
