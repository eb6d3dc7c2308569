"""One way to run a gRPC service: grpc.aio, internal credentials, standard health, request ids, SIGTERM stop.

A service module builds its servicers and calls `create_server`, then `serve_forever`. Health reports
NOT_SERVING until the service calls `set_serving()` (i.e. once it is really ready).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as reflection_module

from common.auth import CALLERS, InternalAuthInterceptor, ServerAuth
from common.channels import CHANNEL_OPTIONS
from common.logging import REQUEST_ID_METADATA_KEY, request_id_var
from common.settings import get_settings

log = logging.getLogger(__name__)

# No SO_REUSEPORT: a second process on a taken port must fail at start, not silently share its traffic.
SERVER_OPTIONS: list[tuple[str, int]] = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)]


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Puts the caller's `x-request-id` (or a new one) into the logging context of the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = dict(handler_call_details.invocation_metadata or ())
        rid = metadata.get(REQUEST_ID_METADATA_KEY) or uuid.uuid4().hex[:16]
        request_id_var.set(str(rid))
        return await continuation(handler_call_details)


@dataclass
class RunningServer:
    """A started server with its health servicer and bound port."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: Sequence[str]
    _on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def set_serving(self) -> None:
        """Reports SERVING for the server and each of its services."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Registers cleanup to run after the server stops taking calls."""
        self._on_stop.append(callback)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Reports NOT_SERVING, lets calls in flight finish within the grace period, then cleans up."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for callback in self._on_stop:
            try:
                await callback()
            except Exception:
                log.exception("cleanup after stop failed")


async def create_server(
    address: str,
    service_names: Sequence[str],
    add_servicers: Callable[[grpc.aio.Server], Any],
    *,
    auth: ServerAuth | None = None,
    reflection: bool | None = None,
) -> RunningServer:
    """Builds and starts a server on `address` (use `127.0.0.1:0` for a free port in tests).

    Every call but a health check must carry an internal credential `auth` accepts (default: any known
    caller recognised by `INSIGHTX_INTERNAL_<CALLER>_TOKEN`). Reflection is served when `reflection` (default:
    `INSIGHTX_GRPC_REFLECTION`) is on, to credentialed callers like the rest.
    """
    label = ", ".join(name.rsplit(".", 1)[-1] for name in service_names) or "this service"
    if auth is None:
        auth = ServerAuth.from_settings(get_settings(), CALLERS, label)
    if reflection is None:
        reflection = get_settings().grpc_reflection
    server = grpc.aio.server(
        interceptors=[RequestIdInterceptor(), InternalAuthInterceptor(auth, label)], options=SERVER_OPTIONS
    )
    add_servicers(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if reflection:
        reflection_module.enable_server_reflection(
            (*service_names, health.SERVICE_NAME, reflection_module.SERVICE_NAME), server
        )
    port = bind(server, address)
    await server.start()
    log.info("listening", extra={"address": address, "port": port, "services": list(service_names)})
    return RunningServer(server=server, health=health_servicer, port=port, service_names=service_names)


def bind(server: grpc.aio.Server, address: str) -> int:
    """Adds the listening port; a port already taken (or an address not of this machine) stops the start."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise SystemExit(
            f"could not listen on {address}: port {address.rsplit(':', 1)[-1]} is taken by another process, "
            "or the host is not an address of this machine (see INSIGHTX_<SERVICE>_ADDR)"
        )
    return port


_exiting: set[asyncio.Task[None]] = set()  # keeps the NOT_SERVING report alive until the exit


def is_resource_exhaustion(exc: BaseException) -> bool:
    """Failures after which a process cannot be trusted to serve: no memory, no thread can start."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)
    )


def exit_for_restart(running: RunningServer, exc: BaseException, code: int = 70) -> None:
    """Crash-only recovery: report NOT_SERVING, then exit so the supervisor starts a clean process.

    A process whose address space is exhausted keeps failing every call while looking alive; the data is
    on disk, so a restart (make run's supervisor, or the container's restart policy) loses nothing.
    """
    log.critical("resource exhaustion; exiting for a clean restart", extra={"error": repr(exc)[:300]})
    loop = asyncio.get_running_loop()
    _exiting.add(loop.create_task(running.health.enter_graceful_shutdown()))
    loop.call_later(0.3, os._exit, code)


async def serve_forever(running: RunningServer, grace_s: float = 5.0) -> None:
    """Waits for SIGTERM or SIGINT, then stops gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"grace_s": grace_s})
    await running.stop(grace_s)
