"""Errors as canonical gRPC status codes carrying one `google.rpc.ErrorInfo` (AIP-193).

Exception tree:

    InsightError                 -- code + UPPER_SNAKE reason + message a person can act on
    ├── InvalidInput             -- INVALID_ARGUMENT
    ├── NotFound                 -- NOT_FOUND
    ├── FailedPrecondition       -- FAILED_PRECONDITION
    ├── ResourceExhausted        -- RESOURCE_EXHAUSTED
    ├── DeadlineExceeded         -- DEADLINE_EXCEEDED
    └── Unavailable              -- UNAVAILABLE

Servicers raise these from plain functions; `abort_with` turns one into a rich status on the wire, and
`error_info` reads it back on the client side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "insightx.dev"


class InsightError(Exception):
    """A failure with a canonical status code, a machine-readable reason and a human message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}


class InvalidInput(InsightError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(InsightError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(InsightError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(InsightError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(InsightError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(InsightError):
    code = grpc.StatusCode.UNAVAILABLE


def to_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """Builds a rich status with one ErrorInfo detail."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


async def abort_with(context: grpc.aio.ServicerContext, error: InsightError) -> None:
    """Ends the call with the error's status; never returns."""
    await context.abort_with_status(to_status(error.code, error.reason, error.message, error.metadata))


@dataclass(frozen=True)
class RemoteError:
    """What a client learns from a failed call: code, reason, message and ErrorInfo metadata."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> RemoteError:
    """Reads the ErrorInfo of a failed call; falls back to the code's name as reason."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    reason, metadata = code.name if code else "UNKNOWN", {}
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, metadata = info.reason, dict(info.metadata)
    return RemoteError(code=code, reason=reason, message=message or "", metadata=metadata)
