"""The gRPC adapter of the orchestrator: Chat streams an answer's events, StopAnswer stops an answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import psycopg

from common.errors import InvalidInput, Unavailable, abort_with
from common.store.postgres import DatabaseUnavailable
from insightx.v1 import orchestrator_pb2 as pb
from insightx.v1 import orchestrator_pb2_grpc
from services.orchestrator.pipeline import Pipeline, budget_deadline
from services.orchestrator.streams import AnswerStreams, Publish

log = logging.getLogger(__name__)

_STORE_DOWN = Unavailable(
    "EVENT_STORE_UNAVAILABLE", "The answers' event store is unreachable right now; try again in a moment."
)
_NO_CHAT = InvalidInput("MISSING_CHAT_ID", "Stopping an answer needs its chat_id.")
_STORE_ERRORS = (DatabaseUnavailable, psycopg.Error)


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Streams the events of each answer from the event store; the caller's deadline bounds the answer.

    When the caller goes away, grpc.aio cancels this handler: only this stream ends, the answer runs on
    (services/orchestrator/streams.py). StopAnswer is what cancels an answer and its downstream calls.
    """

    def __init__(self, pipeline: Pipeline, streams: AnswerStreams) -> None:
        self.pipeline = pipeline
        self.streams = streams

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        deadline = budget_deadline(self.pipeline.settings, context.time_remaining())

        async def produce(start_seq: int, resumed: bool, publish: Publish) -> None:
            await self.pipeline.produce(request, deadline, publish, start_seq, resumed)

        after = max(0, request.last_event_seq)
        try:
            async for event in self.streams.answer(
                request.chat_id, request.session_id, request.message, after, produce
            ):
                yield event
        except _STORE_ERRORS:
            log.warning("event store unavailable", exc_info=True)
            await abort_with(context, _STORE_DOWN)

    async def StopAnswer(
        self, request: pb.StopAnswerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopAnswerResponse:
        if not request.chat_id:
            await abort_with(
                context, InvalidInput("MISSING_CHAT_ID", "Stopping an answer needs its chat_id.")
            )
        try:
            stopped = await self.streams.stop(request.chat_id, request.session_id)
        except _STORE_ERRORS:
            log.warning("event store unavailable", exc_info=True)
            await abort_with(context, _STORE_DOWN)
            raise  # abort_with never returns
        return pb.StopAnswerResponse(stopped=stopped)
