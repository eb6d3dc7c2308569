"""Deleting a session's dataset: its files in the store, and what this engine keeps about it.

A session folder's `data/` is read-only (0555, the Parquet 0444) so that queries cannot change it; removal
makes the folders writable first. The engine's caches that name the session (its located path, the open
database whose view reads that path) are dropped so that nothing serves, or fails on, the deleted file.
On Supabase the row and the bucket's objects go too; the local copy is this engine's read cache.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from common.store import DatasetStore
from common.store.datasets import PARQUET_NAME, PROFILE_NAME, check_session_id

if TYPE_CHECKING:
    from services.sql_engine.engine import SqlEngine

log = logging.getLogger(__name__)


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files under `folder`."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except FileNotFoundError:
                continue
    return total


def remove_folder(folder: Path) -> int:
    """Removes a session folder whose data is read-only; answers the bytes freed (0 when absent)."""
    if not folder.exists():
        return 0
    freed = folder_bytes(folder)
    for root, dirs, _ in os.walk(folder):
        os.chmod(root, 0o755)
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
    shutil.rmtree(folder)
    return freed


def delete_from_store(store: DatasetStore, session_id: str) -> int:
    """Deletes the session from the store (NotFound when it has no dataset); answers the local bytes freed."""
    store.get(check_session_id(session_id))  # DATASET_NOT_FOUND for an unknown session
    remote = getattr(store, "delete_remote", None)
    if callable(remote):
        remote(session_id)
    elif type(store).__name__ == "SupabaseDatasetStore":
        _delete_on_supabase(store, session_id)
    return remove_folder(Path(store.sessions) / session_id)


def _delete_on_supabase(store: DatasetStore, session_id: str) -> None:
    """The session's row and its objects in the `datasets` bucket."""
    from common.store import supabase

    call = store._call  # type: ignore[attr-defined]
    objects = [f"{session_id}/{PARQUET_NAME}", f"{session_id}/{PROFILE_NAME}"]
    call(
        "DELETE",
        f"/storage/v1/object/{supabase.BUCKET}",
        content=json.dumps({"prefixes": objects}).encode(),
        headers={"Content-Type": "application/json"},
    )
    call("DELETE", f"/rest/v1/{supabase.TABLE}", params={"session_id": f"eq.{session_id}"})
    store._records.pop(session_id, None)  # type: ignore[attr-defined]


def delete_dataset(engine: SqlEngine, session_id: str) -> int:
    """Deletes the session's dataset and forgets it in `engine`'s caches; answers the bytes freed. Blocking.

    `engine.forget` drops the engine's cached path; query workers key their open databases by session,
    so a deleted session's view is never used again.
    """
    engine.store.get(check_session_id(session_id))
    freed = delete_from_store(engine.store, session_id)
    engine.forget(session_id)
    log.info("dataset deleted", extra={"session_id": session_id, "freed_bytes": freed})
    return freed
