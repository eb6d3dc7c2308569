"""ChatEvent (protobuf) → the JSON object of one SSE `data:` line, exactly as DESIGN.md §3 specifies."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from common.arrow import ipc_to_table, to_records, unique_names
from gateway.chart_policy import safe_chart
from insightx.v1 import orchestrator_pb2 as pb

_CLASSIFICATION_PREFIX = "CLASSIFICATION_"


def event_to_json(event: pb.ChatEvent, max_rows: int = 200) -> dict[str, Any]:
    """The SSE payload of one event: `type`, `seq`, and the fields the frontend reads."""
    kind = event.WhichOneof("payload") or "status"
    out: dict[str, Any] = {"type": kind, "seq": event.seq}
    if kind == "status":
        out["message"] = event.status.message
        out["data"] = {"stage": event.status.stage}
    elif kind == "orchestrator_result":
        result = event.orchestrator_result
        name = pb.Classification.Name(result.classification).removeprefix(_CLASSIFICATION_PREFIX)
        out["data"] = {"classification": name, "reasoning": result.reasoning, "source": result.source}
    elif kind == "sql_result":
        sql = event.sql_result
        table = ipc_to_table(sql.result.arrow_ipc) if sql.result.arrow_ipc else None
        out["data"] = {
            "query": sql.query,
            "columns": unique_names([c.name for c in sql.result.columns]),
            "column_types": [c.type for c in sql.result.columns],
            "rows": to_records(table, max_rows) if table is not None else [],
            "row_count": sql.total_rows or sql.result.row_count,
            "truncated": sql.result.truncated or (table is not None and table.num_rows > max_rows),
            "attempt": sql.attempt,
            "error": sql.error or None,
            "error_reason": sql.error_reason or None,
        }
    elif kind == "python_result":
        py = event.python_result
        out["data"] = {
            "code": py.code,
            "results": json.loads(py.results_json) if py.results_json else None,
            "stdout": py.stdout,
            "figures": [_figure(f.mime_type, f.data) for f in py.figures],
            "error": py.error or None,
        }
    elif kind == "final_response":
        final = event.final_response
        out["data"] = {
            "text": final.text,
            "answer": _integral(json_format.MessageToDict(final.answer))
            if final.HasField("answer")
            else None,
            "answer_type": final.answer_type,
            # The spec is untrusted (a model wrote it): only what the allow-list admits reaches the page.
            "chart": safe_chart(json_format.MessageToDict(final.chart)) if final.HasField("chart") else None,
            "follow_ups": list(final.follow_ups),
            "sql": final.sql or None,
            "confidence": final.confidence,
            "cached": final.cached,
            "clarifications": list(final.clarifications),
        }
    elif kind == "error":
        out["message"] = event.error.message
        out["code"] = event.error.code
    elif kind == "key_rotation":
        rot = event.key_rotation
        out["message"] = f"LLM key {rot.fingerprint} {rot.kind.replace('_', ' ')}"
        out["data"] = {
            "kind": rot.kind,
            "provider": rot.provider,
            "fingerprint": rot.fingerprint,
            "reason": rot.reason,
        }
    return out


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
    import base64

    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"
