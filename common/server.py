"""One way to run a gRPC service: grpc.aio, internal credentials, standard health, request ids, SIGTERM stop.

A service module builds its servicers and calls `create_server`, then `serve_forever`. Health reports
NOT_SERVING until the service calls `set_serving()` (i.e. once it is really ready).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import signal
import threading
import time
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
    #: The service's own liveness check (True: it can work now); None: a turning event loop is enough.
    liveness: Callable[[], Awaitable[bool]] | None = None
    #: False while the liveness check fails (health then says NOT_SERVING).
    live: bool = True

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
        interceptors=[RequestIdInterceptor(), InternalAuthInterceptor(auth, label), ExhaustionInterceptor()],
        options=SERVER_OPTIONS,
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


def exit_for_restart(
    running: RunningServer, exc: BaseException, code: int = 70, why: str = "resource exhaustion"
) -> None:
    """Crash-only recovery: report NOT_SERVING, then exit so the supervisor starts a clean process.

    A process whose address space is exhausted keeps failing every call while looking alive; the data is
    on disk, so a restart (make run's supervisor, or the container's restart policy) loses nothing.
    """
    log.critical(f"{why}; exiting for a clean restart", extra={"error": repr(exc)[:300]})
    loop = asyncio.get_running_loop()
    _exiting.add(loop.create_task(running.health.enter_graceful_shutdown()))
    loop.call_later(0.3, os._exit, code)


@dataclass(frozen=True)
class LivenessPolicy:
    """How often the liveness check runs, how long it may take, and when a failing process gives up."""

    interval_s: float = 1.0
    timeout_s: float = 2.0
    fail_after_s: float = 6.0
    stall_after_s: float = 8.0


#: What a handler, thread or loop that runs out of memory or threads calls; set by `serve_forever` only,
#: so that servers started inside a test process never exit it.
_on_exhaustion: Callable[[BaseException], None] | None = None


def _exhausted(exc: BaseException) -> None:
    if _on_exhaustion is not None and is_resource_exhaustion(exc):
        _on_exhaustion(exc)


class ExhaustionInterceptor(grpc.aio.ServerInterceptor):
    """Hands a MemoryError or a failed thread start raised by any handler to the crash-only exit."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: _guarded(behaviour)})
        return handler


def _guarded(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if not (inspect.isasyncgenfunction(behaviour) or inspect.iscoroutinefunction(behaviour)):
        return behaviour  # a synchronous handler runs on grpc's own threads: the thread hook covers it
    if inspect.isasyncgenfunction(behaviour):

        @functools.wraps(behaviour)
        async def stream(request: Any, context: Any) -> Any:
            try:
                async for item in behaviour(request, context):
                    yield item
            except BaseException as exc:
                _exhausted(exc)
                raise

        return stream

    @functools.wraps(behaviour)
    async def call(request: Any, context: Any) -> Any:
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            _exhausted(exc)
            raise

    return call


def install_crash_only(running: RunningServer) -> None:
    """From now on, running out of memory or threads anywhere in this process exits it for a restart."""
    global _on_exhaustion
    loop = asyncio.get_running_loop()

    def on_exhaustion(exc: BaseException) -> None:
        if threading.current_thread() is threading.main_thread():
            exit_for_restart(running, exc)
        else:
            loop.call_soon_threadsafe(exit_for_restart, running, exc)

    _on_exhaustion = on_exhaustion
    previous_hook = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and is_resource_exhaustion(args.exc_value):
            on_exhaustion(args.exc_value)
        previous_hook(args)

    threading.excepthook = thread_hook

    def loop_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is not None and is_resource_exhaustion(exc):
            exit_for_restart(running, exc)
        loop.default_exception_handler(context)

    loop.set_exception_handler(loop_handler)


async def watch_liveness(running: RunningServer, policy: LivenessPolicy, exit_code: int = 70) -> None:
    """Runs the liveness check forever: health follows it, and a process failing it too long exits.

    A watchdog thread, started here and never again, exits the process when the loop itself stops turning
    (a handler blocking it, a deadlock): then nothing on the loop could report anything.
    """
    beat = [time.monotonic()]

    def watchdog() -> None:
        while True:
            time.sleep(min(1.0, policy.stall_after_s / 4))
            stalled = time.monotonic() - beat[0]
            if stalled > policy.stall_after_s:
                log.critical("event loop stalled; exiting for a clean restart", extra={"stalled_s": stalled})
                os._exit(exit_code)

    threading.Thread(target=watchdog, name="liveness-watchdog", daemon=True).start()
    last_ok = time.monotonic()
    while True:
        beat[0] = time.monotonic()
        ok = await _check(running, policy.timeout_s)
        beat[0] = now = time.monotonic()
        if ok:
            last_ok = now
            if not running.live:
                log.warning("liveness check passes again")
                running.live = True
                await running.set_serving()
        else:
            if running.live:
                log.warning("liveness check failed; reporting NOT_SERVING")
                running.live = False
                for name in ("", *running.service_names):
                    await running.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            if now - last_ok > policy.fail_after_s:
                failing = RuntimeError(f"liveness check failing for {now - last_ok:.0f} s")
                exit_for_restart(running, failing, why="liveness check failing")
                return
        await asyncio.sleep(policy.interval_s)


async def _check(running: RunningServer, timeout_s: float) -> bool:
    if running.liveness is None:
        return True
    try:
        return bool(await asyncio.wait_for(running.liveness(), timeout_s))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("liveness check raised", extra={"error": repr(exc)[:300]})
        return False


async def serve_forever(
    running: RunningServer, grace_s: float = 5.0, liveness: LivenessPolicy | None = None
) -> None:
    """Watches liveness (crash-only), waits for SIGTERM or SIGINT, then stops gracefully."""
    install_crash_only(running)
    watcher = asyncio.get_running_loop().create_task(watch_liveness(running, liveness or LivenessPolicy()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    watcher.cancel()
    log.info("stopping", extra={"grace_s": grace_s})
    await running.stop(grace_s)
