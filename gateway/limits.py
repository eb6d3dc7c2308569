"""Request body limits and content types, enforced before any handler reads the body.

A declared Content-Length over the limit is refused at once; a chunked body is counted while it streams and
refused the moment it passes the limit (the application then sees a disconnect, and whatever it answers is
dropped). Either way the client gets 413 with a JSON error; POSTs to the API with the wrong media type get
415.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATH = "/api/datasets"


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class BodyLimitMiddleware:
    """413 for bodies over their limit (uploads have their own), 415 for the wrong content type."""

    def __init__(self, app: ASGIApp, max_json_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        upload = path == UPLOAD_PATH
        limit = self.max_upload_bytes + (1 << 16) if upload else self.max_json_bytes
        declared = headers.get("content-length")
        empty = declared == "0" or (declared is None and "transfer-encoding" not in headers)
        if path.startswith("/api/") and not empty:  # a POST with no body (sign-out) needs no media type
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            wanted = "multipart/form-data" if upload else "application/json"
            if media != wanted:
                shown = media or "none"
                await _reply(send, 415, "UNSUPPORTED_MEDIA_TYPE", f"Send {wanted} to {path} (got {shown}).")
                return
        if declared and declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, *_too_large(upload, limit))
            return
        received = 0
        started = replied = False

        async def counting_receive() -> Message:
            nonlocal received, replied
            if replied:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        replied = True
                        await _reply(send, 413, *_too_large(upload, limit))
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if replied:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not replied:
                raise


def _too_large(upload: bool, limit: int) -> tuple[str, str]:
    if upload:
        return "FILE_TOO_LARGE", f"Uploads are limited to {limit - (1 << 16):,} bytes."
    return "REQUEST_TOO_LARGE", f"Request bodies are limited to {limit:,} bytes."


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = _error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
