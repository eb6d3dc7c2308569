"""The web edge, before any route: a Host allow-list (DNS rebinding), CSRF refusal, security headers on
every response, and an access log that names routes, not ids.

- Host: a request whose `Host` is not in `INSIGHTX_ALLOWED_HOSTS` answers 400 (a page on another site that
  rebinds its name to 127.0.0.1 still sends its own name).
- CSRF: a state-changing request (POST, PUT, PATCH, DELETE) that carries an `Origin` must come from this
  gateway's own origin or a configured CORS origin; one without `Origin` is accepted only with a bearer
  token (a browser always sends `Origin` on such requests, and a cross-site one cannot set
  `Authorization`). The login cookie is SameSite=Strict besides.
- Headers: a CSP with no inline script, `connect-src 'self'` and `frame-ancestors 'none'`; nosniff; no
  referrer (the sign-in URL carries a token).
- Access log: method, the route's template (`/api/datasets/{session_id}`), status and duration; never the
  path itself or its query (session ids and tokens stay out of logs).
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gateway.access")

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",  # the page asks vega-embed not to inject its styles (they are in style.css)
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def host_name(host: str) -> str:
    """The name part of a Host header (`[::1]:8000` → `[::1]`, `Example.com:80` → `example.com`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class EdgeMiddleware:
    """Host allow-list, CSRF check, security headers and the id-free access log."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], cors_origins: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts}
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _reply(send_with_headers, *refusal)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": getattr(route, "path", None) or _coarse(scope["path"]),
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            return 400, "HOST_NOT_ALLOWED", "This host name is not served here (see INSIGHTX_ALLOWED_HOSTS)."
        if scope["method"] not in UNSAFE:
            return None
        origin = headers.get("origin")
        if origin is None:
            if headers.get("authorization", "").lower().startswith("bearer "):
                return None
            if "cookie" not in headers:
                return None  # no credential at all: the route answers 401
            return 403, "CSRF_REFUSED", "A signed-in change must come from this site's own page."
        own = f"{'https' if scope.get('scheme') == 'https' else 'http'}://{host}".lower()
        if origin.rstrip("/").lower() in {own, *self.cors_origins}:
            return None
        return 403, "CSRF_REFUSED", "Requests that change data are accepted only from this site's own page."


def _coarse(path: str) -> str:
    """A path no route matched, without anything after its second segment (ids stay out)."""
    return "/".join(path.split("/")[:3])


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
