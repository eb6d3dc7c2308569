"""Runs SQL on the engine and Python in the sandbox for one answer, emitting a result event per attempt.

An error the author of the code can fix (the engine's SQL_* reasons, a Python exception) comes back as an
outcome to correct; a peer that is down or too slow raises StepFailed. Every call's deadline is the chat's
remaining time, capped per hop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import grpc
import pyarrow as pa

from common.arrow import ipc_to_table, json_safe, to_records, to_table_result
from common.channels import call_metadata
from common.errors import error_info
from insightx.v1 import common_pb2, py_sandbox_pb2, sql_engine_pb2
from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.errors import StepFailed, peer_failure
from services.orchestrator.events import EventBuilder
from services.orchestrator.peers import Peers
from services.orchestrator.plan import DatasetContext
from services.orchestrator.settings import OrchestratorSettings


@dataclass
class SqlOutcome:
    """One SQL attempt: its rows, or the engine's error to correct."""

    sql: str
    table: pa.Table | None = None
    truncated: bool = False
    error: str = ""
    reason: str = ""
    wire: common_pb2.TableResult | None = None  # the engine's bytes, handed to the sandbox as they are

    @property
    def ok(self) -> bool:
        return self.table is not None


@dataclass
class PythonOutcome:
    """One Python run: `result` (JSON value or table), stdout, or the error to correct."""

    code: str
    result: Any = None
    table: pa.Table | None = None
    stdout: str = ""
    error: str = ""
    category: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def remaining(deadline: float, cap_s: float) -> float:
    """Seconds left for a downstream call: the chat's remaining time, at most `cap_s`."""
    left = deadline - time.monotonic()
    if left <= 0.05:
        raise StepFailed("The answer took longer than its deadline.", "DEADLINE_EXCEEDED")
    return min(left, cap_s)


class Execution:
    """The SQL and Python runs of one answer."""

    def __init__(
        self,
        peers: Peers,
        settings: OrchestratorSettings,
        dataset: DatasetContext,
        events: EventBuilder,
        deadline: float,
    ) -> None:
        self.peers = peers
        self.settings = settings
        self.dataset = dataset
        self.events = events
        self.deadline = deadline

    async def sql(self, sql: str, attempt: int, for_python: bool = False) -> SqlOutcome:
        """Runs `sql`; emits its sql_result event (rows or error). Rows feeding Python get a larger cap."""
        try:
            outcome = await self._execute(sql, for_python)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            correctable = info.reason.startswith("SQL_") and info.reason != "SQL_CANCELLED"
            message = info.message if correctable else peer_failure("sql", exc).message
            self.events.sql_result(sql, None, False, attempt, error=message, error_reason=info.reason)
            if not correctable:
                raise peer_failure("sql", exc) from exc
            return SqlOutcome(sql, error=info.message, reason=info.reason)
        self.announce(outcome, attempt)
        return outcome

    async def probe(self, sql: str) -> SqlOutcome:
        """Runs `sql` without an event, to look at a reading's result before deciding: a failure of any
        kind is an outcome without rows (the chosen plan's own run reports errors)."""
        try:
            return await self._execute(sql, False)
        except (grpc.aio.AioRpcError, StepFailed) as exc:
            return SqlOutcome(sql, error=str(exc)[:200], reason="PROBE_FAILED")

    def announce(self, outcome: SqlOutcome, attempt: int) -> None:
        """The sql_result event of a run that returned rows."""
        assert outcome.table is not None
        cap = self.settings.event_max_rows
        self.events.sql_result(
            outcome.sql,
            outcome.table.slice(0, cap),
            outcome.truncated or outcome.table.num_rows > cap,
            attempt=attempt,
            total_rows=outcome.table.num_rows,
        )

    async def _execute(self, sql: str, for_python: bool) -> SqlOutcome:
        timeout = remaining(self.deadline, self.settings.sql_timeout_ms / 1000.0 + 2.0)
        reply = await self.peers.sql.ExecuteSql(
            sql_engine_pb2.ExecuteSqlRequest(
                session_id=self.dataset.session_id,
                sql=sql,
                max_rows=self.settings.python_input_max_rows if for_python else self.settings.sql_max_rows,
                timeout_ms=max(1, int(min(self.settings.sql_timeout_ms, (timeout - 0.5) * 1000))),
            ),
            timeout=timeout,
            metadata=call_metadata(),
        )
        table = ipc_to_table(reply.result.arrow_ipc)
        return SqlOutcome(sql, table=table, truncated=reply.result.truncated, wire=reply.result)

    async def python(self, code: str, input_table: SqlOutcome | None) -> PythonOutcome:
        """Runs `code` with `df` = the rows of `input_table` (else the whole table); emits python_result."""
        timeout = remaining(self.deadline, self.settings.python_timeout_s + 5.0)
        request = py_sandbox_pb2.RunCodeRequest(
            session_id=self.dataset.session_id,
            code=code,
            timeout_s=max(0.5, min(self.settings.python_timeout_s, timeout - 1.0)),
        )
        if input_table is not None and input_table.table is not None:
            wire = input_table.wire or to_table_result(input_table.table, input_table.truncated)
            request.input_table.CopyFrom(wire)
        try:
            reply = await self.peers.sandbox.RunCode(request, timeout=timeout, metadata=call_metadata())
        except grpc.aio.AioRpcError as exc:
            failure = peer_failure("sandbox", exc)
            self.events.python_result(pb.PythonResultEvent(code=code, error=failure.message))
            raise failure from exc
        outcome = PythonOutcome(code=code, stdout=reply.stdout)
        if reply.HasField("error") and reply.error.category:
            outcome.error = reply.error.message or "The code failed."
            outcome.category = py_sandbox_pb2.RunErrorCategory.Name(reply.error.category).removeprefix(
                "RUN_ERROR_CATEGORY_"
            )
        elif reply.HasField("result_table") and reply.result_table.arrow_ipc:
            outcome.table = ipc_to_table(reply.result_table.arrow_ipc)
            outcome.result = to_records(outcome.table, self.settings.event_max_rows)
        elif reply.result_json:
            outcome.result = json.loads(reply.result_json)
        self.events.python_result(
            pb.PythonResultEvent(
                code=code,
                results_json=json.dumps(json_safe(outcome.result)) if outcome.ok else "",
                stdout=reply.stdout,
                figures=list(reply.figures),
                error=outcome.error,
            )
        )
        return outcome
