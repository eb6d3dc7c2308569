"""Fixtures of the gateway's tests: the shared fake LLM server and a client for a gateway started on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from common.channels import open_channel
from insightx.v1 import llm_gateway_pb2_grpc
from tests.fakes.fake_llm_server import FakeLlmServer
from tests.fakes.fixtures import fake_llm, started_llm_gateway

__all__ = ["fake_llm"]

GatewayFactory = Callable[..., AbstractAsyncContextManager[llm_gateway_pb2_grpc.LlmGatewayServiceStub]]


@pytest.fixture
def gateway(fake_llm: FakeLlmServer) -> GatewayFactory:
    """`async with gateway(keys, **settings) as stub:` a real gateway on the fake, and a stub to it."""

    @asynccontextmanager
    async def start(
        keys: Sequence[str], provider: str = "bytez", **overrides: Any
    ) -> AsyncIterator[llm_gateway_pb2_grpc.LlmGatewayServiceStub]:
        async with started_llm_gateway(fake_llm, keys, provider, **overrides) as address:
            channel = open_channel(address)
            try:
                yield llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
            finally:
                await channel.close()

    return start
