"""Runs one validated SELECT on a hardened connection, with a row cap and a timeout by interrupt."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from common.errors import DeadlineExceeded, InvalidInput
from services.sql_engine.connection import open_hardened
from services.sql_engine.safety import check_read_only


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query (at most the cap), whether more existed, and the time it took."""

    table: pa.Table
    truncated: bool
    elapsed_ms: float


def execute(
    parquet: Path,
    table: str,
    sql: str,
    *,
    max_rows: int,
    timeout_ms: int,
    memory_limit: str,
    threads: int,
) -> QueryResult:
    """Validates, then runs `sql`; blocks, so call it from a worker thread."""
    check_read_only(sql)
    started = time.perf_counter()
    con = open_hardened(parquet, table, memory_limit, threads)
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        con.interrupt()

    timer = threading.Timer(timeout_ms / 1000.0, interrupt)
    timer.start()
    try:
        reader = con.sql(sql).to_arrow_reader(min(max_rows + 1, 100_000))
        batches: list[pa.RecordBatch] = []
        kept = 0
        truncated = False
        for batch in reader:
            if kept + batch.num_rows > max_rows:
                batches.append(batch.slice(0, max_rows - kept))
                truncated = True
                break
            batches.append(batch)
            kept += batch.num_rows
        result = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException as exc:
        raise DeadlineExceeded(
            "SQL_TIMEOUT", f"The query ran longer than {timeout_ms} ms and was stopped."
        ) from exc
    except duckdb.OutOfMemoryException as exc:
        raise InvalidInput("SQL_TOO_LARGE", f"The query needs more memory than allowed: {exc}") from exc
    except duckdb.PermissionException as exc:
        raise InvalidInput("SQL_FORBIDDEN", f"The query tried something not allowed: {exc}") from exc
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
        raise InvalidInput("SQL_SYNTAX" if isinstance(exc, duckdb.ParserException) else "SQL_BINDER",
                           str(exc)) from exc
    except duckdb.Error as exc:
        if timed_out.is_set():
            raise DeadlineExceeded(
                "SQL_TIMEOUT", f"The query ran longer than {timeout_ms} ms and was stopped."
            ) from exc
        raise InvalidInput("SQL_ERROR", str(exc)) from exc
    finally:
        timer.cancel()
        con.close()
    return QueryResult(result, truncated, (time.perf_counter() - started) * 1000.0)
