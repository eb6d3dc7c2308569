"""Several replicas behind one address: gRPC's own round_robin spreads calls over them, a stopped
replica's share moves to the others, a replica that reports NOT_SERVING gets nothing (client-side health
checking), and idempotent calls in flight while a replica goes away are retried on another.

The replicas are real LlmGatewayService servers on loopback, told apart by the base URL each reports.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from common.channels import BadAddress, channel_target, open_channel, service_config
from common.server import RunningServer
from insightx.v1 import llm_gateway_pb2, llm_gateway_pb2_grpc
from services.llm_gateway.server import start
from services.llm_gateway.settings import LlmGatewaySettings

pytestmark = pytest.mark.integration


def test_a_list_of_replicas_becomes_one_target_of_every_address() -> None:
    assert channel_target("127.0.0.1:5001, 127.0.0.2:5002") == ("ipv4:127.0.0.1:5001,127.0.0.2:5002", True)
    assert channel_target("[::1]:5001,[::1]:5002") == ("ipv6:[::1]:5001,[::1]:5002", True)
    assert channel_target("localhost:5001,127.0.0.1:5002")[0].startswith("ipv4:127.0.0.1:5001,")
    assert channel_target("dns:///sql-engine.insightx.svc:50053") == (
        "dns:///sql-engine.insightx.svc:50053",
        True,
    )
    assert channel_target("localhost:50053") == ("localhost:50053", False)  # one name: DNS, all its records
    for wrong in ("127.0.0.1:1,127.0.0.1", "127.0.0.1:1,:2", "127.0.0.1:1,127.0.0.1:99999"):
        with pytest.raises(BadAddress, match="host1:port1,host2:port2"):
            channel_target(wrong)
    with pytest.raises(BadAddress, match="does not resolve"):
        channel_target("127.0.0.1:1,no-such-replica.invalid:2")


def test_the_service_config_balances_retries_reads_and_checks_health_only_for_replicas() -> None:
    several, one = json.loads(service_config(True)), json.loads(service_config(False))
    assert several["loadBalancingConfig"] == one["loadBalancingConfig"] == [{"round_robin": {}}]
    assert several["healthCheckConfig"] == {"serviceName": ""} and "healthCheckConfig" not in one
    retried = {(n["service"], n["method"]) for c in several["methodConfig"] for n in c["name"]}
    assert ("insightx.v1.SqlEngineService", "ExecuteSql") in retried
    assert not any(method in ("Complete", "RunCode", "ImportDataset", "Chat") for _, method in retried)
    assert all(
        c["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
        for c in several["methodConfig"]
    )


@pytest.fixture
async def replicas() -> AsyncIterator[list[RunningServer]]:
    servers = [
        await start(LlmGatewaySettings(bytez_base_url=f"http://replica-{name}.invalid"), "127.0.0.1:0")
        for name in ("a", "b")
    ]
    yield servers
    for server in servers:
        await server.stop(0)


async def _who_answers(
    stub: llm_gateway_pb2_grpc.LlmGatewayServiceStub, calls: int
) -> collections.Counter[str]:
    answered: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        reply = await stub.GetKeyStatus(llm_gateway_pb2.GetKeyStatusRequest(), timeout=5)
        bytez = next(p for p in reply.providers if p.name == "bytez")
        answered[bytez.base_url.split("//")[1].split(".")[0]] += 1
    return answered


async def _wait_until(predicate: object, stub: object, timeout_s: float = 10.0) -> collections.Counter[str]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            seen = await _who_answers(stub, 10)  # type: ignore[arg-type]
        except grpc.aio.AioRpcError:  # no replica up yet
            seen = collections.Counter()
        if predicate(seen) or asyncio.get_running_loop().time() > deadline:  # type: ignore[operator]
            return seen
        await asyncio.sleep(0.1)


async def test_calls_spread_over_replicas_and_keep_succeeding_when_one_stops(
    replicas: list[RunningServer],
) -> None:
    a, b = replicas
    channel = open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
    try:
        await channel.channel_ready()
        spread = await _wait_until(lambda seen: len(seen) == 2, stub)  # both subchannels connected
        spread = await _who_answers(stub, 40)
        assert spread["replica-a"] == spread["replica-b"] == 20  # round_robin: strictly alternating
        await a.stop(0)
        after = await _who_answers(stub, 30)  # no call fails: the stopped replica drops out
        assert after == {"replica-b": 30}
    finally:
        await channel.close()


async def test_a_replica_that_reports_not_serving_gets_no_calls_until_it_serves_again(
    replicas: list[RunningServer],
) -> None:
    a, b = replicas
    channel = open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
    try:
        assert len(await _wait_until(lambda seen: len(seen) == 2, stub)) == 2
        await a.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert set(await _wait_until(lambda seen: set(seen) == {"replica-b"}, stub)) == {"replica-b"}
        assert await _who_answers(stub, 20) == {"replica-b": 20}
        await a.health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert len(await _wait_until(lambda seen: len(seen) == 2, stub)) == 2
    finally:
        await channel.close()


async def test_calls_in_flight_while_a_replica_stops_gracefully_all_succeed(
    replicas: list[RunningServer],
) -> None:
    a, b = replicas
    channel = open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
    try:
        await _wait_until(lambda seen: len(seen) == 2, stub)
        callers = [asyncio.create_task(_who_answers(stub, 40)) for _ in range(8)]
        await asyncio.sleep(0.05)
        await a.stop(grace_s=2.0)  # SIGTERM's path: NOT_SERVING, calls in flight finish, new ones go to b
        answered = sum((await asyncio.gather(*callers)), collections.Counter())
        assert sum(answered.values()) == 320 and answered["replica-a"] > 0
        assert await _who_answers(stub, 10) == {"replica-b": 10}
    finally:
        await channel.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _replica_process(name: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INSIGHTX_LLM_GATEWAY_ADDR": f"127.0.0.1:{port}",
        "BYTEZ_BASE_URL": f"http://replica-{name}.invalid",
        "INSIGHTX_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.llm_gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_idempotent_calls_in_flight_when_a_replica_is_killed_are_retried_on_another() -> None:
    """SIGKILL: no goodbye, the connection just breaks; the calls it held come back UNAVAILABLE before any
    response and gRPC's retry policy sends them to the other replica."""
    ports = {"a": _free_port(), "b": _free_port()}
    processes = {name: _replica_process(name, port) for name, port in ports.items()}
    channel = open_channel(",".join(f"127.0.0.1:{port}" for port in ports.values()))
    stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
    failures: list[grpc.StatusCode] = []

    async def caller() -> collections.Counter[str]:
        try:
            return await _who_answers(stub, 60)
        except grpc.aio.AioRpcError as exc:
            failures.append(exc.code())
            return collections.Counter()

    try:
        assert len(await _wait_until(lambda seen: len(seen) == 2, stub, timeout_s=60)) == 2
        callers = [asyncio.create_task(caller()) for _ in range(8)]
        await asyncio.sleep(0.1)
        processes["a"].send_signal(signal.SIGKILL)
        answered = sum((await asyncio.gather(*callers)), collections.Counter())
        assert failures == [] and sum(answered.values()) == 480
        assert await _who_answers(stub, 10) == {"replica-b": 10}
    finally:
        await channel.close()
        for process in processes.values():
            process.kill()
            process.wait()
