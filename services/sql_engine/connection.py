"""A hardened DuckDB connection over one dataset: in-memory, a read-only view, no outside access.

Order matters (DESIGN.md §5): limits first, then the view over the Parquet (which needs file access),
then `enable_external_access=false`, then `lock_configuration=true` so the SQL cannot undo any of it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def quote_ident(name: str) -> str:
    """Quotes an identifier for DuckDB (names are kept as given, spaces and parentheses included)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quotes a string literal for DuckDB."""
    return "'" + text.replace("'", "''") + "'"


def open_hardened(parquet: Path, table: str, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """An in-memory connection where `table` reads `parquet` and nothing else can be read or written."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    con.execute(f"SET memory_limit={quote_literal(memory_limit)}")
    con.execute(f"SET threads={int(threads)}")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute(f"SET allowed_directories=[{quote_literal(str(parquet.parent))}]")
    con.execute(
        f"CREATE VIEW {quote_ident(table)} AS SELECT * FROM read_parquet({quote_literal(str(parquet))})"
    )
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con
