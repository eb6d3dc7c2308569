"""Which store the gateway keeps its state in: SQLite under the data directory unless INSIGHTX_DATABASE_URL
names a PostgreSQL, and a gateway that cannot reach its database stops at start naming the server,
never the password."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from common.store.chats import StoredMessage
from gateway.settings import GatewaySettings
from gateway.stores import open_stores
from tools.postgres_server import INSTALL_HINT, PostgresServer, bin_dir
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


def test_a_database_outage_answers_503_and_the_gateway_recovers_when_it_is_back(tmp_path: Path) -> None:
    binaries = bin_dir()
    assert binaries is not None, INSTALL_HINT
    server = PostgresServer(binaries).start()  # a server of its own: this test stops it
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "INSIGHTX_DATA_DIR": str(tmp_path),
        "INSIGHTX_GATEWAY_PORT": str(port),
        "INSIGHTX_GATEWAY_HOST": "127.0.0.1",
        "INSIGHTX_AUTH_TOKEN": token,
        "INSIGHTX_DATABASE_URL": server.new_database(),
        "INSIGHTX_DATABASE_CONNECT_TIMEOUT_S": "2",
    }
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=out, stderr=out)
    url, headers = f"http://127.0.0.1:{port}/api/datasets", {"Authorization": f"Bearer {token}"}

    def datasets(timeout_s: float = 30.0) -> httpx.Response:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"the gateway exited with {proc.returncode}"
            try:
                reply = httpx.get(url, headers=headers, timeout=10)
                if reply.status_code in (200, 503) or time.monotonic() > deadline:
                    return reply
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the gateway did not answer"
            time.sleep(0.3)

    try:
        assert datasets().json() == {"datasets": []}
        server.pause()
        down = datasets()
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert down.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert server.password not in down.text and "127.0.0.1" not in down.text
        server.resume()
        deadline = time.monotonic() + 30
        while (reply := datasets()).status_code != 200:
            assert time.monotonic() < deadline, reply.text
            time.sleep(0.5)
        assert reply.json() == {"datasets": []}
    finally:
        proc.terminate()
        proc.wait(15)
        server.stop()
    logged = log.read_text()
    assert '"msg": "database unavailable"' in logged and server.password not in logged
