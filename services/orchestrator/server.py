"""Starts OrchestratorService: `python -m services.orchestrator`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from common.auth import ServerAuth
from common.logging import configure_logging
from common.server import RunningServer, create_server, serve_forever
from common.settings import listen_address
from common.store.events import EventStore, MemoryEventStore
from common.store.events_postgres import PostgresEventStore
from common.store.postgres import DatabaseUnavailable, PostgresDatabase
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.llm_gateway.agents import load_registry
from services.orchestrator.peers import Peers
from services.orchestrator.pipeline import Pipeline
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.streams import AnswerStreams

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
# Who may call: chats come from the gateway.
CALLERS = ("gateway",)


def replica_id() -> str:
    """This process's name as an answer's owner: host and pid for people, a random part for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def open_event_store(
    settings: OrchestratorSettings,
) -> tuple[EventStore, Callable[[], Awaitable[None]]]:
    """PostgreSQL, shared by every replica, when INSIGHTX_DATABASE_URL is set; else this process's memory.
    Returns the store and what closes it."""
    url = settings.database_url.get_secret_value() if settings.database_url is not None else ""
    if not url:
        memory = MemoryEventStore(
            settings.resume_retention_s, settings.resume_max_chats, settings.resume_max_events
        )
        return memory, memory.close
    try:
        database = await PostgresDatabase.open(
            url, max_size=settings.database_pool_size, timeout_s=settings.database_connect_timeout_s
        )
    except DatabaseUnavailable as exc:
        raise SystemExit(f"the orchestrator's event store: {exc}") from None
    try:
        store = await PostgresEventStore.open(database, settings.resume_retention_s)
    except BaseException:
        await database.close()
        raise

    async def close() -> None:
        await store.close()
        await database.close()

    return store, close


async def start(settings: OrchestratorSettings, address: str | None = None) -> RunningServer:
    """Connects to the peers and the event store and starts serving on `address`."""
    if settings.internal_token is None:
        raise SystemExit(
            "the orchestrator calls its peers with INSIGHTX_INTERNAL_TOKEN: set it (make run makes one)"
        )
    store, close_store = await open_event_store(settings)
    peers = Peers.connect(settings)
    pipeline = Pipeline(peers, settings, load_registry(settings.agents_file))
    streams = AnswerStreams(store, replica_id(), settings.answer_lease_s, settings.event_poll_s)
    servicer = OrchestratorServicer(pipeline, streams)
    try:
        running = await create_server(
            address or listen_address(settings.orchestrator_addr, settings.grpc_listen_host),
            [SERVICE_NAME],
            lambda server: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server),
            auth=ServerAuth.from_settings(settings, CALLERS, SERVICE_NAME),
            reflection=settings.grpc_reflection,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await close_store()
        raise
    running.on_stop(streams.close)  # releases the leases of answers still running, for another replica
    running.on_stop(pipeline.close)
    running.on_stop(peers.close)
    running.on_stop(close_store)
    await running.set_serving()
    return running


async def main() -> None:
    settings = OrchestratorSettings()
    configure_logging("orchestrator", settings.log_level)
    await serve_forever(await start(settings))


if __name__ == "__main__":
    asyncio.run(main())
