"""ChatEvent (protobuf) → the JSON object of one SSE `data:` line: the frontend's contract, owned here.

docs/events.md describes every type and field. `ENCODERS` has one encoder per kind of the `ChatEvent`
payload oneof, each returning its typed payload; a kind with no encoder (or an event with no payload) is an
`UnknownEvent`, which the stream turns into an `error` event instead of sending a bare `{type, seq}`.
The kinds and the terminal ones come from `common.chat_events`, shared with the CLI, the orchestrator's
resume buffer and the page (`GET /events.json`, made by `contract_json`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from google.protobuf import json_format

from common.arrow import ipc_to_table, to_records, unique_names
from common.chat_events import KINDS, TERMINAL
from gateway.chart_policy import safe_chart
from insightx.v1 import orchestrator_pb2 as pb

__all__ = [
    "ENCODERS",
    "KINDS",
    "TERMINAL",
    "EventPayload",
    "UnknownEvent",
    "contract_json",
    "error_payload",
    "event_to_json",
]

_CLASSIFICATION_PREFIX = "CLASSIFICATION_"


class UnknownEvent(ValueError):
    """A ChatEvent whose kind has no encoder here (a proto newer than this gateway, or no payload)."""


# -- the payloads, one per type (docs/events.md) -------------------------------------------------------


class StatusData(TypedDict):
    stage: str


class StatusPayload(TypedDict):
    type: Literal["status"]
    seq: int
    message: str
    data: StatusData


class OrchestratorResultData(TypedDict):
    classification: str
    reasoning: str
    source: str


class OrchestratorResultPayload(TypedDict):
    type: Literal["orchestrator_result"]
    seq: int
    data: OrchestratorResultData


class SqlResultData(TypedDict):
    query: str
    columns: list[str]
    column_types: list[str]
    rows: list[dict[str, Any]]
    row_count: int
    truncated: bool
    attempt: int
    error: str | None
    error_reason: str | None


class SqlResultPayload(TypedDict):
    type: Literal["sql_result"]
    seq: int
    data: SqlResultData


class PythonResultData(TypedDict):
    code: str
    results: Any
    stdout: str
    figures: list[str]
    error: str | None


class PythonResultPayload(TypedDict):
    type: Literal["python_result"]
    seq: int
    data: PythonResultData


class FinalResponseData(TypedDict):
    text: str
    answer: Any
    answer_type: str
    chart: dict[str, Any] | None
    follow_ups: list[str]
    sql: str | None
    confidence: float
    cached: bool
    clarifications: list[str]


class FinalResponsePayload(TypedDict):
    type: Literal["final_response"]
    seq: int
    data: FinalResponseData


class ErrorPayload(TypedDict):
    type: Literal["error"]
    seq: int
    message: str
    code: str


class KeyRotationData(TypedDict):
    kind: str
    provider: str
    fingerprint: str
    reason: str


class KeyRotationPayload(TypedDict):
    type: Literal["key_rotation"]
    seq: int
    message: str
    data: KeyRotationData


EventPayload = (
    StatusPayload
    | OrchestratorResultPayload
    | SqlResultPayload
    | PythonResultPayload
    | FinalResponsePayload
    | ErrorPayload
    | KeyRotationPayload
)
Encoder = Callable[[pb.ChatEvent, int], EventPayload]


# -- the encoders ---------------------------------------------------------------------------------------


def _status(event: pb.ChatEvent, max_rows: int) -> StatusPayload:
    return {
        "type": "status",
        "seq": event.seq,
        "message": event.status.message,
        "data": {"stage": event.status.stage},
    }


def _orchestrator_result(event: pb.ChatEvent, max_rows: int) -> OrchestratorResultPayload:
    result = event.orchestrator_result
    name = pb.Classification.Name(result.classification).removeprefix(_CLASSIFICATION_PREFIX)
    return {
        "type": "orchestrator_result",
        "seq": event.seq,
        "data": {"classification": name, "reasoning": result.reasoning, "source": result.source},
    }


def _sql_result(event: pb.ChatEvent, max_rows: int) -> SqlResultPayload:
    sql = event.sql_result
    table = ipc_to_table(sql.result.arrow_ipc) if sql.result.arrow_ipc else None
    return {
        "type": "sql_result",
        "seq": event.seq,
        "data": {
            "query": sql.query,
            "columns": unique_names([c.name for c in sql.result.columns]),
            "column_types": [c.type for c in sql.result.columns],
            "rows": to_records(table, max_rows) if table is not None else [],
            "row_count": sql.total_rows or sql.result.row_count,
            "truncated": sql.result.truncated or (table is not None and table.num_rows > max_rows),
            "attempt": sql.attempt,
            "error": sql.error or None,
            "error_reason": sql.error_reason or None,
        },
    }


def _python_result(event: pb.ChatEvent, max_rows: int) -> PythonResultPayload:
    py = event.python_result
    return {
        "type": "python_result",
        "seq": event.seq,
        "data": {
            "code": py.code,
            "results": json.loads(py.results_json) if py.results_json else None,
            "stdout": py.stdout,
            "figures": [_figure(f.mime_type, f.data) for f in py.figures],
            "error": py.error or None,
        },
    }


def _final_response(event: pb.ChatEvent, max_rows: int) -> FinalResponsePayload:
    final = event.final_response
    answer = _integral(json_format.MessageToDict(final.answer)) if final.HasField("answer") else None
    return {
        "type": "final_response",
        "seq": event.seq,
        "data": {
            "text": final.text,
            "answer": answer,
            "answer_type": final.answer_type,
            # The spec is untrusted (a model wrote it): only what the allow-list admits reaches the page.
            "chart": safe_chart(json_format.MessageToDict(final.chart)) if final.HasField("chart") else None,
            "follow_ups": list(final.follow_ups),
            "sql": final.sql or None,
            "confidence": final.confidence,
            "cached": final.cached,
            "clarifications": list(final.clarifications),
        },
    }


def _error(event: pb.ChatEvent, max_rows: int) -> ErrorPayload:
    return error_payload(event.seq, event.error.message, event.error.code)


def _key_rotation(event: pb.ChatEvent, max_rows: int) -> KeyRotationPayload:
    rot = event.key_rotation
    return {
        "type": "key_rotation",
        "seq": event.seq,
        "message": f"LLM key {rot.fingerprint} {rot.kind.replace('_', ' ')}",
        "data": {
            "kind": rot.kind,
            "provider": rot.provider,
            "fingerprint": rot.fingerprint,
            "reason": rot.reason,
        },
    }


ENCODERS: dict[str, Encoder] = {
    "status": _status,
    "orchestrator_result": _orchestrator_result,
    "sql_result": _sql_result,
    "python_result": _python_result,
    "final_response": _final_response,
    "error": _error,
    "key_rotation": _key_rotation,
}


def event_to_json(event: pb.ChatEvent, max_rows: int = 200) -> EventPayload:
    """The SSE payload of one event: `type`, `seq`, and the fields the frontend reads (docs/events.md).

    Raises UnknownEvent for an event with no payload or a kind this gateway has no encoder for.
    """
    kind = event.WhichOneof("payload")
    encoder = ENCODERS.get(kind) if kind is not None else None
    if encoder is None:
        raise UnknownEvent(f"ChatEvent seq {event.seq} has {f'kind {kind!r}' if kind else 'no payload'}")
    return encoder(event, max_rows)


def error_payload(seq: int, message: str, code: str) -> ErrorPayload:
    """An `error` event: the orchestrator's, or one the gateway makes when the stream itself fails."""
    return {"type": "error", "seq": seq, "message": message, "code": code}


def contract_json() -> dict[str, list[str]]:
    """What `GET /events.json` serves: every event type, and those that end an answer."""
    return {"types": list(ENCODERS), "terminal": list(TERMINAL)}


def _integral(value: Any) -> Any:
    """protobuf Values carry numbers as doubles: whole numbers go back as ints (250000, not 250000.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _figure(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"
