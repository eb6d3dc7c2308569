"""Asks the agents (through the LLM gateway) and reads their replies; knows which failures mean "no model".

Each agent's system prompt, model and sampling come from the agent registry (services/llm_gateway/agents.py,
overridable by `INSIGHTX_AGENTS_FILE`); the orchestrator supplies only data (profile, history, results).
A reply that cannot be parsed is sent back once with what was expected before the step gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from common.channels import call_metadata
from common.errors import error_info
from insightx.v1 import common_pb2, llm_gateway_pb2
from insightx.v1.llm_gateway_pb2_grpc import LlmGatewayServiceStub
from services.llm_gateway.agents import AgentRegistry
from services.orchestrator.errors import StepFailed
from services.orchestrator.replies import UnparseableReply

T = TypeVar("T")

KEY_EVENT_KINDS = {
    llm_gateway_pb2.KEY_EVENT_TYPE_KEY_FAILED: "key_failed",
    llm_gateway_pb2.KEY_EVENT_TYPE_KEY_ROTATED: "key_rotated",
    llm_gateway_pb2.KEY_EVENT_TYPE_KEY_RECOVERED: "key_recovered",
    llm_gateway_pb2.KEY_EVENT_TYPE_ALL_KEYS_EXHAUSTED: "all_keys_exhausted",
}

#: Gateway reasons meaning no model can answer now (none configured, keys out, providers down).
NO_MODEL_REASONS = {
    "LLM_NOT_CONFIGURED",
    "ALL_KEYS_EXHAUSTED",
    "UPSTREAM_UNAVAILABLE",
    "PROVIDER_NOT_CONFIGURED",
}


class ModelUnavailable(Exception):
    """No language model can answer (none configured, every key out, or the gateway is down)."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s  # when the gateway said how soon a key recovers


@dataclass(frozen=True)
class KeyNotice:
    """A key event the gateway reported while serving this chat."""

    kind: str
    provider: str
    fingerprint: str
    reason: str


def _seconds(metadata: dict[str, str]) -> float | None:
    """The `retry_after_s` an ALL_KEYS_EXHAUSTED error carries, if any."""
    try:
        return float(metadata["retry_after_s"])
    except (KeyError, ValueError):
        return None


def _notice(event: llm_gateway_pb2.WatchKeyEventsResponse) -> KeyNotice:
    fingerprint = event.fingerprint
    if event.type == llm_gateway_pb2.KEY_EVENT_TYPE_KEY_ROTATED and event.next_fingerprint:
        fingerprint = f"{event.fingerprint}→{event.next_fingerprint}"
    return KeyNotice(KEY_EVENT_KINDS.get(event.type, "key_event"), event.provider, fingerprint, event.reason)


class AgentClient:
    """Completes for named agents with the registry's system prompts, under the chat's deadline."""

    def __init__(
        self,
        stub: LlmGatewayServiceStub,
        registry: AgentRegistry,
        timeout_s: float,
        reply_attempts: int,
        on_key_event: Callable[[KeyNotice], None],
    ) -> None:
        self.stub = stub
        self.registry = registry
        self.timeout_s = timeout_s
        self.reply_attempts = max(1, reply_attempts)
        self.on_key_event = on_key_event
        self.calls: list[tuple[str, list[common_pb2.ChatMessage]]] = []

    def system_prompt(self, agent: str) -> str:
        config = self.registry.get(agent)
        return config.system_prompt if config is not None else ""

    async def complete(self, agent: str, messages: list[common_pb2.ChatMessage], deadline: float) -> str:
        """The agent's reply text; raises ModelUnavailable (fall back) or StepFailed (report)."""
        left = deadline - time.monotonic()
        if left <= 0.05:
            raise StepFailed("The answer took longer than its deadline.", "DEADLINE_EXCEEDED")
        self.calls.append((agent, messages))
        try:
            reply = await self.stub.Complete(
                llm_gateway_pb2.CompleteRequest(agent=agent, messages=messages),
                timeout=min(self.timeout_s, left),
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if info.reason == "ALL_KEYS_EXHAUSTED":
                self.on_key_event(KeyNotice("all_keys_exhausted", info.metadata.get("provider", ""), "", ""))
            if info.reason in NO_MODEL_REASONS or info.code == grpc.StatusCode.FAILED_PRECONDITION:
                raise ModelUnavailable(info.reason, info.message, _seconds(info.metadata)) from exc
            if info.code == grpc.StatusCode.UNAVAILABLE and info.reason == "UNAVAILABLE":
                raise ModelUnavailable("LLM_GATEWAY_UNREACHABLE", "The LLM gateway is unreachable.") from exc
            if info.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise StepFailed(
                    f"The language model did not answer the {agent} step in time.", "DEADLINE_EXCEEDED"
                ) from exc
            raise StepFailed(
                f"The language model failed at the {agent} step: {info.message or info.reason}",
                info.reason or "LLM_ERROR",
            ) from exc
        for event in reply.key_events:
            self.on_key_event(_notice(event))
        return reply.content

    async def ask(
        self,
        agent: str,
        content: str,
        parse: Callable[[str], T],
        deadline: float,
    ) -> T:
        """Asks `agent` about `content` and parses its reply; an unparseable reply is sent back to correct."""
        messages = [
            common_pb2.ChatMessage(role="system", content=self.system_prompt(agent)),
            common_pb2.ChatMessage(role="user", content=content),
        ]
        expected = ""
        for _ in range(self.reply_attempts):
            text = await self.complete(agent, messages, deadline)
            try:
                return parse(text)
            except UnparseableReply as exc:
                expected = str(exc)
                messages = [
                    *messages,
                    common_pb2.ChatMessage(role="assistant", content=text[:4000]),
                    common_pb2.ChatMessage(
                        role="user",
                        content=f"That reply could not be used: expected {expected}. Reply again.",
                    ),
                ]
        raise StepFailed(
            f"The language model's {agent} replies could not be understood (expected {expected}); "
            "try rephrasing the question, or check the model configured for this agent.",
            "LLM_BAD_REPLY",
        )
