"""Arrow IPC round trips and JSON-safe records."""

from __future__ import annotations

import datetime as dt
import json
import math

import pyarrow as pa

from common.arrow import ipc_to_table, json_safe, to_records, to_table_result


def test_table_result_round_trip_keeps_rows_schema_and_flag() -> None:
    table = pa.table({"amount (INR)": [1.5, None, 3.0], "when": [dt.date(2024, 1, 1)] * 3})
    result = to_table_result(table, truncated=True)
    assert result.row_count == 3 and result.truncated
    assert [c.name for c in result.columns] == ["amount (INR)", "when"]
    assert ipc_to_table(result.arrow_ipc).equals(table)


def test_empty_bytes_are_an_empty_table() -> None:
    assert ipc_to_table(b"").num_rows == 0


def test_records_are_json_safe_and_capped() -> None:
    table = pa.table({"x": [math.nan, 2.0, 3.0], "t": [dt.datetime(2024, 5, 1, 12, 0)] * 3})
    records = to_records(table, limit=2)
    assert records == [{"x": None, "t": "2024-05-01T12:00:00"}, {"x": 2.0, "t": "2024-05-01T12:00:00"}]
    json.dumps(records, allow_nan=False)


def test_json_safe_handles_nested_and_odd_types() -> None:
    import decimal

    value = {"a": [decimal.Decimal("1.25"), math.inf], "b": dt.timedelta(seconds=90), 3: b"\x01"}
    assert json_safe(value) == {"a": [1.25, None], "b": 90.0, "3": "01"}


def test_dates_python_cannot_hold_become_text_instead_of_failing() -> None:
    import duckdb

    table = duckdb.sql("SELECT 'infinity'::DATE AS d, TIMESTAMP 'infinity' AS ts, 1 AS a").to_arrow_table()
    records = to_records(table)
    assert records[0]["a"] == 1
    assert "out of range" in records[0]["d"] or records[0]["d"].lower().startswith("inf")
    json.dumps(records)


def test_duplicate_column_names_keep_every_value() -> None:
    from common.arrow import unique_names

    table = pa.Table.from_arrays([pa.array([1]), pa.array([2]), pa.array([3])], names=["a", "a", "a_2"])
    assert unique_names(table.column_names) == ["a", "a_3", "a_2"]
    assert to_records(table) == [{"a": 1, "a_3": 2, "a_2": 3}]
