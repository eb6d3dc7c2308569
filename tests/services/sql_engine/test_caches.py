"""The bounded caches: open databases (LRU, closed only when unused) and results (entries and bytes)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from services.sql_engine.connection import DatabaseCache, open_hardened
from services.sql_engine.result_cache import ResultCache, normalize_sql


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "raw.parquet"
    duckdb.execute(f"COPY (SELECT range AS x FROM range(10)) TO '{path}' (FORMAT parquet)")
    return path


def test_normalize_sql_ignores_layout_but_not_literals() -> None:
    assert normalize_sql("select  a\n from t -- note\n;") == normalize_sql("SELECT a FROM t")
    assert normalize_sql("SELECT 'a  b'") != normalize_sql("SELECT 'a b'")
    assert normalize_sql('SELECT "A" FROM t') != normalize_sql('SELECT "a" FROM t')


def test_result_cache_is_bounded_by_entries_and_bytes() -> None:
    cache: ResultCache[str] = ResultCache(max_entries=2, max_bytes=100)
    cache.put(("h", "q1", 1), "one", 10)
    cache.put(("h", "q2", 1), "two", 10)
    assert cache.get(("h", "q1", 1)) == "one"
    cache.put(("h", "q3", 1), "three", 10)
    assert cache.get(("h", "q2", 1)) is None and len(cache) == 2
    assert not cache.put(("h", "big", 1), "big", 60)
    cache.put(("h", "q4", 1), "four", 25)
    cache.put(("h", "q5", 1), "five", 25)
    assert cache.bytes <= 100


def test_database_cache_evicts_least_recent_and_waits_for_users(parquet: Path) -> None:
    cache = DatabaseCache(capacity=2, memory_limit="256MB", threads=1)
    a = cache.acquire("a", parquet, "t")
    cache.release(a)
    b = cache.acquire("b", parquet, "t")
    cache.release(b)
    assert cache.acquire("a", parquet, "t") is a
    c = cache.acquire("c", parquet, "t")  # evicts b (a was used more recently); a and c stay in use
    assert len(cache) == 2 and b.evicted
    with pytest.raises(duckdb.ConnectionException):
        b.connection.execute("SELECT 1")
    d = cache.acquire("d", parquet, "t")  # evicts a, which is still in use: it stays open until released
    assert a.evicted
    cursor = a.cursor()
    assert cursor.execute("SELECT count(*) FROM t").fetchall() == [(10,)]
    cursor.close()
    cache.release(a)
    for database in (c, d):
        cache.release(database)
    cache.close()


def test_hardened_connection_refuses_configuration_and_files(parquet: Path, tmp_path: Path) -> None:
    leaked = pa.table({"secret": [42]})  # noqa: F841 - a replacement scan would find it
    con = open_hardened(parquet, "t", "256MB", 1)
    try:
        for sql in ["SET threads=1", "SELECT * FROM leaked", f"SELECT * FROM read_text('{tmp_path}/x')"]:
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
        assert con.execute("SELECT sum(x) FROM t").fetchall() == [(45,)]
        assert con.execute("SELECT repeat('ab', 2)").fetchall() == [("abab",)]
        with pytest.raises(duckdb.InvalidInputException, match="larger than"):
            con.execute("SELECT repeat('ab', 100000000)").fetchall()
    finally:
        con.close()
