"""The gRPC adapter of the orchestrator: one Chat call streams the pipeline's events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from insightx.v1 import orchestrator_pb2 as pb
from insightx.v1 import orchestrator_pb2_grpc
from services.orchestrator.pipeline import Pipeline, budget_deadline


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Streams the events of each answer; the caller's deadline bounds every downstream call.

    When the caller goes away, grpc.aio cancels this handler; leaving the answer's stream cancels the
    answer's task, and with it every downstream call in flight.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        deadline = budget_deadline(self.pipeline.settings, context.time_remaining())
        async for event in self.pipeline.chat(request, deadline):
            yield event
