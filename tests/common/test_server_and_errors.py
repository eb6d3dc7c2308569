"""A real grpc.aio server built by common.server: health, reflection, rich errors, request ids, stop."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.channels import check_health, open_channel
from common.errors import NotFound, abort_with, error_info
from common.logging import JsonFormatter, request_id_var
from common.server import RunningServer, create_server
from insightx.v1 import sql_engine_pb2 as pb
from insightx.v1 import sql_engine_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["SqlEngineService"].full_name


class _Probe(sql_engine_pb2_grpc.SqlEngineServiceServicer):
    """Answers DescribeDataset with NOT_FOUND and echoes the request id it saw in GetEngineStatus."""

    seen_request_ids: list[str]

    def __init__(self) -> None:
        self.seen_request_ids = []

    async def DescribeDataset(self, request, context):  # type: ignore[no-untyped-def]
        await abort_with(
            context, NotFound("DATASET_NOT_FOUND", f"no dataset {request.session_id}", {"k": "v"})
        )

    async def GetEngineStatus(self, request, context):  # type: ignore[no-untyped-def]
        self.seen_request_ids.append(request_id_var.get())
        logging.getLogger("probe").info("status asked")
        return pb.GetEngineStatusResponse(running_queries=7)


@pytest.fixture
async def server() -> AsyncIterator[tuple[RunningServer, _Probe]]:
    probe = _Probe()
    running = await create_server(
        "127.0.0.1:0",
        [SERVICE],
        lambda s: sql_engine_pb2_grpc.add_SqlEngineServiceServicer_to_server(probe, s),
    )
    yield running, probe
    await running.stop(0)


async def test_health_is_not_serving_until_ready(server: tuple[RunningServer, _Probe]) -> None:
    running, _ = server
    channel = open_channel(f"127.0.0.1:{running.port}")
    assert await check_health(channel, SERVICE) == "NOT_SERVING"
    await running.set_serving()
    assert await check_health(channel, SERVICE) == "SERVING"
    assert await check_health(channel, "") == "SERVING"
    await channel.close()


async def _list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    try:
        reply = await call.read()
    finally:
        call.cancel()
    return {s.name for s in reply.list_services_response.service}


async def test_reflection_is_off_by_default(server: tuple[RunningServer, _Probe]) -> None:
    running, _ = server
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list_services(channel)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_when_enabled_lists_the_service_to_credentialed_callers_only() -> None:
    running = await create_server("127.0.0.1:0", [SERVICE], lambda s: None, reflection=True)
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            assert {SERVICE, "grpc.health.v1.Health"} <= await _list_services(channel)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_services(anonymous)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(0)


async def test_errors_carry_code_reason_and_metadata(server: tuple[RunningServer, _Probe]) -> None:
    running, _ = server
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DescribeDataset(pb.DescribeDatasetRequest(session_id="abc"), timeout=5)
    info = error_info(caught.value)
    assert info.code == grpc.StatusCode.NOT_FOUND
    assert info.reason == "DATASET_NOT_FOUND"
    assert info.message == "no dataset abc"
    assert info.metadata == {"k": "v"}


async def test_request_id_from_metadata_reaches_handler_and_logs(
    server: tuple[RunningServer, _Probe], caplog: pytest.LogCaptureFixture
) -> None:
    running, probe = server
    caplog.set_level(logging.INFO, logger="probe")
    async with open_channel(f"127.0.0.1:{running.port}") as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        reply = await stub.GetEngineStatus(
            pb.GetEngineStatusRequest(), metadata=(("x-request-id", "req-42"),), timeout=5
        )
    assert reply.running_queries == 7
    assert probe.seen_request_ids == ["req-42"]
    record = next(r for r in caplog.records if r.name == "probe")
    request_id_var.set("req-42")
    line = json.loads(JsonFormatter("test").format(record))
    assert line["msg"] == "status asked" and line["request_id"] == "req-42" and line["service"] == "test"


async def test_graceful_stop_reports_not_serving() -> None:
    running = await create_server("127.0.0.1:0", [SERVICE], lambda s: None)
    await running.set_serving()
    port = running.port
    channel = open_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    assert (
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    ).status == health_pb2.HealthCheckResponse.SERVING
    await running.stop(0.1)
    assert await check_health(channel, "", timeout_s=1.0) == "UNREACHABLE"
    await channel.close()


class _Clock(sql_engine_pb2_grpc.SqlEngineServiceServicer):
    """Reports the deadline and request id each call arrived with."""

    async def GetEngineStatus(self, request, context):  # type: ignore[no-untyped-def]
        remaining = context.time_remaining()
        rid = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        return pb.GetEngineStatusResponse(
            running_queries=-1 if remaining is None else int(remaining * 1000), open_databases=len(rid)
        )


async def test_channels_give_calls_a_default_deadline_and_the_request_id() -> None:
    running = await create_server(
        "127.0.0.1:0",
        [SERVICE],
        lambda s: sql_engine_pb2_grpc.add_SqlEngineServiceServicer_to_server(_Clock(), s),
    )
    channel = open_channel(f"127.0.0.1:{running.port}", default_deadline_s=3.0)
    try:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        request_id_var.set("abcdef")
        reply = await stub.GetEngineStatus(pb.GetEngineStatusRequest())
        assert 0 < reply.running_queries <= 3_100  # the clock of the deadline is coarse
        assert reply.open_databases == len("abcdef")
        explicit = await stub.GetEngineStatus(pb.GetEngineStatusRequest(), timeout=20)
        assert 3000 < explicit.running_queries <= 20_500  # the clock of the deadline is coarse
    finally:
        request_id_var.set("")
        await channel.close()
        await running.stop(0)
