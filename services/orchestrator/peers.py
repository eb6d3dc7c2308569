"""Stubs to the orchestrator's peers over long-lived channels; every call carries a deadline."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from common.channels import open_channel
from common.settings import Settings
from insightx.v1 import llm_gateway_pb2_grpc, py_sandbox_pb2_grpc, sql_engine_pb2_grpc


@dataclass
class Peers:
    """One channel and stub per peer service."""

    sql_channel: grpc.aio.Channel
    sandbox_channel: grpc.aio.Channel
    llm_channel: grpc.aio.Channel
    sql: sql_engine_pb2_grpc.SqlEngineServiceStub
    sandbox: py_sandbox_pb2_grpc.PySandboxServiceStub
    llm: llm_gateway_pb2_grpc.LlmGatewayServiceStub

    @classmethod
    def connect(cls, settings: Settings) -> Peers:
        """Opens channels to the addresses in `settings` (connection happens lazily, per call)."""
        sql = open_channel(settings.sql_engine_addr)
        sandbox = open_channel(settings.py_sandbox_addr)
        llm = open_channel(settings.llm_gateway_addr)
        return cls(
            sql_channel=sql,
            sandbox_channel=sandbox,
            llm_channel=llm,
            sql=sql_engine_pb2_grpc.SqlEngineServiceStub(sql),
            sandbox=py_sandbox_pb2_grpc.PySandboxServiceStub(sandbox),
            llm=llm_gateway_pb2_grpc.LlmGatewayServiceStub(llm),
        )

    async def close(self) -> None:
        for channel in (self.sql_channel, self.sandbox_channel, self.llm_channel):
            await channel.close()
