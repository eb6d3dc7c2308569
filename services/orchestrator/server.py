"""Starts OrchestratorService: `python -m services.orchestrator`."""

from __future__ import annotations

import asyncio

from common.auth import ServerAuth
from common.logging import configure_logging
from common.server import RunningServer, create_server, serve_forever
from common.settings import listen_address
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.llm_gateway.agents import load_registry
from services.orchestrator.peers import Peers
from services.orchestrator.pipeline import Pipeline
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
# Who may call: chats come from the gateway.
CALLERS = ("gateway",)


async def start(settings: OrchestratorSettings, address: str | None = None) -> RunningServer:
    """Connects to the peers and starts serving on `address`."""
    if settings.internal_token is None:
        raise SystemExit(
            "the orchestrator calls its peers with INSIGHTX_INTERNAL_TOKEN: set it (make run makes one)"
        )
    peers = Peers.connect(settings)
    pipeline = Pipeline(peers, settings, load_registry(settings.agents_file))
    servicer = OrchestratorServicer(pipeline)
    running = await create_server(
        address or listen_address(settings.orchestrator_addr, settings.grpc_listen_host),
        [SERVICE_NAME],
        lambda server: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server),
        auth=ServerAuth.from_settings(settings, CALLERS, SERVICE_NAME),
        reflection=settings.grpc_reflection,
    )
    running.on_stop(pipeline.close)
    running.on_stop(peers.close)
    await running.set_serving()
    return running


async def main() -> None:
    settings = OrchestratorSettings()
    configure_logging("orchestrator", settings.log_level)
    await serve_forever(await start(settings))


if __name__ == "__main__":
    asyncio.run(main())
