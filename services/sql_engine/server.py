"""Starts SqlEngineService: `python -m services.sql_engine`."""

from __future__ import annotations

import asyncio
import functools
import resource

from common.auth import ServerAuth
from common.logging import configure_logging
from common.server import RunningServer, create_server, serve_forever
from common.settings import listen_address
from common.store import open_dataset_store
from insightx.v1 import sql_engine_pb2
from services.sql_engine.chunks import add_servicer
from services.sql_engine.engine import SqlEngine
from services.sql_engine.servicer import SqlEngineServicer
from services.sql_engine.settings import SqlEngineSettings

LIVENESS_PROBE_S = 1.5  # a trivial query answers in milliseconds; a worker that does not is replaced
SERVICE_NAME = sql_engine_pb2.DESCRIPTOR.services_by_name["SqlEngineService"].full_name
# Who may call: uploads and the SQL editor come from the gateway, queries from the orchestrator.
CALLERS = ("gateway", "orchestrator")


async def start(settings: SqlEngineSettings, address: str | None = None) -> RunningServer:
    """Builds the engine over the configured store and starts serving on `address`."""
    engine = SqlEngine(store=open_dataset_store(settings.data_dir), settings=settings)
    # Every query worker starts (and enters its read-only view) now, before the service reports SERVING.
    await asyncio.to_thread(engine.start_workers)
    servicer = SqlEngineServicer(engine, settings.data_dir / "spool")
    running = await create_server(
        address or listen_address(settings.sql_engine_addr, settings.grpc_listen_host),
        [SERVICE_NAME],
        lambda server: add_servicer(servicer, server),  # chunks read without protobuf's copies
        auth=ServerAuth.from_settings(settings, CALLERS, SERVICE_NAME),
        reflection=settings.grpc_reflection,
    )

    async def close_engine() -> None:
        await asyncio.to_thread(engine.close)

    running.on_stop(close_engine)
    # Liveness: a worker answers a trivial query, on the path real queries take, within the deadline.
    running.liveness = functools.partial(engine.alive, LIVENESS_PROBE_S)
    running.engine = engine  # type: ignore[attr-defined]
    running.servicer = servicer  # type: ignore[attr-defined]
    await running.set_serving()
    return running


def limit_address_space(limit: int) -> None:
    """Caps the process's address space so an allocation bomb fails as an error instead of exhausting RAM.

    Applied by `main()` only: it binds the whole process, so in-process test servers leave it alone.
    """
    if limit <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


async def main() -> None:
    settings = SqlEngineSettings()
    configure_logging("sql_engine", settings.log_level)
    limit_address_space(settings.sql_address_space_bytes)
    running = await start(settings)
    # Crash-only (common/server.py): out of memory or threads, or failing liveness, exit for a restart.
    await serve_forever(running)


if __name__ == "__main__":
    asyncio.run(main())
