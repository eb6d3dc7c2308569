"""Is this SQL exactly one read-only SELECT? Decided by DuckDB's own parser, never by keywords."""

from __future__ import annotations

import duckdb

from common.errors import InvalidInput

_READ_ONLY = {duckdb.StatementType.SELECT}


def check_read_only(sql: str) -> str:
    """Returns the statement type name when `sql` is one SELECT; raises InvalidInput otherwise."""
    if not sql or not sql.strip():
        raise InvalidInput("SQL_EMPTY", "The SQL is empty: send one SELECT statement.")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidInput("SQL_SYNTAX", f"The SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise InvalidInput(
            "SQL_MULTIPLE_STATEMENTS",
            f"Send exactly one SELECT statement; this SQL has {len(statements)}.",
        )
    kind = statements[0].type
    if kind not in _READ_ONLY:
        raise InvalidInput(
            "SQL_NOT_READ_ONLY",
            f"Only SELECT queries may run; this is a {kind.name} statement.",
        )
    return kind.name
