"""DeleteDataset over gRPC: the session's files are gone, its queries fail, and a twin upload still works."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from common.errors import error_info
from insightx.v1 import sql_engine_pb2 as pb
from tests.services.sql_engine.conftest import SALES_CSV, Served, upload

pytestmark = pytest.mark.integration


async def test_a_deleted_dataset_leaves_no_file_and_answers_not_found(served: Served) -> None:
    kept = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id
    gone = (await upload(served.stub, SALES_CSV.encode(), "s.csv")).session_id  # same hash as `kept`
    sql = "SELECT count(*) AS n FROM s"
    await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=gone, sql=sql))  # caches its database
    folder = Path(served.engine.store.sessions) / gone
    assert (folder / "data" / "raw.parquet").exists()

    reply = await served.stub.DeleteDataset(pb.DeleteDatasetRequest(session_id=gone))

    assert reply.session_id == gone and reply.freed_bytes > 0
    assert not folder.exists()
    for call in (
        served.stub.DescribeDataset(pb.DescribeDatasetRequest(session_id=gone)),
        served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=gone, sql=sql, bypass_cache=True)),
        served.stub.DeleteDataset(pb.DeleteDatasetRequest(session_id=gone)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        assert error_info(failed.value).reason == "DATASET_NOT_FOUND"
    twin = await served.stub.ExecuteSql(pb.ExecuteSqlRequest(session_id=kept, sql=sql, bypass_cache=True))
    assert twin.result.row_count == 1  # the twin's database was reopened on its own file


async def test_delete_refuses_an_id_that_could_escape_the_store(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.stub.DeleteDataset(pb.DeleteDatasetRequest(session_id="../etc"))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
