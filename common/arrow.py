"""Tables on the wire: Arrow IPC bytes in `TableResult`, and JSON-safe records only at the HTTP edge."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import pyarrow as pa

from insightx.v1 import common_pb2


def table_to_ipc(table: pa.Table) -> bytes:
    """Serializes a table as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_to_table(data: bytes) -> pa.Table:
    """Reads an Arrow IPC stream back into a table (an empty table for empty bytes)."""
    if not data:
        return pa.table({})
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def to_table_result(table: pa.Table, truncated: bool = False) -> common_pb2.TableResult:
    """Wraps a table with its row count, truncation flag and schema."""
    return common_pb2.TableResult(
        arrow_ipc=table_to_ipc(table),
        row_count=table.num_rows,
        truncated=truncated,
        columns=[common_pb2.Column(name=f.name, type=str(f.type)) for f in table.schema],
    )


def json_safe(value: Any) -> Any:
    """Converts a Python value from Arrow into something json.dumps accepts (NaN and inf become None)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def to_records(table: pa.Table, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` rows as JSON-safe dicts keyed by column name."""
    if limit is not None:
        table = table.slice(0, limit)
    return [{k: json_safe(v) for k, v in row.items()} for row in table.to_pylist()]
