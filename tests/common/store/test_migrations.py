"""Schema migrations run at start, once: opening a store twice (or two at once) changes nothing the
second time, data survives, an older embedded database is adopted, and a newer schema stops the start."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from common.store import postgres_access, postgres_chats, sqlite_access, sqlite_chats
from common.store.chats import StoredMessage
from common.store.migrations import (
    Migration,
    SchemaTooNew,
    migrate_postgres,
    migrate_postgres_blocking,
    migrate_sqlite,
)
from common.store.postgres import DatabaseUnavailable, PostgresDatabase
from tests.common.store.conftest import Backend


async def _ledger(backend: Backend) -> list[tuple[str, int]]:
    if backend.kind == "sqlite":
        rows: list[tuple[str, int]] = []
        for name in ("chats.sqlite3", "gateway/access.sqlite3"):
            with sqlite3.connect(backend.root / name) as conn:
                rows += conn.execute("SELECT component, version FROM schema_migrations").fetchall()
        return sorted(rows)
    async with await psycopg.AsyncConnection.connect(backend.url) as conn:
        cursor = await conn.execute("SELECT component, version FROM schema_migrations")
        return sorted(await cursor.fetchall())


async def test_migrations_run_once_and_keep_the_data(backend: Backend) -> None:
    access, chats = await backend.open_access(), await backend.open_chats()
    await access.claim_dataset("s1", "alice", "a.csv", 1, 1.0)
    await chats.start_turn("c1", "s1", "q")
    expected = sorted(
        [("access", step.version) for step in sqlite_access.MIGRATIONS]
        + [("chats", step.version) for step in sqlite_chats.MIGRATIONS]
        if backend.kind == "sqlite"
        else [("access", step.version) for step in postgres_access.MIGRATIONS]
        + [("chats", step.version) for step in postgres_chats.MIGRATIONS]
    )
    assert await _ledger(backend) == expected
    again_access, again_chats = await backend.open_access(), await backend.open_chats()  # a second start
    assert await _ledger(backend) == expected
    assert await again_access.owns_dataset("alice", "s1")
    assert [m.content for m in await again_chats.messages("c1")] == ["q"]


async def test_gateways_starting_together_apply_each_step_once(postgres_url: str) -> None:
    databases = [await PostgresDatabase.open(postgres_url, max_size=2) for _ in range(4)]
    try:
        ran = await asyncio.gather(*(db.migrate("chats", postgres_chats.MIGRATIONS) for db in databases))
        assert sorted(ran) == [0, 0, 0, len(postgres_chats.MIGRATIONS)]
    finally:
        for db in databases:
            await db.close()


STEPS = (
    Migration(1, "t", "CREATE TABLE t (a INTEGER)"),
    Migration(2, "t.b", "ALTER TABLE t ADD COLUMN b TEXT"),
)


def test_an_embedded_database_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "access.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema of the release before migrations, with a row
        conn.executescript(sqlite_access.MIGRATIONS[0].sql)
        conn.execute("INSERT INTO datasets VALUES ('s1', 'alice', 'a.csv', 5, 1.0)")
    store = sqlite_access.SqliteAccessStore(path)
    assert asyncio.run(store.owns_dataset("alice", "s1"))
    store.close()


def test_sqlite_steps_apply_in_order_and_a_newer_schema_stops_the_start(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    assert migrate_sqlite(conn, "x", STEPS[:1]) == 1
    assert migrate_sqlite(conn, "x", STEPS) == 1  # only the new step
    assert migrate_sqlite(conn, "x", STEPS) == 0
    conn.execute("INSERT INTO t VALUES (1, 'b')")
    with pytest.raises(SchemaTooNew, match="version 2, newer than this code knows"):
        migrate_sqlite(conn, "x", STEPS[:1])
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        migrate_sqlite(conn, "y", (STEPS[1],))
    conn.close()


async def test_a_failing_step_leaves_nothing_behind(postgres_url: str) -> None:
    broken = (*STEPS, Migration(3, "broken", "CREATE TABLE u (a INTEGER); ALTER TABLE nowhere ADD c INT"))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await migrate_postgres(conn, "x", broken)
        cursor = await conn.execute("SELECT to_regclass('t'), to_regclass('u')")
        assert await cursor.fetchone() == (None, None)  # one transaction: steps 1 and 2 rolled back too
        assert await migrate_postgres(conn, "x", STEPS) == 2
        with pytest.raises(SchemaTooNew):
            await migrate_postgres(conn, "x", STEPS[:1])


async def test_an_unreachable_database_is_named_without_its_password(postgres_url: str) -> None:
    wrong = postgres_url.replace("postgres:", "postgres:not-the-password-", 1)
    with pytest.raises(DatabaseUnavailable) as refused:
        await PostgresDatabase.open(wrong, timeout_s=1.0)
    message = str(refused.value)
    assert "postgres@127.0.0.1:" in message and "INSIGHTX_DATABASE_URL" in message
    assert "not-the-password" not in message and postgres_url.split(":")[2].split("@")[0] not in message
    with pytest.raises(DatabaseUnavailable, match="not a connection string"):
        await PostgresDatabase.open("postgresql://u:secret@host:notaport/db x=")


async def test_the_one_answer_step_adopts_a_chat_store_with_repeated_answers(backend: Backend) -> None:
    """A store from the release before `record_answer` (a resumed answer could be stored twice then) gains
    the reply_to column and its unique index; its rows stay, and new answers are recorded once."""
    old = "INSERT INTO messages(chat_id, role, content, answer_json, sql, created_at) VALUES "
    rows = (
        "('c1','user','q','null','',1.0), ('c1','assistant','a','1','',2.0),"
        " ('c1','assistant','a','1','',3.0)"
    )
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.root / "chats.sqlite3", isolation_level=None)
        migrate_sqlite(conn, "chats", sqlite_chats.MIGRATIONS[:-1])
        conn.execute("INSERT INTO chats VALUES ('c1', 's1', 'old', 1.0)")
        conn.execute(old + rows)
        conn.close()
    else:
        db = await backend.database()
        await db.migrate("chats", postgres_chats.MIGRATIONS[:-1])
        async with db.pool.connection() as pg:
            await pg.execute("INSERT INTO chats VALUES ('c1', 's1', 'old', 1.0)")
            await pg.execute(old + rows)  # type: ignore[arg-type]  # literal SQL
    repo = await backend.open_chats()
    turns = await repo.messages("c1")
    assert [(t.role, t.content, t.reply_to) for t in turns] == [
        ("user", "q", 0),
        ("assistant", "a", 0),
        ("assistant", "a", 0),
    ]
    question = await repo.start_turn("c1", "s1", "q2")
    reply, other = StoredMessage("c1", "assistant", "a2", reply_to=question), await backend.open_chats()
    assert sorted(await asyncio.gather(repo.record_answer(reply), other.record_answer(reply))) == [
        False,
        True,
    ]
    assert [t.content for t in await repo.messages("c1")] == ["q", "a", "a", "q2", "a2"]


async def test_processes_migrating_different_components_at_once_share_one_ledger(postgres_url: str) -> None:
    """A gateway, an engine and an orchestrator starting together on an empty database: each migrates its
    own component under its own lock, and the ledger they share is made once (no duplicate-type error)."""
    conns = [await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) for _ in range(6)]
    try:
        steps = [(Migration(1, f"t{i}", f"CREATE TABLE t{i} (a INTEGER)"),) for i in range(6)]
        ran = await asyncio.gather(*(migrate_postgres(c, f"c{i}", steps[i]) for i, c in enumerate(conns)))
        assert ran == [1] * 6
    finally:
        for conn in conns:
            await conn.close()
    with psycopg.connect(postgres_url, autocommit=True) as blocking:  # the engine's blocking path too
        assert (
            migrate_postgres_blocking(blocking, "c6", (Migration(1, "t6", "CREATE TABLE t6 (a INT)"),)) == 1
        )
