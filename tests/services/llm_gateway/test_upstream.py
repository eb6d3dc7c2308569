"""Reading the provider's answers: Retry-After forms, status and body classification, SSE framing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.llm_gateway.upstream import (
    FailureKind,
    UpstreamFailure,
    chunk_delta,
    classify_body_error,
    classify_status,
    completion_chunks,
    parse_completion,
    parse_retry_after,
    sse_data,
)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 < (parse_retry_after({"retry-after": format_datetime(later, usegmt=True)}) or 0) <= 30
    past = datetime.now(UTC) - timedelta(seconds=30)
    assert parse_retry_after({"retry-after": format_datetime(past, usegmt=True)}) == 0.0


def test_ratelimit_reset_when_there_is_no_retry_after() -> None:
    assert parse_retry_after({"ratelimit-reset": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "3", "ratelimit-reset": "7"}) == 3.0
    assert parse_retry_after({"ratelimit-reset": "1800000010"}, now=1_800_000_000.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (429, FailureKind.RATE_LIMIT),
        (500, FailureKind.TRANSIENT),
        (502, FailureKind.TRANSIENT),
        (503, FailureKind.TRANSIENT),
        (408, FailureKind.TRANSIENT),
        (400, FailureKind.CALLER),
        (404, FailureKind.CALLER),
        (422, FailureKind.CALLER),
    ],
)
def test_status_classification(status: int, kind: FailureKind) -> None:
    failure = classify_status(status, {"retry-after": "4"}, b'{"error": {"message": "nope"}}')
    assert failure is not None and failure.kind is kind and failure.detail == "nope"
    assert failure.retry_after_s == (4.0 if kind is FailureKind.RATE_LIMIT else None)


def test_success_is_not_a_failure() -> None:
    assert classify_status(200, {}, b"{}") is None


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Unauthorized: invalid API key", FailureKind.AUTH),
        ("Too many concurrent requests on the free plan", FailureKind.RATE_LIMIT),
        ("Rate limit exceeded", FailureKind.RATE_LIMIT),
        ("Model is loading", FailureKind.TRANSIENT),
        ("max_tokens limit exceeded for this model", FailureKind.TRANSIENT),
    ],
)
def test_an_error_inside_a_200(message: str, kind: FailureKind) -> None:
    failure = classify_body_error({"error": message, "output": None})
    assert failure is not None and failure.kind is kind and failure.detail == message
    assert classify_body_error({"error": None, "output": "fine"}) is None


def test_completion_parsing() -> None:
    body = {"model": "m", "choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3}}
    content, model, usage = parse_completion(body)
    assert (content, model, usage.prompt_tokens, usage.completion_tokens) == ("hi", "m", 3, 0)
    with pytest.raises(Exception) as caught:
        parse_completion({"choices": []})
    assert getattr(caught.value, "kind", None) is FailureKind.TRANSIENT
    assert chunk_delta({"choices": [{"delta": {"content": "x"}}]}) == "x"
    assert chunk_delta({"choices": [{"delta": {"role": "assistant"}}]}) == ""


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_framing() -> None:
    events = [
        e
        async for e in sse_data(
            _lines(
                ": keep-alive",
                "",
                'data: {"a": 1}',
                "",
                "data:x",
                "data: y",
                "",
                "event: ping",
                "",
                "data: [DONE]",
            )
        )
    ]
    assert events == ['{"a": 1}', "x\ny", "[DONE]"]


async def test_completion_chunks_stop_at_done_and_fail_on_errors_or_cuts() -> None:
    chunk = 'data: {"choices": [{"delta": {"content": "a"}}]}'
    assert [c async for c in completion_chunks(_lines(chunk, "", "data: [DONE]", ""), {})] == [
        {"choices": [{"delta": {"content": "a"}}]}
    ]
    with pytest.raises(UpstreamFailure, match="stream cut before"):
        [c async for c in completion_chunks(_lines(chunk, ""), {})]
    with pytest.raises(UpstreamFailure) as caught:
        [c async for c in completion_chunks(_lines('data: {"error": "rate limit exceeded"}', ""), {})]
    assert caught.value.kind is FailureKind.RATE_LIMIT
