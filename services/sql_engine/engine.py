"""The engine's operations as plain functions over the dataset store: no gRPC here.

Threads: imports run on the caller's thread (the servicer uses asyncio.to_thread: a writable view of the
disk); the profiles of large tables run on ProfileJobs' own pool after the import has replied. Queries
run on `query_pool`, whose threads see the store's folder read-only (readonly.py) and share a bounded
cache of open databases, each query on its own cursor. No lock is held while DuckDB works.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb

from common.errors import InsightError, InvalidInput, Unavailable
from common.store import DatasetRecord, DatasetStore
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.connection import DatabaseCache
from services.sql_engine.executor import QueryHandle, QueryResult, run_select
from services.sql_engine.importer import import_file, open_import_database
from services.sql_engine.profiler import profile_parquet
from services.sql_engine.profiles import ProfileJobs
from services.sql_engine.readonly import ReadOnlyState
from services.sql_engine.result_cache import ResultCache, normalize_sql
from services.sql_engine.safety import check_read_only
from services.sql_engine.settings import SqlEngineSettings

_LOCATED_MAX = 4096
log = logging.getLogger(__name__)


class SqlEngine:
    """Imports, describes and queries datasets held in a DatasetStore."""

    def __init__(self, store: DatasetStore, settings: SqlEngineSettings) -> None:
        self.store = store
        self.settings = settings
        self.read_only = ReadOnlyState()
        roots = [Path(store.sessions)] if settings.sql_read_only_mount else []
        self.query_pool = ThreadPoolExecutor(
            max_workers=max(1, settings.sql_query_workers),
            thread_name_prefix="sql-query",
            initializer=(lambda: self.read_only.initializer(roots)) if roots else None,
        )
        self.databases = DatabaseCache(
            settings.sql_max_open_databases, settings.sql_memory_limit, settings.sql_threads
        )
        self.results: ResultCache[QueryResult] = ResultCache(
            settings.sql_result_cache_entries, settings.sql_result_cache_bytes
        )
        self._located: OrderedDict[str, tuple[DatasetRecord, Path]] = OrderedDict()
        # Per process: engines sharing a data_dir must not share DuckDB's spill files.
        self._spill = Path(settings.data_dir) / "spool" / f"import-spill-{os.getpid()}"
        self.import_database = open_import_database(
            settings.sql_import_memory_limit, settings.sql_threads, self._spill
        )
        self.profiles = ProfileJobs(store, self._profile_stored, settings.sql_profile_workers)
        self._counts = threading.Lock()
        self._running = 0
        self._queued = 0

    # --- status ---------------------------------------------------------------------------------------

    @property
    def running_queries(self) -> int:
        return self._running

    @property
    def queued_queries(self) -> int:
        return self._queued

    def status(self) -> pb.GetEngineStatusResponse:
        return pb.GetEngineStatusResponse(
            running_queries=self._running,
            open_databases=len(self.databases),
            cached_results=len(self.results),
            data_read_only=self.read_only.active,
            cached_result_bytes=self.results.bytes,
            queued_queries=self._queued,
            pending_profiles=self.profiles.pending,
        )

    def warm_up(self) -> None:
        """Starts every query thread now, so the read-only views exist before the first query."""
        barrier = threading.Barrier(self.query_pool._max_workers)  # type: ignore[attr-defined]
        futures = [self.query_pool.submit(barrier.wait, 10) for _ in range(barrier.parties)]
        for future in futures:
            future.result()

    def close(self) -> None:
        self.profiles.close()
        self.query_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.import_database.close()
        except duckdb.Error:  # an import or profile still runs on a cursor: it ends with the process
            log.info("import database still busy at close")
        shutil.rmtree(self._spill, ignore_errors=True)
        self.databases.close()

    # --- datasets -------------------------------------------------------------------------------------

    def import_dataset(
        self, raw: Path, filename: str, sheet: str = ""
    ) -> tuple[DatasetRecord, pb.DatasetProfile | None]:
        """Stores `raw` as a new session's dataset; nothing is left behind when it fails.

        Returns the profile too when the table was small enough to profile before replying; else None,
        and the profile is computed right after (`profiles`).
        """
        limit = self.settings.max_upload_bytes
        if raw.stat().st_size > limit:
            raise InvalidInput("FILE_TOO_LARGE", too_large_message(limit))
        work = Path(tempfile.mkdtemp(prefix="import-", dir=raw.parent))
        started = time.perf_counter()
        try:
            imported = import_file(
                raw,
                filename,
                work,
                sheet=sheet,
                profile_rows=self.settings.sql_profile_inline_rows,
                database=self.import_database,
            )
            record = DatasetRecord(
                session_id=self.store.new_session_id(),
                table=imported.table,
                filename=filename,
                dataset_hash=imported.sha256,
                row_count=imported.row_count,
                columns=[{"name": n, "type": t} for n, t in imported.columns],
                source_format=imported.source_format,
                created_at=time.time(),
            )
            converted = time.perf_counter()
            profile = imported.profile
            self.store.put(record, imported.parquet, profile.SerializeToString() if profile else None)
            if profile is None:
                try:
                    self.profiles.submit(record.session_id)
                except Exception:  # shutting down: the data is stored, and any replica can profile it
                    log.warning("profile not scheduled", extra={"session_id": record.session_id})
            log.info(
                "dataset stored",
                extra={
                    "session_id": record.session_id,
                    "rows": record.row_count,
                    "convert_ms": round((converted - started) * 1000, 1),
                    "store_ms": round((time.perf_counter() - converted) * 1000, 1),
                    "profiled": profile is not None,
                },
            )
            return record, profile
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def describe(self, session_id: str) -> tuple[DatasetRecord, pb.DatasetProfile | None]:
        """The session's record and its profile, or None while the profile is still being computed (then
        `profiles.start(session_id)` gives the job to wait on). Blocking."""
        record = self.store.get(session_id)
        stored = self.store.profile(session_id)
        return record, (pb.DatasetProfile.FromString(stored) if stored is not None else None)

    def _profile_stored(self, session_id: str) -> pb.DatasetProfile:
        """Profiles a stored dataset (ProfileJobs stores the result). DuckDB errors become a FAILED profile
        that says why; the data stays queryable."""
        record, parquet = self.locate(session_id)
        started = time.perf_counter()
        columns = [(c["name"], c["type"]) for c in record.columns]
        try:
            profile = profile_parquet(parquet, columns, record.row_count, database=self.import_database)
        except duckdb.Error as exc:
            log.warning("profile failed", extra={"session_id": session_id, "error": str(exc)[:300]})
            return pb.DatasetProfile(
                failure=f"'{record.filename}' was stored but could not be profiled: {str(exc)[:300]}"
            )
        log.info(
            "dataset profiled",
            extra={"session_id": session_id, "profile_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        return profile

    def locate(self, session_id: str) -> tuple[DatasetRecord, Path]:
        """The session's record and local Parquet (downloading it when the store is remote). Blocking."""
        found = self._located.get(session_id)
        if found is not None:
            return found
        record = self.store.get(session_id)
        located = (record, self.store.parquet_path(session_id))
        self._located[session_id] = located
        while len(self._located) > _LOCATED_MAX:
            self._located.popitem(last=False)
        return located

    # --- SQL ------------------------------------------------------------------------------------------

    def validate(self, sql: str, session_id: str = "") -> tuple[str, list[tuple[str, str]]]:
        """The statement type (and, given a session, the result columns) when `sql` may run. Blocking."""
        kind = check_read_only(sql)
        if not session_id:
            return kind, []
        record, parquet = self.locate(session_id)
        return kind, self.query_pool.submit(self._bind, record, parquet, sql).result()

    def execute(
        self,
        session_id: str,
        sql: str,
        max_rows: int = 0,
        timeout_ms: int = 0,
        handle: QueryHandle | None = None,
        use_cache: bool = True,
    ) -> QueryResult:
        """Runs one SELECT on the session's dataset. Blocking: for scripts and tests."""
        rows, timeout = self._limits(max_rows, timeout_ms)
        record, parquet = self.locate(session_id)
        key = (record.dataset_hash, normalize_sql(sql), rows)
        if use_cache and (hit := self._cache_hit(key)) is not None:
            return hit
        future = self._submit(record, parquet, sql, rows, timeout, handle or QueryHandle())
        return self._remember(key, future.result(), use_cache)

    async def execute_async(
        self,
        session_id: str,
        sql: str,
        max_rows: int = 0,
        timeout_ms: int = 0,
        handle: QueryHandle | None = None,
        use_cache: bool = True,
    ) -> QueryResult:
        """The same as `execute`, awaiting the query thread instead of blocking the event loop."""
        rows, timeout = self._limits(max_rows, timeout_ms)
        located = self._located.get(session_id)
        if located is None:
            located = await asyncio.to_thread(self.locate, session_id)
        record, parquet = located
        key = (record.dataset_hash, normalize_sql(sql), rows)
        if use_cache and (hit := self._cache_hit(key)) is not None:
            return hit
        handle = handle or QueryHandle()
        future = self._submit(record, parquet, sql, rows, timeout, handle)
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            handle.cancel()
            raise
        return self._remember(key, result, use_cache)

    def _limits(self, max_rows: int, timeout_ms: int) -> tuple[int, int]:
        if max_rows < 0 or timeout_ms < 0:
            raise InvalidInput("INVALID_LIMIT", "max_rows and timeout_ms must not be negative.")
        rows = min(max_rows or self.settings.sql_default_max_rows, self.settings.sql_hard_max_rows)
        timeout = min(timeout_ms or self.settings.sql_default_timeout_ms, self.settings.sql_max_timeout_ms)
        return rows, timeout

    def _cache_hit(self, key: tuple[str, str, int]) -> QueryResult | None:
        hit = self.results.get(key)
        if hit is None:
            return None
        return QueryResult(hit.table, hit.truncated, 0.0, cached=True)

    def _remember(self, key: tuple[str, str, int], result: QueryResult, use_cache: bool) -> QueryResult:
        if use_cache or self.results.get(key) is None:
            self.results.put(key, result, result.table.nbytes)
        return result

    def _submit(
        self, record: DatasetRecord, parquet: Path, sql: str, rows: int, timeout: int, handle: QueryHandle
    ):  # type: ignore[no-untyped-def]
        with self._counts:
            self._queued += 1
        try:
            return self.query_pool.submit(self._run, record, parquet, sql, rows, timeout, handle)
        except RuntimeError as exc:
            with self._counts:
                self._queued -= 1
            raise Unavailable("ENGINE_STOPPING", "The SQL engine is shutting down.") from exc

    @contextmanager
    def _running_query(self) -> Iterator[None]:
        with self._counts:
            self._queued -= 1
            self._running += 1
        try:
            yield
        finally:
            with self._counts:
                self._running -= 1

    def _run(
        self, record: DatasetRecord, parquet: Path, sql: str, rows: int, timeout: int, handle: QueryHandle
    ) -> QueryResult:
        """On a query thread: validate, borrow the dataset's database, run on a fresh cursor."""
        with self._running_query():
            if handle.cancelled:
                raise InvalidInput("SQL_CANCELLED", "The query was cancelled by its caller.")
            check_read_only(sql)
            with self._cursor(record, parquet) as cursor:
                result = run_select(cursor, sql, max_rows=rows, timeout_ms=timeout, handle=handle)
            return _cap_bytes(result, self.settings.sql_max_result_bytes)

    def _bind(self, record: DatasetRecord, parquet: Path, sql: str) -> list[tuple[str, str]]:
        """On a query thread: binds `sql` against the table without running it."""
        with self._cursor(record, parquet) as cursor:
            try:
                relation = cursor.sql(sql)
                return [(str(n), str(t)) for n, t in zip(relation.columns, relation.types, strict=True)]
            except duckdb.ParserException as exc:
                raise InvalidInput("SQL_SYNTAX", str(exc)) from exc
            except (duckdb.BinderException, duckdb.CatalogException) as exc:
                raise InvalidInput("SQL_BINDER", str(exc)) from exc
            except duckdb.PermissionException as exc:
                raise InvalidInput("SQL_FORBIDDEN", f"The query tried something not allowed: {exc}") from exc
            except duckdb.Error as exc:
                raise InvalidInput("SQL_ERROR", str(exc)) from exc

    @contextmanager
    def _cursor(self, record: DatasetRecord, parquet: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            database = self.databases.acquire(f"{record.dataset_hash}:{record.table}", parquet, record.table)
        except duckdb.Error as exc:
            raise Unavailable(
                "DATASET_UNREADABLE", f"The session's dataset could not be opened: {exc}"
            ) from exc
        try:
            cursor = database.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            self.databases.release(database)


def _cap_bytes(result: QueryResult, limit: int) -> QueryResult:
    """Drops trailing rows until the result fits in `limit` bytes (so it fits in one gRPC message)."""
    table = result.table
    if table.nbytes <= limit or table.num_rows == 0:
        return result
    keep = max(0, int(table.num_rows * limit / table.nbytes) - 1)
    while keep > 0 and table.slice(0, keep).nbytes > limit:
        keep //= 2
    return QueryResult(table.slice(0, keep), True, result.elapsed_ms)


def too_large_message(limit: int) -> str:
    return (
        f"The file is larger than the {limit / (1 << 20):,.0f} MiB upload limit (INSIGHTX_MAX_UPLOAD_BYTES). "
        "Upload a smaller extract, or a Parquet file, which is smaller for the same data."
    )


__all__ = ["InsightError", "QueryHandle", "QueryResult", "SqlEngine", "too_large_message"]
