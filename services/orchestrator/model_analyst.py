"""The model path: classifier → SQL writer → execute → self-correction → Python → validator → composer.

Each agent sees the dataset's profile, the conversation so far and the question; a failed SQL attempt is
sent back with the engine's reason and message (up to `sql_max_attempts` tries, each a sql_result event); the
validator may send the work back `validator_retries` times with its objection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from insightx.v1 import common_pb2
from services.orchestrator.answers import (
    ComposerReply,
    answer_from_table,
    answer_type_of,
    attach_data,
    auto_chart,
    parse_composer,
    typed_answer,
)
from services.orchestrator.context import (
    describe_dataset,
    describe_history,
    describe_table,
    describe_value,
    user_message,
)
from services.orchestrator.errors import StepFailed
from services.orchestrator.events import EventBuilder
from services.orchestrator.execution import Execution, PythonOutcome, SqlOutcome
from services.orchestrator.models import AgentClient
from services.orchestrator.plan import CLASSIFICATIONS, Answer, DatasetContext
from services.orchestrator.replies import UnparseableReply, parse_json_object, parse_python, parse_sql
from services.orchestrator.settings import OrchestratorSettings


@dataclass(frozen=True)
class Verdict:
    """The validator's judgement."""

    valid: bool
    issues: list[str] = field(default_factory=list)
    confidence: float | None = None


def parse_classification(reply: str) -> tuple[str, str]:
    """(classification, reasoning) from JSON, or from a bare label in the reply."""
    try:
        data = parse_json_object(reply)
    except UnparseableReply:
        data = {}
    label = str(data.get("classification") or data.get("class") or "").strip().upper().replace("-", "_")
    reasoning = str(data.get("reasoning") or data.get("reason") or "")
    if label not in CLASSIFICATIONS:
        found = re.findall(r"\b(SQL_ONLY|PY_ONLY|SQL_THEN_PY|EXPLAIN_ONLY)\b", (reply or "").upper())
        if len(set(found)) != 1:
            raise UnparseableReply(
                'JSON {"classification": "SQL_ONLY" | "PY_ONLY" | "SQL_THEN_PY" | "EXPLAIN_ONLY", '
                '"reasoning": "..."}'
            )
        label = found[0]
    return label, reasoning


def parse_verdict(reply: str) -> Verdict:
    """The validator's JSON: `valid` (or `ok`), `issues`, `confidence`."""
    data = parse_json_object(reply)
    valid = data.get("valid", data.get("ok"))
    if not isinstance(valid, bool):
        raise UnparseableReply('JSON {"valid": true | false, "issues": [...], "confidence": 0..1}')
    issues = data.get("issues") or []
    if isinstance(issues, str):
        issues = [issues]
    confidence = data.get("confidence")
    return Verdict(
        valid=valid,
        issues=[str(i) for i in issues if str(i).strip()] if isinstance(issues, list) else [],
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
    )


def automatic_checks(sql: SqlOutcome | None, python: PythonOutcome | None) -> list[str]:
    """What is visibly wrong with a result before anyone reads it: no rows, NaN or all-null values."""
    findings: list[str] = []
    if sql is not None and sql.table is not None:
        if sql.table.num_rows == 0:
            findings.append("The SQL returned no rows.")
        else:
            for name, column in zip(sql.table.column_names, sql.table.columns, strict=True):
                if column.null_count == len(column):
                    findings.append(f'Column "{name}" is entirely NULL.')
                elif pa.types.is_floating(column.type) and any(
                    isinstance(v, float) and math.isnan(v) for v in column.slice(0, 1000).to_pylist()
                ):
                    findings.append(f'Column "{name}" contains NaN.')
    if python is not None and python.ok:
        if python.result is None and python.table is None:
            findings.append("The Python code left `result` empty (None).")
        elif isinstance(python.result, float) and math.isnan(python.result):
            findings.append("The Python result is NaN.")
    return findings


