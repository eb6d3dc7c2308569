"""The dataset store: each session's immutable Parquet, its metadata and its serialized profile.

Layout of the embedded store (`INSIGHTX_DATA_DIR`):

    sessions/<session_id>/raw.parquet   the data, read-only once written
    sessions/<session_id>/meta.json     DatasetRecord
    sessions/<session_id>/profile.pb    the DatasetProfile message, serialized

A write goes to a temporary folder first and is renamed into place, so a failed import leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from common.errors import InvalidInput, NotFound

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class DatasetRecord:
    """What is known about a session's dataset without reading it."""

    session_id: str
    table: str
    filename: str
    dataset_hash: str
    row_count: int
    columns: list[dict[str, str]] = field(default_factory=list)
    source_format: str = ""
    created_at: float = 0.0


class DatasetStore(Protocol):
    """Stores and finds datasets by session id."""

    def new_session_id(self) -> str: ...

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes) -> None: ...

    def get(self, session_id: str) -> DatasetRecord: ...

    def parquet_path(self, session_id: str) -> Path: ...

    def profile(self, session_id: str) -> bytes: ...


def check_session_id(session_id: str) -> str:
    """Refuses ids that could escape the store's folder."""
    if not _SESSION_ID.match(session_id or ""):
        raise InvalidInput("INVALID_SESSION_ID", "session_id must be 1-64 letters, digits, '-' or '_'")
    return session_id


class LocalDatasetStore:
    """The embedded store: a folder per session under `root/sessions`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.sessions = self.root / "sessions"
        self.sessions.mkdir(parents=True, exist_ok=True)

    def new_session_id(self) -> str:
        return uuid.uuid4().hex

    def _dir(self, session_id: str) -> Path:
        return self.sessions / check_session_id(session_id)

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes) -> None:
        """Moves `parquet_file` into the session atomically and makes it read-only."""
        final = self._dir(record.session_id)
        if final.exists():
            raise InvalidInput("SESSION_EXISTS", f"session {record.session_id} already has a dataset")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.sessions))
        try:
            target = staging / "raw.parquet"
            shutil.move(str(parquet_file), target)
            os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            (staging / "profile.pb").write_bytes(profile)
            (staging / "meta.json").write_text(json.dumps(asdict(record)))
            os.chmod(staging, 0o755)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def get(self, session_id: str) -> DatasetRecord:
        meta = self._dir(session_id) / "meta.json"
        if not meta.exists():
            raise NotFound(
                "DATASET_NOT_FOUND",
                f"No dataset for session '{session_id}'. Upload a file first (POST /api/datasets).",
            )
        return DatasetRecord(**json.loads(meta.read_text()))

    def parquet_path(self, session_id: str) -> Path:
        self.get(session_id)
        return self._dir(session_id) / "raw.parquet"

    def profile(self, session_id: str) -> bytes:
        self.get(session_id)
        return (self._dir(session_id) / "profile.pb").read_bytes()


def open_dataset_store(root: Path) -> DatasetStore:
    """The configured store (the embedded one unless a remote store is configured)."""
    return LocalDatasetStore(root)
