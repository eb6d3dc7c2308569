"""What a provider's answer means for the key and the caller: the OpenAI-compatible wire, read defensively.

Failure kinds:

    AUTH        401/403, or an auth complaint in a 200's body  -> disable the key, try the next
    RATE_LIMIT  429, or a rate/concurrency complaint            -> cool the key down, try the next
    TRANSIENT   5xx, timeouts, connection errors, garbage       -> try the next key after a backoff
    CALLER      any other 4xx                                   -> not retried: the caller's error
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

MAX_ERROR_TEXT = 300


class FailureKind(Enum):
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    TRANSIENT = "transient"
    CALLER = "caller"


@dataclass(frozen=True)
class UpstreamFailure(Exception):
    """One failed attempt: its kind, a short reason for events ("http 429"), and the provider's words."""

    kind: FailureKind
    reason: str
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return self.reason


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date), else `ratelimit-reset`, else None."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
    if reset:
        try:
            seconds = float(reset.strip().rstrip("s"))
        except ValueError:
            return None
        if seconds > 1_000_000_000:  # an epoch timestamp, not a delay
            seconds -= now if now is not None else time.time()
        return max(0.0, seconds)
    return None


def _error_text(body: Any) -> str:
    """The provider's error message from `{"error": "..."}` or `{"error": {"message": "..."}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message") or error.get("type") or json.dumps(error)
    return str(error)[:MAX_ERROR_TEXT] if error else ""


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return _error_text(json.loads(text)) or text[:MAX_ERROR_TEXT]
    except ValueError:
        return text[:MAX_ERROR_TEXT]


def classify_status(status: int, headers: Mapping[str, str], body: bytes | str) -> UpstreamFailure | None:
    """None for a 2xx, else the failure the status means."""
    if 200 <= status < 300:
        return None
    detail = _text(body)
    reason = f"http {status}"
    if status in (401, 403):
        return UpstreamFailure(FailureKind.AUTH, reason, status, detail)
    if status == 429:
        return UpstreamFailure(FailureKind.RATE_LIMIT, reason, status, detail, parse_retry_after(headers))
    if status >= 500 or status == 408:
        return UpstreamFailure(FailureKind.TRANSIENT, reason, status, detail)
    return UpstreamFailure(FailureKind.CALLER, reason, status, detail)


def classify_body_error(body: Any, headers: Mapping[str, str] | None = None) -> UpstreamFailure | None:
    """A 200 can still carry `{"error": ...}`: read what it complains about."""
    if not isinstance(body, dict) or not body.get("error"):
        return None
    detail = _error_text(body)
    lowered = detail.lower()
    if any(word in lowered for word in ("unauthori", "authenticat", "api key", "invalid key", "forbidden")):
        return UpstreamFailure(FailureKind.AUTH, "error in body: auth", 200, detail)
    if any(word in lowered for word in _RATE_WORDS):
        retry = parse_retry_after(headers or {})
        return UpstreamFailure(FailureKind.RATE_LIMIT, "error in body: rate limit", 200, detail, retry)
    return UpstreamFailure(FailureKind.TRANSIENT, "error in body", 200, detail)


_RATE_WORDS = (
    "rate limit",
    "rate-limit",
    "ratelimit",
    "rate_limit",
    "too many requests",
    "concurren",
    "quota",
)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_usage(body: Any) -> Usage | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def parse_completion(body: Any) -> tuple[str, str, Usage]:
    """(content, model, usage) of a chat completion; raises TRANSIENT on a malformed body."""
    try:
        message = body["choices"][0]["message"]
        content = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UpstreamFailure(FailureKind.TRANSIENT, "malformed completion", 200) from exc
    return str(content), str(body.get("model") or ""), parse_usage(body) or Usage()


def chunk_delta(chunk: Any) -> str:
    """The text a streamed chunk adds (empty for role-only or final chunks)."""
    try:
        delta = chunk["choices"][0].get("delta") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return str(delta.get("content") or "")


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data:` payloads of an SSE stream, one per event (multi-line data joined with newlines)."""
    buffer: list[str] = []
    async for line in lines:
        if line == "":
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield "\n".join(buffer)


async def completion_chunks(
    lines: AsyncIterator[str], headers: Mapping[str, str]
) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON chunks of a streamed completion up to `data: [DONE]`.

    Raises UpstreamFailure for an error chunk, and TRANSIENT when the stream ends without [DONE] (a cut
    connection that closed cleanly still leaves the answer incomplete).
    """
    async for data in sse_data(lines):
        if data.strip() == "[DONE]":
            return
        chunk = json.loads(data)
        failure = classify_body_error(chunk, headers)
        if failure is not None:
            raise failure
        if isinstance(chunk, dict):
            yield chunk
    raise UpstreamFailure(FailureKind.TRANSIENT, "stream cut before [DONE]")
