"""Two users, A and B, over HTTP on the real stack, signed in with Supabase-style JWTs (HS256, the test's
secret). B cannot read, list, query, chat on, resume, delete or learn of anything of A's, through any route:
the walk below covers every route the app's OpenAPI schema lists, so a new route without a check fails it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.gateway.stacks import bearer, http, start_stack, upload
from tools.stack import Stack

pytestmark = pytest.mark.integration

SECRET = "two-users-test-secret-of-at-least-32-bytes"
LOCAL_TOKEN = secrets.token_urlsafe(24)


def supabase_jwt(sub: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 3600}
    return jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def project_key() -> rsa.RSAPrivateKey:
    """The fake Supabase project's asymmetric signing key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(project_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """The project's JWKS, served on loopback as Supabase Auth serves it."""
    public = json.loads(RSAAlgorithm.to_jwk(project_key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "project-key", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, jwks_url: str) -> Iterator[Stack]:
    """A stack whose gateway accepts the project's JWTs, HS256 (secret) and RS256 (its JWKS), and the
    embedded token (configured)."""
    root = tmp_path_factory.mktemp("two-users")
    env = {"SUPABASE_JWT_SECRET": SECRET, "SUPABASE_JWKS_URL": jwks_url, "INSIGHTX_AUTH_TOKEN": LOCAL_TOKEN}
    stack = start_stack(root / "data", env, services=("sql_engine", "orchestrator"), log_dir=root / "logs")
    yield stack
    stack.stop()


@dataclass
class Owned:
    """What A has: a dataset with a chat (two turns), an insight and an API token."""

    session_id: str
    chat_id: str
    insight_id: str
    token_id: str
    token: str
    filename: str

    def ids(self) -> list[str]:
        return [self.session_id, self.chat_id, self.insight_id, self.token_id, self.token, self.filename]


def as_user(token: str) -> dict[str, str]:
    return bearer(token)


A = as_user(supabase_jwt("user-a"))
B = as_user(supabase_jwt("user-b"))


@pytest.fixture(scope="module")
def owned(team: Stack, tmp_path_factory: pytest.TempPathFactory) -> Owned:
    base = team.base_url
    path = tmp_path_factory.mktemp("a") / "a_secret_payroll.csv"
    path.write_text("name,salary\n" + "".join(f"p{i},{1000 + i}\n" for i in range(30)))
    session_id = str(upload(base, path, token=A["Authorization"].removeprefix("Bearer "))["session_id"])
    reply = http.post(
        f"{base}/api/chat/stream", json={"session_id": session_id, "message": "how many rows?"}, headers=A
    )
    assert reply.status_code == 200, reply.text
    chat_id = reply.headers["x-chat-id"]
    insight = http.post(f"{base}/api/sessions/{session_id}/insights", json={"text": "30 people"}, headers=A)
    token = http.post(f"{base}/api/tokens", json={"name": "a's script"}, headers=A).json()
    return Owned(
        session_id, chat_id, insight.json()["insight_id"], token["token_id"], token["token"], path.name
    )


# --- the walk over every route ---------------------------------------------------------------------------


def _schema_of(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return node


def _value(name: str, prop: dict[str, Any], ids: dict[str, str]) -> Any:
    if name in ids:
        return ids[name]
    kinds = {p.get("type") for p in prop.get("anyOf", [prop])}
    if "string" in kinds:
        choice = re.match(r"\^\(?(\w+)", prop.get("pattern", ""))
        return choice.group(1) if choice else "x"
    if "integer" in kinds or "number" in kinds:
        return 0
    if "boolean" in kinds:
        return False
    if "array" in kinds:
        return []
    return None


def build_request(
    schema: dict[str, Any], path: str, method: str, op: dict[str, Any], ids: dict[str, str]
) -> dict[str, Any]:
    """A request naming `ids` wherever the route takes such an id (path, query or body)."""
    url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), path)
    params = {
        p["name"]: _value(p["name"], p.get("schema", {}), ids)
        for p in op.get("parameters", [])
        if p["in"] == "query" and (p.get("required") or p["name"] in ids)
    }
    request: dict[str, Any] = {"method": method.upper(), "url": url, "params": params}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = _schema_of(schema, content["application/json"]["schema"])
        props = body.get("properties", {})
        wanted = set(body.get("required", [])) | (set(props) & set(ids))
        request["json"] = {name: _value(name, _schema_of(schema, props[name]), ids) for name in wanted}
    elif "multipart/form-data" in content:
        request["files"] = {"file": ("b.csv", b"a\n1\n", "text/csv")}
    return request


def names_ids(request: dict[str, Any], ids: dict[str, str]) -> bool:
    text = repr({k: v for k, v in request.items() if k != "method"})
    return any(value in text for value in ids.values())


def call(team: Stack, request: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    request = dict(request)
    url = team.base_url + request.pop("url")
    return http.request(request.pop("method"), url, headers=headers, timeout=30, **request)


def test_b_reaches_nothing_of_as_through_any_route(team: Stack, owned: Owned) -> None:
    schema = http.get(f"{team.base_url}/api/openapi.json", headers=A).json()
    a_ids = {
        "session_id": owned.session_id,
        "chat_id": owned.chat_id,
        "token_id": owned.token_id,
        "insight_id": owned.insight_id,
    }
    walked = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            request = build_request(schema, path, method, op, a_ids)
            reply = call(team, request, B)
            walked.append(f"{method.upper()} {path}")
            sent = repr(request)
            for secret in owned.ids():  # B's answer tells nothing of A's that B did not send itself
                assert secret in sent or secret not in reply.text, (method, path, reply.text)
            if not names_ids(request, a_ids):
                assert reply.status_code < 500 or path == "/health", (method, path, reply.text)
                continue
            assert reply.status_code == 404, (method, path, reply.status_code, reply.text)
            # ...and exactly what an id that exists nowhere answers: nothing tells B that A's exist.
            fresh = {name: uuid.uuid4().hex for name in a_ids}
            unknown = call(team, build_request(schema, path, method, op, fresh), B)
            assert unknown.status_code == 404
            same = reply.text
            for name, value in a_ids.items():
                same = same.replace(value, fresh[name])
            assert same == unknown.text, (method, path)
    assert len(walked) >= 20, walked
    # A still has everything.
    base = team.base_url
    assert http.get(f"{base}/api/datasets/{owned.session_id}", headers=A).status_code == 200
    messages = http.get(f"{base}/api/chats/{owned.chat_id}/messages", headers=A).json()["messages"]
    assert [m["role"] for m in messages[:2]] == ["user", "assistant"]
    insights = http.get(f"{base}/api/sessions/{owned.session_id}/insights", headers=A).json()["insights"]
    assert [i["insight_id"] for i in insights] == [owned.insight_id]
    assert [t["token_id"] for t in http.get(f"{base}/api/tokens", headers=A).json()["tokens"]] == [
        owned.token_id
    ]


def test_every_api_route_needs_a_credential(team: Stack, owned: Owned) -> None:
    schema = http.get(f"{team.base_url}/api/openapi.json", headers=A).json()
    public = {"/api/auth/login", "/api/auth/logout", "/health"}
    ids = {"session_id": owned.session_id, "chat_id": owned.chat_id, "token_id": owned.token_id}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            if path in public:
                continue
            reply = call(team, build_request(schema, path, method, op, ids), {"Authorization": ""})
            assert reply.status_code == 401, (method, path, reply.text)
            assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
    refused = {
        "expired": supabase_jwt("user-a", exp=int(time.time()) - 30),
        "wrong audience": supabase_jwt("user-a", aud="anon"),
        "tampered": supabase_jwt("user-a")[:-3] + "AAA",
        "unknown": "not-a-token",
    }
    for why, token in refused.items():
        reply = http.get(f"{team.base_url}/api/datasets", headers=bearer(token))
        assert reply.status_code == 401, why
        assert SECRET not in reply.text


def test_tokens_signed_with_the_projects_jwks_key_are_users_too(
    team: Stack, owned: Owned, project_key: rsa.RSAPrivateKey
) -> None:
    def signed(**extra: Any) -> dict[str, str]:
        now = int(time.time())
        claims = {"sub": "user-c", "aud": "authenticated", "iat": now, "exp": now + 600, **extra}
        return bearer(jwt.encode(claims, project_key, algorithm="RS256", headers={"kid": "project-key"}))

    me = http.get(f"{team.base_url}/api/me", headers=signed())
    assert me.status_code == 200 and me.json() == {"user_id": "user-c", "via": "jwt"}
    assert http.get(f"{team.base_url}/api/datasets/{owned.session_id}", headers=signed()).status_code == 404
    good = signed()["Authorization"]
    head, _, signature = good.removeprefix("Bearer ").split(".")
    other = jwt.encode({"sub": "user-a", "aud": "authenticated", "exp": int(time.time()) + 600}, "x" * 32)
    refused = {
        "expired": signed(exp=int(time.time()) - 30),
        "wrong audience": signed(aud="anon"),
        "tampered": bearer(f"{head}.{other.split('.')[1]}.{signature}"),
    }
    for why, headers in refused.items():
        reply = http.get(f"{team.base_url}/api/me", headers=headers)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "UNAUTHENTICATED", why


def test_b_lists_only_its_own(team: Stack, owned: Owned, tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("x\n1\n2\n")
    mine = str(upload(team.base_url, path, token=B["Authorization"].removeprefix("Bearer "))["session_id"])
    listed = http.get(f"{team.base_url}/api/datasets", headers=B).json()["datasets"]
    assert mine in [d["session_id"] for d in listed] and owned.session_id not in str(listed)
    assert owned.session_id in http.get(f"{team.base_url}/api/datasets", headers=A).text
    me = http.get(f"{team.base_url}/api/me", headers=B).json()
    assert me == {"user_id": "user-b", "via": "jwt"}


def test_api_tokens_act_as_their_maker_until_revoked(team: Stack, owned: Owned) -> None:
    base = team.base_url
    made = http.post(f"{base}/api/tokens", json={"name": "nightly"}, headers=A).json()
    script = bearer(made["token"])
    assert http.get(f"{base}/api/me", headers=script).json() == {"user_id": "user-a", "via": "api_token"}
    assert http.get(f"{base}/api/datasets/{owned.session_id}", headers=script).status_code == 200
    listed = http.get(f"{base}/api/tokens", headers=A).json()["tokens"]
    assert made["token_id"] in [t["token_id"] for t in listed]
    assert made["token"] not in http.get(f"{base}/api/tokens", headers=A).text  # shown once only
    assert http.delete(f"{base}/api/tokens/{made['token_id']}", headers=B).status_code == 404
    assert http.delete(f"{base}/api/tokens/{made['token_id']}", headers=A).status_code == 204
    assert http.get(f"{base}/api/me", headers=script).status_code == 401


def test_a_deleted_dataset_takes_its_files_and_chats_with_it(team: Stack, tmp_path: Path) -> None:
    base = team.base_url
    path = tmp_path / "gone.csv"
    path.write_text("k,v\n" + "".join(f"{i},{i}\n" for i in range(10)))
    session_id = str(upload(base, path, token=A["Authorization"].removeprefix("Bearer "))["session_id"])
    folder = team.data_dir / "sessions" / session_id
    assert (folder / "data" / "raw.parquet").exists()
    chat = http.post(f"{base}/api/chats", json={"session_id": session_id}, headers=A).json()["chat_id"]
    http.post(f"{base}/api/chats/{chat}/messages", json={"role": "user", "content": "hi"}, headers=A)
    http.post(f"{base}/api/sessions/{session_id}/insights", json={"text": "note"}, headers=A)

    assert http.delete(f"{base}/api/datasets/{session_id}", headers=B).status_code == 404
    assert folder.exists()
    assert http.delete(f"{base}/api/datasets/{session_id}", headers=A).status_code == 204

    assert not folder.exists()
    assert http.get(f"{base}/api/datasets/{session_id}", headers=A).status_code == 404
    assert http.get(f"{base}/api/chats/{chat}/messages", headers=A).status_code == 404
    assert session_id not in http.get(f"{base}/api/datasets", headers=A).text
    sql = {"session_id": session_id, "sql": "SELECT 1"}
    assert http.post(f"{base}/api/sql/execute", json=sql, headers=A).status_code == 404


def test_a_chat_can_be_deleted_by_its_owner_only(team: Stack, owned: Owned) -> None:
    base = team.base_url
    chat = http.post(f"{base}/api/chats", json={"session_id": owned.session_id}, headers=A).json()["chat_id"]
    assert http.delete(f"{base}/api/chats/{chat}", headers=B).status_code == 404
    assert http.delete(f"{base}/api/chats/{chat}", headers=A).status_code == 204
    assert http.get(f"{base}/api/chats/{chat}/messages", headers=A).status_code == 404
    assert chat not in http.get(f"{base}/api/sessions/{owned.session_id}/chats", headers=A).text
