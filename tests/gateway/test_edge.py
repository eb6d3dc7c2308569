"""The web edge and the limits, on a real stack: sign-in through the printed URL (cookie), Host allow-list,
CSRF refusal, security headers, an access log without ids or tokens, quotas (429) and retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.accessdb import AccessDb
from gateway.auth import CookieSigner
from gateway.edge import host_name
from gateway.ownership import Ownership
from gateway.quotas import QuotaExceeded, Quotas
from tests.gateway.stacks import bearer, http, start_stack, token_of, upload
from tools.stack import Stack

pytestmark = pytest.mark.integration

RETENTION_S = 4.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("edge")
    env = {
        "INSIGHTX_QUOTA_UPLOADS_PER_DAY": "4",
        "INSIGHTX_QUOTA_SQL_QUERIES_PER_DAY": "2",
        "INSIGHTX_QUOTA_CHATS_PER_DAY": "1",
        "INSIGHTX_QUOTA_PYTHON_RUNS_PER_DAY": "1",
        "INSIGHTX_RETENTION_DAYS": str(RETENTION_S / 86400),
        "INSIGHTX_RETENTION_SWEEP_S": "0.5",
        "INSIGHTX_CORS_ORIGINS": '["http://allowed.example"]',
    }
    stack = start_stack(root / "data", env, services=("sql_engine", "orchestrator"), log_dir=root / "logs")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge-csv") / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    return path


def test_the_printed_url_signs_the_browser_in_with_a_strict_httponly_cookie(edge: Stack) -> None:
    token = token_of(edge)
    signed_in = httpx.get(f"{edge.base_url}/?token={token}", follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    assert "insightx_auth=" in cookie and token not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    jar = httpx.Client(base_url=edge.base_url, cookies=signed_in.cookies)
    assert jar.get("/api/me").json() == {"user_id": "local", "via": "cookie"}
    wrong = httpx.get(f"{edge.base_url}/?token=nope", follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    # A change made with the cookie must come from the page's own origin.
    own = jar.post("/api/tokens", json={"name": "x"}, headers={"Origin": edge.base_url})
    assert own.status_code == 201
    for origin in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
        refused = jar.post("/api/tokens", json={"name": "x"}, headers=origin)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "CSRF_REFUSED", origin
    logged_out = jar.post("/api/auth/logout", headers={"Origin": edge.base_url})
    assert logged_out.status_code == 204 and "insightx_auth=" in logged_out.headers["set-cookie"]
    login = httpx.post(f"{edge.base_url}/api/auth/login", json={"token": token})
    assert login.status_code == 200 and "insightx_auth=" in login.headers["set-cookie"]


def test_the_access_log_names_routes_never_ids_or_tokens(edge: Stack, csv: Path) -> None:
    token = token_of(edge)
    session = str(upload(edge.base_url, csv)["session_id"])
    http.get(f"{edge.base_url}/api/datasets/{session}")
    http.post(f"{edge.base_url}/api/sql/execute", json={"session_id": "f" * 32, "sql": "SELECT 1"})
    httpx.get(f"{edge.base_url}/?token={token}", follow_redirects=False)
    time.sleep(0.5)
    log = (edge.log_dir / "gateway.log").read_text()  # type: ignore[operator]
    assert '"route": "/api/datasets/{session_id}"' in log and '"route": "/api/sql/execute"' in log
    assert token not in log and session not in log and "f" * 32 not in log


def test_a_host_outside_the_allow_list_is_refused(edge: Stack) -> None:
    rebound = http.get(f"{edge.base_url}/api/me", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "HOST_NOT_ALLOWED"
    assert http.get(f"{edge.base_url}/", headers={"Host": "attacker.example"}).status_code == 400
    assert http.get(f"{edge.base_url}/api/me", headers={"Host": "localhost:1"}).status_code == 200
    assert [host_name(h) for h in ("[::1]:80", "Example.COM:8000", "127.0.0.1")] == [
        "[::1]",
        "example.com",
        "127.0.0.1",
    ]


def test_cross_site_changes_are_refused_even_with_a_token(edge: Stack) -> None:
    evil = http.post(
        f"{edge.base_url}/api/tokens", json={"name": "x"}, headers={"Origin": "http://evil.example"}
    )
    assert evil.status_code == 403
    allowed = http.post(
        f"{edge.base_url}/api/tokens", json={"name": "x"}, headers={"Origin": "http://allowed.example"}
    )
    assert allowed.status_code == 201  # a configured CORS origin


def test_every_response_carries_the_security_headers(edge: Stack) -> None:
    for path in ("/", "/static/app.js", "/api/me", "/api/nothing", "/health"):
        reply = http.get(f"{edge.base_url}{path}")
        csp = reply.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp and "unsafe-" not in csp, path
        assert reply.headers["x-content-type-options"] == "nosniff", path
        assert (
            reply.headers["x-frame-options"] == "DENY" and reply.headers["referrer-policy"] == "no-referrer"
        )
    page = http.get(f"{edge.base_url}/").text
    assert "<script>" not in page and " on" + "click=" not in page  # no inline script to allow


def test_quotas_answer_429_with_what_to_do(edge: Stack, csv: Path) -> None:
    base = edge.base_url
    session = str(upload(base, csv)["session_id"])
    sql = {"session_id": session, "sql": "SELECT 1 AS one"}
    assert [http.post(f"{base}/api/sql/execute", json=sql).status_code for _ in range(2)] == [200, 200]
    spent = http.post(f"{base}/api/sql/execute", json=sql)
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "QUOTA_EXCEEDED"
    assert "2 SQL queries" in spent.json()["error"]["message"] and "UTC" in spent.json()["error"]["message"]
    question = {"session_id": session, "message": "how many rows are there?"}
    assert http.post(f"{base}/api/chat/stream", json=question, timeout=60).status_code == 200
    chats = http.post(f"{base}/api/chat/stream", json=question, timeout=60)
    assert chats.status_code == 429 and "1 chat answers" in chats.json()["error"]["message"]
    assert len(http.get(f"{base}/api/sessions/{session}/chats").json()["chats"]) == 1  # none for the 429
    code = {"session_id": session, "code": "result = 1"}
    http.post(f"{base}/api/python/run", json=code, timeout=60)  # counted (no sandbox runs here: 503)
    runs = http.post(f"{base}/api/python/run", json=code, timeout=60)
    assert runs.status_code == 429 and "Python runs" in runs.json()["error"]["message"]
    statuses = []
    for _ in range(3):
        with csv.open("rb") as handle:
            reply = http.post(f"{base}/api/datasets", files={"file": ("t.csv", handle, "text/csv")})
            statuses.append(reply.status_code)
    assert statuses == [200, 200, 429]  # 4 uploads a day: one by the access-log test, one above
    assert "4 uploads" in reply.json()["error"]["message"]


async def test_storage_quota_is_checked_before_an_upload(tmp_path: Path) -> None:
    db = AccessDb(tmp_path / "access.sqlite3")
    owners = Ownership(db)
    quotas = Quotas(db, {"uploads": 0}, storage_bytes=100)
    await owners.claim("s1", "u", "a.csv", 60)
    quotas.check_storage(await owners.storage_bytes("u"))
    await owners.claim("s2", "u", "b.csv", 60)
    with pytest.raises(QuotaExceeded) as full:
        quotas.check_storage(await owners.storage_bytes("u"))
    assert "delete one" in full.value.message
    quotas.check_storage(await owners.storage_bytes("someone-else"))
    for _ in range(50):
        await quotas.spend("u", "uploads")  # 0: no limit
    db.close()


def test_datasets_past_their_retention_are_deleted_with_their_files(edge: Stack) -> None:
    sessions = [d["session_id"] for d in http.get(f"{edge.base_url}/api/datasets").json()["datasets"]]
    assert sessions, "the tests above uploaded datasets"
    folders = [edge.data_dir / "sessions" / s for s in sessions]
    deadline = time.monotonic() + RETENTION_S + 10
    while any(f.exists() for f in folders) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not any(f.exists() for f in folders)
    for session in sessions:
        assert http.get(f"{edge.base_url}/api/datasets/{session}").status_code == 404
    assert http.get(f"{edge.base_url}/api/datasets").json()["datasets"] == []


def test_a_signed_cookie_cannot_be_altered_or_outlive_its_expiry() -> None:
    signer = CookieSigner(b"k" * 32)
    value = signer.sign("user-a", time.time() + 60)
    assert signer.read(value) == "user-a"
    payload, mac = value.split(".")
    forged = CookieSigner(b"k" * 32).sign("user-b", time.time() + 60).split(".")[0]
    assert signer.read(f"{forged}.{mac}") is None
    assert CookieSigner(b"other" * 8).read(value) is None
    assert signer.read(signer.sign("user-a", time.time() - 1)) is None
    assert signer.read("garbage") is None and signer.read(f"{payload}.") is None


def test_bearer_and_cookie_are_both_accepted_for_reads(edge: Stack) -> None:
    assert http.get(f"{edge.base_url}/api/me", headers=bearer(token_of(edge))).json()["via"] == "token"


def test_errors_and_error_events_never_show_the_data_directory(tmp_path: Path) -> None:
    from gateway.errors import error_response, hide_paths, redact
    from gateway.stream import _redacted

    data = tmp_path / "secret-place" / "data"
    hide_paths([data])
    where = str(data.resolve())
    assert redact(f'IO Error: No files found that match the pattern "{where}/sessions/x"') == (
        'IO Error: No files found that match the pattern "<data>/sessions/x"'
    )
    assert where not in error_response(400, "SQL_ERROR", f"cannot open {where}/a").body.decode()
    event = _redacted({"type": "sql_result", "seq": 3, "data": {"error": f"read {where}/b failed"}})
    assert event["data"]["error"] == "read <data>/b failed"
    assert _redacted({"type": "error", "seq": 4, "message": where})["message"] == "<data>"
    hide_paths([])


def test_the_made_secret_is_private_and_survives_a_restart(tmp_path: Path) -> None:
    from gateway.auth import secret_file

    path = tmp_path / "gateway" / "auth_token"
    first = secret_file(path)
    assert len(first) >= 40 and (path.stat().st_mode & 0o777) == 0o600
    assert secret_file(path) == first  # a restarted gateway keeps the printed link valid
    assert [p.name for p in path.parent.iterdir()] == ["auth_token"]
