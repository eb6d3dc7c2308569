"""Two gateways over one PostgreSQL (INSIGHTX_DATABASE_URL), each with a data directory of its own: what
one records (owners, API tokens, usage, chats and their turns) the other sees at once, and a user's daily
quota is counted once across both.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from tests.gateway.stacks import bearer, start_stack
from tools.postgres_server import PostgresServer
from tools.stack import ROOT, Stack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET = "shared-store-test-secret-of-at-least-32-bytes"
UPLOADS_PER_DAY = 3


def user(sub: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 3600}
    return bearer(jwt.encode(claims, SECRET, algorithm="HS256"))


@dataclass
class Gateways:
    first: str
    second: str
    roots: tuple[Path, Path]
    database_url: str


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Gateways]:
    root = tmp_path_factory.mktemp("shared-store")
    database_url = postgres_server.new_database()
    env = {
        "SUPABASE_JWT_SECRET": SECRET,
        "INSIGHTX_AUTH_TOKEN": secrets.token_urlsafe(24),
        "INSIGHTX_DATABASE_URL": database_url,
        "INSIGHTX_QUOTA_UPLOADS_PER_DAY": str(UPLOADS_PER_DAY),
    }
    stack: Stack = start_stack(
        root / "data", env, services=("sql_engine", "orchestrator"), log_dir=root / "logs"
    )
    port = free_port()
    second_root = root / "second-gateway"
    second_env = {
        **stack.env("gateway"),
        "INSIGHTX_DATA_DIR": str(second_root),
        "INSIGHTX_GATEWAY_PORT": str(port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=second_env)
    second = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the second gateway exited with {proc.returncode}"
            try:
                services = httpx.get(f"{second}/health", timeout=2).json()["services"]
                if services.get("orchestrator") == services.get("sql_engine") == "SERVING":
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "the second gateway did not get ready"
            time.sleep(0.3)
        yield Gateways(stack.base_url, second, (root / "data", second_root), database_url)
    finally:
        proc.terminate()
        proc.wait(15)
        stack.stop()
    for data in (root / "data", second_root):  # nothing of the gateways' state went to SQLite
        assert not (data / "chats.sqlite3").exists() and not (data / "gateway" / "access.sqlite3").exists()


def _upload(base: str, headers: dict[str, str], name: str) -> httpx.Response:
    body = "bank,amount\n" + "".join(f"{('SBI', 'HDFC')[i % 2]},{10 + i}\n" for i in range(40))
    return httpx.post(
        f"{base}/api/datasets",
        files={"file": (name, body.encode(), "text/csv")},
        headers=headers,
        timeout=120,
    )


def test_what_one_gateway_records_the_other_serves(gateways: Gateways) -> None:
    a, b = user("user-a"), user("user-b")
    one, two = gateways.first, gateways.second
    uploaded = _upload(one, a, "a.csv")
    assert uploaded.status_code == 200, uploaded.text
    session_id = uploaded.json()["session_id"]
    assert [d["session_id"] for d in httpx.get(f"{two}/api/datasets", headers=a).json()["datasets"]] == [
        session_id
    ]
    assert httpx.get(f"{two}/api/datasets/{session_id}", headers=b).status_code == 404  # still A's only

    answered = httpx.post(
        f"{one}/api/chat/stream",
        json={"session_id": session_id, "message": "how many rows?"},
        headers=a,
        timeout=120,
    )
    assert answered.status_code == 200 and "final_response" in answered.text
    chat_id = answered.headers["x-chat-id"]
    turns = httpx.get(f"{two}/api/chats/{chat_id}/messages", headers=a).json()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant"] and turns[0]["content"] == "how many rows?"
    assert "40" in turns[1]["content"]
    follow_up = httpx.post(  # the next turn on the other gateway reads the first turn from the shared store
        f"{two}/api/chat/stream",
        json={"session_id": session_id, "chat_id": chat_id, "message": "and the total amount?"},
        headers=a,
        timeout=120,
    )
    assert follow_up.status_code == 200 and "final_response" in follow_up.text
    assert len(httpx.get(f"{one}/api/chats/{chat_id}/messages", headers=a).json()["messages"]) == 4
    assert httpx.get(f"{one}/api/chats/{chat_id}/messages", headers=b).status_code == 404

    made = httpx.post(f"{two}/api/tokens", json={"name": "script"}, headers=a).json()
    assert httpx.get(f"{one}/api/me", headers=bearer(made["token"])).json()["user_id"] == "user-a"
    assert httpx.delete(f"{one}/api/tokens/{made['token_id']}", headers=a).status_code == 204
    assert httpx.get(f"{two}/api/me", headers=bearer(made["token"])).status_code == 401

    assert httpx.delete(f"{two}/api/chats/{chat_id}", headers=a).status_code == 204
    assert httpx.get(f"{one}/api/chats/{chat_id}/messages", headers=a).status_code == 404


def test_a_daily_quota_is_counted_once_across_gateways(gateways: Gateways) -> None:
    q = user("user-q")
    statuses = [
        _upload(base, q, f"q{i}.csv").status_code
        for i, base in enumerate([gateways.first, gateways.second] * 2)
    ]
    assert statuses == [200] * UPLOADS_PER_DAY + [429]
    assert _upload(gateways.first, q, "again.csv").status_code == 429


def test_the_engine_keeps_datasets_records_and_profiles_in_the_database(gateways: Gateways) -> None:
    a = user("user-d")
    session_id = _upload(gateways.first, a, "d.csv").json()["session_id"]
    with psycopg.connect(gateways.database_url) as conn:
        row = conn.execute(
            "SELECT record_json, profile FROM dataset_records WHERE session_id=%s", (session_id,)
        ).fetchone()
    assert row is not None and '"filename": "d.csv"' in row[0] and row[1]  # the 40-row table's profile
    described = httpx.get(f"{gateways.second}/api/datasets/{session_id}", headers=a).json()
    assert described["row_count"] == 40
    assert httpx.delete(f"{gateways.second}/api/datasets/{session_id}", headers=a).status_code == 204
    with psycopg.connect(gateways.database_url) as conn:
        assert (
            conn.execute("SELECT 1 FROM dataset_records WHERE session_id=%s", (session_id,)).fetchone()
            is None
        )
