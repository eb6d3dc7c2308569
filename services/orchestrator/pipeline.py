"""Runs one question through the pipeline and yields its events; knows gRPC only as a client.

Steps: load the dataset's profile → plan (classification) → SQL → Python → compose. Every downstream call
has a deadline bounded by the chat's own; every failure becomes one `error` event a person can act on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc

from common.arrow import ipc_to_table
from common.channels import call_metadata
from common.errors import error_info
from insightx.v1 import orchestrator_pb2 as pb, sql_engine_pb2
from services.orchestrator.builtin import plan_question
from services.orchestrator.events import EventBuilder
from services.orchestrator.peers import Peers
from services.orchestrator.plan import DatasetContext, Plan, StepResults
from services.orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)

_SERVICE_NAMES = {"sql": "SQL engine", "sandbox": "Python sandbox", "llm": "LLM gateway"}


class StepFailed(Exception):
    """A step failed; carries the error event's message and code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _failure(peer: str, exc: grpc.aio.AioRpcError) -> StepFailed:
    info = error_info(exc)
    name = _SERVICE_NAMES[peer]
    if info.code == grpc.StatusCode.UNAVAILABLE:
        return StepFailed(f"The {name} is unreachable right now; try again in a moment.", "UPSTREAM_UNAVAILABLE")
    if info.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return StepFailed(f"The {name} did not answer in time.", "DEADLINE_EXCEEDED")
    return StepFailed(info.message or f"The {name} failed.", info.reason)


class Pipeline:
    """Answers questions using the peers; one instance serves every chat."""

    def __init__(self, peers: Peers, settings: OrchestratorSettings) -> None:
        self.peers = peers
        self.settings = settings

    def _timeout(self, deadline: float, cap_s: float) -> float:
        """Seconds left for a downstream call: the chat's remaining time, at most `cap_s`."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepFailed("The answer took longer than its deadline.", "DEADLINE_EXCEEDED")
        return min(left, cap_s)

    async def answer(self, request: pb.ChatRequest, deadline: float) -> AsyncIterator[pb.ChatEvent]:
        """Yields the events of one answer; the last is `final_response` or `error`."""
        events = EventBuilder(request.chat_id)
        if not request.message.strip():
            yield events.error("The question is empty: type a question about your data.", "EMPTY_QUESTION")
            return
        try:
            yield events.status("Reading the dataset's profile", "load")
            dataset = await self._load(request.session_id, deadline)
            yield events.status("Classifying the question", "classify")
            plan = plan_question(request.message, dataset)
            yield events.orchestrator_result(plan.classification, plan.reasoning, "builtin")
            results = StepResults()
            if plan.sql:
                yield events.status("Running SQL on DuckDB", "sql")
                async for event in self._run_sql(plan, dataset, results, events, deadline):
                    yield event
            yield events.status("Composing the answer", "compose")
            answer = plan.compose(results)
            yield events.final_response(
                text=answer.text,
                answer=answer.answer,
                answer_type=answer.answer_type,
                chart=answer.chart,
                follow_ups=answer.follow_ups,
                sql=plan.sql or "",
                confidence=answer.confidence,
            )
        except StepFailed as failure:
            yield events.error(failure.message, failure.code)

    async def _load(self, session_id: str, deadline: float) -> DatasetContext:
        try:
            reply = await self.peers.sql.DescribeDataset(
                sql_engine_pb2.DescribeDatasetRequest(session_id=session_id),
                timeout=self._timeout(deadline, self.settings.rpc_deadline_s),
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure("sql", exc) from exc
        return DatasetContext(
            session_id=session_id,
            table=reply.table,
            row_count=reply.row_count,
            columns=[(c.name, c.type) for c in reply.columns],
            profile=reply.profile,
            dataset_hash=reply.dataset_hash,
        )

    async def _run_sql(
        self,
        plan: Plan,
        dataset: DatasetContext,
        results: StepResults,
        events: EventBuilder,
        deadline: float,
    ) -> AsyncIterator[pb.ChatEvent]:
        assert plan.sql is not None
        timeout = self._timeout(deadline, self.settings.sql_timeout_ms / 1000.0 + 2.0)
        try:
            reply = await self.peers.sql.ExecuteSql(
                sql_engine_pb2.ExecuteSqlRequest(
                    session_id=dataset.session_id,
                    sql=plan.sql,
                    max_rows=self.settings.sql_max_rows,
                    timeout_ms=int(min(self.settings.sql_timeout_ms, timeout * 1000)),
                ),
                timeout=timeout,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            yield events.sql_result(plan.sql, None, False, 1, error=info.message, error_reason=info.reason)
            raise _failure("sql", exc) from exc
        table = ipc_to_table(reply.result.arrow_ipc)
        results.sql_table, results.sql_truncated = table, reply.result.truncated
        cap = self.settings.event_max_rows
        yield events.sql_result(
            plan.sql,
            table.slice(0, cap),
            reply.result.truncated or table.num_rows > cap,
            attempt=1,
            total_rows=table.num_rows,
        )
