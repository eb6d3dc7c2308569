"""Hostile SQL against a real engine process: refused or bounded, nothing read or changed, still SERVING."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import grpc
import pytest
from grpc_health.v1 import health_pb2

from common.arrow import ipc_to_table
from common.channels import open_channel
from common.errors import InvalidInput, error_info
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc
from services.sql_engine.connection import open_hardened
from services.sql_engine.safety import check_read_only
from tests.services.sql_engine.conftest import (
    SALES_CSV,
    EngineProcess,
    health_status,
    start_engine_process,
    upload,
)

pytestmark = pytest.mark.integration

REFUSED = "SQL_NOT_READ_ONLY"
MULTI = "SQL_MULTIPLE_STATEMENTS"
FORBIDDEN = "SQL_FORBIDDEN"
BOUNDED = ("SQL_TIMEOUT", "SQL_TOO_LARGE")
UNKNOWN = ("SQL_BINDER",)


def hostile_corpus(
    canary: Path, other_parquet: Path, session_dir: Path, scratch: Path
) -> list[tuple[str, object]]:
    """(sql, what must happen): a reason, a tuple of acceptable reasons, or "bounded-ok" (rows, capped)."""
    c, o, s, w = str(canary), str(other_parquet), str(session_dir), str(scratch)
    return [
        (f"SELECT * FROM read_csv('{c}')", FORBIDDEN),
        (f"SELECT * FROM read_csv(['{c}'])", FORBIDDEN),
        (f"SELECT * FROM read_text('{c}')", FORBIDDEN),
        (f"SELECT * FROM read_blob('{c}')", FORBIDDEN),
        (f"SELECT * FROM glob('{canary.parent}/*')", FORBIDDEN),
        (f"SELECT * FROM sniff_csv('{c}')", FORBIDDEN),
        (f"SELECT * FROM query('SELECT * FROM read_' || 'text(''{c}'')')", FORBIDDEN),
        ("SELECT * FROM query('SELECT length(system.main.repeat(''a'', 900000000))')", FORBIDDEN),
        ("SELECT 1 WHERE 1 IN (FROM query('SELECT length(repeat(''a'', 900000000))'))", FORBIDDEN),
        ("SELECT * FROM query_table('sales_2024')", FORBIDDEN),
        ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))", FORBIDDEN),
        ("SELECT list_transform([1], lambda x: length(system.main.repeat('a', 900000000)))", FORBIDDEN),
        ("SELECT list_transform([1], lambda x: length(repeat('a', 900000000)))", ("SQL_ERROR", *BOUNDED)),
        (f"sElEcT * FrOm ReAd_TeXt('{c}')", FORBIDDEN),
        (f"FROM read_text('{c}')", FORBIDDEN),
        (f"SELECT * FROM '{c}'", (*UNKNOWN, FORBIDDEN)),
        (f"SELECT * FROM read_text('{s}/meta.json')", FORBIDDEN),
        (f"SELECT * FROM read_parquet('{o}')", FORBIDDEN),
        ("SELECT * FROM read_text('/etc/passwd')", FORBIDDEN),
        (f"COPY sales_2024 TO '{w}/out.csv'", REFUSED),
        (f"COPY (SELECT 1 AS x) TO '{s}/data/raw.parquet' (FORMAT parquet)", REFUSED),
        (f"/* harmless */ cOpY sales_2024 TO '{w}/comment.csv'", REFUSED),
        (f"EXPORT DATABASE '{w}/export'", REFUSED),
        (f"ATTACH '{w}/x.duckdb' AS x", REFUSED),
        ("DETACH memory", REFUSED),
        ("INSTALL httpfs", REFUSED),
        ("LOAD httpfs", REFUSED),
        ("SET enable_external_access = true", REFUSED),
        ("RESET enable_external_access", REFUSED),
        ("RESET lock_configuration", REFUSED),
        ("PRAGMA database_list", REFUSED),
        ("CALL pragma_version()", REFUSED),
        ("CHECKPOINT", REFUSED),
        ("CREATE SECRET s3secret (TYPE s3, KEY_ID 'a', SECRET 'b')", REFUSED),
        ("DROP VIEW sales_2024", REFUSED),
        ("CREATE TABLE t AS SELECT 1", REFUSED),
        (f"EXPLAIN ANALYZE COPY sales_2024 TO '{w}/explained.csv'", REFUSED),
        ("PIVOT sales_2024 ON region USING sum(order_id)", (REFUSED, MULTI)),
        ("SELECT 1; DROP VIEW sales_2024", MULTI),
        (f"SELECT 1; COPY sales_2024 TO '{w}/two.csv'", MULTI),
        (f"SELECT 1 -- a comment\n; ATTACH '{w}/y.duckdb'", MULTI),
        ("SELECT * FROM record", UNKNOWN),
        ("SELECT * FROM self", UNKNOWN),
        ("SELECT getenv('HOME')", UNKNOWN),
        ("SELECT system.main.repeat('x', 2000000000)", FORBIDDEN),
        ("SELECT repeat('x', 2000000000)", ("SQL_ERROR", *BOUNDED)),
        ("SELECT lpad('x', 2000000000, 'y')", ("SQL_ERROR", *BOUNDED)),
        ("SELECT printf('%0900000000d', 1)", ("SQL_ERROR", *BOUNDED)),
        ("SELECT printf('%*d', 900000000, 1)", ("SQL_ERROR", *BOUNDED)),
        ("SELECT format('{:>900000000}', 'x')", ("SQL_ERROR", *BOUNDED)),
        ("SELECT format('{:>{}}', 'x', 900000000)", ("SQL_ERROR", *BOUNDED)),
        ("SELECT len(range(2000000000))", BOUNDED),
        ("SELECT len(range(250000000))", (*BOUNDED, "bounded-ok")),
        ("SELECT count(*) FROM range(1000000000000)", BOUNDED),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", BOUNDED),
        ("SELECT length(string_agg(repeat('x', 1000), '')) FROM range(10000000)", BOUNDED),
        ("SELECT list(range) FROM range(1000000000)", BOUNDED),
        ("SELECT * FROM range(100000000) a, range(100000000) b", ("bounded-ok", *BOUNDED)),
    ]


LEGITIMATE = [
    (
        'WITH n AS (SELECT region, sum("amount (INR)") AS total FROM sales_2024 GROUP BY region) '
        "SELECT region FROM n ORDER BY total DESC LIMIT 1",
        [{"region": "South"}],
    ),
    (
        'SELECT order_id, sum("amount (INR)") OVER (PARTITION BY region ORDER BY order_id) AS running '
        "FROM sales_2024 WHERE region = 'North' ORDER BY order_id",
        None,
    ),
    (
        "SELECT region, order_id FROM sales_2024 QUALIFY row_number() OVER (PARTITION BY region ORDER BY "
        '"amount (INR)" DESC) = 1 ORDER BY region',
        None,
    ),
    ("SELECT ';DROP TABLE t' AS s", [{"s": ";DROP TABLE t"}]),
    ('SELECT "select", count(*) AS n FROM sales_2024 GROUP BY "select" ORDER BY "select"', None),
    ('SELECT max("amount (INR)") AS top FROM sales_2024', [{"top": 300.0}]),
    ("SELECT count(*) AS n FROM sales_2024 WHERE paid", [{"n": 4}]),
    (
        "SELECT date_trunc('month', order_date) AS m, count(*) AS n FROM sales_2024 GROUP BY 1 ORDER BY 1",
        None,
    ),
    ("select repeat('ab', 3) as r", [{"r": "ababab"}]),
    ("select printf('%05d|%.2f|%-3s|100%%', 42, 2.5, 'x') as p", [{"p": "00042|2.50|x  |100%"}]),
    ("select format('{} of {:>4}', 3, 'ten') as f", [{"f": "3 of  ten"}]),
    ("select format('{{}} and {{12345678}}: {}', 1) as f", [{"f": "{} and {12345678}: 1"}]),
    ("select printf('%5.1f%% of 123456789', 12.5) as p", [{"p": " 12.5% of 123456789"}]),
    (
        "select printf('%d' || repeat(',%d', 15), " + ", ".join(map(str, range(16))) + ") as p",
        [{"p": ",".join(map(str, range(16)))}],
    ),
]


def test_the_corpus_is_big_enough(tmp_path: Path) -> None:
    assert len(hostile_corpus(tmp_path, tmp_path, tmp_path, tmp_path)) >= 30


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("COPY t TO 'x.csv'", "SQL_NOT_READ_ONLY"),
        ("SELECT 1; SELECT 2", "SQL_MULTIPLE_STATEMENTS"),
        ("SELEC 1", "SQL_SYNTAX"),
        ("   ", "SQL_EMPTY"),
        ("EXPLAIN ANALYZE COPY t TO 'x'", "SQL_NOT_READ_ONLY"),
        ("SELECT \"system\".main.lpad('x', 5, 'y')", "SQL_FORBIDDEN"),
        ("SELECT pg_catalog . repeat('x', 5)", "SQL_FORBIDDEN"),
    ],
)
def test_check_read_only_refuses_with_a_reason(sql: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_read_only(sql)
    assert caught.value.reason == reason
    assert caught.value.message


def test_check_read_only_accepts_selects_and_columns_named_system() -> None:
    assert check_read_only("SELECT a.system FROM t AS a") == "SELECT"
    assert check_read_only("SELECT 'system.main.repeat' AS s") == "SELECT"


@pytest.fixture(scope="module")
def hostile_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("hostile")
    token = f"CANARY-{uuid.uuid4().hex}"
    canary = root / "data" / "canary.csv"
    canary.parent.mkdir(parents=True)
    canary.write_text(f"secret\n{token}\n")
    engine = start_engine_process(
        root / "data",
        INSIGHTX_SQL_DEFAULT_TIMEOUT_MS="2000",
        INSIGHTX_SQL_MEMORY_LIMIT="512MB",
        INSIGHTX_SQL_ADDRESS_SPACE_BYTES=str(8 << 30),
    )
    try:
        yield {"engine": engine, "token": token, "canary": canary, "root": root}
    finally:
        engine.stop()


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "spool" not in p.parts
    }


async def test_hostile_sql_is_refused_or_bounded_and_changes_nothing(
    hostile_setup: dict[str, object],
) -> None:
    engine = hostile_setup["engine"]
    assert isinstance(engine, EngineProcess)
    token, canary, root = (
        str(hostile_setup["token"]),
        Path(str(hostile_setup["canary"])),
        Path(str(hostile_setup["root"])),
    )
    other_token = f"OTHER-{uuid.uuid4().hex}"
    async with open_channel(engine.address) as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        mine = await upload(stub, SALES_CSV.encode(), "Sales 2024.csv")
        other = await upload(stub, f"secret\n{other_token}\n".encode(), "other.csv")
        sessions = engine.data_dir / "sessions"
        other_parquet = sessions / other.session_id / "data" / "raw.parquet"
        assert other_parquet.exists()
        before = _digests(engine.data_dir)
        scratch = root / "scratch"
        corpus = hostile_corpus(canary, other_parquet, sessions / mine.session_id, scratch)
        for sql, expected in corpus:
            started = time.monotonic()
            request = pb.ExecuteSqlRequest(session_id=mine.session_id, sql=sql, max_rows=100)
            try:
                reply = await stub.ExecuteSql(request, timeout=60)
            except grpc.aio.AioRpcError as exc:
                info = error_info(exc)
                allowed = expected if isinstance(expected, tuple) else (expected,)
                assert info.reason in allowed, (sql, info.reason, info.message)
                assert exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a worker that died of its query, replaced
                ), sql
                assert info.message, sql
                text = info.message
            else:
                assert isinstance(expected, tuple) and "bounded-ok" in expected, (sql, "ran")
                assert reply.result.row_count <= 100, sql
                text = str(ipc_to_table(reply.result.arrow_ipc).to_pylist())
            assert token not in text and other_token not in text, sql
            assert time.monotonic() - started < 45, (sql, "not bounded in time")
        assert _digests(engine.data_dir) == before
        assert not scratch.exists()
        assert health_status(engine.address) == health_pb2.HealthCheckResponse.SERVING
        status = await stub.GetEngineStatus(pb.GetEngineStatusRequest(), timeout=5)
        assert status.running_queries == 0
        assert status.data_read_only
        for sql, rows in LEGITIMATE:
            reply = await stub.ExecuteSql(
                pb.ExecuteSqlRequest(session_id=mine.session_id, sql=sql), timeout=30
            )
            table = ipc_to_table(reply.result.arrow_ipc)
            assert table.num_rows > 0, sql
            if rows is not None:
                assert table.to_pylist() == rows, sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT printf('%0900000000d', 1)",
        "SELECT printf('%.900000000f', 1.5)",
        "SELECT printf('%*d', 900000000, 1)",
        "SELECT format('{:>900000000}', 'x')",
        "SELECT format('{:>{}}', 'x', 900000000)",
    ],
)
def test_printf_and_format_refuse_huge_widths_before_building_them(tmp_path: Path, sql: str) -> None:
    """Refused by the guard's own message at once, not after building hundreds of MB."""
    parquet = tmp_path / "data" / "raw.parquet"
    parquet.parent.mkdir()
    duckdb.execute(f"COPY (SELECT 1 AS a) TO '{parquet}' (FORMAT parquet)")
    con = open_hardened(parquet, "t", "256MB", 1)
    try:
        with pytest.raises(duckdb.InvalidInputException, match="widths and precisions above 9,999,999"):
            con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the neutral data path needs a mount namespace (root)")
