"""Runs one validated SELECT on a cursor: a row cap fetched in batches, a timeout, a cancel by interrupt."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from common.errors import DeadlineExceeded, InsightError, InvalidInput

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query (at most the cap), whether more existed, and the time it took."""

    table: pa.Table
    truncated: bool
    elapsed_ms: float
    cached: bool = False


class QueryHandle:
    """Lets another thread (a timer, a cancelled RPC) interrupt a query at any point of its life."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self.cancelled = False
        self.timed_out = False

    def attach(self, cursor: duckdb.DuckDBPyConnection | None) -> None:
        with self._lock:
            self._cursor = cursor
            if cursor is not None and (self.cancelled or self.timed_out):
                cursor.interrupt()

    def cancel(self) -> None:
        """The caller went away: stop the work now."""
        self._stop("cancelled")

    def expire(self) -> None:
        """The query ran out of time."""
        self._stop("timed_out")

    def _stop(self, why: str) -> None:
        with self._lock:
            if self.cancelled or self.timed_out:
                return
            setattr(self, why, True)
            if self._cursor is not None:
                self._cursor.interrupt()


def run_select(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int,
    timeout_ms: int,
    handle: QueryHandle,
    own_timer: bool = True,
    max_bytes: int = 0,
) -> QueryResult:
    """Runs `sql` on `cursor`, keeping at most `max_rows` rows; blocks, so call it from a worker thread.

    Without `own_timer` the caller expires `handle` after `timeout_ms` itself (a query worker does, from
    the thread that already waits for cancels, rather than starting a thread per query). With `max_bytes`,
    fetching stops once that many bytes are held (the caller trims to the exact size with `cap_bytes`).
    """
    started = time.perf_counter()
    timer = threading.Timer(timeout_ms / 1000.0, handle.expire) if own_timer else None
    handle.attach(cursor)
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        if handle.cancelled:
            raise InvalidInput("SQL_CANCELLED", "The query was cancelled by its caller.")
        reader = cursor.sql(sql).to_arrow_reader(min(max_rows + 1, BATCH_ROWS))
        batches: list[pa.RecordBatch] = []
        kept = 0
        kept_bytes = 0
        truncated = False
        for batch in reader:
            if kept + batch.num_rows > max_rows:
                batches.append(batch.slice(0, max_rows - kept))
                truncated = True
                break
            batches.append(batch)
            kept += batch.num_rows
            kept_bytes += batch.nbytes
            if max_bytes and kept_bytes > max_bytes:  # enough to fill the reply: stop fetching
                truncated = True
                break
        result = pa.Table.from_batches(batches, schema=reader.schema)
    except InsightError:
        raise
    except duckdb.Error as exc:
        raise translate_error(exc, handle, timeout_ms) from exc
    finally:
        if timer is not None:
            timer.cancel()
        handle.attach(None)
    return QueryResult(result, truncated, (time.perf_counter() - started) * 1000.0)


def translate_error(exc: duckdb.Error, handle: QueryHandle, timeout_ms: int) -> InsightError:
    """DuckDB's error as one of ours, with DuckDB's own message so a model can correct its SQL."""
    message = str(exc)
    if handle.timed_out:
        return DeadlineExceeded(
            "SQL_TIMEOUT",
            f"The query ran longer than {timeout_ms} ms and was stopped. Simplify it or filter.",
        )
    if handle.cancelled or isinstance(exc, duckdb.InterruptException):
        return InvalidInput("SQL_CANCELLED", "The query was cancelled by its caller.")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return InvalidInput(
            "SQL_TOO_LARGE", f"The query needs more memory than a query may use: {_first_line(message)}"
        )
    if isinstance(exc, duckdb.PermissionException):
        return InvalidInput("SQL_FORBIDDEN", f"The query tried something not allowed: {_first_line(message)}")
    if isinstance(exc, duckdb.ParserException):
        return InvalidInput("SQL_SYNTAX", message)
    if isinstance(exc, duckdb.BinderException | duckdb.CatalogException):
        return InvalidInput("SQL_BINDER", message)
    return InvalidInput("SQL_ERROR", message)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def cap_bytes(result: QueryResult, limit: int) -> QueryResult:
    """Drops trailing rows until the result fits in `limit` bytes (so it fits in one gRPC message)."""
    table = result.table
    if table.nbytes <= limit or table.num_rows == 0:
        return result
    keep = max(0, int(table.num_rows * limit / table.nbytes) - 1)
    while keep > 0 and table.slice(0, keep).nbytes > limit:
        keep //= 2
    return QueryResult(table.slice(0, keep), True, result.elapsed_ms)
