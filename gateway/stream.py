"""One chat answer as SSE: the orchestrator's events in order, ids from `seq`.

The wire format (`retry:`, `id:`, `data:`, heartbeat comments, 204 on a finished resume) is described in
docs/events.md; each event's JSON comes from gateway/events.py.

The generator owns the upstream gRPC call: whatever ends the stream (the last event, an upstream failure,
the client leaving, the server stopping), `finally` cancels the call. That ends only this stream: the
answer runs on in the orchestrator (its events stored, resumable by `Last-Event-ID` on any gateway) until
its end or an explicit stop (`POST /api/chat/stop`, `StopRequest`). An orchestrator replica lost in the
middle of an answer (UNAVAILABLE after events were sent) ends the stream without a terminal event, so
the client reconnects with `Last-Event-ID` and another replica goes on. `StreamStats` counts calls by how
they ended, so the cancellation is observable.

As it ends, the stream tells `on_leave` the last seq it passed before any terminal event, so that an
answer whose reply was not recorded is read on by a follower (gateway/followers.py). A stream left before
its first event has no seq to resume from: it hands its call (and the pending first read, which runs as a
task of its own for that reason) to the follower instead of cancelling it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from pydantic import BaseModel, Field

from common.chat_events import is_terminal
from common.errors import error_info
from gateway.errors import redact
from gateway.events import error_payload, event_to_json

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Upstream chat calls of this gateway: open now, and how the finished ones ended.

    `open` and `cancelled` come from gRPC's own done callback, so they prove the call really ended (a call
    the server ended as cancelled, after a stop, is counted by the stream that read it); `completed` and
    `failed` are counted by the stream that read the call to its end.
    """

    open: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0

    def track(self, call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
        """Counts the call as open until gRPC reports it done (after a cancel, too)."""
        self.open += 1

        def done(finished: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
            self.open -= 1
            if finished.cancelled():
                self.cancelled += 1

        call.add_done_callback(done)

    def as_json(self) -> dict[str, int]:
        return {
            "open": self.open,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": self.failed,
        }


OnEvent = Callable[[dict[str, Any]], Awaitable[None]]

RESUME_COMMENT = "upstream lost: reconnect with Last-Event-ID"


class StopRequest(BaseModel):
    """The body of POST /api/chat/stop: the chat whose running answer is stopped."""

    chat_id: str = Field(min_length=1, max_length=128)
    session_id: str = Field(min_length=1, max_length=64)


OnLeave = Callable[[int, "grpc.aio.UnaryStreamCall | None", "asyncio.Future[Any] | None"], bool]
"""`on_leave(resume_seq, call, first)`, called as the stream ends, however it ends (its terminal event
passed and recorded, the client left, the upstream was lost), so the callee can see the answer through.
`resume_seq` is the last seq whose event needs no replay (the terminal event is always replayed); the
call and its `first` read are handed over when nothing was read yet (there is no seq to resume from
then), else None. True when the callee took the call, which is then not cancelled here."""


async def sse_events(
    call: grpc.aio.UnaryStreamCall,  # type: ignore[type-arg]
    *,
    max_rows: int,
    retry_ms: int,
    after_seq: int = 0,
    on_event: OnEvent | None = None,
    stats: StreamStats | None = None,
    first: asyncio.Future[Any] | None = None,
    on_leave: OnLeave | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """SSE messages for sse-starlette: `retry:` first, then one `id:`/`data:` per event (from the read
    `first` when peek started one, then the rest)."""
    seq = resume_seq = after_seq
    read_any = False
    if first is None:
        # The first read runs as a task of its own: a client leaving before the first event cancels the
        # wait, not the read, so the call can still be handed over (on_leave) instead of lost.
        first = asyncio.ensure_future(call.read())
    try:
        yield {"retry": retry_ms, "comment": "stream open"}
        event = await asyncio.shield(first)
        read_any = True
        while event is not grpc.aio.EOF:
            if event.seq > seq:  # a resumed stream never repeats what the client already has
                seq = event.seq
                payload: dict[str, Any] = dict(event_to_json(event, max_rows))
                await _notify(on_event, payload)
                if not is_terminal(payload["type"]):
                    resume_seq = seq
                yield {"id": str(seq), "data": json.dumps(_redacted(payload), ensure_ascii=False)}
            event = await call.read()
        if stats is not None:
            stats.completed += 1
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        if info.code == grpc.StatusCode.CANCELLED:
            # ended by the server as cancelled (a stop): gRPC's done callback counts only our own cancel
            if stats is not None and not call.cancelled():
                stats.cancelled += 1
            return
        if stats is not None:
            stats.failed += 1
        if info.code == grpc.StatusCode.UNAVAILABLE and seq > 0:
            # The replica answering died mid-answer (or before a resumed stream went on): the answer's
            # events are stored and another replica takes it over, so no terminal event: the client
            # reconnects from the last seq it has.
            log.info("upstream lost mid-answer", extra={"seq": seq})
            yield {"comment": RESUME_COMMENT}
            return
        message, code = stream_failure(info.code, info.message)
        payload = dict(error_payload(seq + 1, message, code))
        await _notify(on_event, payload)
        yield {"id": str(seq + 1), "data": json.dumps(_redacted(payload))}
    except Exception:
        # An event the gateway cannot turn into JSON (an UnknownEvent among them) must end the stream with
        # an error event, never a dropped connection the frontend cannot explain.
        log.exception("chat stream failed", extra={"seq": seq})
        if stats is not None:
            stats.failed += 1
        payload = dict(
            error_payload(
                seq + 1,
                "The answer could not be sent to the browser; try again or rephrase the question.",
                "GATEWAY_ENCODING_FAILED",
            )
        )
        await _notify(on_event, payload)
        yield {"id": str(seq + 1), "data": json.dumps(payload)}
    finally:
        handed = False
        if on_leave is not None:
            handed = on_leave(resume_seq, None if read_any else call, None if read_any else first)
        if not handed:
            if not first.done():
                first.cancel()
            call.cancel()


async def peek(
    call: grpc.aio.UnaryStreamCall,  # type: ignore[type-arg]
    wait_s: float,
) -> asyncio.Future[Any] | None:
    """Starts reading a resumed stream's first event and waits up to `wait_s` for it. None: the stream
    ended with no event (resumed past its end: the caller answers 204). Otherwise the read, done or not,
    for sse_events to go on with; a live stream that is slow to produce an event is not held up past
    `wait_s`, so its response (and its pings) start. An upstream error is left in the read, for sse_events
    to turn into an `error` event."""
    read: asyncio.Future[Any] = asyncio.ensure_future(call.read())
    await asyncio.wait({read}, timeout=wait_s)
    if read.done() and not read.cancelled() and read.exception() is None and read.result() is grpc.aio.EOF:
        return None
    return read


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """Error texts (of the event, or of a failed SQL or Python step) without the data directory."""
    if payload["type"] == "error":
        payload["message"] = redact(str(payload.get("message", "")))
    data = payload.get("data")
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        data["error"] = redact(data["error"])
    return payload


async def _notify(on_event: OnEvent | None, payload: dict[str, Any]) -> None:
    """Side work on an event (saving the answer) never breaks the stream."""
    if on_event is None:
        return
    try:
        await on_event(payload)
    except Exception:
        log.exception("recording a chat event failed")


def stream_failure(code: grpc.StatusCode, detail: str) -> tuple[str, str]:
    """The error event a person sees when the upstream call itself fails."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return "The orchestrator is unreachable right now; try again in a moment.", "UPSTREAM_UNAVAILABLE"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "The answer took too long and was stopped; try a simpler question.", "DEADLINE_EXCEEDED"
    return f"The answer failed: {detail}", code.name
