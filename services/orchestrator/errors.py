"""How a step of the pipeline fails: one message a person can act on and an UPPER_SNAKE code."""

from __future__ import annotations

import grpc

from common.errors import error_info

_SERVICE_NAMES = {"sql": "SQL engine", "sandbox": "Python sandbox", "llm": "LLM gateway"}


class StepFailed(Exception):
    """A step failed; carries the error event's message and code (the stream ends with it)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def peer_failure(peer: str, exc: grpc.aio.AioRpcError) -> StepFailed:
    """A peer's failed call as a StepFailed: unreachable, too slow, or the peer's own reason."""
    info = error_info(exc)
    name = _SERVICE_NAMES[peer]
    if info.code == grpc.StatusCode.UNAVAILABLE and info.reason == "UNAVAILABLE":
        return StepFailed(
            f"The {name} is unreachable right now; try again in a moment.", "UPSTREAM_UNAVAILABLE"
        )
    if info.code == grpc.StatusCode.DEADLINE_EXCEEDED and info.reason == "DEADLINE_EXCEEDED":
        return StepFailed(f"The {name} did not answer in time.", "DEADLINE_EXCEEDED")
    return StepFailed(info.message or f"The {name} failed.", info.reason)
