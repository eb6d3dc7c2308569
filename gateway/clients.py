"""Channels and stubs from the gateway to the services, and their combined health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from common.channels import check_health, open_channel
from common.settings import Settings
from insightx.v1 import (
    llm_gateway_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    py_sandbox_pb2,
    py_sandbox_pb2_grpc,
    sql_engine_pb2,
    sql_engine_pb2_grpc,
)


def _full_name(module: object, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name  # type: ignore[attr-defined]


SERVICES: dict[str, tuple[str, str]] = {
    "orchestrator": ("orchestrator_addr", _full_name(orchestrator_pb2, "OrchestratorService")),
    "llm_gateway": ("llm_gateway_addr", _full_name(llm_gateway_pb2, "LlmGatewayService")),
    "sql_engine": ("sql_engine_addr", _full_name(sql_engine_pb2, "SqlEngineService")),
    "py_sandbox": ("py_sandbox_addr", _full_name(py_sandbox_pb2, "PySandboxService")),
}


@dataclass
class Backends:
    """One channel per service, opened once for the gateway's life."""

    channels: dict[str, grpc.aio.Channel]
    orchestrator: orchestrator_pb2_grpc.OrchestratorServiceStub
    sql_engine: sql_engine_pb2_grpc.SqlEngineServiceStub
    py_sandbox: py_sandbox_pb2_grpc.PySandboxServiceStub

    @classmethod
    def connect(cls, settings: Settings) -> Backends:
        channels = {name: open_channel(getattr(settings, attr)) for name, (attr, _) in SERVICES.items()}
        return cls(
            channels=channels,
            orchestrator=orchestrator_pb2_grpc.OrchestratorServiceStub(channels["orchestrator"]),
            sql_engine=sql_engine_pb2_grpc.SqlEngineServiceStub(channels["sql_engine"]),
            py_sandbox=py_sandbox_pb2_grpc.PySandboxServiceStub(channels["py_sandbox"]),
        )

    async def health(self) -> dict[str, str]:
        """Each service's health status, checked concurrently."""
        names = list(SERVICES)
        statuses = await asyncio.gather(*(check_health(self.channels[n], SERVICES[n][1]) for n in names))
        return dict(zip(names, statuses, strict=True))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
