"""The FastAPI application: sign-in, uploads, chat streams (SSE), chats, workspace, health and the web page.

Every /api route but sign-in needs a user (gateway/access.py), and every id a route is given is checked
against that user: a dataset, chat, message, insight or token of someone else answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, FastAPI, File, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.store import AccessStore, StoredMessage
from gateway.access import (
    Access,
    access_of,
    chat_not_found,
    current_user,
    owned_chat,
    owned_session,
    quota_response,
    spend,
    user_metadata,
)
from gateway.auth import COOKIE, Authenticator, Unauthenticated, User
from gateway.chats import (
    ChatRepository,
    TurnRecorder,
    adopt_history,
    chat_json,
    insight_json,
    message_json,
    resumed_question,
    turn_history,
)
from gateway.clients import Backends
from gateway.edge import EdgeMiddleware
from gateway.errors import (
    error_response,
    from_rpc_error,
    hide_paths,
    http_exception_handler,
    unexpected_exception_handler,
    validation_exception_handler,
)
from gateway.events import contract_json
from gateway.followers import AnswerFollowers
from gateway.limits import BodyLimitMiddleware
from gateway.ownership import Ownership
from gateway.quotas import QuotaExceeded, Quotas
from gateway.settings import GatewaySettings
from gateway.stores import DATABASE_ERRORS, database_unavailable_handler, open_stores
from gateway.stream import StopRequest, StreamStats, peek, sse_events
from gateway.tokens import ApiTokens
from gateway.workspace import workspace_router
from insightx.v1 import common_pb2, orchestrator_pb2, sql_engine_pb2

MAX_SEQ = 2**53  # a seq, like every JSON number the browser reads, fits a double exactly
_SEQ = re.compile(r"[0-9]{1,16}")
_RESUME_PEEK_S = 1.0  # how long a resumed stream may take to show it has more, before its response starts
_FOLLOW_GRACE_S = 5.0  # a follower waits this much past the chat's deadline for the answer's own end
log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

# The browser builds of the chart libraries, served from gateway/web/node_modules (installed by `npm ci`).
VENDOR_FILES = {
    "vega.min.js": "vega/build/vega.min.js",
    "vega-lite.min.js": "vega-lite/build/vega-lite.min.js",
    "vega-embed.min.js": "vega-embed/build/vega-embed.min.js",
}

CurrentUser = Annotated[User, Depends(current_user)]


class HistoryTurn(BaseModel):
    """One earlier turn of the chat."""

    role: str = Field(pattern="^(user|assistant|system)$")
    content: str


class ChatStreamRequest(BaseModel):
    """The body of POST /api/chat/stream."""

    chat_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="a chat the server made (POST /api/chats, or the X-Chat-Id of an earlier stream);"
        " omitted: the server makes one and answers it in X-Chat-Id",
    )
    session_id: str = Field(min_length=1, max_length=64)
    message: str = Field(min_length=1, max_length=4000)
    history: list[HistoryTurn] = Field(
        default_factory=list,
        max_length=50,
        description="deprecated: the server keeps each chat's turns; used only to start a chat it does not"
        " know (no chat_id), and then stored with it",
    )
    last_event_id: int = Field(
        0, ge=0, le=MAX_SEQ, description="resume after this seq (the Last-Event-ID header wins)"
    )


class NewChat(BaseModel):
    """The body of POST /api/chats."""

    session_id: str = Field(min_length=1, max_length=64)
    title: str = Field("", max_length=200)
    chat_id: str | None = Field(
        None, min_length=1, max_length=128, description="an existing chat of this session (answered as is)"
    )


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


class Login(BaseModel):
    """The body of POST /api/auth/login."""

    token: str = Field(min_length=1, max_length=8192)


class NewToken(BaseModel):
    """The body of POST /api/tokens."""

    name: str = Field(min_length=1, max_length=100)


def open_access(settings: GatewaySettings, db: AccessStore) -> Access:
    """The access state over its store."""
    tokens = ApiTokens(db)
    quotas = Quotas(
        db,
        {
            "uploads": settings.quota_uploads_per_day,
            "chats": settings.quota_chats_per_day,
            "python_runs": settings.quota_python_runs_per_day,
            "sql_queries": settings.quota_sql_queries_per_day,
        },
        settings.quota_storage_bytes,
    )
    return Access(Authenticator(settings, tokens), Ownership(db), tokens, quotas)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Builds the app; channels, the chat repository and the access database open at start-up."""
    settings = settings or GatewaySettings()
    stats = StreamStats()
    followers = AnswerFollowers(settings.answer_followers, settings.sse_max_rows)
    hide_paths([Path(settings.data_dir)])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends.connect(settings)
        stores = await open_stores(settings)
        app.state.chats = stores.chats
        app.state.access = open_access(settings, stores.access)
        sweeper = asyncio.create_task(sweep_expired(app)) if settings.retention_days > 0 else None
        yield
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await followers.close()
        await stores.close()
        await app.state.backends.close()

    app = FastAPI(
        title="InsightX gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Content-Type", "X-Chat-Id"],
    )
    app.add_middleware(
        EdgeMiddleware, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins
    )
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, database_unavailable_handler)
    app.add_exception_handler(Exception, unexpected_exception_handler)
    app.state.stream_stats = stats
    app.state.followers = followers
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    api = APIRouter(dependencies=[Depends(current_user)])

    def backends(request: Request) -> Backends:
        return request.app.state.backends  # type: ignore[no-any-return]

    def chats(request: Request) -> ChatRepository:
        return request.app.state.chats  # type: ignore[no-any-return]

    def set_login_cookie(response: Response, user: User, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            access_of(request).auth.cookie_value(user),
            max_age=settings.cookie_max_age_s,
            httponly=True,
            samesite="strict",
            secure=settings.cookie_secure,
            path="/",
        )

    async def delete_session(app: FastAPI, user_id: str, session_id: str) -> Response | None:
        """Deletes a session's dataset files, chats and insights; None when done, else the error."""
        try:
            await app.state.backends.sql_engine.DeleteDataset(
                sql_engine_pb2.DeleteDatasetRequest(session_id=session_id),
                timeout=settings.rpc_deadline_s,
                metadata=user_metadata(User(user_id, "owner")),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # already gone from the engine: finish the rest
                return from_rpc_error(exc, "SQL engine")
        await app.state.chats.delete_session(session_id)
        await app.state.access.ownership.forget(session_id)
        return None

    async def sweep_expired(app: FastAPI) -> None:
        """Deletes datasets (with their chats) whose retention has ended, every retention_sweep_s."""
        while True:
            cutoff = time.time() - settings.retention_days * 86400
            ownership: Ownership = app.state.access.ownership
            for session_id in await ownership.older_than(cutoff):
                try:
                    failure = await delete_session(app, "retention", session_id)
                except Exception:
                    log.exception("retention sweep failed")
                    failure = None
                if failure is None:
                    log.info("dataset expired", extra={"retention_days": settings.retention_days})
            await asyncio.sleep(settings.retention_sweep_s)

    # --- the page and its assets ---------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index(request: Request, token: str | None = None) -> Response:
        """The page. `?token=…` (the URL `make run` prints) is traded for the login cookie, then dropped
        from the address bar by a redirect."""
        if token is not None:
            try:
                user = await access_of(request).auth.from_credential(token)
            except Unauthenticated:
                return FileResponse(
                    STATIC / "index.html", status_code=401, headers={"Cache-Control": "no-store"}
                )
            response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
            set_login_cookie(response, user, request)
            return response
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

    @app.get("/events.json", include_in_schema=False)
    async def events_contract() -> JSONResponse:
        """The chat stream's event types and the terminal ones (docs/events.md), for the page to read."""
        return JSONResponse(contract_json(), headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """200 when every service reports SERVING; 503 naming those that do not."""
        services = await backends(request).health()
        ok = all(status == "SERVING" for status in services.values())
        body = {"status": "ok" if ok else "degraded", "services": services}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    # --- sign-in --------------------------------------------------------------------------------------

    @app.post("/api/auth/login")
    async def login(request: Request, body: Login) -> Response:
        """Trades a credential (the embedded token, an API token or a Supabase access token) for the
        login cookie."""
        try:
            user = await access_of(request).auth.from_credential(body.token)
        except Unauthenticated as exc:
            return error_response(401, "UNAUTHENTICATED", str(exc))
        response = JSONResponse({"user_id": user.user_id})
        set_login_cookie(response, user, request)
        return response

    @app.post("/api/auth/logout", status_code=204)
    async def logout() -> Response:
        """Forgets the login cookie."""
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @api.get("/api/me")
    async def me(user: CurrentUser) -> JSONResponse:
        """Who the caller is, and how that was proven."""
        return JSONResponse({"user_id": user.user_id, "via": user.via})

    @api.get("/api/status")
    async def status() -> JSONResponse:
        """The gateway's own counters: upstream chat calls open, completed, cancelled, failed; and the
        background followers of answers whose client left (running, recorded, skipped, gave up)."""
        return JSONResponse({"streams": stats.as_json(), "followers": followers.stats.as_json()})

    # --- API tokens -----------------------------------------------------------------------------------

    @api.post("/api/tokens", status_code=201)
    async def create_token(request: Request, user: CurrentUser, body: NewToken) -> JSONResponse:
        """A new API token acting as the caller; its secret is in this answer only."""
        token, secret = await access_of(request).tokens.create(user.user_id, body.name)
        return JSONResponse({**token.as_json(), "token": secret}, status_code=201)

    @api.get("/api/tokens")
    async def list_tokens(request: Request, user: CurrentUser) -> JSONResponse:
        """The caller's API tokens (never their secrets)."""
        tokens = await access_of(request).tokens.list(user.user_id)
        return JSONResponse({"tokens": [t.as_json() for t in tokens]})

    @api.delete("/api/tokens/{token_id}", status_code=204)
    async def revoke_token(request: Request, user: CurrentUser, token_id: str) -> Response:
        """Revokes one of the caller's tokens."""
        if not await access_of(request).tokens.revoke(user.user_id, token_id):
            return error_response(404, "TOKEN_NOT_FOUND", f"No API token '{token_id}' here.")
        return Response(status_code=204)

    # --- datasets -------------------------------------------------------------------------------------

    @api.post("/api/datasets")
    async def upload_dataset(
        request: Request, user: CurrentUser, file: Annotated[UploadFile, File()]
    ) -> Response:
        """Streams the upload to the SQL engine; answers the new session with its schema and profile."""
        access = access_of(request)
        try:
            access.quotas.check_storage(await access.ownership.storage_bytes(user.user_id))
        except QuotaExceeded as exc:
            return quota_response(exc)
        if (spent := await spend(request, user, "uploads")) is not None:
            return spent
        size = 0

        async def chunks() -> AsyncIterator[sql_engine_pb2.ImportDatasetRequest]:
            nonlocal size
            yield sql_engine_pb2.ImportDatasetRequest(
                metadata=sql_engine_pb2.ImportMetadata(
                    filename=file.filename or "upload", content_type=file.content_type or ""
                )
            )
            while data := await file.read(settings.upload_chunk_bytes):
                size += len(data)
                yield sql_engine_pb2.ImportDatasetRequest(chunk=data)

        try:
            reply = await backends(request).sql_engine.ImportDataset(
                chunks(), timeout=600.0, metadata=user_metadata(user)
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        await access.ownership.claim(reply.session_id, user.user_id, file.filename or "upload", size)
        body = _dataset_json(reply)
        body["source_format"] = reply.source_format
        return JSONResponse(body)

    @api.get("/api/datasets")
    async def list_datasets(request: Request, user: CurrentUser) -> JSONResponse:
        """The caller's datasets, newest first."""
        owned = await access_of(request).ownership.datasets(user.user_id)
        return JSONResponse({"datasets": [d.as_json() for d in owned]})

    async def describe(
        request: Request, user: User, session_id: str, wait: bool
    ) -> sql_engine_pb2.DescribeDatasetResponse:
        return await backends(request).sql_engine.DescribeDataset(
            sql_engine_pb2.DescribeDatasetRequest(session_id=session_id, wait_for_profile=wait),
            timeout=settings.profile_wait_s if wait else settings.rpc_deadline_s,
            metadata=user_metadata(user),
        )

    @api.get("/api/datasets/{session_id}")
    @api.get("/api/sessions/{session_id}")
    async def get_dataset(
        request: Request, user: CurrentUser, session_id: str, wait_for_profile: bool = False
    ) -> Response:
        """A session's dataset: table, schema, row count and profile (null while `profile_state` is pending).

        With wait_for_profile, answers once the profile is ready or failed; after `profile_wait_s` without
        one it answers the pending state, and the caller asks again.
        """
        if (missing := await owned_session(request, user, session_id)) is not None:
            return missing
        try:
            try:
                reply = await describe(request, user, session_id, wait_for_profile)
            except grpc.aio.AioRpcError as exc:
                if not (wait_for_profile and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                reply = await describe(request, user, session_id, False)
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        body = _dataset_json(reply)
        body["filename"] = reply.filename
        return JSONResponse(body)

    @api.delete("/api/datasets/{session_id}", status_code=204)
    async def delete_dataset(request: Request, user: CurrentUser, session_id: str) -> Response:
        """Deletes the dataset with its files, chats, messages and insights."""
        if (missing := await owned_session(request, user, session_id)) is not None:
            return missing
        failure = await delete_session(request.app, user.user_id, session_id)
        return failure if failure is not None else Response(status_code=204)

    # --- chats ----------------------------------------------------------------------------------------

    @api.post("/api/chat/stream", response_model=None)
    async def chat_stream(
        request: Request,
        user: CurrentUser,
        body: ChatStreamRequest,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        """Streams the orchestrator's events as SSE; the gRPC call is cancelled if the client leaves, and
        the answer, which runs on, is read to its end by a background follower that records it.

        The chat is one the server made (404 otherwise); without a chat_id the server makes one and
        answers its id in the `X-Chat-Id` header. A stream resumed past its last event answers 204, which
        tells an EventSource to stop reconnecting.
        """
        deadline = asyncio.get_running_loop().time() + settings.chat_deadline_s + _FOLLOW_GRACE_S
        if (missing := await owned_session(request, user, body.session_id)) is not None:
            return missing
        after_seq = body.last_event_id
        if last_event_id:
            if not _SEQ.fullmatch(last_event_id.strip()):
                return error_response(400, "INVALID_LAST_EVENT_ID", "Last-Event-ID must be an event's seq.")
            after_seq = int(last_event_id.strip())
        repo = chats(request)
        chat = None
        if body.chat_id is not None:
            chat = await owned_chat(request, repo, user, body.chat_id)
            if chat is None or chat.session_id != body.session_id:
                return chat_not_found(body.chat_id)
        elif after_seq > 0:
            return error_response(400, "MISSING_CHAT_ID", "Resuming a stream needs the chat_id it answered.")
        if after_seq == 0 and (spent := await spend(request, user, "chats")) is not None:
            return spent  # before a new chat is made: a refused question leaves nothing behind
        if chat is None:  # a chat the store does not know: the client's own history (if any) starts it
            chat = await repo.create_chat(body.session_id, body.message[:80])
            await adopt_history(repo, chat.chat_id, [(t.role, t.content) for t in body.history])
        chat_id = chat.chat_id
        # The store is the chat's only record (the client's history counts only for a new chat, above).
        history = await turn_history(repo, chat_id, body.message, resumed=after_seq > 0)
        chat_request = orchestrator_pb2.ChatRequest(
            chat_id=chat_id,
            session_id=body.session_id,
            message=body.message,
            history=[common_pb2.ChatMessage(role=t.role, content=t.content) for t in history],
            last_event_seq=after_seq,
        )
        metadata = user_metadata(user)
        orchestrator = backends(request).orchestrator
        call = orchestrator.Chat(chat_request, timeout=settings.chat_deadline_s, metadata=metadata)
        stats.track(call)
        first = None
        if after_seq > 0:
            first = await peek(call, _RESUME_PEEK_S)
            if first is None:  # resumed past the end: 204 tells an EventSource to stop reconnecting
                stats.completed += 1
                return Response(status_code=204, headers={"X-Chat-Id": chat_id})
        record = TurnRecorder(repo, chat_id)
        if after_seq == 0:
            record.start(body.session_id, body.message)
        else:
            try:
                record.resume(await resumed_question(repo, chat_id, body.session_id, body.message))
            except BaseException:
                call.cancel()  # the store failed (answered 503): no stream will own the call
                raise

        def reopen(seq: int, timeout_s: float) -> grpc.aio.UnaryStreamCall:  # type: ignore[type-arg]
            resumed = orchestrator_pb2.ChatRequest()
            resumed.CopyFrom(chat_request)
            resumed.last_event_seq = seq
            return orchestrator.Chat(resumed, timeout=timeout_s, metadata=metadata)  # type: ignore[no-any-return]

        def leave(resume_seq: int, left: Any, pending: Any) -> bool:
            """The stream ended: unless its reply is recorded, a follower reads the answer on."""
            key = (chat_id, body.message)
            return followers.follow(key, record, reopen, resume_seq, deadline, left, pending)

        events = sse_events(
            call,
            max_rows=settings.sse_max_rows,
            retry_ms=settings.sse_retry_ms,
            after_seq=after_seq,
            on_event=record,
            stats=stats,
            first=first,
            on_leave=leave,
        )
        return EventSourceResponse(events, sep="\n", ping=settings.sse_ping_s, headers={"X-Chat-Id": chat_id})

    @api.post("/api/chat/stop")
    async def chat_stop(request: Request, user: CurrentUser, body: StopRequest) -> Response:
        """Stops the chat's running answer on whichever orchestrator runs it (leaving a stream does not)."""
        chat = await owned_chat(request, chats(request), user, body.chat_id)
        if chat is None or chat.session_id != body.session_id:
            return chat_not_found(body.chat_id)
        try:
            reply = await backends(request).orchestrator.StopAnswer(
                orchestrator_pb2.StopAnswerRequest(chat_id=body.chat_id, session_id=body.session_id),
                timeout=10,
                metadata=user_metadata(user),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "orchestrator")
        return JSONResponse({"stopped": reply.stopped})

    @api.post("/api/chats", status_code=201)
    async def create_chat(request: Request, user: CurrentUser, body: NewChat) -> Response:
        """A new chat on one of the caller's sessions, with an id the server makes."""
        if (missing := await owned_session(request, user, body.session_id)) is not None:
            return missing
        repo = chats(request)
        if body.chat_id:
            existing = await owned_chat(request, repo, user, body.chat_id)
            if existing is None or existing.session_id != body.session_id:
                return chat_not_found(body.chat_id)
            return JSONResponse(chat_json(existing), status_code=200)
        chat = await repo.create_chat(body.session_id, body.title)
        return JSONResponse(chat_json(chat), status_code=201)

    @api.get("/api/sessions/{session_id}/chats")
    async def list_chats(request: Request, user: CurrentUser, session_id: str) -> Response:
        """The session's chats, newest first."""
        if (missing := await owned_session(request, user, session_id)) is not None:
            return missing
        return JSONResponse({"chats": [chat_json(c) for c in await chats(request).list_chats(session_id)]})

    @api.get("/api/chats/{chat_id}/messages")
    async def list_messages(
        request: Request, user: CurrentUser, chat_id: str, session_id: str = ""
    ) -> Response:
        """A chat's turns, oldest first (a session_id, when given, must be the chat's)."""
        repo = chats(request)
        chat = await owned_chat(request, repo, user, chat_id)
        if chat is None or session_id not in ("", chat.session_id):
            return chat_not_found(chat_id)
        messages = [message_json(m) for m in await repo.messages(chat_id)]
        return JSONResponse({"chat": chat_json(chat), "messages": messages})

    @api.post("/api/chats/{chat_id}/messages", status_code=201)
    async def add_message(
        request: Request, user: CurrentUser, chat_id: str, body: NewMessage, session_id: str = ""
    ) -> Response:
        """Appends a turn to one of the caller's chats."""
        repo = chats(request)
        chat = await owned_chat(request, repo, user, chat_id)
        if chat is None or session_id not in ("", chat.session_id):
            return chat_not_found(chat_id)
        message = StoredMessage(chat_id, body.role, body.content, body.answer, body.sql)
        await repo.add_message(message)
        return JSONResponse(message_json((await repo.messages(chat_id))[-1]), status_code=201)

    @api.delete("/api/chats/{chat_id}", status_code=204)
    async def delete_chat(request: Request, user: CurrentUser, chat_id: str) -> Response:
        """Deletes one of the caller's chats with its messages."""
        repo = chats(request)
        if await owned_chat(request, repo, user, chat_id) is None:
            return chat_not_found(chat_id)
        await repo.delete_chat(chat_id)
        return Response(status_code=204)

    @api.post("/api/sessions/{session_id}/insights", status_code=201)
    async def add_insight(request: Request, user: CurrentUser, session_id: str, body: NewInsight) -> Response:
        """Pins a finding to one of the caller's sessions."""
        if (missing := await owned_session(request, user, session_id)) is not None:
            return missing
        insight = await chats(request).add_insight(session_id, body.text, body.sql, body.chat_id, body.answer)
        return JSONResponse(insight_json(insight), status_code=201)

    @api.get("/api/sessions/{session_id}/insights")
    async def list_insights(request: Request, user: CurrentUser, session_id: str) -> Response:
        """The session's insights, oldest first."""
        if (missing := await owned_session(request, user, session_id)) is not None:
            return missing
        return JSONResponse(
            {"insights": [insight_json(i) for i in await chats(request).insights(session_id)]}
        )

    app.include_router(api)
    app.include_router(workspace_router(settings))
    return app


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
