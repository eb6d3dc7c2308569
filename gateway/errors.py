"""HTTP errors: every failure is a JSON body `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import error_info

log = logging.getLogger(__name__)

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
}
_REASON_STATUS = {"FILE_TOO_LARGE": 413}
_HTTP_CODES = {
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


_HIDDEN: list[str] = []


def hide_paths(paths: list[Path]) -> None:
    """Folders (the data directory) that no message leaving the gateway may show."""
    _HIDDEN[:] = sorted({str(p.resolve()) for p in paths}, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every hidden folder replaced by `<data>`."""
    for path in _HIDDEN:
        if path in text:
            text = text.replace(path, "<data>")
    return text


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one shape of an HTTP error (its message never shows the data directory)."""
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": redact(message)}}, headers=headers
    )


def from_rpc_error(exc: grpc.aio.AioRpcError, service: str) -> JSONResponse:
    """Maps a failed gRPC call to an HTTP error with the service's reason and message."""
    info = error_info(exc)
    if info.code == grpc.StatusCode.UNAVAILABLE:
        return error_response(
            503, "UPSTREAM_UNAVAILABLE", f"The {service} is unreachable; try again shortly."
        )
    status = _REASON_STATUS.get(info.reason, _HTTP_STATUS.get(info.code, 502))
    return error_response(status, info.reason, info.message)


async def http_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def validation_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "MALFORMED_JSON", "The request body is not valid JSON.")
    code = "MISSING_FIELD" if any(err.get("type") == "missing" for err in errors) else "INVALID_REQUEST"
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'body'}: {err.get('msg')}" for err in errors
    )
    return error_response(422, code, f"The request is not valid: {problems}")


async def unexpected_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    """A bug must still answer in the one error shape, with nothing internal in the message."""
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL", "Something went wrong on our side; try again.")