async def test_nothing_a_query_prints_names_the_data_directory(hostile_setup: dict[str, object]) -> None:
    engine = hostile_setup["engine"]
    assert isinstance(engine, EngineProcess)
    data_dir = str(engine.data_dir.resolve())
    async with open_channel(engine.address) as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        session = (await upload(stub, SALES_CSV.encode(), "Sales 2024.csv")).session_id
        probes = [
            "SELECT current_setting('allowed_directories') AS d",
            "SELECT sql FROM duckdb_views() WHERE NOT internal",
            "SELECT view_definition FROM information_schema.views",
            "SELECT sql FROM sqlite_master",
            "SELECT * FROM duckdb_settings() WHERE name IN ('allowed_directories', 'temp_directory')",
            "SELECT * FROM read_parquet('/nonexistent/x.parquet')",
            "SELECT * FROM read_parquet('raw.parquet')",
        ]
        seen = []
        for sql in probes:
            try:
                reply = await stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=session, sql=sql), timeout=30)
            except grpc.aio.AioRpcError as exc:
                text = f"{exc.details()} {error_info(exc).message}"
            else:
                text = str(ipc_to_table(reply.result.arrow_ipc).to_pylist())
            seen.append(text)
            assert data_dir not in text, (sql, text)
        assert any("/mnt/" in text for text in seen)  # the view does read a path: the neutral one
