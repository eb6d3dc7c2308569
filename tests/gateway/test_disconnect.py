"""A client that leaves mid-answer cancels the upstream gRPC call; a silent answer still gets heartbeats.

The orchestrator here talks to a "SQL engine" address that accepts TCP connections and never answers, so an
answer hangs at its first step for as long as its deadline (tens of seconds). Only the gateway's cancel can
end the upstream call within the few seconds the test waits.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.sse import parse
from tests.gateway.stacks import http, upload, wait_serving
from tools.stack import Stack, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hanging_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hanging")
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", free_port()))
    blackhole.listen(64)  # never accepted: connections complete, nothing is ever answered
    stack = Stack.on_free_ports(
        root / "data", extra_env={"INSIGHTX_SSE_PING_S": "0.3"}, log_dir=root / "logs"
    )
    stack.data_dir.mkdir(parents=True)
    stack.start_one("sql_engine")
    stack.start_one("gateway")
    stack.extra_env = {
        **stack.extra_env,
        "INSIGHTX_SQL_ENGINE_ADDR": f"127.0.0.1:{blackhole.getsockname()[1]}",
    }
    stack.start_one("orchestrator")
    try:
        wait_serving(stack, ["sql_engine", "orchestrator"])
        http.register(stack)
        yield stack
    finally:
        stack.stop()
        blackhole.close()


def streams(stack: Stack) -> dict[str, int]:
    return http.get(f"{stack.base_url}/api/status").json()["streams"]  # type: ignore[no-any-return]


def test_leaving_client_cancels_the_upstream_call_and_heartbeats_flow(
    hanging_stack: Stack, tmp_path: Path
) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    session_id = upload(hanging_stack.base_url, csv)["session_id"]
    body = {"session_id": session_id, "message": "how many rows are there?"}
    seen: list[str] = []
    with http.stream("POST", f"{hanging_stack.base_url}/api/chat/stream", json=body, timeout=30) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            seen.append(line)
            if sum(1 for s in seen if s.startswith(": ping")) >= 2:
                during = streams(hanging_stack)
                break  # leaving the loop closes the connection: the client is gone
    assert during["open"] == 1 and during["cancelled"] == 0, during
    sse = parse("\n".join(seen))
    assert sse.events[0]["type"] == "status"  # the answer started, then hung upstream
    assert len([c for c in sse.comments if c.startswith("ping")]) >= 2
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and streams(hanging_stack)["open"] != 0:
        time.sleep(0.05)
    after = streams(hanging_stack)
    assert after["open"] == 0 and after["cancelled"] == 1, after


def test_unreachable_orchestrator_is_an_error_event(hanging_stack: Stack, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    session_id = upload(hanging_stack.base_url, csv)["session_id"]
    hanging_stack.stop_one("orchestrator")
    body = {"session_id": session_id, "message": "how many rows are there?"}
    reply = http.post(f"{hanging_stack.base_url}/api/chat/stream", json=body, timeout=30)
    assert reply.status_code == 200
    events = parse(reply.text).events
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["code"] == "UPSTREAM_UNAVAILABLE" and events[0]["message"]
