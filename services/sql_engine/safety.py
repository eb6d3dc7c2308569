"""Is this SQL exactly one read-only SELECT? Decided by DuckDB's own parser, never by keywords.

One token rule sits on top: names qualified with DuckDB's built-in catalog (`system.main.repeat`,
`pg_catalog.lpad`) are refused, because each hardened database shadows a few size-amplifying built-ins
with guarded macros (connection.py) and a qualified name would reach around them. That rule bounds
resources; the security boundary is the hardened configuration and the read-only mount.
"""

from __future__ import annotations

import itertools

import duckdb

from common.errors import InvalidInput

_READ_ONLY = {duckdb.StatementType.SELECT}
_BUILTIN_CATALOGS = {"system", "pg_catalog"}


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
    _refuse_builtin_qualification(sql)
    return kind.name


def _refuse_builtin_qualification(sql: str) -> None:
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error:
        return
    texts: list[str] = []
    for index, (start, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            continue
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(sql)
        texts.append(sql[start:end].strip())
    for name, following in itertools.pairwise(texts):
        if following == "." and name.strip('"').lower() in _BUILTIN_CATALOGS:
            raise InvalidInput(
                "SQL_FORBIDDEN",
                f"Names qualified with DuckDB's '{name.strip(chr(34))}' catalog are not allowed; "
                "call functions by their plain names.",
            )
