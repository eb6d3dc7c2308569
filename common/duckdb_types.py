"""What a DuckDB type name says about a column: numeric, temporal or nested. One answer for every service."""

from __future__ import annotations

NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "REAL",
    "DOUBLE",
    "DECIMAL",
)
TEMPORAL_TYPES = ("DATE", "TIMESTAMP")  # TIME alone is a time of day: no calendar to bucket by


def is_nested(type_name: str) -> bool:
    """Lists, arrays, structs, maps and unions."""
    upper = type_name.upper()
    return upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION"))


def is_numeric(type_name: str) -> bool:
    """Integers, floats and decimals (not lists of them)."""
    return type_name.upper().startswith(NUMERIC_TYPES) and not is_nested(type_name)


def is_integral(type_name: str) -> bool:
    """Whole-number types."""
    return is_numeric(type_name) and "INT" in type_name.upper()


def is_temporal(type_name: str) -> bool:
    """DATE and TIMESTAMP types (with or without time zone)."""
    return type_name.upper().startswith(TEMPORAL_TYPES) and not is_nested(type_name)
