"""Whether a language model can answer now, as the LLM gateway reports it, kept for a few seconds.

Without it, every chat on an install without a key makes failing `Complete` calls (the classifier and the
speculative SQL draft) before the built-in analyst answers. One `GetKeyStatus` says the same, and its answer
is kept `model_status_ttl_s` seconds, so most chats make no call to the gateway at all. A "no model" failure
that a chat meets anyway (the last key running out mid-answer) is kept the same way. The short keep is what
lets a key that recovers, or a gateway restarted with keys, be used again without restarting this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from common.channels import call_metadata
from insightx.v1 import llm_gateway_pb2
from insightx.v1.llm_gateway_pb2_grpc import LlmGatewayServiceStub

_STATUS_TIMEOUT_S = 2.0  # a status call is a lookup in the gateway's memory; a slow one is not waited for


@dataclass(frozen=True)
class ModelState:
    """What the gateway says: `reason` is None when a model may answer, else why none can."""

    reason: str | None = None
    message: str = ""

    @property
    def usable(self) -> bool:
        return self.reason is None


MODEL_MAY_ANSWER = ModelState()


def state_from_status(
    status: llm_gateway_pb2.GetKeyStatusResponse, now_s: float
) -> tuple[ModelState, float | None]:
    """The state a key status implies, and for exhausted keys the seconds until the first recovers.

    A model may answer while any provider has a healthy key: a provider the agents do not use fails their
    calls, which `ModelAvailability.learn` then keeps. A status naming no provider (an older or odd
    gateway) says nothing, so the model path is tried.
    """
    states = [p.state for p in status.providers]
    if not states or llm_gateway_pb2.PROVIDER_STATE_AVAILABLE in states:
        return MODEL_MAY_ANSWER, None
    if all(s == llm_gateway_pb2.PROVIDER_STATE_NOT_CONFIGURED for s in states):
        return ModelState("LLM_NOT_CONFIGURED", "No language-model key is configured."), None
    if llm_gateway_pb2.PROVIDER_STATE_EXHAUSTED not in states:
        return MODEL_MAY_ANSWER, None
    recoveries = [
        p.recovers_at.ToMicroseconds() / 1e6 - now_s
        for p in status.providers
        if p.state == llm_gateway_pb2.PROVIDER_STATE_EXHAUSTED and p.HasField("recovers_at")
    ]
    until = max(0.0, min(recoveries)) if recoveries else None
    return ModelState("ALL_KEYS_EXHAUSTED", "Every language-model key is out for now."), until


class ModelAvailability:
    """Asks the LLM gateway whether a model can answer, at most once per `ttl_s` (chats share the call)."""

    def __init__(
        self,
        stub: LlmGatewayServiceStub,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.stub = stub
        self.ttl_s = ttl_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.status_calls = 0
        self._known: tuple[float, ModelState] | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> ModelState | None:
        if self._known is None or self.clock() >= self._known[0]:
            return None
        return self._known[1]

    def _keep(self, state: ModelState, keep_s: float | None = None) -> None:
        keep = self.ttl_s if keep_s is None else min(self.ttl_s, keep_s)
        self._known = (self.clock() + keep, state)

    async def check(self, deadline: float) -> ModelState:
        """The model's state, from what is kept or from one `GetKeyStatus` within the chat's deadline."""
        if self.ttl_s <= 0:
            return MODEL_MAY_ANSWER
        known = self._fresh()
        if known is not None:
            return known
        async with self._lock:
            known = self._fresh()
            if known is not None:
                return known
            state, keep_s = await self._ask(deadline)
            self._keep(state, keep_s)
            return state

    def learn(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        """Keeps a "no model" failure a chat met (its calls had passed `check`), at most until recovery."""
        if self.ttl_s > 0:
            self._keep(ModelState(reason, message), retry_after_s)

    async def _ask(self, deadline: float) -> tuple[ModelState, float | None]:
        timeout = min(_STATUS_TIMEOUT_S, deadline - time.monotonic())
        if timeout <= 0.05:
            return MODEL_MAY_ANSWER, 0.0  # no time to ask: let the model path decide, and ask next time
        self.status_calls += 1
        try:
            status = await self.stub.GetKeyStatus(
                llm_gateway_pb2.GetKeyStatusRequest(), timeout=timeout, metadata=call_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return ModelState("LLM_GATEWAY_UNREACHABLE", "The LLM gateway is unreachable."), None
            # Anything else (a slow or older gateway) says nothing about the keys: try the model path.
            return MODEL_MAY_ANSWER, None
        return state_from_status(status, self.wall_clock())
