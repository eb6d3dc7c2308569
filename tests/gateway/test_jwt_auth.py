"""Supabase-style access tokens: signed here with a test secret (HS256), and with an RSA key whose JWKS a
fake Supabase Auth serves on loopback. Valid ones name their `sub`; expired, wrong-audience, wrong-issuer,
tampered or unsigned ones are refused."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.accessdb import AccessDb
from gateway.auth import Authenticator, Unauthenticated
from gateway.jwt_auth import InvalidToken, JwtVerifier
from gateway.settings import GatewaySettings
from gateway.tokens import ApiTokens

SECRET = "test-project-jwt-secret-with-at-least-32-bytes"
ISSUER = "http://127.0.0.1/auth/v1"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "6f1c1f7e-0000-4000-8000-00000000000a",
        "aud": "authenticated",
        "role": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def tampered(token: str) -> str:
    """The same signature over a payload whose `sub` was changed."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_hs256_tokens_signed_with_the_project_secret() -> None:
    verifier = JwtVerifier(secret=SECRET, issuer=ISSUER)
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier.verify(good) == "6f1c1f7e-0000-4000-8000-00000000000a"
    refused = {
        "expired": jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode(claims(aud="anon"), SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims(iss="https://other.example/auth/v1"), SECRET, algorithm="HS256"),
        "tampered": tampered(good),
        "other secret": jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
        "no sub": jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
        "odd sub": jwt.encode(claims(sub="a user\nwith lines"), SECRET, algorithm="HS256"),
        "unsigned": jwt.encode(claims(), None, algorithm="none"),
        "not a jwt": "abc.def.ghi",
    }
    for why, token in refused.items():
        with pytest.raises(InvalidToken) as refusal:
            verifier.verify(token)
        assert SECRET not in str(refusal.value), why
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(refused["expired"])
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(refused["wrong audience"])


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def fake_supabase(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A loopback server answering the project's JWKS, as Supabase Auth does; yields its URL."""
    public = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "key-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/auth/v1/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


async def test_rs256_tokens_checked_against_the_projects_jwks(
    rsa_key: rsa.RSAPrivateKey, fake_supabase: str
) -> None:
    verifier = JwtVerifier(jwks_url=fake_supabase)
    good = jwt.encode(claims(sub="user-b"), rsa_key, algorithm="RS256", headers={"kid": "key-1"})
    assert await verifier.verify_async(good) == "user-b"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "expired": jwt.encode(
            claims(exp=int(time.time()) - 5), rsa_key, algorithm="RS256", headers={"kid": "key-1"}
        ),
        "wrong audience": jwt.encode(
            claims(aud="service_role"), rsa_key, algorithm="RS256", headers={"kid": "key-1"}
        ),
        "tampered": tampered(good),
        "signed by another key": jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": "key-1"}),
        "unknown key id": jwt.encode(claims(), other_key, algorithm="RS256", headers={"kid": "key-9"}),
        "HS256 without a secret": jwt.encode(claims(), SECRET, algorithm="HS256"),
    }
    for token in refused.values():
        with pytest.raises(InvalidToken):
            await verifier.verify_async(token)


async def test_a_cookie_traded_for_a_jwt_ends_when_the_jwt_does(tmp_path: Path) -> None:
    settings = GatewaySettings(data_dir=tmp_path, supabase_jwt_secret=SECRET)
    db = AccessDb(tmp_path / "access.sqlite3")
    auth = Authenticator(settings, ApiTokens(db))
    assert auth.local_token == ""  # behind Supabase, no embedded token unless configured
    expires = int(time.time()) + 120
    user = await auth.from_credential(
        jwt.encode(claims(sub="user-a", exp=expires), SECRET, algorithm="HS256")
    )
    assert (user.user_id, user.via, user.expires_at) == ("user-a", "jwt", expires)
    cookie = auth.cookie_value(user)
    assert auth.cookies.read(cookie) == "user-a"
    payload = json.loads(base64.urlsafe_b64decode(cookie.split(".")[0] + "=="))
    assert payload["e"] == expires  # not the cookie's week
    with pytest.raises(Unauthenticated):
        await auth.from_credential(jwt.encode(claims(aud="anon"), SECRET, algorithm="HS256"))
    db.close()
