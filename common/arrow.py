"""Tables on the wire: Arrow IPC bytes in `TableResult`, and JSON-safe records only at the HTTP edge."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique (`a`, `a_2`, ...), so that records keyed by name lose no column."""
    seen: dict[str, int] = {}
    out: list[str] = []
    taken = set(names)
    for name in names:
        if name not in seen:
            seen[name] = 1
            out.append(name)
            continue
        count = seen[name]
        candidate = f"{name}_{count + 1}"
        while candidate in taken:
            count += 1
            candidate = f"{name}_{count + 1}"
        seen[name] = count + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; values Python cannot hold (dates like 'infinity') become text."""
    try:
        return list(column.to_pylist())
    except (OverflowError, ValueError, pa.ArrowException):
        return list(pc.cast(column, pa.string()).to_pylist())


def to_records(table: pa.Table, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` rows as JSON-safe dicts keyed by (unique) column name."""
    if limit is not None:
        table = table.slice(0, limit)
    names = unique_names(table.column_names)
    columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
    return [
        {name: json_safe(values[row]) for name, values in zip(names, columns, strict=True)}
        for row in range(table.num_rows)
    ]
