"""Two sql_engine replicas on one data directory behind one address: the gateway and the orchestrator
are given `127.0.0.1:p1,127.0.0.1:p2`, their calls spread over both replicas, and when one is killed with
SIGKILL the workspace's queries and the chat's answers keep succeeding on the other.

Each replica's result cache counts the distinct queries it ran (GetEngineStatus.cached_results), which
tells where the gateway's calls went.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from common.channels import internal_metadata
from insightx.v1 import sql_engine_pb2, sql_engine_pb2_grpc
from tests.gateway.stacks import http, start_stack, upload
from tools.stack import ROOT, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class Replicas:
    stack: Stack
    addresses: tuple[str, str]
    second: subprocess.Popen[bytes]


def cached_results(address: str, token: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = sql_engine_pb2_grpc.SqlEngineServiceStub(channel).GetEngineStatus(
            sql_engine_pb2.GetEngineStatusRequest(), metadata=internal_metadata(token), timeout=10
        )
    return int(reply.cached_results)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {"INSIGHTX_SQL_ENGINE_ADDR": f"{first},{second}", "INSIGHTX_GRPC_LISTEN_HOST": "127.0.0.1"}
    stack = start_stack(root / "data", env, services=("sql_engine", "orchestrator"), log_dir=root / "logs")
    # The stack's sql_engine binds the list's first port; the second replica, on the same data directory,
    # is given its own address.
    replica_env = {**stack.env("sql_engine"), "INSIGHTX_SQL_ENGINE_ADDR": second}
    with (root / "logs" / "sql_engine-2.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.sql_engine"], cwd=ROOT, env=replica_env, stderr=log, stdout=log
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the second replica exited with {proc.returncode}"
            try:
                cached_results(second, stack.tokens["gateway"])
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the second replica did not start"
                time.sleep(0.3)
        yield Replicas(stack, (first, second), proc)
    finally:
        proc.kill()
        proc.wait()
        stack.stop()


def _query(base: str, session_id: str, n: int) -> int:
    reply = http.post(
        f"{base}/api/sql/execute",
        json={"session_id": session_id, "sql": f"SELECT count(*) + {n} AS n FROM t"},
    )
    assert reply.status_code == 200, reply.text
    return int(reply.json()["rows"][0]["n"])


def test_queries_spread_over_replicas_and_survive_one_killed(replicas: Replicas, tmp_path: Path) -> None:
    stack, token = replicas.stack, replicas.stack.tokens["gateway"]
    csv = tmp_path / "t.csv"
    csv.write_text("bank,amount\n" + "".join(f"{('SBI', 'HDFC')[i % 2]},{10 + i}\n" for i in range(40)))
    session_id = str(upload(stack.base_url, csv)["session_id"])
    # The second replica started after the gateway: its channel reconnects to it within its backoff.
    start = [cached_results(address, token) for address in replicas.addresses]
    deadline, n = time.monotonic() + 30, 1000
    while any(cached_results(a, token) == was for a, was in zip(replicas.addresses, start, strict=True)):
        assert time.monotonic() < deadline, "the gateway never reached both replicas"
        n += 1
        _query(stack.base_url, session_id, n)
        time.sleep(0.2)
    before = [cached_results(address, token) for address in replicas.addresses]
    assert [_query(stack.base_url, session_id, n) for n in range(20)] == [40 + n for n in range(20)]
    ran = [
        cached_results(address, token) - was for address, was in zip(replicas.addresses, before, strict=True)
    ]
    assert sum(ran) == 20 and min(ran) >= 5, ran  # both replicas served the gateway's calls

    stack.procs["sql_engine"].kill()  # SIGKILL: the first replica is gone without a word
    stack.procs["sql_engine"].wait()
    after = cached_results(replicas.addresses[1], token)
    assert [_query(stack.base_url, session_id, n) for n in range(100, 120)] == [140 + n for n in range(20)]
    assert cached_results(replicas.addresses[1], token) - after == 20
    answer = http.post(
        f"{stack.base_url}/api/chat/stream",
        json={"session_id": session_id, "message": "what is the total amount?"},
        timeout=120,
    )
    assert answer.status_code == 200 and "final_response" in answer.text and "1,180" in answer.text
