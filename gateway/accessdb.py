"""The gateway's access database: who owns which dataset, API tokens, and usage counted for quotas.

The state sits behind `common.store.AccessStore`: embedded in `<data_dir>/gateway/access.sqlite3` (one
gateway per data directory), or on PostgreSQL when INSIGHTX_DATABASE_URL is set (any number of gateways;
gateway/stores.py picks). gateway/ownership.py, tokens.py and quotas.py speak only the interface.
"""

from __future__ import annotations

from pathlib import Path

from common.store.access import AccessStore
from common.store.sqlite_access import SqliteAccessStore

__all__ = ["AccessDb", "AccessStore", "open_access_db"]

AccessDb = SqliteAccessStore  # the embedded store under its earlier name: AccessDb(path)


def open_access_db(data_dir: Path) -> SqliteAccessStore:
    """The embedded access store of a data directory."""
    return SqliteAccessStore(Path(data_dir) / "gateway" / "access.sqlite3")
