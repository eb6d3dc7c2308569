"""The gRPC adapter of the orchestrator: one Chat call streams the pipeline's events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from insightx.v1 import orchestrator_pb2 as pb, orchestrator_pb2_grpc
from services.orchestrator.pipeline import Pipeline


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Streams the events of each answer; the caller's deadline bounds every downstream call."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        remaining = context.time_remaining()
        budget = self.pipeline.settings.chat_deadline_s
        if remaining is not None:
            budget = min(budget, remaining)
        deadline = time.monotonic() + budget
        async for event in self.pipeline.answer(request, deadline):
            yield event
