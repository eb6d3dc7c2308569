"""The gRPC adapter of the SQL engine: protobuf in, plain calls (off the event loop), protobuf out."""

from __future__ import annotations

import asyncio
import logging
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
from services.sql_engine.spool import Upload

log = logging.getLogger(__name__)
_IMPORT_STOP_S = 10.0  # how long a refusal waits for the import it stops
_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _columns(record: DatasetRecord) -> list[common_pb2.Column]:
    return [common_pb2.Column(name=c["name"], type=c["type"]) for c in record.columns]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks an import's failure as seen when the call ended for another reason (the upload failed)."""
    if not future.cancelled():
        future.exception()


async def _next_unless(
    messages: AsyncIterator[pb.ImportDatasetRequest | memoryview], importing: asyncio.Future[Any] | None
) -> pb.ImportDatasetRequest | memoryview | None:
    """The next message of an upload; None at its end, or once the import has ended before it (it failed
    on the head: not a table, a wrong format), so the client hears why without sending the rest."""
    if importing is not None and importing.done():
        return None
    next_message = asyncio.ensure_future(anext(messages))
    if importing is not None:
        await asyncio.wait({next_message, importing}, return_when=asyncio.FIRST_COMPLETED)
        if not next_message.done():
            next_message.cancel()
            return None
    try:
        return await next_message
    except StopAsyncIteration:
        return None


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
        self,
        request_iterator: AsyncIterator[pb.ImportDatasetRequest | memoryview],
        context: grpc.aio.ServicerContext,
    ) -> pb.ImportDatasetResponse:
        limit = self.engine.settings.max_upload_bytes
        upload = Upload(self.engine.spool_files)
        left = threading.Event()  # the client left: the import thread stops instead of running on
        importing: asyncio.Future[tuple[DatasetRecord, pb.DatasetProfile | None]] | None = None
        stored = False
        try:
            metadata: pb.ImportMetadata | None = None
            started = time.perf_counter()
            messages = aiter(request_iterator)
            while (message := await _next_unless(messages, importing)) is not None:
                if isinstance(message, memoryview) or message.HasField("chunk"):
                    if metadata is None:
                        raise InvalidInput("METADATA_FIRST", "Send ImportMetadata before any chunk.")
                    # a view of the received bytes (chunks.py), or a copy when protobuf parsed the message
                    chunk = message if isinstance(message, memoryview) else message.chunk
                    if upload.size + len(chunk) > limit:
                        raise InvalidInput("FILE_TOO_LARGE", too_large_message(limit))
                    upload.append(chunk)
                elif message.HasField("metadata") and importing is None:  # a second one changes nothing
                    metadata = message.metadata
                    # The import starts now and reads the upload as it arrives (spool.py).
                    importing = asyncio.ensure_future(
                        asyncio.to_thread(
                            self.engine.import_dataset,
                            upload.path,
                            metadata.filename,
                            metadata.sheet,
                            left,
                            upload,
                        )
                    )
                    importing.add_done_callback(_retrieve)
            if metadata is None or importing is None:
                raise InvalidInput("METADATA_FIRST", "Send ImportMetadata (the file name) first.")
            if not importing.done():
                upload.finish()
            received = time.perf_counter()
            try:
                record, profile = await importing
            except asyncio.CancelledError:
                left.set()
                raise
            stored = True
            log.info(
                "dataset imported",
                extra={
                    "session_id": record.session_id,
                    "rows": record.row_count,
                    "bytes": upload.size,
                    "format": record.source_format,
                    "receive_ms": round((received - started) * 1000, 1),
                    # the import overlaps the receiving: this is what it took after the last byte
                    "import_after_receive_ms": round((time.perf_counter() - received) * 1000, 1),
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
            if importing is not None and not importing.done():
                # Refused while receiving: the import stops at once (it waits for bytes that will not come,
                # or reads a stream that ends now); answer once it has removed its work, for a refusal to
                # leave nothing behind.
                left.set()
                upload.fail()
                await asyncio.wait({importing}, timeout=_IMPORT_STOP_S)
            await abort_with(context, exc)
            raise
        finally:
            if importing is not None and not importing.done():
                left.set()  # the upload failed or the client left: the import stops
            upload.discard(keep=stored)  # a stored upload's file is rewritten by the next (spool.py)

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
