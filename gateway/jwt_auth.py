"""Supabase Auth access tokens (JWTs), verified with PyJWT: the project's HS256 secret, or its JWKS.

The user is the token's `sub`. A token must carry `exp` and `sub`, be unexpired, be meant for the
configured audience (Supabase: `authenticated`) and, when an issuer is configured, come from it.
Anything else is refused with a reason a person can act on; the token itself is never logged.
"""

from __future__ import annotations

import asyncio

import jwt

from common.identity import check_user_id

ASYMMETRIC = ["RS256", "ES256", "EdDSA"]


class InvalidToken(Exception):
    """A bearer token that is not a valid access token here (the message says why)."""


class JwtVerifier:
    """Verifies access tokens against a shared secret, a JWKS URL, or both (by the token's algorithm)."""

    def __init__(
        self,
        secret: str = "",
        jwks_url: str = "",
        audience: str = "authenticated",
        issuer: str = "",
        leeway_s: float = 0.0,
    ) -> None:
        self.secret = secret
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=10) if jwks_url else None
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.jwks)

    def verify(self, token: str) -> str:
        """The token's user id (`sub`), or InvalidToken. Blocking when the JWKS must be fetched."""
        return str(self.claims(token)["sub"])

    def claims(self, token: str) -> dict[str, object]:
        """The verified claims (`sub` a user id of the form common/identity accepts), or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The bearer token is not a JWT.") from exc
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.secret:
            key: object = self.secret
            algorithms = ["HS256"]
        elif algorithm in ASYMMETRIC and self.jwks is not None:
            try:
                key = self.jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as exc:
                raise InvalidToken("The token's signing key is not in the project's JWKS.") from exc
            algorithms = ASYMMETRIC
        else:
            raise InvalidToken(f"Tokens signed with {algorithm!r} are not accepted here.")
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=algorithms,
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The token has expired; sign in again.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The token is meant for another audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("The token comes from another issuer.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token's signature or claims are not valid.") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("The token names no user (`sub`).")
        try:
            check_user_id(subject)
        except ValueError as exc:
            raise InvalidToken("The token's user id (`sub`) has a form this server does not accept.") from exc
        return claims

    async def verify_async(self, token: str) -> str:
        """verify() off the event loop (a JWKS fetch is a blocking HTTP call)."""
        return str((await self.claims_async(token))["sub"])

    async def claims_async(self, token: str) -> dict[str, object]:
        """claims() off the event loop when the JWKS may be fetched."""
        if self.jwks is None:
            return self.claims(token)
        return await asyncio.to_thread(self.claims, token)
