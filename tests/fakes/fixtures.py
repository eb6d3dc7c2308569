"""Fixtures and helpers around the fake LLM server, shared by the gateway's and the orchestrator's tests.

Use in a conftest.py or test module:

    from tests.fakes.fixtures import fake_llm, llm_gateway_settings, started_llm_gateway  # noqa: F401

    async def test_x(fake_llm):
        fake_llm.responder = lambda messages, model: "SQL_ONLY"
        async with started_llm_gateway(fake_llm, ["key-a"]) as address:
            ...  # a real LlmGatewayService on `address`, talking to the fake over HTTP
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from services.llm_gateway.settings import LlmGatewaySettings
from tests.fakes.fake_llm_server import FakeLlmServer

__all__ = ["fake_llm", "llm_gateway_settings", "started_llm_gateway"]


@pytest.fixture
def fake_llm() -> Iterator[FakeLlmServer]:
    """A fake Bytez/OpenAI-compatible server on a free loopback port (accepts any bearer key)."""
    with FakeLlmServer() as server:
        yield server


def llm_gateway_settings(
    fake: FakeLlmServer, keys: Sequence[str], provider: str = "bytez", **overrides: Any
) -> LlmGatewaySettings:
    """Gateway settings pointing `provider` at the fake with `keys` (fast cool-downs for tests)."""
    values: dict[str, Any] = {
        f"{provider}_base_url": fake.base_url,
        f"{provider}_api_keys": ",".join(keys),
        "llm_retry_backoff_s": 0.01,
        "llm_retry_backoff_cap_s": 0.05,
        "llm_first_byte_timeout_s": 10.0,
    }
    values.update(overrides)
    return LlmGatewaySettings(**values)


@contextlib.asynccontextmanager
async def started_llm_gateway(
    fake: FakeLlmServer, keys: Sequence[str], provider: str = "bytez", **overrides: Any
) -> AsyncIterator[str]:
    """Runs a real LlmGatewayService in-process on a free port; yields its `127.0.0.1:port` address."""
    from services.llm_gateway.server import start

    running = await start(llm_gateway_settings(fake, keys, provider, **overrides), "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0)
