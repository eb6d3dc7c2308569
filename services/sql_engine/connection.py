"""A hardened DuckDB database over one dataset: in-memory, a read-only view, no outside access.

Order matters (DESIGN.md §5): limits first, then the view over the Parquet (which needs file access),
then `enable_external_access=false`, then `lock_configuration=true` so the SQL cannot undo any of it.
`allowed_directories` names only the Parquet's own folder, which holds nothing else.

Opening one costs a few milliseconds, so `DatabaseCache` keeps a bounded number open (least recently used
goes first) and every query gets its own cursor on the shared database.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb


def quote_ident(name: str) -> str:
    """Quotes an identifier for DuckDB (names are kept as given, spaces and parentheses included)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quotes a string literal for DuckDB."""
    return "'" + text.replace("'", "''") + "'"


MAX_GENERATED = 10_000_000
_SIZE_GUARD = "CASE WHEN {n} > " + str(MAX_GENERATED) + " THEN error('{f}: the requested size is larger than "
_SIZE_GUARD += f"{MAX_GENERATED:,}') ELSE {{n}} END"


def _guard(function: str) -> str:
    return _SIZE_GUARD.format(n="n", f=function)


# printf/format build a string as wide as their format asks ('%0100000000d' is 100 MB from one row): a
# format with a width or precision of 8+ digits, or one taken from an argument, is refused. They take any
# number of arguments, so each is shadowed by a macro per arity.
_WIDE_FORMAT = {
    "printf": r"%[^a-zA-Z%]*([0-9]{8,}|\*)",
    "format": r"\{[^}]*([0-9]{8,}|\{)",
}
_ESCAPED = {"printf": "%%", "format": "{{"}  # a literal % or {, not the start of a field
_MAX_FORMAT_ARGUMENTS = 16  # each overload costs ~0.35 ms per database opened


def _format_macro(function: str) -> str:
    check = (
        f"CASE WHEN regexp_matches(replace(f, '{_ESCAPED[function]}', ''), '{_WIDE_FORMAT[function]}')"
        f" THEN error('{function}: widths and precisions"
        f" above 9,999,999 (or taken from an argument) are not allowed') ELSE f END"
    )
    overloads = []
    for arity in range(_MAX_FORMAT_ARGUMENTS + 1):
        args = [f"a{i}" for i in range(arity)]
        overloads.append(
            f"(f{''.join(', ' + a for a in args)}) AS system.main.{function}({', '.join([check, *args])})"
        )
    return f"CREATE MACRO {function}" + ", ".join(overloads)


#: Built-ins that build a huge value from a small query; each is shadowed by a macro that bounds its size.
GUARDED_MACROS = (
    f"CREATE MACRO repeat(s, n) AS system.main.repeat(s, {_guard('repeat')})",
    f"CREATE MACRO lpad(s, n, c) AS system.main.lpad(s, {_guard('lpad')}, c)",
    f"CREATE MACRO rpad(s, n, c) AS system.main.rpad(s, {_guard('rpad')}, c)",
    f"CREATE MACRO list_resize(l, n) AS system.main.list_resize(l, {_guard('list_resize')}),"
    f" (l, n, v) AS system.main.list_resize(l, {_guard('list_resize')}, v)",
    f"CREATE MACRO array_resize(l, n) AS system.main.array_resize(l, {_guard('array_resize')}),"
    f" (l, n, v) AS system.main.array_resize(l, {_guard('array_resize')}, v)",
    _format_macro("printf"),
    _format_macro("format"),
)


def open_hardened(parquet: Path, table: str, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """An in-memory connection where `table` reads `parquet` and nothing else can be read or written."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        con.execute(f"SET memory_limit={quote_literal(memory_limit)}")
        con.execute(f"SET threads={int(threads)}")
        con.execute("SET autoinstall_known_extensions=false")
        con.execute("SET autoload_known_extensions=false")
        con.execute("SET allow_community_extensions=false")
        con.execute("SET temp_directory=''")
        con.execute(f"SET allowed_directories=[{quote_literal(str(parquet.parent))}]")
        con.execute(
            f"CREATE VIEW {quote_ident(table)} AS SELECT * FROM read_parquet({quote_literal(str(parquet))})"
        )
        for macro in GUARDED_MACROS:
            con.execute(macro)
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
    except BaseException:
        con.close()
        raise
    return con


@dataclass
class OpenDatabase:
    """One dataset's hardened database, shared by the cursors of concurrent queries."""

    key: str
    connection: duckdb.DuckDBPyConnection
    users: int = 0
    evicted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database (its own transaction and interrupt)."""
        with self._lock:
            return self.connection.cursor()


class DatabaseCache:
    """At most `capacity` open databases, keyed by dataset hash; no lock is held while a query runs."""

    def __init__(self, capacity: int, memory_limit: str, threads: int) -> None:
        self.capacity = max(1, capacity)
        self.memory_limit = memory_limit
        self.threads = threads
        self._open: OrderedDict[str, OpenDatabase] = OrderedDict()
        self._guard = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._open)

    def keys(self) -> list[str]:
        """The keys of the databases open now."""
        with self._guard:
            return list(self._open)

    @contextmanager
    def borrow(self, key: str, parquet: Path, table: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor on `key`'s database for one query; the database is released afterwards."""
        database = self.acquire(key, parquet, table)
        try:
            cursor = database.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            self.release(database)

    def acquire(self, key: str, parquet: Path, table: str) -> OpenDatabase:
        """The open database for `key` (opened on first use); pair every call with `release`."""
        with self._guard:
            found = self._open.get(key)
            if found is not None:
                self._open.move_to_end(key)
                found.users += 1
                return found
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one thread opens a given dataset; others wait for it, not for each other
            with self._guard:
                found = self._open.get(key)
                if found is not None:
                    self._open.move_to_end(key)
                    found.users += 1
                    return found
            database = OpenDatabase(key, open_hardened(parquet, table, self.memory_limit, self.threads))
            with self._guard:
                database.users += 1
                self._open[key] = database
                self._opening.pop(key, None)
                victims = self._evict_locked()
        for victim in victims:
            victim.connection.close()
        return database

    def release(self, database: OpenDatabase) -> None:
        """Ends one use; closes the database if it was evicted and this was its last user."""
        with self._guard:
            database.users -= 1
            close = database.evicted and database.users == 0
        if close:
            database.connection.close()

    def _evict_locked(self) -> list[OpenDatabase]:
        victims: list[OpenDatabase] = []
        while len(self._open) > self.capacity:
            _, oldest = self._open.popitem(last=False)
            oldest.evicted = True
            if oldest.users == 0:
                victims.append(oldest)
        return victims

    def close(self) -> None:
        with self._guard:
            entries = list(self._open.values())
            self._open.clear()
        for entry in entries:
            entry.evicted = True
            if entry.users == 0:
                entry.connection.close()
