"""Is this SQL exactly one read-only SELECT? Decided by DuckDB's own parser, never by keywords.

Two rules sit on top, checked on DuckDB's own parse tree (`json_serialize_sql`), so that they see every
function call however deeply it is nested: functions that run SQL from a string (`query()`,
`query_table()`, ...) are refused, since what they run would escape these checks; and qualified function
names (`system.main.repeat`, `pg_catalog.lpad`) are refused, because each hardened database shadows a few
size-amplifying built-ins with guarded macros (connection.py) and a qualified name would reach around them.
Those rules bound resources; the security boundary is the hardened configuration, the read-only mount and
the query worker's own memory cap.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

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
    lowered = sql.lower()
    # The tree is walked only when a refused name could be in it: a qualified call needs a dot, and each
    # function that runs SQL from a string has "query" or "json_" in its name (a quoted name too).
    if "." in sql or "query" in lowered or "json_" in lowered:
        _refuse_hidden_sql_and_builtins(sql)
    return kind.name


#: Table functions and scalars that run (or rebuild) SQL from a string: what they run escapes every check
#: here, and the size guards of the database's macros are only as good as the names this module sees.
_RUNS_SQL = {"query", "query_table", "json_execute_serialized_sql", "json_deserialize_sql"}
_PLAIN_CATALOGS = {"", "memory"}
_PLAIN_SCHEMAS = {"", "main"}
_parsers = threading.local()


def _parsed_tree(sql: str) -> dict[str, Any]:
    """DuckDB's own parse tree of `sql` (json_serialize_sql), from a plain connection of this thread."""
    connection = getattr(_parsers, "connection", None)
    if connection is None:
        connection = _parsers.connection = duckdb.connect(":memory:", config={"threads": 1})
    (text,) = connection.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0]
    return dict(json.loads(text))


def _function_calls(node: object) -> Iterator[tuple[str, str, str]]:
    """(catalog, schema, name) of every function call in a parse tree, table functions included."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("function_name")
            if isinstance(name, str):
                yield str(item.get("catalog") or ""), str(item.get("schema") or ""), name
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_hidden_sql_and_builtins(sql: str) -> None:
    tree = _parsed_tree(sql)
    if tree.get("error"):
        raise InvalidInput("SQL_SYNTAX", f"The SQL could not be checked: {tree.get('error_message', '')}")
    for catalog, schema, name in _function_calls(tree):
        lowered = name.lower()
        if lowered in _RUNS_SQL:
            raise InvalidInput(
                "SQL_FORBIDDEN",
                f"{name}() runs SQL from a string and is not allowed; write the query itself instead.",
            )
        if catalog.lower() not in _PLAIN_CATALOGS or schema.lower() not in _PLAIN_SCHEMAS:
            qualified = ".".join(p for p in (catalog, schema, name) if p)
            raise InvalidInput(
                "SQL_FORBIDDEN",
                f"'{qualified}': functions qualified with a catalog or schema are not allowed; "
                "call functions by their plain names.",
            )
