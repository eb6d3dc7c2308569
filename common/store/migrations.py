"""Schema migrations, run at start by each store: numbered steps per component, each applied once.

A database records what it has in `schema_migrations(component, version)`. Opening a store applies the
steps it lacks, in order, each in its own transaction, so starting twice (or two processes starting at
once: PostgreSQL takes an advisory lock first) changes nothing the second time. Steps only ever get
appended; a database newer than the code (a version this process does not know) stops the start with a
message, instead of being written by code that does not know its schema.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Migration:
    """One schema step: `version` counts from 1 within its component."""

    version: int
    description: str
    sql: str


class SchemaTooNew(RuntimeError):
    """The database has a step of this component that this code does not know."""


_SQLITE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (component, version)
)
"""

_POSTGRES_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (component, version)
)
"""


# `CREATE TABLE IF NOT EXISTS` is not safe against itself in PostgreSQL: two processes creating the ledger
# at once (each under its own component's lock: a gateway, an engine, an orchestrator starting together on
# an empty database) both pass the check and one fails on a duplicate type. So the ledger is made in a
# transaction of its own under one lock every component takes.
_LEDGER_LOCK = zlib.crc32(b"insightx:schema_migrations")


def _check(component: str, steps: Sequence[Migration], applied: int) -> list[Migration]:
    versions = [step.version for step in steps]
    if versions != list(range(1, len(steps) + 1)):
        raise ValueError(f"{component}: migrations must be numbered 1..n in order, got {versions}")
    if applied > len(steps):
        raise SchemaTooNew(
            f"the database's {component} schema is at version {applied}, newer than this code knows"
            f" ({len(steps)}): run the newer release, or a database of its own"
        )
    return list(steps[applied:])


def migrate_sqlite(conn: sqlite3.Connection, component: str, steps: Sequence[Migration]) -> int:
    """Applies the steps `conn` lacks (autocommit connection); returns how many ran."""
    conn.execute(_SQLITE_LEDGER)
    conn.execute("BEGIN IMMEDIATE")  # one writer at a time: two processes opening one file do not race
    try:
        row = conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component=?", (component,)
        ).fetchone()
        pending = _check(component, steps, int(row[0]))
        for step in pending:
            for statement in _statements(step.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?,?,?,?)",
                (component, step.version, step.description, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(pending)


def _statements(sql: str) -> list[str]:
    """A script's statements (our migrations hold no `;` inside literals or triggers)."""
    return [part.strip() for part in sql.split(";") if part.strip()]


# PostgreSQL statements shared by the async (gateway, orchestrator) and blocking (engine) paths
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"
_APPLIED_SQL = "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component=%s"
_RECORD_SQL = "INSERT INTO schema_migrations VALUES (%s,%s,%s,%s)"


def _component_lock(component: str) -> int:
    """The advisory lock key of one component's steps."""
    return zlib.crc32(b"insightx:" + component.encode())


def _record(component: str, step: Migration) -> tuple[str, int, str, float]:
    return (component, step.version, step.description, time.time())


async def migrate_postgres(conn: Any, component: str, steps: Sequence[Migration]) -> int:
    """Applies the steps `conn` (a psycopg AsyncConnection) lacks, in one transaction under an advisory
    lock keyed by the component, so gateways starting together apply each step once; returns how many."""
    async with conn.transaction():  # the shared ledger first, under a lock of its own (see _LEDGER_LOCK)
        await conn.execute(_LOCK_SQL, (_LEDGER_LOCK,))
        await conn.execute(_POSTGRES_LEDGER)
    async with conn.transaction():
        await conn.execute(_LOCK_SQL, (_component_lock(component),))
        row = await (await conn.execute(_APPLIED_SQL, (component,))).fetchone()
        pending = _check(component, steps, int(row[0]))
        for step in pending:
            for statement in _statements(step.sql):
                await conn.execute(statement)  # type: ignore[arg-type]  # our own literal SQL
            await conn.execute(_RECORD_SQL, _record(component, step))
    return len(pending)


def migrate_postgres_blocking(conn: Any, component: str, steps: Sequence[Migration]) -> int:
    """`migrate_postgres` for a blocking psycopg Connection (the engine's dataset store)."""
    with conn.transaction():
        conn.execute(_LOCK_SQL, (_LEDGER_LOCK,))
        conn.execute(_POSTGRES_LEDGER)
    with conn.transaction():
        conn.execute(_LOCK_SQL, (_component_lock(component),))
        row = conn.execute(_APPLIED_SQL, (component,)).fetchone()
        pending = _check(component, steps, int(row[0]))
        for step in pending:
            for statement in _statements(step.sql):
                conn.execute(statement)
            conn.execute(_RECORD_SQL, _record(component, step))
    return len(pending)
