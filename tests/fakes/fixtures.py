"""Fixtures and helpers around the fake LLM server, shared by the gateway's and the orchestrator's tests.

Use in a conftest.py or test module:

    from tests.fakes.fixtures import fake_llm, responder_by_agent, started_llm_gateway  # noqa: F401

    async def test_x(fake_llm):
        fake_llm.responder = responder_by_agent({
            "classifier": '{"classification": "SQL_ONLY", "reasoning": "a count"}',
            "sql": 'SELECT COUNT(*) FROM "data"',
            "composer": lambda messages, model: "There are 891 passengers.",
        })
        async with started_llm_gateway(fake_llm, ["key-a"]) as address:
            ...  # a real LlmGatewayService on `address`, talking to the fake over HTTP
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from services.llm_gateway.agents import AgentRegistry, load_registry
from services.llm_gateway.settings import LlmGatewaySettings
from tests.fakes.fake_llm_server import FakeLlmServer, Reply, Responder, echo_responder

__all__ = ["agent_of", "fake_llm", "llm_gateway_settings", "responder_by_agent", "started_llm_gateway"]


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


def agent_of(messages: Sequence[Mapping[str, Any]], registry: AgentRegistry | None = None) -> str | None:
    """Which registry agent sent `messages`: the one whose system prompt's first line the request's system
    message contains (so a caller may append context to the prompt), else None."""
    system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    if not system:
        return None
    for agent in registry or load_registry():
        first_line = agent.system_prompt.strip().splitlines()[0] if agent.system_prompt.strip() else ""
        if first_line and first_line in system:
            return agent.name
    return None


def responder_by_agent(
    replies: Mapping[str, str | Reply | Responder],
    fallback: Responder = echo_responder,
    registry: AgentRegistry | None = None,
) -> Responder:
    """A fake responder answering each agent (recognised by its system prompt) with a text, a scripted
    `Reply`, or a callable `(messages, model) -> str | Reply`; other requests go to `fallback`."""
    known = registry or load_registry()

    def respond(messages: list[dict[str, Any]], model: str) -> str | Reply:
        agent = agent_of(messages, known)
        reply = replies.get(agent) if agent else None
        if reply is None:
            return fallback(messages, model)
        if isinstance(reply, str | Reply):
            return reply
        return reply(messages, model)

    return respond
