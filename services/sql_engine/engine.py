"""The engine's operations as plain functions over the dataset store: no gRPC here."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput
from common.store import DatasetRecord, DatasetStore
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.executor import QueryResult, execute
from services.sql_engine.importer import import_file
from services.sql_engine.profiler import profile_parquet
from services.sql_engine.safety import check_read_only
from services.sql_engine.settings import SqlEngineSettings


@dataclass
class SqlEngine:
    """Imports, describes and queries datasets held in a DatasetStore."""

    store: DatasetStore
    settings: SqlEngineSettings
    running_queries: int = 0

    def import_dataset(self, raw: Path, filename: str) -> tuple[DatasetRecord, pb.DatasetProfile]:
        """Stores `raw` as a new session's dataset; nothing is left behind when it fails."""
        work = Path(tempfile.mkdtemp(prefix="import-", dir=raw.parent))
        try:
            imported = import_file(raw, filename, work)
            profile = profile_parquet(imported.parquet, imported.columns, imported.row_count)
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
            self.store.put(record, imported.parquet, profile.SerializeToString())
            return record, profile
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def describe(self, session_id: str) -> tuple[DatasetRecord, pb.DatasetProfile]:
        """The session's record and profile."""
        record = self.store.get(session_id)
        return record, pb.DatasetProfile.FromString(self.store.profile(session_id))

    def validate(self, sql: str) -> str:
        """The statement type when `sql` may run; raises InvalidInput otherwise."""
        return check_read_only(sql)

    def execute(self, session_id: str, sql: str, max_rows: int, timeout_ms: int) -> QueryResult:
        """Runs one SELECT on the session's dataset (blocking: call from a worker thread)."""
        if max_rows < 0 or timeout_ms < 0:
            raise InvalidInput("INVALID_LIMIT", "max_rows and timeout_ms must not be negative.")
        record = self.store.get(session_id)
        rows = min(max_rows or self.settings.sql_default_max_rows, self.settings.sql_hard_max_rows)
        self.running_queries += 1
        try:
            return execute(
                self.store.parquet_path(session_id),
                record.table,
                sql,
                max_rows=rows,
                timeout_ms=timeout_ms or self.settings.sql_default_timeout_ms,
                memory_limit=self.settings.sql_memory_limit,
                threads=self.settings.sql_threads,
            )
        finally:
            self.running_queries -= 1
