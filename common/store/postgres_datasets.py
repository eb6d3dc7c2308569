"""Datasets' records and profiles in PostgreSQL (INSIGHTX_DATABASE_URL), their Parquet in the local folder.

Every engine replica reads the same records and profiles from the database; the Parquet stays where the
engine writes it, a folder that every replica mounts (as in the embedded store: the session folder keeps
its `meta.json` and `profile.pb` too, so a reader without the database, the sandbox, is unchanged).
A session written before the database was configured is still found through its folder.

The engine's store calls are blocking (run in threads), so this holds one blocking connection under a
lock, opened at start (to migrate) and reconnected once when it broke; no pool threads in the engine. Its
query workers come from a `forkserver` started afresh, so no worker inherits the connection's socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from common.errors import Unavailable
from common.store.datasets import DatasetRecord, LocalDatasetStore, _remove_tree, check_session_id
from common.store.migrations import Migration, migrate_postgres_blocking
from common.store.postgres import describe

T = TypeVar("T")

MIGRATIONS = (
    Migration(
        1,
        "dataset_records",
        """
        CREATE TABLE IF NOT EXISTS dataset_records (
            session_id TEXT PRIMARY KEY,
            record_json TEXT NOT NULL,
            profile BYTEA,
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
    ),
)


class PostgresDatasetStore(LocalDatasetStore):
    """The local store's files, with the records and profiles every replica shares in PostgreSQL."""

    def __init__(self, root: Path, url: str, connect_timeout_s: int = 10) -> None:
        super().__init__(root)
        self._url = url
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self.name = describe(url)
        self._query(lambda conn: migrate_postgres_blocking(conn, "datasets", MIGRATIONS))

    def _query(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Runs `work` on the connection; one reconnect when it broke (every statement here may run twice)."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(
                            self._url, autocommit=True, prepare_threshold=None, connect_timeout=self._timeout
                        )
                    return work(self._conn)
                except psycopg.OperationalError:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise Unavailable(
                            "DATABASE_UNAVAILABLE",
                            f"The dataset database ({self.name}) is unreachable; try again shortly.",
                        ) from None
        raise AssertionError("unreachable")

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes | None) -> None:
        """The folder first (a failed import leaves nothing), then the row; no row: no folder either."""
        super().put(record, parquet_file, profile)
        try:
            self._query(
                lambda conn: conn.execute(
                    "INSERT INTO dataset_records VALUES (%s,%s,%s,%s) ON CONFLICT (session_id) DO NOTHING",
                    (record.session_id, json.dumps(asdict(record)), profile, record.created_at),
                )
            )
        except BaseException:
            _remove_tree(self._dir(record.session_id))
            raise

    def put_profile(self, session_id: str, profile: bytes) -> None:
        super().put_profile(session_id, profile)
        self._query(
            lambda conn: conn.execute(
                "UPDATE dataset_records SET profile=%s WHERE session_id=%s", (profile, session_id)
            )
        )

    def _row(self, session_id: str) -> tuple[str, bytes | None] | None:
        check_session_id(session_id)
        return self._query(
            lambda conn: conn.execute(
                "SELECT record_json, profile FROM dataset_records WHERE session_id=%s", (session_id,)
            ).fetchone()
        )

    def get(self, session_id: str) -> DatasetRecord:
        row = self._row(session_id)
        if row is not None:
            return DatasetRecord.from_dict(json.loads(row[0]))
        return super().get(session_id)  # written before the database was configured

    def profile(self, session_id: str) -> bytes | None:
        row = self._row(session_id)
        if row is not None and row[1] is not None:
            return bytes(row[1])
        return super().profile(session_id)

    def delete_remote(self, session_id: str) -> None:
        """Removes the session's row (sql_engine/deletion.py removes the folder)."""
        self._query(
            lambda conn: conn.execute("DELETE FROM dataset_records WHERE session_id=%s", (session_id,))
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
