"""The dataset store on Supabase: rows in the `sessions` table (PostgREST), files in the `datasets` bucket.

Used when SUPABASE_URL and SUPABASE_SERVICE_KEY are set. Objects are `{session_id}/raw.parquet` and
`{session_id}/profile.pb` (written after the Parquet for a large table, once the engine has profiled it); the
row holds the DatasetRecord. Everything read is kept in a local read cache
laid out exactly like the embedded store (`<data_dir>/sessions/<id>/...`), so queries always read a local,
read-only Parquet, and a cached Parquet is checked against its recorded sha256 before it is used.

The table this store expects (create it once in the Supabase SQL editor):

    create table if not exists sessions (
        session_id text primary key,
        table_name text not null,
        filename text not null,
        dataset_hash text not null,
        row_count bigint not null,
        columns jsonb not null default '[]',
        source_format text not null default '',
        created_at timestamptz not null default now()
    );

and a private storage bucket named `datasets`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from common.errors import InsightError, InvalidInput, Unavailable
from common.store.datasets import (
    PARQUET_NAME,
    PROFILE_NAME,
    DatasetRecord,
    check_session_id,
    not_found,
    read_profile,
    session_parquet,
    write_profile,
    write_session_folder,
)

BUCKET = "datasets"
TABLE = "sessions"


class SupabaseDatasetStore:
    """Sessions in Supabase, with a local read cache under `root/sessions`."""

    def __init__(
        self,
        root: Path,
        url: str,
        service_key: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.sessions = self.root / "sessions"
        self.sessions.mkdir(parents=True, exist_ok=True)
        self._spool = self.root / "spool"
        self._spool.mkdir(parents=True, exist_ok=True)
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"apikey": service_key, "Authorization": f"Bearer {service_key}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._records: dict[str, DatasetRecord] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def new_session_id(self) -> str:
        return uuid.uuid4().hex

    # --- writing -------------------------------------------------------------------------------------

    def put(self, record: DatasetRecord, parquet_file: Path, profile: bytes | None) -> None:
        """Uploads the files, then inserts the row; undoes the uploads when a later step fails."""
        sid = check_session_id(record.session_id)
        uploaded: list[str] = []
        try:
            with parquet_file.open("rb") as body:
                self._upload(f"{sid}/{PARQUET_NAME}", body.read(), "application/vnd.apache.parquet")
            uploaded.append(f"{sid}/{PARQUET_NAME}")
            if profile is not None:
                self._upload(f"{sid}/{PROFILE_NAME}", profile, "application/octet-stream")
                uploaded.append(f"{sid}/{PROFILE_NAME}")
            self._insert_row(record)
        except BaseException:
            self._remove_objects(uploaded)
            raise
        write_session_folder(self.sessions, record, parquet_file, profile)
        self._records[sid] = record

    def put_profile(self, session_id: str, profile: bytes) -> None:
        """Uploads a profile computed after the data, then updates the local copy. Overwrites: profiles are
        deterministic, so two replicas that both computed one store the same bytes."""
        record = self.get(session_id)
        self._upload(f"{record.session_id}/{PROFILE_NAME}", profile, "application/octet-stream", upsert=True)
        folder = self.sessions / record.session_id
        if (folder / "meta.json").exists():
            write_profile(folder, profile)

    def _upload(self, path: str, data: bytes, content_type: str, *, upsert: bool = False) -> None:
        reply = self._call(
            "POST",
            f"/storage/v1/object/{BUCKET}/{path}",
            content=data,
            headers={
                "Content-Type": content_type,
                "x-upsert": "true" if upsert else "false",
                "cache-control": "3600",
            },
        )
        if reply.status_code == 409 or _storage_status(reply) == "409":
            raise InvalidInput("SESSION_EXISTS", "this session already has a dataset in storage")
        _raise_for(reply, "upload the dataset to Supabase Storage")

    def _insert_row(self, record: DatasetRecord) -> None:
        row = {
            "session_id": record.session_id,
            "table_name": record.table,
            "filename": record.filename,
            "dataset_hash": record.dataset_hash,
            "row_count": record.row_count,
            "columns": record.columns,
            "source_format": record.source_format,
            "created_at": dt.datetime.fromtimestamp(record.created_at or 0, dt.UTC).isoformat(),
        }
        reply = self._call(
            "POST",
            f"/rest/v1/{TABLE}",
            content=json.dumps(row).encode(),
            headers={"Content-Type": "application/json", "Prefer": "return=minimal"},
        )
        if reply.status_code == 409:
            raise InvalidInput("SESSION_EXISTS", f"session {record.session_id} already has a dataset")
        _raise_for(reply, "record the session in Supabase")

    def _remove_objects(self, paths: list[str]) -> None:
        if not paths:
            return
        # Best effort: the row was never written, so nothing refers to these objects.
        with contextlib.suppress(InsightError):
            self._call(
                "DELETE",
                f"/storage/v1/object/{BUCKET}",
                content=json.dumps({"prefixes": paths}).encode(),
                headers={"Content-Type": "application/json"},
            )

    # --- reading -------------------------------------------------------------------------------------

    def get(self, session_id: str) -> DatasetRecord:
        sid = check_session_id(session_id)
        cached = self._records.get(sid)
        if cached is not None:
            return cached
        reply = self._call(
            "GET",
            f"/rest/v1/{TABLE}",
            params={"select": "*", "session_id": f"eq.{sid}"},
            headers={"Accept": "application/json"},
        )
        _raise_for(reply, "read the session from Supabase")
        rows = reply.json()
        if not rows:
            raise not_found(sid)
        record = _record_from_row(rows[0])
        self._records[sid] = record
        return record

    def parquet_path(self, session_id: str) -> Path:
        record = self.get(session_id)
        return session_parquet(self._cached_folder(record))

    def profile(self, session_id: str) -> bytes | None:
        """The profile, or None while no replica has stored it yet."""
        record = self.get(session_id)
        folder = self._cached_folder(record)
        cached = read_profile(folder)
        if cached is not None:
            return cached
        profile = self._download_optional(f"{record.session_id}/{PROFILE_NAME}")
        if profile is not None:
            write_profile(folder, profile)
        return profile

    def _cached_folder(self, record: DatasetRecord) -> Path:
        """The session's local copy, downloaded and verified on first use."""
        folder = self.sessions / record.session_id
        if (folder / "meta.json").exists():
            return folder
        with self._lock_for(record.session_id):
            if (folder / "meta.json").exists():
                return folder
            parquet = self._download(f"{record.session_id}/{PARQUET_NAME}")
            profile = self._download_optional(f"{record.session_id}/{PROFILE_NAME}")
            if hashlib.sha256(parquet).hexdigest() != record.dataset_hash:
                raise Unavailable(
                    "DATASET_CORRUPT",
                    f"The stored dataset of session '{record.session_id}' does not match its hash.",
                )
            with tempfile.NamedTemporaryFile(dir=self._spool, suffix=".parquet", delete=False) as tmp:
                tmp.write(parquet)
            try:
                write_session_folder(self.sessions, record, Path(tmp.name), profile)
            finally:
                Path(tmp.name).unlink(missing_ok=True)
        return folder

    def _download(self, path: str) -> bytes:
        content = self._download_optional(path)
        if content is None:
            raise Unavailable("DATASET_MISSING", f"Supabase Storage has no object '{path}'.")
        return content

    def _download_optional(self, path: str) -> bytes | None:
        reply = self._call("GET", f"/storage/v1/object/{BUCKET}/{path}")
        if reply.status_code == 404 or _storage_status(reply) == "404":
            return None
        _raise_for(reply, "download the dataset from Supabase Storage")
        return reply.content

    def _lock_for(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(session_id, threading.Lock())

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(
                "STORE_UNAVAILABLE", f"Supabase could not be reached: {type(exc).__name__}"
            ) from exc


def _record_from_row(row: dict[str, Any]) -> DatasetRecord:
    created = row.get("created_at") or ""
    try:
        created_at = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        created_at = 0.0
    columns = row.get("columns") or []
    if isinstance(columns, str):
        columns = json.loads(columns)
    return DatasetRecord(
        session_id=row["session_id"],
        table=row["table_name"],
        filename=row.get("filename", ""),
        dataset_hash=row["dataset_hash"],
        row_count=int(row["row_count"]),
        columns=list(columns),
        source_format=row.get("source_format", ""),
        created_at=created_at,
    )


def _storage_status(reply: httpx.Response) -> str:
    """Supabase Storage answers some errors as HTTP 400 with the real status in the JSON body."""
    if reply.status_code < 400:
        return ""
    try:
        body = reply.json()
    except ValueError:
        return ""
    return str(body.get("statusCode", "")) if isinstance(body, dict) else ""


def _raise_for(reply: httpx.Response, action: str) -> None:
    if reply.status_code < 400:
        return
    if reply.status_code in (401, 403):
        raise Unavailable("STORE_FORBIDDEN", f"Supabase refused to {action}: check SUPABASE_SERVICE_KEY.")
    raise Unavailable("STORE_ERROR", f"Supabase could not {action} (HTTP {reply.status_code}).")
