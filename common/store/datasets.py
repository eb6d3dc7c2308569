"""The dataset store: each session's immutable Parquet, its metadata and its serialized profile.

Layout of the embedded store (`INSIGHTX_DATA_DIR`):

    sessions/<session_id>/data/raw.parquet   the data, read-only once written, alone in its folder
    sessions/<session_id>/meta.json          DatasetRecord
    sessions/<session_id>/profile.pb         the DatasetProfile message, serialized (absent until computed)

The Parquet sits alone in `data/` so that a query connection can be allowed to read that folder and
nothing else. A write goes to a staging folder first and is renamed into place, so a failed import leaves
nothing. The profile of a large table is written after its data (the engine profiles it once the upload
has been answered), so a session may exist without `profile.pb` for a while. Sessions written before
`data/` existed (`sessions/<id>/raw.parquet`) are still read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common.errors import InvalidInput, NotFound

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PARQUET_NAME = "raw.parquet"
PROFILE_NAME = "profile.pb"
DATA_FOLDER = "data"


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRecord:
        """Builds a record from stored fields, ignoring ones this version does not know."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class DatasetStore(Protocol):
    """Stores and finds datasets by session id."""

    #: The folder holding every local copy of a session's files (made read-only for queries).
    sessions: Path

    def new_session_id(self) -> str: ...

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes | None) -> None: ...

    def put_profile(self, session_id: str, profile: bytes) -> None: ...

    def get(self, session_id: str) -> DatasetRecord: ...

    def parquet_path(self, session_id: str) -> Path: ...

    def profile(self, session_id: str) -> bytes | None: ...


def check_session_id(session_id: str) -> str:
    """Refuses ids that could escape the store's folder."""
    if not _SESSION_ID.match(session_id or ""):
        raise InvalidInput("INVALID_SESSION_ID", "session_id must be 1-64 letters, digits, '-' or '_'")
    return session_id


def not_found(session_id: str) -> NotFound:
    """The error every store raises for an unknown session."""
    return NotFound(
        "DATASET_NOT_FOUND",
        f"No dataset for session '{session_id}'. Upload a file first (POST /api/datasets).",
    )


def write_session_folder(
    sessions: Path, record: DatasetRecord, parquet_file: Path, profile: bytes | None
) -> Path:
    """Lays out a session folder under `sessions` atomically (staging folder, then one rename)."""
    final = sessions / check_session_id(record.session_id)
    if final.exists():
        raise InvalidInput("SESSION_EXISTS", f"session {record.session_id} already has a dataset")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=sessions))
    try:
        data = staging / DATA_FOLDER
        data.mkdir()
        target = data / PARQUET_NAME
        shutil.move(str(parquet_file), target)
        os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(data, 0o555)
        if profile is not None:
            (staging / PROFILE_NAME).write_bytes(profile)
        (staging / "meta.json").write_text(json.dumps(asdict(record)))
        os.chmod(staging, 0o755)
        os.rename(staging, final)
    except BaseException:
        _remove_tree(staging)
        raise
    return final


def write_profile(folder: Path, profile: bytes) -> None:
    """Writes a session's profile beside its data atomically (a reader sees all of it or none)."""
    fd, name = tempfile.mkstemp(prefix=".profile-", dir=folder)
    try:
        os.fchmod(fd, 0o644)  # as readable as the profile written at import
        with os.fdopen(fd, "wb") as handle:
            handle.write(profile)
        os.replace(name, folder / PROFILE_NAME)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def read_profile(folder: Path) -> bytes | None:
    """A session folder's profile, or None while it is not computed yet."""
    try:
        return (folder / PROFILE_NAME).read_bytes()
    except FileNotFoundError:
        return None


def _remove_tree(path: Path) -> None:
    """Removes a staging tree even where read-only bits were already set."""
    if not path.exists():
        return
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def session_parquet(folder: Path) -> Path:
    """The Parquet inside a session folder (new layout first, then the old one)."""
    current = folder / DATA_FOLDER / PARQUET_NAME
    if current.exists():
        return current
    legacy = folder / PARQUET_NAME
    return legacy if legacy.exists() else current


class LocalDatasetStore:
    """The embedded store: a folder per session under `root/sessions`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.sessions = self.root / "sessions"
        try:
            self.sessions.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # A reader of a read-only volume (py_sandbox in compose and Kubernetes) that starts before any
            # writer made the folder: nothing is stored yet, and the writers make it.
            if exc.errno != errno.EROFS:
                raise

    def new_session_id(self) -> str:
        return uuid.uuid4().hex

    def _dir(self, session_id: str) -> Path:
        return self.sessions / check_session_id(session_id)

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes | None) -> None:
        """Moves `parquet_file` into the session atomically and makes it read-only."""
        write_session_folder(self.sessions, record, parquet_file, profile)

    def put_profile(self, session_id: str, profile: bytes) -> None:
        """Stores a profile computed after the data (replacing any: profiles are deterministic)."""
        self.get(session_id)
        write_profile(self._dir(session_id), profile)

    def get(self, session_id: str) -> DatasetRecord:
        meta = self._dir(session_id) / "meta.json"
        try:
            return DatasetRecord.from_dict(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise not_found(session_id) from None

    def parquet_path(self, session_id: str) -> Path:
        self.get(session_id)
        return session_parquet(self._dir(session_id))

    def profile(self, session_id: str) -> bytes | None:
        self.get(session_id)
        return read_profile(self._dir(session_id))


def open_dataset_store(root: Path) -> DatasetStore:
    """The configured store: Supabase when SUPABASE_URL and SUPABASE_SERVICE_KEY are set; records and
    profiles in PostgreSQL when INSIGHTX_DATABASE_URL is (the Parquet stays in the local folder); else
    local."""
    url = os.environ.get("SUPABASE_URL", "").strip()
    key = os.environ.get("SUPABASE_SERVICE_KEY", "").strip()
    if url and key:
        from common.store.supabase import SupabaseDatasetStore

        return SupabaseDatasetStore(root, url, key)
    database = os.environ.get("INSIGHTX_DATABASE_URL", "").strip()
    if database:
        from common.store.postgres_datasets import PostgresDatasetStore

        return PostgresDatasetStore(root, database)
    return LocalDatasetStore(root)