async def _discard(task: asyncio.Task[Any] | None) -> None:
    """Cancels a draft nobody will use, and forgets how it ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class ModelAnalyst:
    """Answers one question with the agents; raises ModelUnavailable to hand over to the built-in analyst."""

    def __init__(
        self,
        agents: AgentClient,
        execution: Execution,
        events: EventBuilder,
        settings: OrchestratorSettings,
        dataset: DatasetContext,
        question: str,
        history: Sequence[common_pb2.ChatMessage],
        deadline: float,
    ) -> None:
        self.agents = agents
        self.run = execution
        self.events = events
        self.settings = settings
        self.dataset = dataset
        self.question = question
        self.deadline = deadline
        self.history_text = describe_history(history, settings.prompt_max_history)
        self.profile_text = describe_dataset(dataset)
        self.classification = ""
        self.reasoning = ""
        self.sql: SqlOutcome | None = None
        self.python: PythonOutcome | None = None
        self.sql_attempts = 0
        self.verdict: Verdict | None = None

    def _base(self) -> list[tuple[str, str]]:
        return [
            ("Dataset", self.profile_text),
            ("Conversation so far", self.history_text),
            ("Question", self.question),
        ]

    async def answer(self) -> tuple[Answer, str]:
        """The composed answer and the SQL it rests on."""
        self.events.status("Classifying the question", "classify")
        # Most questions need SQL, and the SQL writer's prompt does not depend on the classification: it
        # drafts while the classifier decides, and the draft is dropped when no SQL is needed.
        drafting = asyncio.create_task(self._write_sql([], [])) if self.settings.speculative_sql else None
        try:
            self.classification, self.reasoning = await self.agents.ask(
                "classifier", user_message(self._base()), parse_classification, self.deadline
            )
        except BaseException:
            await _discard(drafting)
            raise
        if self.classification not in ("SQL_ONLY", "SQL_THEN_PY"):
            await _discard(drafting)
            drafting = None
        self.events.orchestrator_result(self.classification, self.reasoning, "llm")
        objection: list[str] = []
        composing: asyncio.Task[ComposerReply] | None = None
        for round_ in range(self.settings.validator_retries + 1):
            if self.classification in ("SQL_ONLY", "SQL_THEN_PY"):
                await self._sql_step(objection, drafting)
                drafting = None
            if self.classification in ("PY_ONLY", "SQL_THEN_PY"):
                await self._python_step(objection)
            if self.classification == "EXPLAIN_ONLY":
                break
            self.events.status("Checking the result", "validate")
            # The composer writes while the validator reads; its draft is kept only if nothing is objected.
            composing = asyncio.create_task(self._composer_reply())
            try:
                self.verdict = await self._validate()
            except BaseException:
                await _discard(composing)
                raise
            if self.verdict.valid and not self.verdict.issues:
                break
            await _discard(composing)
            composing = None
            if self.verdict.valid or round_ == self.settings.validator_retries:
                break
            objection = self.verdict.issues or ["The result does not answer the question."]
            self.events.status("The validator sent the work back: " + "; ".join(objection), "validate")
        self.events.status("Composing the answer", "compose")
        reply = await composing if composing is not None else await self._composer_reply()
        return self._answer_from(reply), self.sql.sql if self.sql and self.sql.ok else ""

    async def _write_sql(self, objection: list[str], failures: list[str]) -> str:
        """The SQL writer's statement, given the reviewer's objection and the failed attempts so far."""
        sections = [*self._base()]
        if objection:
            previous = self.sql.sql if self.sql else ""
            sections.append(
                ("Reviewer's objection to the previous answer", f"{previous}\n" + "\n".join(objection))
            )
        if failures:
            sections.append(
                ("Failed attempts (fix the SQL; use only the columns listed above)", "\n\n".join(failures))
            )
        return await self.agents.ask("sql", user_message(sections), parse_sql, self.deadline)

    async def _sql_step(self, objection: list[str], draft: asyncio.Task[str] | None = None) -> None:
        self.events.status("Writing SQL", "sql")
        failures: list[str] = []
        last_error = "the model wrote no SQL"
        attempts = self.settings.sql_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                if attempt == 1 and draft is not None:
                    sql = await draft
                else:
                    sql = await self._write_sql(objection, failures)
            except StepFailed as failure:
                if failure.code != "LLM_BAD_REPLY":
                    raise
                self.events.sql_result(
                    "", None, False, attempt, error=failure.message, error_reason="LLM_BAD_REPLY"
                )
                failures.append("(the reply held no SQL statement)")
                continue
            self.sql_attempts = attempt
            self.events.status("Running SQL on DuckDB", "sql")
            outcome = await self.run.sql(sql, attempt, for_python=self.classification == "SQL_THEN_PY")
            if outcome.ok:
                self.sql = outcome
                return
            failures.append(f"Attempt {attempt}:\n{sql}\nEngine error {outcome.reason}: {outcome.error}")
            last_error = f"{outcome.reason}: {outcome.error}"
            if attempt < attempts:
                self.events.status(f"The query failed ({outcome.reason}); correcting it", "sql")
        raise StepFailed(
            f"I could not write a query that runs on this data in {attempts} tries. Last error: {last_error}",
            "SQL_FAILED",
        )

    async def _python_step(self, objection: list[str]) -> None:
        on_sql = self.classification == "SQL_THEN_PY" and self.sql is not None and self.sql.table is not None
        self.events.status("Running Python analysis", "python")
        if on_sql:
            assert self.sql is not None
            frame = (
                "`df` is the result of this SQL:\n" + self.sql.sql + "\n" + describe_table(self.sql.table, 5)
            )
        else:
            frame = f'`df` is the whole table "{self.dataset.table}" described above.'
        failures: list[str] = []
        last_error = ""
        for _attempt in range(1, self.settings.python_max_attempts + 1):
            sections = [*self._base(), ("Data", frame)]
            if objection:
                sections.append(("Reviewer's objection to the previous answer", "\n".join(objection)))
            if failures:
                sections.append(("Failed attempts (fix the code)", "\n\n".join(failures)))
            code = await self.agents.ask("python", user_message(sections), parse_python, self.deadline)
            outcome = await self.run.python(code, self.sql if on_sql else None)
            if outcome.ok:
                self.python = outcome
                return
            failures.append(f"{code}\nError ({outcome.category}): {outcome.error}")
            last_error = f"{outcome.category}: {outcome.error}"
        raise StepFailed(
            f"The Python analysis failed {self.settings.python_max_attempts} times. Last error: {last_error}",
            "PYTHON_FAILED",
        )

    def _results(self) -> list[tuple[str, str]]:
        sections: list[tuple[str, str]] = [("Classification", self.classification)]
        if self.sql is not None and self.sql.ok:
            sections.append(("SQL", self.sql.sql))
            sections.append(("SQL result", describe_table(self.sql.table, self.settings.prompt_max_rows)))
        if self.python is not None:
            sections.append(("Python", self.python.code))
            sections.append(("Python result", describe_value(self.python.result)))
            if self.python.stdout:
                sections.append(("Python stdout", self.python.stdout[:2000]))
        return sections

    async def _validate(self) -> Verdict:
        checks = automatic_checks(self.sql, self.python)
        sections = [*self._base(), *self._results(), ("Automatic checks", "\n".join(checks))]
        try:
            return await self.agents.ask("validator", user_message(sections), parse_verdict, self.deadline)
        except StepFailed as failure:
            if failure.code != "LLM_BAD_REPLY":
                raise
            self.events.status("The validator gave no verdict; going on without it", "validate")
            return Verdict(valid=True, issues=checks, confidence=0.5)

    async def _composer_reply(self) -> ComposerReply:
        sections = [*self._base(), *self._results()]
        if self.verdict is not None and self.verdict.issues:
            sections.append(("Reviewer's notes", "\n".join(self.verdict.issues)))
        return await self.agents.ask("composer", user_message(sections), parse_composer, self.deadline)

    def _answer_from(self, reply: ComposerReply) -> Answer:
        table = self.sql.table if self.sql is not None else None
        if self.python is not None and self.python.table is not None:
            table = self.python.table
        answer: Any
        if reply.has_answer:
            answer = typed_answer(reply.answer)
        elif self.python is not None and self.python.table is None:
            answer = typed_answer(self.python.result)
        else:
            answer = answer_from_table(table)
        chart = attach_data(reply.chart, table) if reply.chart else auto_chart(table)
        stated = reply.answer_type if reply.answer_type and answer is not None else None
        return Answer(
            text=reply.text,
            answer=answer,
            answer_type=stated or answer_type_of(answer),
            chart=chart,
            follow_ups=reply.follow_ups,
            confidence=self._confidence(reply.confidence),
        )

    def _confidence(self, stated: float | None) -> float:
        """The composer's or validator's confidence, lowered for corrections and standing objections."""
        base = stated if stated is not None else None
        if base is None and self.verdict is not None and self.verdict.confidence is not None:
            base = self.verdict.confidence
        if base is None:
            base = 0.6 if self.classification == "EXPLAIN_ONLY" else 0.8
        base -= 0.1 * max(0, self.sql_attempts - 1)
        if self.verdict is not None and not self.verdict.valid:
            base = min(base, 0.4)
        return round(max(0.0, min(1.0, base)), 2)
