"""The FastAPI application: uploads, chat streams (SSE), chats, workspace, health and the web page."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import grpc
from fastapi import FastAPI, File, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.channels import call_metadata
from common.store import StoredMessage
from gateway.chats import (
    ChatRepository,
    TurnRecorder,
    chat_json,
    insight_json,
    message_json,
    open_chat_repository,
)
from gateway.clients import Backends
from gateway.errors import (
    error_response,
    from_rpc_error,
    http_exception_handler,
    unexpected_exception_handler,
    validation_exception_handler,
)
from gateway.limits import BodyLimitMiddleware
from gateway.settings import GatewaySettings
from gateway.stream import StreamStats, peek, sse_events
from gateway.workspace import workspace_router
from insightx.v1 import common_pb2, orchestrator_pb2, sql_engine_pb2

MAX_SEQ = 2**53  # a seq, like every JSON number the browser reads, fits a double exactly
_SEQ = re.compile(r"[0-9]{1,16}")
_RESUME_PEEK_S = 1.0  # how long a resumed stream may take to show it has more, before its response starts
log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

# The browser builds of the chart libraries, served from gateway/web/node_modules (installed by `npm ci`).
VENDOR_FILES = {
    "vega.min.js": "vega/build/vega.min.js",
    "vega-lite.min.js": "vega-lite/build/vega-lite.min.js",
    "vega-embed.min.js": "vega-embed/build/vega-embed.min.js",
}


class HistoryTurn(BaseModel):
    """One earlier turn of the chat."""

    role: str = Field(pattern="^(user|assistant|system)$")
    content: str


class ChatStreamRequest(BaseModel):
    """The body of POST /api/chat/stream."""

    chat_id: str = Field(min_length=1, max_length=128)
    session_id: str = Field(min_length=1, max_length=64)
    message: str = Field(min_length=1, max_length=4000)
    history: list[HistoryTurn] = Field(default_factory=list, max_length=50)
    last_event_id: int = Field(
        0, ge=0, le=MAX_SEQ, description="resume after this seq (the Last-Event-ID header wins)"
    )


class NewChat(BaseModel):
    """The body of POST /api/chats."""

    session_id: str = Field(min_length=1, max_length=64)
    title: str = Field("", max_length=200)
    chat_id: str | None = Field(None, min_length=1, max_length=128)


class NewMessage(BaseModel):
    """The body of POST /api/chats/{chat_id}/messages."""

    role: str = Field(pattern="^(user|assistant|system)$")
    content: str = Field(min_length=1, max_length=100_000)
    answer: Any = None
    sql: str = Field("", max_length=100_000)


class NewInsight(BaseModel):
    """The body of POST /api/sessions/{session_id}/insights."""

    text: str = Field(min_length=1, max_length=20_000)
    sql: str = Field("", max_length=100_000)
    chat_id: str = Field("", max_length=128)
    answer: Any = None


class KnownSessions:
    """Sessions already seen to exist (datasets are immutable): spares a DescribeDataset per chat."""

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ids

    def add(self, session_id: str) -> None:
        self._ids[session_id] = None
        self._ids.move_to_end(session_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Builds the app; channels and the chat repository open at start-up and close at shutdown."""
    settings = settings or GatewaySettings()
    stats = StreamStats()
    known = KnownSessions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends.connect(settings)
        app.state.chats = open_chat_repository(settings.data_dir)
        yield
        await app.state.chats.close()
        await app.state.backends.close()

    app = FastAPI(title="InsightX gateway", version="0.1.0", lifespan=lifespan)
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Content-Type"],
    )
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(Exception, unexpected_exception_handler)
    app.state.stream_stats = stats
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(workspace_router(settings))

    def backends(request: Request) -> Backends:
        return request.app.state.backends  # type: ignore[no-any-return]

    def chats(request: Request) -> ChatRepository:
        return request.app.state.chats  # type: ignore[no-any-return]

    async def check_session(request: Request, session_id: str) -> Response | None:
        """None when the session has a dataset; else the error response (404 for an unknown one)."""
        if session_id in known:
            return None
        try:
            await backends(request).sql_engine.DescribeDataset(
                sql_engine_pb2.DescribeDatasetRequest(session_id=session_id),
                timeout=settings.rpc_deadline_s,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        known.add(session_id)
        return None

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/{name}", include_in_schema=False)
    async def vendor(name: str) -> Response:
        """vega, vega-lite and vega-embed from the npm packages (no CDN)."""
        relative = VENDOR_FILES.get(name)
        path = settings.web_modules_dir / relative if relative else None
        if path is None or not path.is_file():
            hint = " Run `make web-deps` (npm ci in gateway/web)." if relative else ""
            return error_response(404, "ASSET_NOT_FOUND", f"No asset named {name!r}.{hint}")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """200 when every service reports SERVING; 503 naming those that do not."""
        services = await backends(request).health()
        ok = all(status == "SERVING" for status in services.values())
        body = {"status": "ok" if ok else "degraded", "services": services}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/api/status")
    async def status() -> JSONResponse:
        """The gateway's own counters: upstream chat calls open, completed, cancelled, failed."""
        return JSONResponse({"streams": stats.as_json()})

    @app.post("/api/datasets")
    async def upload_dataset(request: Request, file: Annotated[UploadFile, File()]) -> Response:
        """Streams the upload to the SQL engine; answers the new session with its schema and profile."""

        async def chunks() -> AsyncIterator[sql_engine_pb2.ImportDatasetRequest]:
            yield sql_engine_pb2.ImportDatasetRequest(
                metadata=sql_engine_pb2.ImportMetadata(
                    filename=file.filename or "upload", content_type=file.content_type or ""
                )
            )
            while data := await file.read(settings.upload_chunk_bytes):
                yield sql_engine_pb2.ImportDatasetRequest(chunk=data)

        try:
            reply = await backends(request).sql_engine.ImportDataset(
                chunks(), timeout=600.0, metadata=call_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        known.add(reply.session_id)
        body = _dataset_json(reply)
        body["source_format"] = reply.source_format
        return JSONResponse(body)

    async def describe(
        request: Request, session_id: str, wait: bool
    ) -> sql_engine_pb2.DescribeDatasetResponse:
        return await backends(request).sql_engine.DescribeDataset(
            sql_engine_pb2.DescribeDatasetRequest(session_id=session_id, wait_for_profile=wait),
            timeout=settings.profile_wait_s if wait else settings.rpc_deadline_s,
            metadata=call_metadata(),
        )

    @app.get("/api/datasets/{session_id}")
    @app.get("/api/sessions/{session_id}")
    async def get_dataset(request: Request, session_id: str, wait_for_profile: bool = False) -> Response:
        """A session's dataset: table, schema, row count and profile (null while `profile_state` is pending).

        With wait_for_profile, answers once the profile is ready or failed; after `profile_wait_s` without
        one it answers the pending state, and the caller asks again.
        """
        try:
            try:
                reply = await describe(request, session_id, wait_for_profile)
            except grpc.aio.AioRpcError as exc:
                if not (wait_for_profile and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                reply = await describe(request, session_id, False)
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        known.add(session_id)
        body = _dataset_json(reply)
        body["filename"] = reply.filename
        return JSONResponse(body)

    @app.post("/api/chat/stream", response_model=None)
    async def chat_stream(
        request: Request,
        body: ChatStreamRequest,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        """Streams the orchestrator's events as SSE; the gRPC call is cancelled if the client leaves.

        An unknown session is not refused here: the stream opens and its last event is an `error` with
        code DATASET_NOT_FOUND (the frontend shows stream errors in place), and nothing is stored for it.
        A stream resumed past its last event answers 204, which tells an EventSource to stop reconnecting.
        """
        session_known = await check_session(request, body.session_id) is None
        owner = await chats(request).get_chat(body.chat_id)
        if owner is not None and owner.session_id != body.session_id:
            return _chat_id_taken(body.chat_id)
        after_seq = body.last_event_id
        if last_event_id:
            if not _SEQ.fullmatch(last_event_id.strip()):
                return error_response(400, "INVALID_LAST_EVENT_ID", "Last-Event-ID must be an event's seq.")
            after_seq = int(last_event_id.strip())
        call = backends(request).orchestrator.Chat(
            orchestrator_pb2.ChatRequest(
                chat_id=body.chat_id,
                session_id=body.session_id,
                message=body.message,
                history=[common_pb2.ChatMessage(role=t.role, content=t.content) for t in body.history],
                last_event_seq=after_seq,
            ),
            timeout=settings.chat_deadline_s,
            metadata=call_metadata(),
        )
        stats.track(call)
        first = None
        if after_seq > 0:
            first = await peek(call, _RESUME_PEEK_S)
            if first is None:  # resumed past the end: 204 tells an EventSource to stop reconnecting
                stats.completed += 1
                return Response(status_code=204)
        record = TurnRecorder(chats(request), body.chat_id, resumed=after_seq > 0)
        if after_seq == 0 and session_known:
            record.start(body.session_id, body.message)
        events = sse_events(
            call,
            max_rows=settings.sse_max_rows,
            retry_ms=settings.sse_retry_ms,
            after_seq=after_seq,
            on_event=record if session_known else None,
            stats=stats,
            first=first,
        )
        return EventSourceResponse(events, sep="\n", ping=settings.sse_ping_s)

    @app.post("/api/chats", status_code=201)
    async def create_chat(request: Request, body: NewChat) -> Response:
        """A new chat on a session (404 when the session has no dataset)."""
        if (failure := await check_session(request, body.session_id)) is not None:
            return failure
        if body.chat_id and (existing := await chats(request).get_chat(body.chat_id)) is not None:
            if existing.session_id != body.session_id:
                return _chat_id_taken(body.chat_id)
            return JSONResponse(chat_json(existing), status_code=200)
        chat = await chats(request).create_chat(body.session_id, body.title, chat_id=body.chat_id)
        return JSONResponse(chat_json(chat), status_code=201)

    @app.get("/api/sessions/{session_id}/chats")
    async def list_chats(request: Request, session_id: str) -> Response:
        """The session's chats, newest first."""
        if (failure := await check_session(request, session_id)) is not None:
            return failure
        return JSONResponse({"chats": [chat_json(c) for c in await chats(request).list_chats(session_id)]})

    @app.get("/api/chats/{chat_id}/messages")
    async def list_messages(request: Request, chat_id: str, session_id: str = "") -> Response:
        """A chat's turns, oldest first; the chat's session id is required, as proof of access."""
        repo = chats(request)
        chat = await repo.get_chat(chat_id)
        if chat is None or chat.session_id != session_id:
            return _chat_not_found(chat_id)
        messages = [message_json(m) for m in await repo.messages(chat_id)]
        return JSONResponse({"chat": chat_json(chat), "messages": messages})

    @app.post("/api/chats/{chat_id}/messages", status_code=201)
    async def add_message(request: Request, chat_id: str, body: NewMessage, session_id: str = "") -> Response:
        """Appends a turn to an existing chat of the given session."""
        repo = chats(request)
        chat = await repo.get_chat(chat_id)
        if chat is None or chat.session_id != session_id:
            return _chat_not_found(chat_id)
        message = StoredMessage(chat_id, body.role, body.content, body.answer, body.sql)
        await repo.add_message(message)
        return JSONResponse(message_json((await repo.messages(chat_id))[-1]), status_code=201)

    @app.post("/api/sessions/{session_id}/insights", status_code=201)
    async def add_insight(request: Request, session_id: str, body: NewInsight) -> Response:
        """Pins a finding to the session."""
        if (failure := await check_session(request, session_id)) is not None:
            return failure
        insight = await chats(request).add_insight(session_id, body.text, body.sql, body.chat_id, body.answer)
        return JSONResponse(insight_json(insight), status_code=201)

    @app.get("/api/sessions/{session_id}/insights")
    async def list_insights(request: Request, session_id: str) -> Response:
        """The session's insights, oldest first."""
        if (failure := await check_session(request, session_id)) is not None:
            return failure
        return JSONResponse(
            {"insights": [insight_json(i) for i in await chats(request).insights(session_id)]}
        )

    return app


def _chat_not_found(chat_id: str) -> JSONResponse:
    return error_response(
        404,
        "CHAT_NOT_FOUND",
        f"No chat '{chat_id}' on this session. Pass its session_id, or create one with POST /api/chats.",
    )


def _chat_id_taken(chat_id: str) -> JSONResponse:
    """A chat id another session uses: refused without saying whose it is."""
    return error_response(
        409, "CHAT_ID_TAKEN", f"The chat id '{chat_id}' is already in use; choose another (e.g. a UUID)."
    )


def _columns(columns: Any) -> list[dict[str, str]]:
    return [{"name": c.name, "type": c.type} for c in columns]


_PROFILE_STATES = {
    sql_engine_pb2.PROFILE_STATE_PENDING: "pending",
    sql_engine_pb2.PROFILE_STATE_FAILED: "failed",
}


def profile_state(state: sql_engine_pb2.ProfileState.ValueType) -> str:
    """The state as the page reads it; UNSPECIFIED (an older engine, which always profiled) is ready."""
    return _PROFILE_STATES.get(state, "ready")


def _dataset_json(
    reply: sql_engine_pb2.ImportDatasetResponse | sql_engine_pb2.DescribeDatasetResponse,
) -> dict[str, Any]:
    """What an upload and a describe share: the schema always, the profile once it is computed."""
    state = profile_state(reply.profile_state)
    return {
        "session_id": reply.session_id,
        "table": reply.table,
        "row_count": reply.row_count,
        "columns": _columns(reply.columns),
        "dataset_hash": reply.dataset_hash,
        "profile_state": state,
        "profile": None if state == "pending" else _profile(reply.profile),
    }


def _profile(profile: sql_engine_pb2.DatasetProfile) -> dict[str, Any]:
    return json_format.MessageToDict(profile, preserving_proto_field_name=True)
