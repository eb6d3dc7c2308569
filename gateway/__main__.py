"""`python -m gateway` starts the HTTP gateway."""

import uvicorn

from common.logging import configure_logging
from gateway.app import create_app
from gateway.settings import GatewaySettings

settings = GatewaySettings()
configure_logging("gateway", settings.log_level)
uvicorn.run(
    create_app(settings),
    host=settings.gateway_host,
    port=settings.gateway_port,
    log_config=None,
    access_log=False,  # gateway/edge.py logs each request by route, without ids or tokens
)
