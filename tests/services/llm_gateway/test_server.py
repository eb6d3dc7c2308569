"""The service itself: serving without keys, agent defaults on the wire, keyless OpenAI-compatible servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from common.channels import check_health, open_channel
from insightx.v1 import llm_gateway_pb2 as pb
from insightx.v1 import llm_gateway_pb2_grpc
from services.llm_gateway.agents import default_agents
from services.llm_gateway.keys import ANONYMOUS_FINGERPRINT
from services.llm_gateway.server import SERVICE_NAME, start
from services.llm_gateway.settings import LlmGatewaySettings
from tests.fakes.fake_llm_server import FakeLlmServer, unauthorized
from tests.services.llm_gateway.conftest import GatewayFactory
from tests.services.llm_gateway.support import KEYS, complete_request, rpc_error

pytestmark = pytest.mark.integration


async def test_without_keys_it_serves_and_says_not_configured() -> None:
    running = await start(LlmGatewaySettings(), "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        assert await check_health(channel, SERVICE_NAME) == "SERVING"
        stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
        error = await rpc_error(stub.Complete(complete_request(), timeout=5))
        stream_error = await rpc_error(_drain(stub.StreamComplete(pb.StreamCompleteRequest(agent="sql"))))
    finally:
        await channel.close()
        await running.stop(0)
    assert {p.name: p.state for p in status.providers} == {
        "bytez": pb.PROVIDER_STATE_NOT_CONFIGURED,
        "openai": pb.PROVIDER_STATE_NOT_CONFIGURED,
    }
    assert all(not p.keys for p in status.providers)
    for failure in (error, stream_error):
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "LLM_NOT_CONFIGURED"


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def test_agent_defaults_reach_the_provider(fake_llm: FakeLlmServer, gateway: GatewayFactory) -> None:
    async with gateway(KEYS[:1]) as stub:
        await stub.Complete(complete_request(agent="sql", text="total fare?"), timeout=5)
        await stub.Complete(
            complete_request(agent="composer", model="other/model", temperature=0.9, max_tokens=77), timeout=5
        )
    sent_sql, sent_composer = (r.body for r in fake_llm.requests)
    sql = default_agents()["sql"]
    assert fake_llm.requests[0].authorization == f"Bearer {KEYS[0]}"
    assert sent_sql["model"] == sql.model and sent_sql["temperature"] == sql.temperature
    assert sent_sql["max_tokens"] == sql.max_tokens and sent_sql["stream"] is False
    assert sent_sql["messages"] == [
        {"role": "system", "content": sql.system_prompt},
        {"role": "user", "content": "total fare?"},
    ]
    assert (sent_composer["model"], sent_composer["temperature"], sent_composer["max_tokens"]) == (
        "other/model",
        0.9,
        77,
    )


async def test_callers_system_prompt_wins_and_bad_requests_are_refused(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    from insightx.v1 import common_pb2

    own = [common_pb2.ChatMessage(role="system", content="Be terse."), *complete_request().messages]
    async with gateway(KEYS[:1]) as stub:
        await stub.Complete(pb.CompleteRequest(agent="validator", messages=own), timeout=5)
        unknown = await rpc_error(stub.Complete(complete_request(agent="poet"), timeout=5))
        empty = await rpc_error(stub.Complete(pb.CompleteRequest(agent="sql"), timeout=5))
        provider = await rpc_error(stub.Complete(complete_request(provider="acme"), timeout=5))
    assert [m["content"] for m in fake_llm.requests[0].messages] == ["Be terse.", "How many rows?"]
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_AGENT")
    assert (empty.code, empty.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_MESSAGES")
    assert (provider.code, provider.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PROVIDER")
    assert len(fake_llm.requests) == 1


async def test_registry_file_overrides_reach_the_provider(
    fake_llm: FakeLlmServer, gateway: GatewayFactory, tmp_path: Path
) -> None:
    registry = tmp_path / "agents.yaml"
    registry.write_text("agents:\n  sql:\n    model: acme/sql-coder\n    max_tokens: 321\n")
    async with gateway(KEYS[:1], agents_file=registry) as stub:
        await stub.Complete(complete_request(agent="sql"), timeout=5)
    assert (fake_llm.requests[0].model, fake_llm.requests[0].body["max_tokens"]) == ("acme/sql-coder", 321)


async def test_keyless_openai_compatible_server(fake_llm: FakeLlmServer) -> None:
    """Ollama or llama.cpp need no key: OPENAI_BASE_URL alone makes the provider usable."""
    settings = LlmGatewaySettings(openai_base_url=fake_llm.base_url)
    running = await start(settings, "127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
        reply = await stub.Complete(complete_request(provider="openai", model="llama3.1:8b"), timeout=5)
        status = await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)
    finally:
        await channel.close()
        await running.stop(0)
    assert reply.provider == "openai" and reply.key_fingerprint == ANONYMOUS_FINGERPRINT
    assert fake_llm.requests[0].authorization == "" and fake_llm.requests[0].model == "llama3.1:8b"
    openai = next(p for p in status.providers if p.name == "openai")
    assert openai.state == pb.PROVIDER_STATE_AVAILABLE


@pytest.mark.slow
async def test_runs_as_a_process_with_keys_from_the_environment(fake_llm: FakeLlmServer) -> None:
    from tools.stack import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSIGHTX_", "BYTEZ_", "OPENAI_"))}
    env.update(
        {
            "INSIGHTX_LLM_GATEWAY_ADDR": f"127.0.0.1:{port}",
            "INSIGHTX_INTERNAL_ORCHESTRATOR_TOKEN": os.environ["INSIGHTX_INTERNAL_TOKEN"],
            "BYTEZ_BASE_URL": fake_llm.base_url,
            "BYTEZ_API_KEY_2": KEYS[1],
            "BYTEZ_API_KEY_1": KEYS[0],
        }
    )
    fake_llm.always(KEYS[0], unauthorized())
    process = subprocess.Popen(
        [sys.executable, "-m", "services.llm_gateway"], env=env, stderr=subprocess.PIPE, text=True
    )
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while await check_health(channel, SERVICE_NAME) != "SERVING":
            assert time.monotonic() < deadline and process.poll() is None, "the gateway did not start"
            time.sleep(0.1)
        stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
        reply = await stub.Complete(complete_request(), timeout=10)
    finally:
        await channel.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert reply.content == "Echo: How many rows?" and reply.attempts == 2
    assert [r.key for r in fake_llm.requests] == KEYS[:2], "BYTEZ_API_KEY_1 first"
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "key event" for line in lines), "JSON log lines"
    assert not any(key in stderr for key in KEYS)
