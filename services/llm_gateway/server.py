"""Starts LlmGatewayService: `python -m services.llm_gateway`.

The gateway serves even without a key: GetKeyStatus then reports NOT_CONFIGURED and completions fail with
FAILED_PRECONDITION / LLM_NOT_CONFIGURED, which callers take as "use the built-in analyst".
"""

from __future__ import annotations

import asyncio
import logging

from common.auth import ServerAuth
from common.logging import configure_logging
from common.server import RunningServer, create_server, serve_forever
from common.settings import listen_address
from insightx.v1 import llm_gateway_pb2, llm_gateway_pb2_grpc
from services.llm_gateway.agents import load_registry
from services.llm_gateway.gateway import LlmGateway
from services.llm_gateway.servicer import LlmGatewayServicer
from services.llm_gateway.settings import LlmGatewaySettings

SERVICE_NAME = llm_gateway_pb2.DESCRIPTOR.services_by_name["LlmGatewayService"].full_name
# Who may call: only the orchestrator may spend the provider keys.
CALLERS = ("orchestrator",)

log = logging.getLogger(__name__)


async def start(settings: LlmGatewaySettings, address: str | None = None) -> RunningServer:
    """Reads the agent registry, builds the key pools and starts serving on `address`."""
    registry = load_registry(settings.agents_file, settings.llm_provider, settings.llm_model)
    gateway = LlmGateway(settings, registry)
    servicer = LlmGatewayServicer(gateway)
    running = await create_server(
        address or listen_address(settings.llm_gateway_addr, settings.grpc_listen_host),
        [SERVICE_NAME],
        lambda server: llm_gateway_pb2_grpc.add_LlmGatewayServiceServicer_to_server(servicer, server),
        auth=ServerAuth.from_settings(settings, CALLERS, SERVICE_NAME),
        reflection=settings.grpc_reflection,
    )
    running.on_stop(gateway.close)
    await running.set_serving()
    log.info(
        "llm gateway ready",
        extra={
            "agents": registry.source,
            "providers": {
                name: {"base_url": p.base_url, "keys": [k.fingerprint for k in p.pool.keys]}
                for name, p in gateway.providers.items()
            },
        },
    )
    return running


async def main() -> None:
    settings = LlmGatewaySettings()
    configure_logging("llm_gateway", settings.log_level)
    if settings.log_level.upper() != "DEBUG":
        # httpx logs every request at INFO; the gateway's own "completion" line says more, fingerprinted.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    await serve_forever(await start(settings))


if __name__ == "__main__":
    asyncio.run(main())
