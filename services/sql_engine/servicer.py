"""The gRPC adapter of the SQL engine: protobuf in, plain calls (off the event loop), protobuf out."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from common.arrow import to_table_result
from common.errors import InsightError, InvalidInput, abort_with
from common.store import DatasetRecord
from insightx.v1 import common_pb2, sql_engine_pb2 as pb, sql_engine_pb2_grpc
from services.sql_engine.engine import SqlEngine


def _columns(record: DatasetRecord) -> list[common_pb2.Column]:
    return [common_pb2.Column(name=c["name"], type=c["type"]) for c in record.columns]


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
            with os.fdopen(fd, "wb") as sink:
                async for message in request_iterator:
                    if message.HasField("metadata"):
                        metadata = message.metadata
                    elif message.HasField("chunk"):
                        if metadata is None:
                            raise InvalidInput("METADATA_FIRST", "Send ImportMetadata before any chunk.")
                        size += len(message.chunk)
                        if size > limit:
                            raise InvalidInput(
                                "FILE_TOO_LARGE", f"The file is larger than the {limit:,}-byte limit."
                            )
                        sink.write(message.chunk)
            if metadata is None:
                raise InvalidInput("METADATA_FIRST", "Send ImportMetadata (the file name) first.")
            record, profile = await asyncio.to_thread(self.engine.import_dataset, raw, metadata.filename)
            return pb.ImportDatasetResponse(
                session_id=record.session_id,
                table=record.table,
                row_count=record.row_count,
                columns=_columns(record),
                dataset_hash=record.dataset_hash,
                profile=profile,
                source_format=record.source_format,
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
        )

    async def ValidateSql(
        self, request: pb.ValidateSqlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateSqlResponse:
        try:
            kind = self.engine.validate(request.sql)
        except InsightError as exc:
            return pb.ValidateSqlResponse(valid=False, reason=exc.reason, message=exc.message)
        return pb.ValidateSqlResponse(valid=True, statement_type=kind)

    async def ExecuteSql(
        self, request: pb.ExecuteSqlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecuteSqlResponse:
        try:
            result = await asyncio.to_thread(
                self.engine.execute, request.session_id, request.sql, request.max_rows, request.timeout_ms
            )
        except InsightError as exc:
            await abort_with(context, exc)
            raise
        return pb.ExecuteSqlResponse(
            result=to_table_result(result.table, result.truncated), elapsed_ms=result.elapsed_ms
        )

    async def GetEngineStatus(
        self, request: pb.GetEngineStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEngineStatusResponse:
        return pb.GetEngineStatusResponse(running_queries=self.engine.running_queries)
