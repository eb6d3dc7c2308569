"""Builds the ChatEvents of one answer, numbering them with a monotonically increasing `seq`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from google.protobuf import json_format, struct_pb2

from common.arrow import json_safe, to_table_result
from insightx.v1 import orchestrator_pb2 as pb


def to_value(value: Any) -> struct_pb2.Value:
    """A Python value as a protobuf Value (None, NaN and inf become null)."""
    return json_format.ParseDict(json_safe(value), struct_pb2.Value())


def to_struct(mapping: dict[str, Any]) -> struct_pb2.Struct:
    """A dict as a protobuf Struct."""
    return json_format.ParseDict(json_safe(mapping), struct_pb2.Struct())


class EventBuilder:
    """Creates the events of one chat answer in order."""

    def __init__(
        self, chat_id: str, start_seq: int = 0, sink: Callable[[pb.ChatEvent], None] | None = None
    ) -> None:
        self.chat_id = chat_id
        self.seq = start_seq
        self.sink = sink

    def _next(self, **payload: Any) -> pb.ChatEvent:
        self.seq += 1
        event = pb.ChatEvent(seq=self.seq, chat_id=self.chat_id, **payload)
        if self.sink is not None:
            self.sink(event)
        return event

    def status(self, message: str, stage: str) -> pb.ChatEvent:
        return self._next(status=pb.StatusEvent(message=message, stage=stage))

    def orchestrator_result(self, classification: str, reasoning: str, source: str) -> pb.ChatEvent:
        value = pb.Classification.Value(f"CLASSIFICATION_{classification}")
        return self._next(
            orchestrator_result=pb.OrchestratorResultEvent(
                classification=value, reasoning=reasoning, source=source
            )
        )

    def sql_result(
        self,
        query: str,
        table: pa.Table | None,
        truncated: bool,
        attempt: int,
        total_rows: int = 0,
        error: str = "",
        error_reason: str = "",
    ) -> pb.ChatEvent:
        event = pb.SqlResultEvent(
            query=query, attempt=attempt, total_rows=total_rows, error=error, error_reason=error_reason
        )
        if table is not None:
            event.result.CopyFrom(to_table_result(table, truncated))
        return self._next(sql_result=event)

    def python_result(self, event: pb.PythonResultEvent) -> pb.ChatEvent:
        return self._next(python_result=event)

    def final_response(
        self,
        text: str,
        answer: Any,
        answer_type: str,
        chart: dict[str, Any] | None,
        follow_ups: list[str],
        sql: str,
        confidence: float,
        cached: bool = False,
        clarifications: list[str] | None = None,
    ) -> pb.ChatEvent:
        event = pb.FinalResponseEvent(
            text=text,
            answer=to_value(answer),
            follow_ups=follow_ups,
            sql=sql,
            confidence=confidence,
            cached=cached,
            answer_type=answer_type,
            clarifications=clarifications or [],
        )
        if chart is not None:
            event.chart.CopyFrom(to_struct(chart))
        return self._next(final_response=event)

    def error(self, message: str, code: str) -> pb.ChatEvent:
        return self._next(error=pb.ErrorEvent(message=message, code=code))

    def key_rotation(self, kind: str, provider: str, fingerprint: str, reason: str) -> pb.ChatEvent:
        return self._next(
            key_rotation=pb.KeyRotationEvent(
                kind=kind, provider=provider, fingerprint=fingerprint, reason=reason
            )
        )

    def replay(self, event: pb.ChatEvent) -> pb.ChatEvent:
        """A copy of an earlier answer's event (e.g. from the answer cache), renumbered into this one."""
        copy = pb.ChatEvent()
        copy.CopyFrom(event)
        kind = copy.WhichOneof("payload")
        payload = getattr(copy, kind) if kind else None
        return self._next(**({kind: payload} if kind else {}))
