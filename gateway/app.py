"""The FastAPI application: uploads, chat streams (SSE), dataset profiles, health and the web page."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from google.protobuf import json_format
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.channels import call_metadata
from common.errors import error_info
from gateway.clients import Backends
from gateway.errors import (
    error_response,
    from_rpc_error,
    http_exception_handler,
    validation_exception_handler,
)
from gateway.events import event_to_json
from gateway.settings import GatewaySettings
from insightx.v1 import common_pb2, orchestrator_pb2, sql_engine_pb2

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


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


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Builds the app; channels open at start-up and close at shutdown."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends.connect(settings)
        yield
        await app.state.backends.close()

    app = FastAPI(title="InsightX gateway", version="0.1.0", lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)

    def backends(request: Request) -> Backends:
        return request.app.state.backends  # type: ignore[no-any-return]

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """200 when every service reports SERVING; 503 naming those that do not."""
        services = await backends(request).health()
        ok = all(status == "SERVING" for status in services.values())
        body = {"status": "ok" if ok else "degraded", "services": services}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.post("/api/datasets")
    async def upload_dataset(request: Request, file: UploadFile = File(...)) -> Response:
        """Streams the upload to the SQL engine; answers the new session with its schema and profile."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_upload_bytes + (1 << 16):
            return error_response(413, "FILE_TOO_LARGE", f"Uploads are limited to {settings.max_upload_bytes:,} bytes.")

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
        return JSONResponse(
            {
                "session_id": reply.session_id,
                "table": reply.table,
                "row_count": reply.row_count,
                "columns": _columns(reply.columns),
                "dataset_hash": reply.dataset_hash,
                "source_format": reply.source_format,
                "profile": _profile(reply.profile),
            }
        )

    @app.get("/api/datasets/{session_id}")
    async def get_dataset(request: Request, session_id: str) -> Response:
        """A session's dataset: table, schema, row count and profile."""
        try:
            reply = await backends(request).sql_engine.DescribeDataset(
                sql_engine_pb2.DescribeDatasetRequest(session_id=session_id),
                timeout=settings.rpc_deadline_s,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        return JSONResponse(
            {
                "session_id": reply.session_id,
                "table": reply.table,
                "filename": reply.filename,
                "row_count": reply.row_count,
                "columns": _columns(reply.columns),
                "dataset_hash": reply.dataset_hash,
                "profile": _profile(reply.profile),
            }
        )

    @app.post("/api/chat/stream")
    async def chat_stream(request: Request, body: ChatStreamRequest) -> EventSourceResponse:
        """Streams the orchestrator's events as SSE; the gRPC call is cancelled if the client leaves."""
        chat_request = orchestrator_pb2.ChatRequest(
            chat_id=body.chat_id,
            session_id=body.session_id,
            message=body.message,
            history=[common_pb2.ChatMessage(role=t.role, content=t.content) for t in body.history],
        )
        call = backends(request).orchestrator.Chat(
            chat_request, timeout=settings.chat_deadline_s, metadata=call_metadata()
        )

        async def stream() -> AsyncIterator[dict[str, Any]]:
            seq = 0
            try:
                async for event in call:
                    seq = event.seq
                    payload = event_to_json(event, settings.sse_max_rows)
                    yield {"id": str(seq), "data": json.dumps(payload, ensure_ascii=False)}
            except grpc.aio.AioRpcError as exc:
                info = error_info(exc)
                if info.code == grpc.StatusCode.CANCELLED:
                    return
                message, code = _stream_failure(info.code, info.message)
                payload = {"type": "error", "seq": seq + 1, "message": message, "code": code}
                yield {"id": str(seq + 1), "data": json.dumps(payload)}
            finally:
                call.cancel()

        return EventSourceResponse(stream(), sep="\n", ping=15)

    return app


def _stream_failure(code: grpc.StatusCode, detail: str) -> tuple[str, str]:
    if code == grpc.StatusCode.UNAVAILABLE:
        return "The orchestrator is unreachable right now; try again in a moment.", "UPSTREAM_UNAVAILABLE"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "The answer took too long and was stopped; try a simpler question.", "DEADLINE_EXCEEDED"
    return f"The answer failed: {detail}", code.name


def _columns(columns: Any) -> list[dict[str, str]]:
    return [{"name": c.name, "type": c.type} for c in columns]


def _profile(profile: sql_engine_pb2.DatasetProfile) -> dict[str, Any]:
    return json_format.MessageToDict(profile, preserving_proto_field_name=True)
