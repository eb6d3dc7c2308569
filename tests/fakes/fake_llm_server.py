"""A fake Bytez (OpenAI-compatible chat completions) server: real HTTP on loopback, scriptable per key.

It speaks the wire contract of DESIGN.md §4: `POST <base>/chat/completions` with `Authorization: Bearer <key>`
and `{model, messages, temperature, max_tokens, stream}`; answers `choices[0].message.content`, or SSE
`data:` chunks ending with `data: [DONE]` when `stream` is true.

    with FakeLlmServer(keys=["k1", "k2"]) as fake:          # or the `fake_llm` fixture (tests/fakes/fixtures)
        fake.script("k1", unauthorized())                    # k1's next request gets 401
        fake.script("k2", rate_limited(retry_after=2), ok()) # k2: 429 once, then answers
        fake.always("k3", server_error(503))                 # k3: every request fails (until changed)
        fake.responder = lambda messages, model: "SELECT 1"  # what answering requests say
        ... point BYTEZ_BASE_URL at fake.base_url ...
        fake.requests_for("k2")                              # what arrived, with monotonic times

A key's scripted replies are used one per request, in order; then its `always` reply, then the responder.
The responder may also return a `Reply` to script by content (e.g. fail only the composer's calls).
Runs uvicorn in a thread with its own event loop; `python -m tests.fakes.fake_llm_server` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "FakeLlmServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "cut_stream",
    "echo_responder",
    "error_in_body",
    "forbidden",
    "ok",
    "rate_limited",
    "server_error",
    "slow",
    "unauthorized",
]


@dataclass(frozen=True)
class Reply:
    """How to answer one request.

    status     HTTP status; with `error` the body is `{"error": error}` (a 200 with `error` is the
               "200 that still carries an error" case)
    headers    extra response headers (e.g. Retry-After)
    text       the completion's text (else the responder's)
    delay_s    wait before answering (time to first byte; slow replies, cold starts)
    chunk_delay_s  wait between streamed chunks
    cut_after  streaming: drop the connection after this many content chunks (0: before any);
               non-streaming: drop the connection without answering
    no_stream  answer with one JSON completion even when a stream was asked for (servers that ignore it)
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    text: str | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cut_after: int | None = None
    no_stream: bool = False


def ok(text: str | None = None, delay_s: float = 0.0) -> Reply:
    return Reply(text=text, delay_s=delay_s)


def unauthorized() -> Reply:
    return Reply(status=401, error="Unauthorized: invalid API key")


def forbidden() -> Reply:
    return Reply(status=403, error="Forbidden: this key may not use this model")


def rate_limited(retry_after: float | str | None = None, reset: float | None = None) -> Reply:
    """429 with `Retry-After` (seconds or an HTTP date) and/or `ratelimit-reset`, or neither."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = (
            str(retry_after) if not isinstance(retry_after, float) else f"{retry_after:g}"
        )
    if reset is not None:
        headers["ratelimit-reset"] = f"{reset:g}"
    return Reply(status=429, headers=headers, error="Too many concurrent requests")


def server_error(status: int = 503) -> Reply:
    return Reply(status=status, error="Upstream model failed")


def slow(delay_s: float, text: str | None = None) -> Reply:
    return Reply(text=text, delay_s=delay_s)


def cut_stream(after: int = 2, chunk_delay_s: float = 0.0) -> Reply:
    return Reply(cut_after=after, chunk_delay_s=chunk_delay_s)


def error_in_body(message: str = "Model is loading, try again") -> Reply:
    return Reply(status=200, error=message)


Responder = Callable[[list[dict[str, Any]], str], "str | Reply"]


def echo_responder(messages: list[dict[str, Any]], model: str) -> str:
    """The default: repeats the last user message."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Echo: {last}"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it (`time` is time.monotonic() at arrival)."""

    time: float
    path: str
    key: str | None
    authorization: str
    body: dict[str, Any]
    status: int = 0  # what the fake answered (0 while still answering)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def system_prompt(self) -> str:
        return next((m.get("content", "") for m in self.messages if m.get("role") == "system"), "")


class _Cut(Exception):
    """Raised inside a response to drop the connection (filtered out of uvicorn's error log)."""


class _QuietCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _Cut) and "_Cut" not in record.getMessage()


_WORDS = re.compile(r"\s*\S+\s*|\s+")


def _pieces(text: str) -> list[str]:
    """The text in word-sized chunks whose concatenation is exactly `text`."""
    return _WORDS.findall(text) or [""]


