"""A fake Supabase speaking the REST (PostgREST) and Storage wire contract, on a loopback port.

What it implements, as the real services answer it:

- Every request needs `apikey: <key>` and `Authorization: Bearer <key>`; otherwise 401
  `{"message": "Invalid API key"}`.
- `POST /rest/v1/<table>` with a JSON object or array inserts rows; a primary-key clash is 409 with
  PostgreSQL's code `23505`; `Prefer: return=representation` answers the rows (201), otherwise 201 empty.
- `GET /rest/v1/<table>?select=*&<column>=eq.<value>` answers a JSON array of matching rows.
- `POST /storage/v1/object/<bucket>/<path>` stores the body (`{"Key", "Id"}`); an existing object
  without `x-upsert: true` is HTTP 400 with `{"statusCode": "409", "error": "Duplicate", ...}`; an unknown
  bucket is 400 with `statusCode` "404" and "Bucket not found".
- `GET /storage/v1/object/<bucket>/<path>` answers the bytes, or 400 `{"statusCode": "404",
  "error": "not_found", "message": "Object not found"}`.
- `DELETE /storage/v1/object/<bucket>` with `{"prefixes": [...]}` removes objects and lists them.

Tests read `rows`, `objects` and `requests`, and can make the next calls to a path fail (`fail_next`).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PRIMARY_KEYS = {"sessions": "session_id", "chats": "chat_id", "messages": "id"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeSupabase:
    """State of the fake: tables of rows, buckets of objects, the requests it saw."""

    key: str = "service-key-for-tests"
    buckets: set[str] = field(default_factory=lambda: {"datasets"})
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, path_prefix: str, status: int = 500, times: int = 1) -> None:
        """The next `times` requests whose path starts with `path_prefix` answer `status`."""
        self.failures.setdefault(path_prefix, []).extend([status] * times)

    def __enter__(self) -> FakeSupabase:
        fake = self

        class Handler(_Handler):
            state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: FakeSupabase
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    # --- plumbing --------------------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _admit(self) -> bool:
        split = urlsplit(self.path)
        self.state.requests.append(
            Recorded(self.command, split.path, {k.lower(): v for k, v in self.headers.items()})
        )
        key = self.state.key
        if self.headers.get("apikey") != key or self.headers.get("Authorization") != f"Bearer {key}":
            self._body()
            self._send(
                401,
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            )
            return False
        for prefix, statuses in self.state.failures.items():
            if split.path.startswith(prefix) and statuses:
                self._body()
                self._send(statuses.pop(0), {"message": "injected failure"})
                return False
        return True

    # --- verbs -----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._admit():
            return
        split = urlsplit(self.path)
        parts = split.path.split("/")
        if split.path.startswith("/rest/v1/"):
            table = parts[3]
            filters = [(k, v) for k, v in parse_qsl(split.query) if k not in ("select", "limit", "order")]
            rows = [r for r in self.state.rows.get(table, []) if _matches(r, filters)]
            self._send(200, rows)
        elif split.path.startswith("/storage/v1/object/"):
            bucket, name = parts[4], unquote("/".join(parts[5:]))
            data = self.state.objects.get(f"{bucket}/{name}")
            if data is None:
                self._send(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
            else:
                self._send(200, data, "application/octet-stream")
        else:
            self._send(404, {"message": "no route"})

    def do_POST(self) -> None:
        if not self._admit():
            return
        split = urlsplit(self.path)
        parts = split.path.split("/")
        body = self._body()
        if split.path.startswith("/rest/v1/"):
            self._insert(parts[3], body)
        elif split.path.startswith("/storage/v1/object/"):
            bucket, name = parts[4], unquote("/".join(parts[5:]))
            if bucket not in self.state.buckets:
                self._send(
                    400, {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"}
                )
                return
            key = f"{bucket}/{name}"
            with self.state._lock:
                if key in self.state.objects and self.headers.get("x-upsert", "false") != "true":
                    self._send(
                        400,
                        {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"},
                    )
                    return
                self.state.objects[key] = body
            self._send(200, {"Key": key, "Id": str(uuid.uuid4())})
        else:
            self._send(404, {"message": "no route"})

    def do_DELETE(self) -> None:
        if not self._admit():
            return
        split = urlsplit(self.path)
        parts = split.path.split("/")
        if split.path.startswith("/storage/v1/object/") and len(parts) == 5:
            bucket = parts[4]
            prefixes = json.loads(self._body() or b"{}").get("prefixes", [])
            removed = []
            with self.state._lock:
                for name in prefixes:
                    if self.state.objects.pop(f"{bucket}/{name}", None) is not None:
                        removed.append({"name": name, "bucket_id": bucket})
            self._send(200, removed)
        else:
            self._body()
            self._send(404, {"message": "no route"})

    def _insert(self, table: str, body: bytes) -> None:
        payload = json.loads(body or b"null")
        new_rows = payload if isinstance(payload, list) else [payload]
        key = PRIMARY_KEYS.get(table)
        with self.state._lock:
            existing = self.state.rows.setdefault(table, [])
            for row in new_rows:
                if key and any(r.get(key) == row.get(key) for r in existing):
                    self._send(
                        409,
                        {
                            "code": "23505",
                            "details": f"Key ({key})=({row.get(key)}) already exists.",
                            "hint": None,
                            "message": f'duplicate key value violates unique constraint "{table}_pkey"',
                        },
                    )
                    return
            existing.extend(new_rows)
        if "return=representation" in (self.headers.get("Prefer") or ""):
            self._send(201, new_rows)
        else:
            self._send(201)


def _matches(row: dict[str, Any], filters: list[tuple[str, str]]) -> bool:
    for column, condition in filters:
        operator, _, value = condition.partition(".")
        if operator != "eq" or str(row.get(column)) != value:
            return False
    return True
