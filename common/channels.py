"""Client channels to peer services: one per address, internal credentials and request ids on every call,
deadlines required; an address may name several replicas, and calls spread over them.

An address is `host:port` (a DNS name may have several records: a headless Service), a comma list
`host1:port1,host2:port2`, or a gRPC target (`dns:///name:port`, `ipv4:…`, `ipv6:…`, `unix:…`). Every
channel balances with gRPC's own `round_robin` and retries the idempotent reads below when a replica is
UNAVAILABLE (the retry goes to the next one). A channel over several replicas (a list, or a `dns:///`
target) also watches each replica's standard health service and sends nothing to one that is not SERVING
(gRPC client-side health checking); a single address keeps its peer's own answer (NOT_SERVING) visible.
"""

from __future__ import annotations

import ipaddress
import json
import socket

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
    # A replica that was down (or started after this channel) is tried again within 5 s, not up to gRPC's
    # default 120 s of backoff, so it takes its share of calls soon after it serves.
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


DEFAULT_DEADLINE_S = 30.0

# Calls that change nothing, so a second attempt on another replica is safe (gRPC retries only those whose
# first attempt got no response headers back: a replica that went away, or one that refused to start them).
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    "insightx.v1.SqlEngineService": ("DescribeDataset", "ValidateSql", "ExecuteSql", "GetEngineStatus"),
    "insightx.v1.PySandboxService": ("ValidateCode", "GetSandboxStatus"),
    "insightx.v1.LlmGatewayService": ("GetKeyStatus",),
    "grpc.health.v1.Health": ("Check",),
}
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    # UNAVAILABLE: the replica is gone or refused the call. CANCELLED: what a stopping grpc server answers
    # to calls it had received but not yet handed to a handler (grpc/grpc#41785), the others' race with
    # its GOAWAY. A caller's own cancel is never retried (retries follow only a status from the peer).
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


class BadAddress(ValueError):
    """An address that names no peer (the message shows the forms that do)."""


def service_config(health_checked: bool) -> str:
    """The channel's service config: round_robin, retries of idempotent calls, and (for several
    replicas) client-side health checking of the whole server (health service name "")."""
    config: dict[str, object] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": service, "method": method} for method in methods],
                "retryPolicy": RETRY_POLICY,
            }
            for service, methods in IDEMPOTENT_METHODS.items()
        ],
    }
    if health_checked:
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


def _host_port(entry: str, address: str) -> tuple[str, int]:
    host, sep, port = entry.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadAddress(
            f"{address!r} is not an address: expected host:port, host1:port1,host2:port2 (replicas) or a gRPC"
            " target such as dns:///name:port"
        )
    return host, int(port)


def _ips(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadAddress(f"replica {host}:{port} does not resolve ({exc.strerror})") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def channel_target(address: str) -> tuple[str, bool]:
    """The gRPC target an address names, and whether it names several replicas.

    A comma list becomes an `ipv4:`/`ipv6:` list of every replica's addresses (names are resolved once,
    here: a name whose records change should be given as `dns:///name:port`, which gRPC re-resolves).
    """
    address = address.strip()
    if address.startswith(_SCHEMES):
        return address, address.startswith("dns:") or "," in address
    entries = [entry for entry in address.split(",") if entry.strip()]
    if len(entries) <= 1:
        return address, False  # one host:port, as gRPC's default (DNS) resolver reads it
    resolved = [(port, _ips(host, port)) for host, port in (_host_port(e, address) for e in entries)]
    for version, scheme in ((4, "ipv4"), (6, "ipv6")):
        if all(any(ip.version == version for ip in ips) for _, ips in resolved):
            listed = [
                f"{ip}:{port}" if version == 4 else f"[{ip}]:{port}"
                for port, ips in resolved
                for ip in ips
                if ip.version == version
            ]
            return f"{scheme}:{','.join(dict.fromkeys(listed))}", True
    raise BadAddress(f"{address!r} mixes IPv4-only and IPv6-only replicas: list one family")


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
    `address` may name several replicas (see the module's docstring); a malformed one raises BadAddress.
    """
    target, several = channel_target(address)
    return grpc.aio.insecure_channel(
        target,
        options=[
            *CHANNEL_OPTIONS,
            ("grpc.service_config", service_config(several)),
            ("grpc.enable_retries", 1),
        ],
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