class FakeLlmServer:
    """The fake provider. `keys=None` accepts any bearer key; otherwise an unknown key gets 401."""

    def __init__(
        self,
        keys: Iterable[str] | None = None,
        responder: Responder | None = None,
        model: str = "fake-model",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.keys = set(keys) if keys is not None else None
        self.responder: Responder = responder or echo_responder
        self.model = model
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._scripts: dict[str | None, deque[Reply]] = defaultdict(deque)
        self._always: dict[str | None, Reply] = {}
        self._requests: list[RecordedRequest] = []
        self._active: dict[str | None, int] = defaultdict(int)
        self._peak: dict[str | None, int] = defaultdict(int)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    # -- scripting -----------------------------------------------------------------------------------------

    def script(self, key: str | None, *replies: Reply) -> None:
        """Queues replies for `key`'s next requests (None: requests without a key)."""
        with self._lock:
            self._scripts[key].extend(replies)

    def always(self, key: str | None, reply: Reply | None) -> None:
        """Answers every request of `key` with `reply` once its script is used up (None: stop)."""
        with self._lock:
            if reply is None:
                self._always.pop(key, None)
            else:
                self._always[key] = reply

    def reset(self) -> None:
        """Forgets scripts and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._always.clear()
            self._requests.clear()
            self._peak.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, key: str | None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.key == key]

    def peak_concurrency(self, key: str | None) -> int:
        """The most requests of `key` the fake was answering at once."""
        with self._lock:
            return self._peak[key]

    def _enter(self, key: str | None) -> None:
        with self._lock:
            self._active[key] += 1
            self._peak[key] = max(self._peak[key], self._active[key])

    def _leave(self, key: str | None) -> None:
        with self._lock:
            self._active[key] -= 1

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What BYTEZ_BASE_URL / OPENAI_BASE_URL should be: `<base_url>/chat/completions` is the endpoint."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def start(self) -> FakeLlmServer:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only for it (else every
        # response waits ~40 ms on Nagle and delayed ACKs).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(1024)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=60,
            backlog=1024,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-llm", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake LLM server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for slow replies still sleeping
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeLlmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the HTTP side -------------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/chat/completions", self._completions, methods=["POST"]),
            ]
        )

    def _next_reply(self, key: str | None) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
            return self._always.get(key)

    def _record(self, entry: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(entry)
            return len(self._requests) - 1

    def _set_status(self, index: int, status: int) -> None:
        with self._lock:
            self._requests[index] = replace(self._requests[index], status=status)

    @staticmethod
    def _key(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() in ("bearer", "key") and token.strip() else None

    async def _completions(self, request: Request) -> Response:
        """Counts the request as in flight while it is answered (streams: until their last chunk)."""
        key = self._key(request)
        self._enter(key)
        try:
            response = await self._handle(request, key)
        except BaseException:
            self._leave(key)
            raise
        if isinstance(response, StreamingResponse):
            body = response.body_iterator

            async def counted() -> AsyncIterator[Any]:
                try:
                    async for part in body:
                        yield part
                finally:
                    self._leave(key)

            response.body_iterator = counted()
        else:
            self._leave(key)
        return response

    async def _handle(self, request: Request, key: str | None) -> Response:
        arrived = time.monotonic()
        authorization = request.headers.get("authorization", "")
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        recorded_body = body if isinstance(body, dict) else {}
        index = self._record(RecordedRequest(arrived, request.url.path, key, authorization, recorded_body))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return self._answer(index, Reply(status=400, error="body must have model and messages"))
        if self.keys is not None and key not in self.keys:
            return self._answer(index, Reply(status=401, error="Unauthorized"))
        reply = self._next_reply(key) or Reply()
        if reply.status == 200 and reply.error is None and reply.text is None:
            answered = self.responder(body["messages"], str(body["model"]))
            reply = answered if isinstance(answered, Reply) else replace(reply, text=answered)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return self._answer(index, reply, body)

    def _answer(self, index: int, reply: Reply, body: dict[str, Any] | None = None) -> Response:
        self._set_status(index, reply.status)
        if reply.error is not None:
            return JSONResponse({"error": reply.error}, status_code=reply.status, headers=reply.headers)
        assert body is not None
        text = reply.text or ""
        model = str(body.get("model") or self.model)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        pieces = _pieces(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if not body.get("stream") or reply.no_stream:
            if reply.cut_after is not None:
                raise _Cut()
            return JSONResponse(
                {
                    "id": f"chatcmpl-{index}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
                status_code=reply.status,
                headers=reply.headers,
            )
        return StreamingResponse(
            self._chunks(index, model, pieces, usage, reply),
            status_code=reply.status,
            headers={**reply.headers, "cache-control": "no-cache"},
            media_type="text/event-stream",
        )

    async def _chunks(
        self, index: int, model: str, pieces: list[str], usage: dict[str, int], reply: Reply
    ) -> AsyncIterator[bytes]:
        def event(delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        yield event({"role": "assistant", "content": ""})
        for number, piece in enumerate(pieces):
            if reply.cut_after is not None and number >= reply.cut_after:
                raise _Cut()
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            yield event({"content": piece})
        if reply.cut_after is not None and reply.cut_after >= len(pieces):
            raise _Cut()
        yield event({}, "stop", usage=usage)
        yield b"data: [DONE]\n\n"


def main() -> None:
    """Runs the fake alone (for benchmarks or manual checks) until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keys", default="", help="comma-separated accepted keys (default: any)")
    args = parser.parse_args()
    keys = [k for k in args.keys.split(",") if k] or None
    with FakeLlmServer(keys=keys, port=args.port) as fake:
        print(fake.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
