"""Which store the gateway keeps its state in: SQLite under the data directory unless INSIGHTX_DATABASE_URL
names a PostgreSQL, and a gateway that cannot reach its database stops at start naming the server,
never the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from common.store.chats import StoredMessage
from gateway.settings import GatewaySettings
from gateway.stores import open_stores
from tools.postgres_server import PostgresServer
from tools.stack import ROOT, free_port


async def test_without_a_database_url_the_state_is_embedded(tmp_path: Path) -> None:
    stores = await open_stores(GatewaySettings(data_dir=tmp_path))
    try:
        assert stores.kind == "sqlite"
        await stores.chats.start_turn("c1", "s1", "q")
        await stores.access.claim_dataset("s1", "alice", "a.csv", 1, 1.0)
    finally:
        await stores.close()
    assert (tmp_path / "chats.sqlite3").exists() and (tmp_path / "gateway" / "access.sqlite3").exists()


async def test_with_a_database_url_the_state_is_in_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = GatewaySettings(data_dir=tmp_path, database_url=SecretStr(postgres_url))
    stores = await open_stores(settings)
    try:
        assert stores.kind == "postgresql"
        await stores.chats.start_turn("c1", "s1", "q")
        await stores.chats.add_message(StoredMessage("c1", "assistant", "a"))
        await stores.access.claim_dataset("s1", "alice", "a.csv", 1, 1.0)
    finally:
        await stores.close()
    again = await open_stores(settings)  # another gateway (or a restart): the same state
    try:
        assert [m.content for m in await again.chats.messages("c1")] == ["q", "a"]
        assert await again.access.owns_dataset("alice", "s1")
    finally:
        await again.close()
    assert list(tmp_path.iterdir()) == []


def test_a_gateway_that_cannot_reach_its_database_stops_naming_it_without_the_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    password = "not-the-password-" + "7" * 12
    wrong = f"postgresql://postgres:{password}@127.0.0.1:{postgres_server.port}/postgres"
    env = {
        **os.environ,
        "INSIGHTX_DATA_DIR": str(tmp_path),
        "INSIGHTX_GATEWAY_PORT": str(free_port()),
        "INSIGHTX_GATEWAY_HOST": "127.0.0.1",
        "INSIGHTX_DATABASE_URL": wrong,
        "INSIGHTX_DATABASE_CONNECT_TIMEOUT_S": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"no connection to the database postgres@127.0.0.1:{postgres_server.port}/postgres" in output
    assert password not in output
