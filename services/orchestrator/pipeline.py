"""Runs one question through the pipeline and streams its events; knows gRPC only as a client.

load the profile → answer cache → model path (services.orchestrator.model_analyst) or, when no model can
answer, the built-in analyst (a `status` event with stage "fallback" says so) → final_response.
The orchestrator keeps no chat of its own: the caller (the gateway, whose chat store is the only one) sends
the conversation in `ChatRequest.history`, so any replica answers any turn the same way.
Whether a model can answer is asked of the LLM gateway once per few seconds (availability.py), so an
install without a key goes straight to the built-in analyst with no failing model calls first.
Every downstream call has a deadline bounded by the chat's own; every failure becomes one `error` event a
person can act on. Each answer runs as a task of `streams.AnswerStreams`, which stores its events: it
outlives a caller that goes away, resumes by seq on any replica, and only an explicit stop cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import grpc

from common.channels import call_metadata
from insightx.v1 import common_pb2, sql_engine_pb2
from insightx.v1 import orchestrator_pb2 as pb
from services.llm_gateway.agents import AgentRegistry, load_registry
from services.orchestrator.availability import ModelAvailability
from services.orchestrator.builtin.planner import prepare, settle
from services.orchestrator.cache import AnswerCache, answer_events, cache_key
from services.orchestrator.errors import StepFailed, peer_failure
from services.orchestrator.events import EventBuilder
from services.orchestrator.execution import Execution, SqlOutcome, remaining
from services.orchestrator.language import NOT_ENGLISH_MESSAGE, reads_as_english, words_of
from services.orchestrator.language import warm_up as warm_up_language
from services.orchestrator.model_analyst import ModelAnalyst
from services.orchestrator.models import AgentClient, KeyNotice, ModelUnavailable
from services.orchestrator.peers import Peers
from services.orchestrator.plan import Answer, DatasetContext, Plan, StepResults
from services.orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)

_DATASETS_KEPT = 64
_PROFILE_WAIT_SHARE = 0.6  # of the chat's time left, spent at most waiting for a profile

_FALLBACK_MESSAGES = {
    "LLM_NOT_CONFIGURED": "No language model is configured: the built-in analyst answers.",
    "ALL_KEYS_EXHAUSTED": "Every language-model key is out for now: the built-in analyst answers.",
}


_REFUSED_SQL = frozenset({"SQL_SYNTAX", "SQL_BINDER", "SQL_ERROR"})  # the SQL itself failed


async def _plan(
    question: str,
    dataset: DatasetContext,
    history: Sequence[common_pb2.ChatMessage],
    execution: Execution,
) -> tuple[Plan, dict[str, SqlOutcome]]:
    """The built-in analyst's plan, given the conversation as (role, content) turns; its top readings are
    run first (concurrently, without events) so that the judge sees what they compute. Also those runs."""
    shortlist = prepare(question, dataset, [(m.role, m.content) for m in history])
    probes = await asyncio.gather(*(execution.probe(sql) for sql in shortlist.to_run()))
    runs = {p.sql: p for p in probes}
    # SQL the engine refused has no answer; a probe that could not run (busy, slow, down) was not seen
    seen = {sql: run.table for sql, run in runs.items() if run.ok or run.reason in _REFUSED_SQL}
    return settle(shortlist, seen), runs


def _table_words(dataset: DatasetContext) -> set[str]:
    """The words of the column names and profiled values: a question may quote them in any language."""
    texts = [name for name, _ in dataset.columns]
    for column in dataset.profile.columns:
        texts.extend(v.value for v in column.top_values)
        texts.extend(column.samples)
    return words_of(texts)


class Pipeline:
    """Answers questions using the peers; one instance serves every chat."""

    def __init__(
        self,
        peers: Peers,
        settings: OrchestratorSettings,
        registry: AgentRegistry | None = None,
    ) -> None:
        self.peers = peers
        self.settings = settings
        self.registry = registry or load_registry()
        self.availability = ModelAvailability(peers.llm, settings.model_status_ttl_s)
        warm_up_language()
        self.cache = AnswerCache(settings.answer_cache_size, settings.answer_cache_ttl_s)
        self._datasets: OrderedDict[str, DatasetContext] = OrderedDict()

    async def close(self) -> None:
        """Nothing of its own to release: answers run in services/orchestrator/streams.py."""

    # -- one answer ---------------------------------------------------------------------------------

    async def produce(
        self,
        request: pb.ChatRequest,
        deadline: float,
        publish: Callable[[pb.ChatEvent], None],
        start_seq: int = 0,
        resumed: bool = False,
    ) -> None:
        """Publishes the events of one answer; the last is `final_response` or `error`."""
        produced: list[pb.ChatEvent] = []

        def sink(event: pb.ChatEvent) -> None:
            produced.append(event)
            publish(event)

        events = EventBuilder(request.chat_id, start_seq, sink=sink)
        if resumed:
            events.status("The earlier stream is no longer available: answering again.", "resume")
        if not request.message.strip():
            events.error("The question is empty: type a question about your data.", "EMPTY_QUESTION")
            return
        try:
            events.status("Reading the dataset's profile", "load")
            dataset = await self._load(request.session_id, deadline)
            history = list(request.history)  # the caller's store is the chat's only record
            key = cache_key(
                dataset.dataset_hash, request.message, history[-self.settings.prompt_max_history :]
            )
            hit = self.cache.get(key) if dataset.dataset_hash else None
            if hit is not None:
                events.status("Answered from the cache: same question, same data", "cache")
                for earlier in hit[:-1]:
                    events.replay(earlier)
                cached = pb.ChatEvent()
                cached.CopyFrom(hit[-1])
                cached.final_response.cached = True
                events.replay(cached)
                return
            execution = Execution(self.peers, self.settings, dataset, events, deadline)
            model = await self.availability.check(deadline)
            no_model = model.reason
            if no_model is None:
                try:
                    answer, sql = await self._model_answer(
                        request, dataset, history, events, execution, deadline
                    )
                except ModelUnavailable as exc:
                    self.availability.learn(exc.reason, exc.message, exc.retry_after_s)
                    no_model = exc.reason
            if no_model is not None:
                message = _FALLBACK_MESSAGES.get(
                    no_model, "The language model is unavailable: the built-in analyst answers."
                )
                events.status(message, "fallback")
                answer, sql = await self._builtin_answer(request.message, dataset, history, events, execution)
            source = "llm" if no_model is None else "builtin"
            events.final_response(
                text=answer.text,
                answer=answer.answer,
                answer_type=answer.answer_type,
                chart=answer.chart,
                follow_ups=answer.follow_ups,
                sql=sql,
                confidence=answer.confidence,
                clarifications=answer.clarifications,
            )
            if source == "llm" and dataset.dataset_hash:
                self.cache.put(key, answer_events(produced))
            log.info(
                "answered",
                extra={"chat_id": request.chat_id, "source": source, "events": events.seq - start_seq},
            )
        except StepFailed as failure:
            log.info("answer failed", extra={"chat_id": request.chat_id, "code": failure.code})
            events.error(failure.message, failure.code)
        except asyncio.CancelledError:
            log.info("answer cancelled", extra={"chat_id": request.chat_id})
            raise
        except Exception:
            log.exception("answer failed", extra={"chat_id": request.chat_id})
            events.error("Something went wrong while answering; try again.", "INTERNAL")

    async def _model_answer(
        self,
        request: pb.ChatRequest,
        dataset: DatasetContext,
        history: Sequence[common_pb2.ChatMessage],
        events: EventBuilder,
        execution: Execution,
        deadline: float,
    ) -> tuple[Answer, str]:
        def on_key_event(notice: KeyNotice) -> None:
            events.key_rotation(notice.kind, notice.provider, notice.fingerprint, notice.reason)

        agents = AgentClient(
            self.peers.llm,
            self.registry,
            self.settings.llm_timeout_s,
            self.settings.reply_max_attempts,
            on_key_event,
        )
        analyst = ModelAnalyst(
            agents, execution, events, self.settings, dataset, request.message, history, deadline
        )
        return await analyst.answer()

    async def _builtin_answer(
        self,
        question: str,
        dataset: DatasetContext,
        history: Sequence[common_pb2.ChatMessage],
        events: EventBuilder,
        execution: Execution,
    ) -> tuple[Answer, str]:
        events.status("Planning the answer with the built-in analyst", "classify")
        if not reads_as_english(question, _table_words(dataset)):
            events.orchestrator_result("EXPLAIN_ONLY", "The question is not in English.", "builtin")
            return Answer(text=NOT_ENGLISH_MESSAGE, answer=None, confidence=0.0), ""
        plan, probes = await _plan(question, dataset, history, execution)
        events.orchestrator_result(plan.classification, plan.reasoning, "builtin")
        results = StepResults()
        outcome: SqlOutcome | None = None
        if plan.sql:
            events.status("Running SQL on DuckDB", "sql")
            feeds_python = bool(plan.python_code and plan.python_on_sql_result)
            outcome = probes.get(plan.sql)
            if outcome is not None and outcome.ok and not feeds_python:
                execution.announce(outcome, 1)  # already run to decide: its rows are the answer's
            else:
                outcome = await execution.sql(plan.sql, 1, for_python=feeds_python)
            if not outcome.ok:
                raise StepFailed(f"The query failed: {outcome.error}", outcome.reason or "SQL_FAILED")
            results.sql_table, results.sql_truncated = outcome.table, outcome.truncated
        if plan.python_code:
            events.status("Running Python analysis", "python")
            run = await execution.python(plan.python_code, outcome if plan.python_on_sql_result else None)
            if not run.ok:
                raise StepFailed(f"The analysis failed: {run.error}", "PYTHON_FAILED")
            results.python_result, results.python_table = run.result, run.table
            results.python_stdout = run.stdout
        events.status("Composing the answer", "compose")
        answer = plan.compose(results)
        if answer.answer is None and (answer.clarifications or not (plan.sql or plan.python_code)):
            # a refusal (it asks instead, or ran nothing): no answer, so no confidence in one
            answer = dataclasses.replace(answer, confidence=0.0)
        return answer, plan.sql or ""

    async def _load(self, session_id: str, deadline: float) -> DatasetContext:
        """The session's table, schema and profile; a session's dataset never changes, so it is kept.

        The analyst and the prompts need the profile, which the engine may still be computing (a large
        table is answered before it is profiled): wait for it within the chat's deadline. Only a context
        whose profile is known (ready or failed) is kept.
        """
        known = self._datasets.get(session_id)
        if known is not None:
            self._datasets.move_to_end(session_id)
            return known
        # First as it is now, on the usual per-call deadline; wait only when the profile is still pending.
        reply = await self._describe(session_id, False, remaining(deadline, self.settings.rpc_deadline_s))
        if reply.profile_state == sql_engine_pb2.PROFILE_STATE_PENDING:
            # past the wait, answer from the schema alone; the next question will find the profile
            with contextlib.suppress(PeerTimeout):
                reply = await self._describe(
                    session_id, True, remaining(deadline, self._profile_wait_s(deadline))
                )
        dataset = DatasetContext(
            session_id=session_id,
            table=reply.table,
            row_count=reply.row_count,
            columns=[(c.name, c.type) for c in reply.columns],
            profile=reply.profile,
            dataset_hash=reply.dataset_hash,
        )
        if reply.profile_state != sql_engine_pb2.PROFILE_STATE_PENDING:
            self._datasets[session_id] = dataset
            while len(self._datasets) > _DATASETS_KEPT:
                self._datasets.popitem(last=False)
        return dataset

    def _profile_wait_s(self, deadline: float) -> float:
        """How long to wait for a profile: most of the chat's time left, keeping some to answer with."""
        return max(0.1, (deadline - time.monotonic()) * _PROFILE_WAIT_SHARE)

    async def _describe(
        self, session_id: str, wait: bool, timeout: float
    ) -> sql_engine_pb2.DescribeDatasetResponse:
        """DescribeDataset; a deadline that passes while waiting for a profile raises PeerTimeout."""
        try:
            return await self.peers.sql.DescribeDataset(
                sql_engine_pb2.DescribeDatasetRequest(session_id=session_id, wait_for_profile=wait),
                timeout=timeout,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            if wait and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PeerTimeout from exc
            raise peer_failure("sql", exc) from exc


class PeerTimeout(Exception):
    """A wait for a peer that ran out of its own time budget (the chat still has time left)."""


def budget_deadline(settings: OrchestratorSettings, caller_remaining: float | None) -> float:
    """The chat's deadline: its own budget, ending a little before the caller's so the error event arrives."""
    budget = settings.chat_deadline_s
    if caller_remaining is not None:
        budget = min(budget, max(0.1, caller_remaining - 0.25))
    return time.monotonic() + budget
