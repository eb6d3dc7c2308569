"""The gRPC adapter of the SQL engine: protobuf in, plain calls (off the event loop), protobuf out."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from common.arrow import to_table_result
from common.errors import InsightError, InvalidInput, abort_with
from common.identity import current_user_id, user_id_from_metadata
from common.server import is_resource_exhaustion
from common.store import DatasetRecord
from insightx.v1 import common_pb2, sql_engine_pb2_grpc
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.deletion import delete_dataset
from services.sql_engine.engine import SqlEngine, too_large_message
from services.sql_engine.executor import QueryHandle
from services.sql_engine.profiles import state_of

log = logging.getLogger(__name__)
_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _columns(record: DatasetRecord) -> list[common_pb2.Column]:
    return [common_pb2.Column(name=c["name"], type=c["type"]) for c in record.columns]


def user_of(context: grpc.aio.ServicerContext) -> str:
    """The calling user, when the call names one (`insightx-user-id`), for per-user caps ("" if none).

    Set by the credential interceptor for an authenticated caller; else read from the metadata, which is
    enough for a cap (a caller who invents ids is still held by its session's cap).
    """
    user = current_user_id(context)
    if user is None:
        try:
            user = user_id_from_metadata(context.invocation_metadata())
        except ValueError:
            user = None
    return user or ""


class SqlEngineServicer(sql_engine_pb2_grpc.SqlEngineServiceServicer):
    """Translates SqlEngineService calls to SqlEngine."""

    def __init__(self, engine: SqlEngine, spool_dir: Path) -> None:
        self.engine = engine
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)

    async def ImportDataset(
        self, request_iterator: AsyncIterator[pb.ImportDatasetRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportDatasetResponse:
        limit = self.engine.settings.max_upload_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
        raw = Path(name)
        try:
            metadata: pb.ImportMetadata | None = None
            size = 0
            started = time.perf_counter()
            with os.fdopen(fd, "wb") as sink:
                async for message in request_iterator:
                    if message.HasField("metadata"):
                        metadata = message.metadata
                    elif message.HasField("chunk"):
                        if metadata is None:
                            raise InvalidInput("METADATA_FIRST", "Send ImportMetadata before any chunk.")
                        chunk = message.chunk  # each access copies the bytes: once
                        size += len(chunk)
                        if size > limit:
                            raise InvalidInput("FILE_TOO_LARGE", too_large_message(limit))
                        sink.write(chunk)
            if metadata is None:
                raise InvalidInput("METADATA_FIRST", "Send ImportMetadata (the file name) first.")
            received = time.perf_counter()
            left = threading.Event()  # the client left: the import thread stops instead of running on
            try:
                record, profile = await asyncio.to_thread(
                    self.engine.import_dataset, raw, metadata.filename, metadata.sheet, left
                )
            except asyncio.CancelledError:
                left.set()
                raise
            log.info(
                "dataset imported",
                extra={
                    "session_id": record.session_id,
                    "rows": record.row_count,
                    "bytes": size,
                    "format": record.source_format,
                    "receive_ms": round((received - started) * 1000, 1),
                    "import_ms": round((time.perf_counter() - received) * 1000, 1),
                },
            )
            return pb.ImportDatasetResponse(
                session_id=record.session_id,
                table=record.table,
                row_count=record.row_count,
                columns=_columns(record),
                dataset_hash=record.dataset_hash,
                profile=profile,
                source_format=record.source_format,
                profile_state=state_of(profile),
            )
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        finally:
            raw.unlink(missing_ok=True)

    async def DescribeDataset(
        self, request: pb.DescribeDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeDatasetResponse:
        try:
            record, profile = await asyncio.to_thread(self.engine.describe, request.session_id)
            if profile is None:
                profile = await self._profile_of(request.session_id, request.wait_for_profile)
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        return pb.DescribeDatasetResponse(
            session_id=record.session_id,
            table=record.table,
            row_count=record.row_count,
            columns=_columns(record),
            dataset_hash=record.dataset_hash,
            profile=profile,
            filename=record.filename,
            profile_state=state_of(profile),
        )

    async def _profile_of(self, session_id: str, wait: bool) -> pb.DatasetProfile | None:
        """A profile not stored yet: this process's job's result when done (or, with `wait`, once done),
        else None (PENDING). Only a caller that waits makes a replica compute a profile it did not start,
        so replicas do not all profile the same table at once."""
        profiles = self.engine.profiles
        job = profiles.running(session_id)
        if job is None and wait:
            job = await asyncio.to_thread(profiles.start, session_id)
        if job is None or not (wait or job.done()):
            return None
        try:
            # shield: a caller that leaves (deadline, cancel) must not cancel the profile itself
            return await asyncio.shield(asyncio.wrap_future(job))
        except InsightError:
            raise
        except Exception as exc:  # the job's own failure (disk, pool closing): say so, the data still works
            if is_resource_exhaustion(exc):
                raise  # this process is spent: the crash-only exit (common/server.py) takes it from here
            log.warning("profile unavailable", extra={"session_id": session_id, "error": repr(exc)[:300]})
            return pb.DatasetProfile(
                failure=f"The profile could not be computed this time ({type(exc).__name__}); ask again."
            )

    async def ValidateSql(
        self, request: pb.ValidateSqlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateSqlResponse:
        try:
            if request.session_id:
                kind, columns = await self.engine.validate_async(
                    request.sql, request.session_id, user_of(context), context.time_remaining()
                )
            else:
                kind, columns = self.engine.validate(request.sql), []
        except InsightError as exc:
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                await abort_with(context, exc)
                raise
            return pb.ValidateSqlResponse(valid=False, reason=exc.reason, message=exc.message)
        return pb.ValidateSqlResponse(
            valid=True,
            statement_type=kind,
            columns=[common_pb2.Column(name=n, type=t) for n, t in columns],
        )

    async def ExecuteSql(
        self, request: pb.ExecuteSqlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteSqlResponse:
        handle = QueryHandle()
        # A client that cancels or times out ends the call: stop DuckDB too, not just the coroutine.
        context.add_done_callback(lambda _: handle.cancel())
        try:
            result = await self.engine.execute_async(
                request.session_id,
                request.sql,
                request.max_rows,
                request.timeout_ms,
                handle=handle,
                use_cache=not request.bypass_cache,
                user_id=user_of(context),
                wait_s=context.time_remaining(),
            )
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        return pb.ExecuteSqlResponse(
            result=to_table_result(result.table, result.truncated),
            elapsed_ms=result.elapsed_ms,
            cached=result.cached,
        )

    async def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDatasetResponse:
        try:
            freed = await asyncio.to_thread(delete_dataset, self.engine, request.session_id)
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        return pb.DeleteDatasetResponse(session_id=request.session_id, freed_bytes=freed)

    async def GetEngineStatus(
        self, request: pb.GetEngineStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEngineStatusResponse:
        return self.engine.status()
