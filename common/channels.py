"""Client channels to peer services: one per address, request ids propagated, deadlines required."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def open_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to a peer on a trusted network (TLS terminates at the edge)."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


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
