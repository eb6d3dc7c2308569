"""Internal credentials over real gRPC: who is let in, who is refused and how, and the user id they carry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from common.auth import ServerAuth, current_caller, token_digest
from common.channels import open_channel
from common.errors import error_info
from common.identity import USER_ID_METADATA_KEY, current_user_id, with_user
from common.logging import request_id_var
from common.server import RunningServer, create_server
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc, sql_engine_pb2_grpc
from insightx.v1 import sql_engine_pb2 as pb

GATEWAY = "gateway-token-" + "g" * 24
ORCHESTRATOR = "orchestrator-token-" + "o" * 24
SQL = pb.DESCRIPTOR.services_by_name["SqlEngineService"].full_name
CHAT = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


class _Engine(sql_engine_pb2_grpc.SqlEngineServiceServicer):
    """Reports who called and for which user; counts the calls that reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None, str]] = []

    async def GetEngineStatus(self, request, context):  # type: ignore[no-untyped-def]
        self.seen.append((current_caller(), current_user_id(context), request_id_var.get()))
        return pb.GetEngineStatusResponse(running_queries=len(self.seen))

    async def ImportDataset(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.seen.append((current_caller(), current_user_id(), "import"))
        return pb.ImportDatasetResponse(session_id="x")


class _Front(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """A server stream whose handler calls the engine, as the orchestrator calls its peers."""

    def __init__(self, engine_address: str) -> None:
        self.engine_address = engine_address

    async def Chat(self, request, context):  # type: ignore[no-untyped-def]
        async with open_channel(self.engine_address, token=ORCHESTRATOR) as channel:
            await sql_engine_pb2_grpc.SqlEngineServiceStub(channel).GetEngineStatus(
                pb.GetEngineStatusRequest()
            )
        yield orchestrator_pb2.ChatEvent(seq=1)


@pytest.fixture
async def engine() -> AsyncIterator[tuple[RunningServer, _Engine]]:
    """An engine that recognises both callers (the gateway's by token, the orchestrator's by digest)
    and lets in the orchestrator only."""
    servicer = _Engine()
    running = await create_server(
        "127.0.0.1:0",
        [SQL],
        lambda s: sql_engine_pb2_grpc.add_SqlEngineServiceServicer_to_server(servicer, s),
        auth=ServerAuth.build(
            {"gateway": GATEWAY, "orchestrator": token_digest(ORCHESTRATOR)}, ["orchestrator"]
        ),
    )
    await running.set_serving()
    yield running, servicer
    await running.stop(0)


async def _status(
    port: int, token: str, metadata: tuple[tuple[str, str], ...] = ()
) -> pb.GetEngineStatusResponse:
    async with open_channel(f"127.0.0.1:{port}", token=token) as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        return await stub.GetEngineStatus(pb.GetEngineStatusRequest(), metadata=metadata, timeout=5)


async def _refusal(port: int, token: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _status(port, token, metadata)
    return caught.value


async def test_a_call_without_credentials_is_unauthenticated(engine: tuple[RunningServer, _Engine]) -> None:
    running, servicer = engine
    error = await _refusal(running.port, token="")
    info = error_info(error)
    assert info.code == grpc.StatusCode.UNAUTHENTICATED
    assert info.reason == "INTERNAL_CREDENTIALS_MISSING"
    assert "INSIGHTX_INTERNAL_TOKEN" in info.message
    assert servicer.seen == []


@pytest.mark.parametrize(
    "token", ["wrong-token-" + "w" * 30, token_digest(ORCHESTRATOR), ORCHESTRATOR + "x", ORCHESTRATOR[:-1]]
)
async def test_a_call_with_a_wrong_token_is_unauthenticated(
    engine: tuple[RunningServer, _Engine], token: str
) -> None:
    running, servicer = engine
    error = await _refusal(running.port, token=token)
    assert error_info(error).code == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "INTERNAL_CREDENTIALS_INVALID"
    assert token not in error_info(error).message and ORCHESTRATOR not in error_info(error).message
    assert servicer.seen == []


async def test_a_malformed_authorization_header_is_unauthenticated(
    engine: tuple[RunningServer, _Engine],
) -> None:
    running, _ = engine
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        for value in (ORCHESTRATOR, f"Basic {ORCHESTRATOR}", "Bearer "):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEngineStatus(
                    pb.GetEngineStatusRequest(), metadata=(("authorization", value),), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_known_caller_not_allowed_here_is_permission_denied(
    engine: tuple[RunningServer, _Engine],
) -> None:
    running, servicer = engine
    info = error_info(await _refusal(running.port, token=GATEWAY))
    assert info.code == grpc.StatusCode.PERMISSION_DENIED
    assert info.reason == "CALLER_NOT_ALLOWED" and "gateway" in info.message
    assert servicer.seen == []


async def test_an_allowed_caller_gets_in_with_its_user_id(engine: tuple[RunningServer, _Engine]) -> None:
    running, servicer = engine
    reply = await _status(running.port, ORCHESTRATOR, with_user([("x-request-id", "r-7")], "ana@example.org"))
    assert reply.running_queries == 1
    await _status(running.port, ORCHESTRATOR)
    assert servicer.seen == [
        ("orchestrator", "ana@example.org", "r-7"),
        ("orchestrator", None, servicer.seen[1][2]),
    ]


async def test_a_malformed_user_id_is_invalid_argument(engine: tuple[RunningServer, _Engine]) -> None:
    running, servicer = engine
    info = error_info(await _refusal(running.port, ORCHESTRATOR, ((USER_ID_METADATA_KEY, "a b"),)))
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "USER_ID_INVALID"
    assert servicer.seen == []


async def test_health_needs_no_credentials(engine: tuple[RunningServer, _Engine]) -> None:
    from common.channels import check_health

    running, _ = engine
    async with open_channel(f"127.0.0.1:{running.port}", token="") as anonymous:
        assert await check_health(anonymous, SQL) == "SERVING"


async def test_a_client_stream_is_refused_before_the_handler_reads_it(
    engine: tuple[RunningServer, _Engine],
) -> None:
    running, servicer = engine
    async with open_channel(f"127.0.0.1:{running.port}", token="") as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        chunks = iter([pb.ImportDatasetRequest(chunk=b"x" * 1000)] * 3)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ImportDataset(chunks, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(f"127.0.0.1:{running.port}", token=ORCHESTRATOR) as channel:
        stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
        assert (await stub.ImportDataset(iter([pb.ImportDatasetRequest()]), timeout=5)).session_id == "x"
    assert servicer.seen == [("orchestrator", None, "import")]


async def test_a_peer_forwards_the_user_id_on_its_own_calls(engine: tuple[RunningServer, _Engine]) -> None:
    running, servicer = engine
    front = await create_server(
        "127.0.0.1:0",
        [CHAT],
        lambda s: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
            _Front(f"127.0.0.1:{running.port}"), s
        ),
        auth=ServerAuth.build({"gateway": token_digest(GATEWAY)}, ["gateway"]),
    )
    try:
        async with open_channel(f"127.0.0.1:{front.port}", token=GATEWAY) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            call = stub.Chat(
                orchestrator_pb2.ChatRequest(),
                metadata=with_user([("x-request-id", "chat-1")], "3f1c2b9e-7a0d-4a8e-9d55-0f1f6d3c2a11"),
                timeout=10,
            )
            assert [event.seq async for event in call] == [1]
            # A server stream is refused like a unary call when its caller is not allowed there.
            async with open_channel(f"127.0.0.1:{front.port}", token=ORCHESTRATOR) as stranger:
                denied = orchestrator_pb2_grpc.OrchestratorServiceStub(stranger).Chat(
                    orchestrator_pb2.ChatRequest(), timeout=5
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    [event async for event in denied]
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await front.stop(0)
    assert servicer.seen == [("orchestrator", "3f1c2b9e-7a0d-4a8e-9d55-0f1f6d3c2a11", "chat-1")]


def test_a_server_that_can_recognise_none_of_its_callers_does_not_start() -> None:
    with pytest.raises(SystemExit, match="INSIGHTX_INTERNAL_ORCHESTRATOR_TOKEN"):
        ServerAuth.build({"gateway": GATEWAY}, ["orchestrator"], "LlmGatewayService")
    with pytest.raises(SystemExit, match="at least 16"):
        ServerAuth.build({"orchestrator": "short"}, ["orchestrator"])
    with pytest.raises(SystemExit, match="64 hexadecimal"):
        ServerAuth.build({"orchestrator": "sha256:abc"}, ["orchestrator"])


def test_a_token_shared_by_two_callers_counts_as_the_allowed_one() -> None:
    auth = ServerAuth.build({"gateway": GATEWAY, "orchestrator": GATEWAY}, ["orchestrator"])
    assert auth.identify(GATEWAY) == "orchestrator"
    assert auth.identify("x" * 40) is None
