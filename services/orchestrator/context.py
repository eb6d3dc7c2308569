"""What the agents are shown: the dataset's profile, the conversation so far, and result previews, as text.

Instructions live in the agent registry (services/llm_gateway/agents.py); this module only lays out data,
compactly, so that prompts stay small on wide tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from common.arrow import json_safe, to_records
from insightx.v1 import common_pb2, sql_engine_pb2
from services.orchestrator.plan import DatasetContext

_ROLES = {v: k.removeprefix("SEMANTIC_ROLE_").lower() for k, v in sql_engine_pb2.SemanticRole.items()}


def _num(value: float) -> str:
    return f"{value:.6g}"


def describe_column(column: sql_engine_pb2.ColumnProfile) -> str:
    """One line per column: quoted name, type, role, nulls, distinct count, statistics or top values."""
    parts = [f'"{column.name}" {column.type}']
    role = _ROLES.get(column.role, "")
    if role and role != "unspecified":
        parts.append(role)
    parts.append(f"distinct={column.distinct_count}")
    if column.null_count:
        parts.append(f"nulls={column.null_count}")
    if column.HasField("min"):
        stats = [f"min={_num(column.min)}", f"max={_num(column.max)}"]
        if column.HasField("mean"):
            stats.append(f"mean={_num(column.mean)}")
        if column.HasField("p50"):
            stats.append(f"median={_num(column.p50)}")
        parts.append(" ".join(stats))
    if column.min_time:
        parts.append(f"from {column.min_time} to {column.max_time}")
    if column.top_values and column.distinct_count <= 50:
        parts.append("values: " + ", ".join(f"{v.value!r}({v.count})" for v in column.top_values[:12]))
    elif column.samples:
        parts.append("e.g. " + ", ".join(repr(s) for s in column.samples[:4]))
    return "- " + "; ".join(parts)


def describe_dataset(dataset: DatasetContext) -> str:
    """The table's name, size, columns (from the profile, else the schema) and notable correlations."""
    lines = [f'Table "{dataset.table}" ({dataset.row_count:,} rows). Columns:']
    if dataset.profile.columns:
        lines += [describe_column(c) for c in dataset.profile.columns]
    else:
        lines += [f'- "{name}" {kind}' for name, kind in dataset.columns]
    if dataset.profile.correlations:
        pairs = ", ".join(
            f'"{c.column_a}"~"{c.column_b}" r={c.coefficient:.2f}' for c in dataset.profile.correlations[:8]
        )
        lines.append(f"Correlations: {pairs}")
    return "\n".join(lines)


def describe_history(history: Sequence[common_pb2.ChatMessage], limit: int) -> str:
    """The last `limit` turns, oldest first, one per line (empty when there is none)."""
    turns = [m for m in history if m.content.strip()][-limit:] if limit > 0 else []
    return "\n".join(f"{m.role or 'user'}: {m.content.strip()}" for m in turns)


def describe_table(table: pa.Table | None, max_rows: int, total_rows: int | None = None) -> str:
    """A result preview: its columns, how many rows, and the first rows as JSON records."""
    if table is None:
        return "(no table)"
    total = table.num_rows if total_rows is None else total_rows
    columns = ", ".join(f"{f.name} {f.type}" for f in table.schema)
    rows = json.dumps(to_records(table, max_rows), ensure_ascii=False, default=str)
    shown = min(max_rows, table.num_rows)
    more = f" (first {shown} shown)" if total > shown else ""
    return f"Columns: {columns}\nRows: {total}{more}\n{rows}"


def describe_value(value: Any, limit: int = 4000) -> str:
    """A Python result as JSON, cut at `limit` characters."""
    text = json.dumps(json_safe(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " …(cut)"


def user_message(sections: Sequence[tuple[str, str]]) -> str:
    """Titled sections (empty ones skipped) joined into one user message."""
    return "\n\n".join(f"## {title}\n{body}" for title, body in sections if body and body.strip())
