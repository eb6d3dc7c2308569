"""A client that leaves mid-answer cancels the gateway's upstream gRPC call, but not the answer: it runs on
and a resume joins it; POST /api/chat/stop is what stops it. A silent answer still gets heartbeats.

The orchestrator here talks to a "SQL engine" address that accepts TCP connections and never answers, so an
answer hangs at its first step for as long as its deadline (tens of seconds). Only the gateway's cancel can
end the upstream call, and only the stop can end the answer, within the few seconds the test waits.
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


def test_the_answer_outlives_its_client_until_stopped(hanging_stack: Stack, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    base = hanging_stack.base_url
    session_id = upload(base, csv)["session_id"]
    body = {"session_id": session_id, "message": "how many rows are there?"}
    with http.stream("POST", f"{base}/api/chat/stream", json=body, timeout=30) as reply:
        chat_id = reply.headers["x-chat-id"]
        for line in reply.iter_lines():
            if line.startswith("id: "):
                break  # the first event came: the client leaves
    time.sleep(0.5)
    seen: list[str] = []
    stop = {"chat_id": chat_id, "session_id": session_id}
    resume = {**body, "chat_id": chat_id}
    headers = {"Last-Event-ID": "1"}
    with http.stream("POST", f"{base}/api/chat/stream", json=resume, headers=headers, timeout=30) as again:
        assert again.status_code == 200  # still running: the resume joins it (a finished one answers 204)
        for line in again.iter_lines():
            seen.append(line)
            if line.startswith(": ping"):
                stopped = http.post(f"{base}/api/chat/stop", json=stop, timeout=10)
                assert stopped.status_code == 200 and stopped.json() == {"stopped": True}, stopped.text
    sse = parse("\n".join(seen))
    assert sse.types == ["error"] and sse.events[0]["code"] == "CANCELLED"
    assert sse.ids == [str(sse.events[0]["seq"])] and sse.events[0]["seq"] == 2
    assert http.post(f"{base}/api/chat/stop", json=stop, timeout=10).json() == {"stopped": False}
    gone = http.post(f"{base}/api/chat/stop", json={**stop, "chat_id": "no-such-chat"}, timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "CHAT_NOT_FOUND"


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
