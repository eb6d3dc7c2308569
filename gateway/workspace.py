"""The workspace editors: run SQL (sql_engine) and Python (py_sandbox) directly, with the services' safety.

The gateway adds access, not SQL or code policy: the caller must own the session (404 otherwise) and have
quota left (429); the SQL engine refuses anything but one read-only SELECT, and the sandbox runs code in its
isolated child. Results become JSON here, at the edge.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from common.arrow import ipc_to_table, to_records, unique_names
from gateway.access import current_user, owned_session, spend, user_metadata
from gateway.auth import User
from gateway.clients import Backends
from gateway.errors import from_rpc_error
from gateway.settings import GatewaySettings
from insightx.v1 import common_pb2, py_sandbox_pb2, sql_engine_pb2


class SqlRequest(BaseModel):
    """Body of POST /api/sql/execute and /api/sql/validate."""

    session_id: str = Field(min_length=1, max_length=64)
    sql: str = Field(min_length=1, max_length=100_000)
    max_rows: int = Field(0, ge=0, description="0 means the gateway's workspace default")


class PythonRequest(BaseModel):
    """Body of POST /api/python/run."""

    session_id: str = Field(min_length=1, max_length=64)
    code: str = Field(min_length=1, max_length=200_000)
    timeout_s: float = Field(0.0, ge=0.0, le=300.0)


def table_json(result: common_pb2.TableResult, max_rows: int) -> dict[str, Any]:
    """A TableResult as the frontend reads it: columns, records, counts."""
    table = ipc_to_table(result.arrow_ipc) if result.arrow_ipc else None
    rows = to_records(table, max_rows) if table is not None else []
    return {
        "columns": unique_names([c.name for c in result.columns]),
        "column_types": [c.type for c in result.columns],
        "rows": rows,
        "row_count": result.row_count,
        "truncated": result.truncated or (table is not None and table.num_rows > max_rows),
    }


def workspace_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(dependencies=[Depends(current_user)])

    def backends(request: Request) -> Backends:
        return request.app.state.backends  # type: ignore[no-any-return]

    @router.post("/api/sql/validate")
    async def validate_sql(
        request: Request, user: Annotated[User, Depends(current_user)], body: SqlRequest
    ) -> Response:
        """Whether the SQL would run: one read-only SELECT that parses."""
        if (missing := await owned_session(request, user, body.session_id)) is not None:
            return missing
        try:
            reply = await backends(request).sql_engine.ValidateSql(
                sql_engine_pb2.ValidateSqlRequest(session_id=body.session_id, sql=body.sql),
                timeout=settings.rpc_deadline_s,
                metadata=user_metadata(user),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        return JSONResponse(
            {
                "valid": reply.valid,
                "reason": reply.reason or None,
                "message": reply.message or None,
                "statement_type": reply.statement_type or None,
            }
        )

    @router.post("/api/sql/execute")
    async def execute_sql(
        request: Request, user: Annotated[User, Depends(current_user)], body: SqlRequest
    ) -> Response:
        """Runs one SELECT on the session's dataset; rows capped at the workspace limit."""
        if (missing := await owned_session(request, user, body.session_id)) is not None:
            return missing
        if (spent := await spend(request, user, "sql_queries")) is not None:
            return spent
        cap = min(body.max_rows or settings.workspace_max_rows, settings.workspace_max_rows)
        try:
            reply = await backends(request).sql_engine.ExecuteSql(
                sql_engine_pb2.ExecuteSqlRequest(session_id=body.session_id, sql=body.sql, max_rows=cap),
                timeout=settings.rpc_deadline_s + 5.0,
                metadata=user_metadata(user),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "SQL engine")
        out = table_json(reply.result, cap)
        out.update({"sql": body.sql, "elapsed_ms": reply.elapsed_ms, "cached": reply.cached})
        return JSONResponse(out)

    @router.post("/api/python/run")
    async def run_python(
        request: Request, user: Annotated[User, Depends(current_user)], body: PythonRequest
    ) -> Response:
        """Runs code in the sandbox with the session's dataset as `df`; a failed run is a 200 with `error`."""
        if (missing := await owned_session(request, user, body.session_id)) is not None:
            return missing
        if (spent := await spend(request, user, "python_runs")) is not None:
            return spent
        stub = backends(request).py_sandbox
        budget = body.timeout_s or 30.0
        try:
            reply = await stub.RunCode(
                py_sandbox_pb2.RunCodeRequest(
                    session_id=body.session_id, code=body.code, timeout_s=body.timeout_s
                ),
                timeout=budget + 15.0,
                metadata=user_metadata(user),
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc, "Python sandbox")
        error = None
        if reply.HasField("error") and reply.error.category:
            category = py_sandbox_pb2.RunErrorCategory.Name(reply.error.category)
            error = {"category": category.removeprefix("RUN_ERROR_CATEGORY_"), "message": reply.error.message}
        return JSONResponse(
            {
                "result": json.loads(reply.result_json) if reply.result_json else None,
                "table": table_json(reply.result_table, settings.workspace_max_rows)
                if reply.HasField("result_table") and reply.result_table.columns
                else None,
                "stdout": reply.stdout,
                "stderr": reply.stderr,
                "stdout_truncated": reply.stdout_truncated,
                "figures": [
                    f"data:{f.mime_type};base64,{base64.b64encode(f.data).decode()}" for f in reply.figures
                ],
                "error": error,
                "elapsed_ms": reply.elapsed_ms,
            }
        )

    return router
