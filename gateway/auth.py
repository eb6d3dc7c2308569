"""Who calls: the embedded user's token, API tokens, Supabase access tokens, and the login cookie.

A credential arrives as `Authorization: Bearer <credential>` (the CLI, scripts, the API) or, for the page,
as the HttpOnly, SameSite=Strict cookie the page got by trading a credential at `GET /?token=…` or
`POST /api/auth/login`. The credential is one of:

- the embedded token (`INSIGHTX_AUTH_TOKEN`; like Jupyter's, `make run` makes one and prints a URL with it):
  the user `INSIGHTX_LOCAL_USER`;
- an API token (`ixt_…`, gateway/tokens.py): the user who made it;
- a Supabase access token (a JWT, gateway/jwt_auth.py): the user in its `sub`.

The cookie carries no credential: it is the user id and an expiry, signed with HMAC-SHA256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from common.identity import check_user_id
from gateway.jwt_auth import InvalidToken, JwtVerifier
from gateway.settings import GatewaySettings
from gateway.tokens import ApiTokens

COOKIE = "insightx_auth"


@dataclass(frozen=True)
class User:
    """The caller: a user id, how it was proven (`token`, `api_token`, `jwt` or `cookie`), and when that
    proof ends (a JWT's `exp`; None: when revoked)."""

    user_id: str
    via: str
    expires_at: float | None = None


class Unauthenticated(Exception):
    """No credential, or one that is not valid (the message says what to do)."""


def secret_file(path: Path) -> str:
    """A random secret kept in a 0600 file: made on first use, the same after a restart."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    try:
        os.link(staging, path)  # atomic, and refuses to replace: of two gateways starting, one secret wins
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        staging.unlink(missing_ok=True)
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """`<payload>.<mac>`: the user id and expiry, HMAC-signed; anything altered or expired reads as None."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def sign(self, user_id: str, expires_at: float) -> str:
        payload = _b64(json.dumps({"u": user_id, "e": int(expires_at)}).encode())
        return f"{payload}.{self._mac(payload)}"

    def read(self, value: str) -> str | None:
        payload, _, mac = value.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            user_id, expires_at = str(data["u"]), float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        return user_id if expires_at > time.time() and user_id else None


class Authenticator:
    """Turns a request's credential into a User."""

    def __init__(self, settings: GatewaySettings, tokens: ApiTokens) -> None:
        folder = Path(settings.data_dir) / "gateway"
        configured = settings.auth_token.get_secret_value() if settings.auth_token else ""
        self.jwt = JwtVerifier(
            secret=settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else "",
            jwks_url=settings.supabase_jwks_url,
            audience=settings.supabase_jwt_audience,
            issuer=settings.supabase_jwt_issuer,
        )
        # A team behind Supabase has no embedded token unless one is configured.
        self.local_token = configured or ("" if self.jwt.configured else secret_file(folder / "auth_token"))
        self.local_user = check_user_id(settings.local_user)  # ValueError at start-up, not a 500 later
        key = (
            settings.secret_key.get_secret_value()
            if settings.secret_key
            else secret_file(folder / "secret_key")
        )
        self.cookies = CookieSigner(key.encode())
        self.tokens = tokens
        self.cookie_max_age_s = settings.cookie_max_age_s

    async def from_credential(self, credential: str) -> User:
        """The user a bearer credential proves, or Unauthenticated."""
        credential = credential.strip()
        if not credential:
            raise Unauthenticated("The credential is empty.")
        if self.local_token and hmac.compare_digest(credential.encode(), self.local_token.encode()):
            return User(self.local_user, "token")
        user_id = await self.tokens.user_for(credential)
        if user_id is not None:
            return User(user_id, "api_token")
        if credential.count(".") == 2 and self.jwt.configured:
            try:
                claims = await self.jwt.claims_async(credential)
            except InvalidToken as exc:
                raise Unauthenticated(str(exc)) from exc
            return User(str(claims["sub"]), "jwt", float(claims["exp"]))  # type: ignore[arg-type]
        raise Unauthenticated("The token is not valid (revoked, mistyped, or from another server).")

    async def authenticate(self, request: Request) -> User:
        """The caller of `request`: its bearer credential first, else its login cookie."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer":
                raise Unauthenticated("Send the token as `Authorization: Bearer <token>`.")
            return await self.from_credential(credential)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            user_id = self.cookies.read(cookie)
            if user_id is not None:
                return User(user_id, "cookie")
            raise Unauthenticated("Your sign-in has expired; open the sign-in link again.")
        raise Unauthenticated(
            "Sign in first: open the link `make run` printed (it carries ?token=…), or send"
            " `Authorization: Bearer <token>` (INSIGHTX_TOKEN for the CLI)."
        )

    def cookie_value(self, user: User) -> str:
        """The login cookie for `user`: it ends with its lifetime, or with the JWT it was traded for."""
        expires_at = time.time() + self.cookie_max_age_s
        if user.expires_at is not None:
            expires_at = min(expires_at, user.expires_at)
        return self.cookies.sign(user.user_id, expires_at)
