"""The engine's operations as plain functions over the dataset store: no gRPC here.

Imports run on the caller's thread (the servicer uses asyncio.to_thread: a writable view of the disk);
the profiles of large tables run on ProfileJobs' own pool after the import has replied. Queries run in
query worker processes (workers.py): each sees the store read-only, caps its own memory, and can die or
be retired without the engine noticing more than a log line. One caller (a session, or a user when the
caller names one) holds at most a few workers at a time; results are cached per session.
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
from pathlib import Path

import duckdb

from common.errors import InsightError, InvalidInput
from common.store import DatasetRecord, DatasetStore
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.executor import QueryHandle, QueryResult
from services.sql_engine.importer import import_file, open_import_database
from services.sql_engine.profiler import profile_parquet
from services.sql_engine.profiles import ProfileJobs
from services.sql_engine.result_cache import ResultCache, normalize_sql
from services.sql_engine.safety import check_read_only
from services.sql_engine.settings import SqlEngineSettings
from services.sql_engine.spool import SpoolFiles, Upload
from services.sql_engine.worker import WorkerConfig
from services.sql_engine.workers import Job, PoolLimits, Reply, WorkerPool

_LOCATED_MAX = 4096
log = logging.getLogger(__name__)


class SqlEngine:
    """Imports, describes and queries datasets held in a DatasetStore."""

    def __init__(self, store: DatasetStore, settings: SqlEngineSettings) -> None:
        self.store = store
        self.settings = settings
        self.workers = WorkerPool(
            WorkerConfig(
                sessions=str(Path(store.sessions).absolute()),
                memory_limit=settings.sql_memory_limit,
                threads=settings.sql_threads,
                address_space_bytes=settings.sql_worker_address_space_bytes,
                max_open_databases=settings.sql_max_open_databases,
                max_result_bytes=settings.sql_max_result_bytes,
                read_only_mount=settings.sql_read_only_mount,
            ),
            PoolLimits(
                workers=settings.sql_query_workers,
                per_session=settings.sql_queries_per_session,
                per_user=settings.sql_queries_per_user,
                waiting_per_caller=settings.sql_queued_per_caller,
                recycle_rss_bytes=settings.sql_worker_recycle_rss_bytes,
            ),
        )
        self._workers_started = False
        self._starting = threading.Lock()
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
        self.spool_files = SpoolFiles(Path(settings.data_dir) / "spool")  # uploads' files, reused

    # --- status ---------------------------------------------------------------------------------------

    @property
    def running_queries(self) -> int:
        return self.workers.counts.running

    @property
    def queued_queries(self) -> int:
        return self.workers.counts.queued

    def status(self) -> pb.GetEngineStatusResponse:
        return pb.GetEngineStatusResponse(
            running_queries=self.workers.counts.running,
            open_databases=self.workers.open_databases,
            cached_results=len(self.results),
            data_read_only=self.workers.read_only.active,
            cached_result_bytes=self.results.bytes,
            queued_queries=self.workers.counts.queued,
            pending_profiles=self.profiles.pending,
        )

    def start_workers(self) -> None:
        """Starts the query workers (blocking; once). The server calls it before reporting SERVING."""
        with self._starting:
            if not self._workers_started:
                self.workers.start()
                self._workers_started = True

    async def alive(self, timeout_s: float) -> bool:
        """Liveness: a worker answers a trivial query now, on the path real queries take (or every worker
        is busy on a query still within its deadline)."""
        if not self._workers_started:
            return False
        return await self.workers.probe(timeout_s)

    def close(self) -> None:
        self.profiles.close()
        self.workers.close()
        try:
            self.import_database.close()
        except duckdb.Error:  # an import or profile still runs on a cursor: it ends with the process
            log.info("import database still busy at close")
        shutil.rmtree(self._spill, ignore_errors=True)
        self.spool_files.close()

    # --- datasets -------------------------------------------------------------------------------------

    def import_dataset(
        self,
        raw: Path,
        filename: str,
        sheet: str = "",
        cancelled: threading.Event | None = None,
        upload: Upload | None = None,
    ) -> tuple[DatasetRecord, pb.DatasetProfile | None]:
        """Stores `raw` as a new session's dataset; nothing is left behind when it fails.

        Returns the profile too when the table was small enough to profile before replying; else None,
        and the profile is computed right after (`profiles`). `upload`: `raw` is still being received
        (the import reads it as it arrives; spool.py).
        """
        limit = self.settings.max_upload_bytes
        if upload is None and raw.stat().st_size > limit:  # an upload's receiver counts as it receives
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
                cancelled=cancelled,  # set when the client leaves: the import stops
                upload=upload,
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

    def forget(self, session_id: str) -> None:
        """Drops what this engine remembers about a deleted session (its path; its results are keyed by
        session and never served once the session is gone, and workers' open views are never used again)."""
        self._located.pop(session_id, None)
        self.spool_files.clear()  # a kept spool file may still hold the deleted dataset's raw upload

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

    def validate(self, sql: str) -> str:
        """The statement type when `sql` may run (parse only, no dataset)."""
        return check_read_only(sql)

    async def validate_async(
        self, sql: str, session_id: str, user_id: str = "", wait_s: float | None = None
    ) -> tuple[str, list[tuple[str, str]]]:
        """The statement type and the result columns on the session's table, bound by a worker."""
        kind = check_read_only(sql)
        record, parquet = await self._locate_async(session_id)
        job = self._job("bind", record, parquet, sql)
        timeout = self.settings.sql_default_timeout_ms / 1000
        reply = await self._on_worker(job, session_id, user_id, QueryHandle(), timeout, wait_s)
        return kind, [(str(n), str(t)) for n, t in reply.header["columns"]]

    async def execute_async(
        self,
        session_id: str,
        sql: str,
        max_rows: int = 0,
        timeout_ms: int = 0,
        handle: QueryHandle | None = None,
        use_cache: bool = True,
        user_id: str = "",
        wait_s: float | None = None,
    ) -> QueryResult:
        """Runs one SELECT on the session's dataset in a query worker.

        `wait_s` bounds the wait for a free worker (the caller's deadline; at most the largest timeout).
        """
        rows, timeout = self._limits(max_rows, timeout_ms)
        check_read_only(sql)
        record, parquet = await self._locate_async(session_id)
        key = (session_id, normalize_sql(sql), rows)
        if use_cache and (hit := self._cache_hit(key)) is not None:
            return hit
        job = self._job("query", record, parquet, sql, rows, timeout)
        reply = await self._on_worker(
            job, session_id, user_id, handle or QueryHandle(), timeout / 1000, wait_s
        )
        assert reply.table is not None
        result = QueryResult(reply.table, bool(reply.header["truncated"]), float(reply.header["elapsed_ms"]))
        return self._remember(key, result, use_cache)

    async def _locate_async(self, session_id: str) -> tuple[DatasetRecord, Path]:
        located = self._located.get(session_id)
        if located is None:
            located = await asyncio.to_thread(self.locate, session_id)
        return located

    def _job(
        self, op: str, record: DatasetRecord, parquet: Path, sql: str, rows: int = 0, timeout: int = 0
    ) -> Job:
        relative = Path(parquet).absolute().relative_to(Path(self.store.sessions).absolute())
        key = f"{record.session_id}:{record.table}"  # a view reads one session's file, never a twin's
        return Job(op, key, record.table, str(relative), sql, rows, timeout)

    async def _on_worker(
        self,
        job: Job,
        session_id: str,
        user_id: str,
        handle: QueryHandle,
        timeout_s: float,
        wait_s: float | None,
    ) -> Reply:
        if not self._workers_started:
            await asyncio.to_thread(self.start_workers)
        callers = (f"session:{session_id}", *((f"user:{user_id}",) if user_id else ()))
        most = self.settings.sql_max_timeout_ms / 1000
        wait = most if wait_s is None else max(0.0, min(wait_s, most))
        return await self.workers.run(job, callers, handle, timeout_s, wait)

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


def too_large_message(limit: int) -> str:
    return (
        f"The file is larger than the {limit / (1 << 20):,.0f} MiB upload limit (INSIGHTX_MAX_UPLOAD_BYTES). "
        "Upload a smaller extract, or a Parquet file, which is smaller for the same data."
    )


__all__ = ["InsightError", "QueryHandle", "QueryResult", "SqlEngine", "too_large_message"]
