"""Service-to-service credentials: every gRPC call but a health check carries its caller's internal token.

Why a token and not mTLS: one secret per caller, checked by one server interceptor installed by
`common.server.create_server`, is enough to tell the gateway from the orchestrator, needs no certificate
authority, and survives restarts and replicas unchanged.

- A caller presents its own `INSIGHTX_INTERNAL_TOKEN` as `authorization: Bearer <token>` (the channels of
  `common.channels` add it to every call).
- A service knows the callers it may hear from by `INSIGHTX_INTERNAL_<CALLER>_TOKEN`: the caller's token,
  or `sha256:<hex>` of it, so that a service can recognise a caller without being able to act as it
  (`make run` hands each service only digests).
- Which callers a service takes is decided in code by its `server.py` (e.g. the LLM gateway takes only the
  orchestrator). No token or an unknown one: UNAUTHENTICATED; a known caller not allowed there:
  PERMISSION_DENIED. The `grpc.health.v1.Health` service stays open so that probes need no secret: it
  tells only SERVING or not.
- Only an authenticated caller can assert the user a call is made for (`common.identity`).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
from pydantic import SecretStr

from common.errors import to_status
from common.identity import user_id_from_metadata, user_id_var

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
CALLERS = ("gateway", "orchestrator")
OPEN_SERVICES = ("grpc.health.v1.Health",)
DIGEST_PREFIX = "sha256:"

caller_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


def token_digest(token: str) -> str:
    """`sha256:<hex>` of a token: what a service may be given instead of the token itself."""
    return DIGEST_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _digest_bytes(value: str) -> bytes:
    """The SHA-256 a verifier stands for: a `sha256:<hex>` value as is, a raw token hashed."""
    if value.startswith(DIGEST_PREFIX):
        hexdigest = value[len(DIGEST_PREFIX) :]
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("a token digest must be sha256: followed by 64 hexadecimal digits")
        return raw
    if len(value) < 16:
        raise ValueError("an internal token must have at least 16 characters")
    return hashlib.sha256(value.encode()).digest()


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `token` (nothing when there is none)."""
    return ((AUTHORIZATION_METADATA_KEY, f"Bearer {token}"),) if token else ()


def caller_verifiers(settings: object) -> dict[str, str]:
    """The callers a settings object can recognise: `internal_<caller>_token` values, by caller name."""
    found: dict[str, str] = {}
    for caller in CALLERS:
        value = getattr(settings, f"internal_{caller}_token", None)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value:
            found[caller] = str(value)
    return found


@dataclass(frozen=True)
class ServerAuth:
    """Who may call one server: the callers it recognises (by token digest) and those it lets in."""

    verifiers: Mapping[str, bytes]
    allowed: frozenset[str]

    @classmethod
    def build(
        cls, verifiers: Mapping[str, str], allowed: Iterable[str], service: str = "this service"
    ) -> ServerAuth:
        """Checks the configuration; a service none of whose callers it can recognise does not start."""
        allowed_set = frozenset(allowed)
        unknown = allowed_set - set(CALLERS)
        if unknown:
            raise ValueError(f"unknown callers {sorted(unknown)}; known: {list(CALLERS)}")
        digests: dict[str, bytes] = {}
        for caller, value in verifiers.items():
            try:
                digests[caller] = _digest_bytes(value)
            except ValueError as exc:
                raise SystemExit(f"INSIGHTX_INTERNAL_{caller.upper()}_TOKEN: {exc}") from None
        if not allowed_set & set(digests):
            names = " or ".join(f"INSIGHTX_INTERNAL_{c.upper()}_TOKEN" for c in sorted(allowed_set))
            raise SystemExit(
                f"{service} cannot recognise any of its callers: set {names} "
                "(the caller's INSIGHTX_INTERNAL_TOKEN, or sha256:<hex> of it; `make run` does this for you)"
            )
        return cls(verifiers=digests, allowed=allowed_set)

    @classmethod
    def from_settings(
        cls, settings: object, allowed: Iterable[str] = CALLERS, service: str = "this service"
    ) -> ServerAuth:
        """The server's auth from its settings (`INSIGHTX_INTERNAL_<CALLER>_TOKEN`)."""
        return cls.build(caller_verifiers(settings), allowed, service)

    def identify(self, token: str) -> str | None:
        """The caller whose token this is (an allowed one first, when two share it), or None.

        Compares digests in constant time, against every verifier.
        """
        presented = hashlib.sha256(token.encode()).digest()
        matches = [c for c, d in self.verifiers.items() if hmac.compare_digest(presented, d)]
        return next((c for c in matches if c in self.allowed), matches[0] if matches else None)


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA_KEY:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


def _refusal(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, reason: str, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as the real one that answers `code` without running the service."""
    status = to_status(code, reason, message)

    async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(status)

    async def refuse_stream(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        await context.abort_with_status(status)
        yield  # pragma: no cover - makes this an async generator

    if handler is None or handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse_stream)


class InternalAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets in the calls of allowed, authenticated callers (and health checks); refuses the rest."""

    def __init__(self, auth: ServerAuth, service: str) -> None:
        self.auth = auth
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        caller_var.set(None)
        user_id_var.set(None)
        if method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata
        token = _bearer(metadata)
        caller = self.auth.identify(token) if token else None
        if caller is None:
            if token is None:
                reason, message = (
                    "INTERNAL_CREDENTIALS_MISSING",
                    f"{self.service} takes calls only from InsightX services: "
                    "send `authorization: Bearer <INSIGHTX_INTERNAL_TOKEN>`",
                )
            else:
                reason, message = (
                    "INTERNAL_CREDENTIALS_INVALID",
                    f"{self.service} does not recognise this internal token: check the caller's "
                    "INSIGHTX_INTERNAL_TOKEN against this service's INSIGHTX_INTERNAL_<CALLER>_TOKEN",
                )
            log.warning("internal call refused", extra={"method": method, "reason": reason})
            return _refusal(
                await continuation(handler_call_details), grpc.StatusCode.UNAUTHENTICATED, reason, message
            )
        if caller not in self.auth.allowed:
            log.warning(
                "internal call refused",
                extra={"method": method, "caller": caller, "reason": "CALLER_NOT_ALLOWED"},
            )
            return _refusal(
                await continuation(handler_call_details),
                grpc.StatusCode.PERMISSION_DENIED,
                "CALLER_NOT_ALLOWED",
                f"the {caller} may not call {self.service} (allowed: {', '.join(sorted(self.auth.allowed))})",
            )
        try:
            user_id = user_id_from_metadata(metadata)
        except ValueError as exc:
            return _refusal(
                await continuation(handler_call_details),
                grpc.StatusCode.INVALID_ARGUMENT,
                "USER_ID_INVALID",
                str(exc),
            )
        caller_var.set(caller)
        user_id_var.set(user_id)
        return await continuation(handler_call_details)


def current_caller() -> str | None:
    """The authenticated internal caller of the call being served (`gateway`, `orchestrator`), or None."""
    return caller_var.get()
