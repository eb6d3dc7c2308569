"""Starts PySandboxService: `python -m services.py_sandbox`."""

from __future__ import annotations

import asyncio

from common.auth import ServerAuth
from common.logging import configure_logging
from common.server import RunningServer, create_server, serve_forever
from common.settings import listen_address
from common.store import open_dataset_store
from insightx.v1 import py_sandbox_pb2, py_sandbox_pb2_grpc
from services.py_sandbox.sandbox import PySandbox
from services.py_sandbox.servicer import PySandboxServicer
from services.py_sandbox.settings import PySandboxSettings

SERVICE_NAME = py_sandbox_pb2.DESCRIPTOR.services_by_name["PySandboxService"].full_name
# Who may call: the Python editor comes from the gateway, analyses from the orchestrator.
CALLERS = ("gateway", "orchestrator")


async def start(settings: PySandboxSettings, address: str | None = None) -> RunningServer:
    """Starts the zygotes, then serves; health turns SERVING once the zygotes have measured isolation."""
    sandbox = PySandbox(settings, open_dataset_store(settings.data_dir))
    servicer = PySandboxServicer(sandbox)
    try:
        running = await create_server(
            address or listen_address(settings.py_sandbox_addr, settings.grpc_listen_host),
            [SERVICE_NAME],
            lambda server: py_sandbox_pb2_grpc.add_PySandboxServiceServicer_to_server(servicer, server),
            auth=ServerAuth.from_settings(settings, CALLERS, SERVICE_NAME),
            reflection=settings.grpc_reflection,
        )
    except BaseException:
        await sandbox.stop()  # removes the runs' parent cgroup it created
        raise
    try:
        await sandbox.start()
    except BaseException:
        await running.stop(0)
        await sandbox.stop()
        raise
    running.on_stop(sandbox.stop)
    await running.set_serving()
    return running


async def main() -> None:
    settings = PySandboxSettings()
    configure_logging("py_sandbox", settings.log_level)
    await serve_forever(await start(settings))


if __name__ == "__main__":
    asyncio.run(main())
