"""A client that leaves mid-answer cancels the gateway's upstream gRPC call, but not the answer: it runs on
and a resume joins it; POST /api/chat/stop is what stops it. A silent answer still gets heartbeats. An
answer whose client left is read to its end by the gateway (gateway/followers.py) and recorded in the chat
store exactly once, whether or not the client comes back.

The hanging stack's orchestrator talks to a "SQL engine" address that accepts TCP connections and never
answers, so an answer hangs at its first step for as long as its deadline (tens of seconds). Only the
gateway's cancel can end the upstream call, and only the stop can end the answer, within the few seconds
the test waits. The slow stack answers through the language-model path, played by the fake model of
tests/fakes after a delay per agent, so an answer takes a few seconds after its first event.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_llm_server import FakeLlmServer
from tests.fakes.slow_model import SlowModel
from tests.gateway.sse import parse
from tests.gateway.stacks import http, token_of, upload, wait_serving
from tools.stack import ROOT, Stack, free_port

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


def followers(stack: Stack) -> dict[str, int]:
    return http.get(f"{stack.base_url}/api/status").json()["followers"]  # type: ignore[no-any-return]


def turns(stack: Stack, chat_id: str) -> list[tuple[str, str]]:
    reply = http.get(f"{stack.base_url}/api/chats/{chat_id}/messages", timeout=10)
    assert reply.status_code == 200, reply.text
    return [(m["role"], m["content"]) for m in reply.json()["messages"]]


def wait_for_answer(stack: Stack, chat_id: str, timeout_s: float = 20.0) -> list[tuple[str, str]]:
    """The chat's turns once an answer is stored, and a moment later (a second recorder would be done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(role == "assistant" for role, _ in turns(stack, chat_id)):
            time.sleep(1.0)
            return turns(stack, chat_id)
        time.sleep(0.1)
    raise AssertionError(f"no answer stored after {timeout_s} s: {turns(stack, chat_id)}")


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


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
    # The stopped answer is recorded once, as a stop always was: by the resumed stream and by the follower
    # of the stream left first, racing.
    assert wait_for_answer(hanging_stack, chat_id) == [
        ("user", "how many rows are there?"),
        ("assistant", "The answer was stopped."),
    ]
    gone = http.post(f"{base}/api/chat/stop", json={**stop, "chat_id": "no-such-chat"}, timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "CHAT_NOT_FOUND"


def test_ctrl_c_during_ask_stops_the_answer(hanging_stack: Stack, tmp_path: Path) -> None:
    """`insightx ask` interrupted: the CLI asks POST /api/chat/stop, so the server's work ends (recorded
    as a stop) instead of running on to its deadline."""
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        "TERM": "dumb",
        "INSIGHTX_TOKEN": token_of(hanging_stack),
    }
    opened = streams(hanging_stack)["open"]
    question = "how many rows are there?"
    cli = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "ask", str(csv), question, "--url", hanging_stack.base_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: streams(hanging_stack)["open"] > opened, timeout_s=30)  # the answer is under way
        time.sleep(0.3)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == 130, out + err
    said = re.search(r"Interrupted: the answer was stopped \(chat (\w+)\)", " ".join(out.split()))
    assert said is not None, out + err
    assert wait_for_answer(hanging_stack, said[1]) == [
        ("user", question),
        ("assistant", "The answer was stopped."),
    ]


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


DELAY_S = {"classifier": 0.5, "sql": 0.5, "validator": 0.4, "composer": 0.8}
QUESTION = "how many rows are there?"


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A stack answering through the slow fake model; yields it with an uploaded dataset's session."""
    root = tmp_path_factory.mktemp("slow")
    model = SlowModel(DELAY_S, 2, "And by a?")
    with FakeLlmServer(keys=["k1"], responder=model) as fake:
        env = {
            "BYTEZ_BASE_URL": fake.base_url,
            "BYTEZ_API_KEYS": "k1",
            "INSIGHTX_LLM_BYTEZ_MAX_IN_FLIGHT_PER_KEY": "0",
            "INSIGHTX_ANSWER_CACHE_SIZE": "0",
        }
        stack = Stack.on_free_ports(root / "data", extra_env=env, log_dir=root / "logs")
        stack.data_dir.mkdir(parents=True)
        try:
            for name in ("sql_engine", "llm_gateway", "orchestrator", "gateway"):
                stack.start_one(name)
            wait_serving(stack, ["sql_engine", "llm_gateway", "orchestrator"])
            http.register(stack)
            csv = root / "t.csv"
            csv.write_text("a,b\n1,2\n3,4\n")
            dataset = upload(stack.base_url, csv)
            model.table = str(dataset["table"])
            yield stack, str(dataset["session_id"])
        finally:
            stack.stop()


def leave_after_first_event(stack: Stack, session_id: str) -> str:
    """Asks, reads the first event, leaves; answers the chat's id."""
    body = {"session_id": session_id, "message": QUESTION}
    with http.stream("POST", f"{stack.base_url}/api/chat/stream", json=body, timeout=30) as reply:
        assert reply.status_code == 200
        chat_id = reply.headers["x-chat-id"]
        for line in reply.iter_lines():
            if line.startswith("id: "):
                break
    return chat_id


def test_an_answer_whose_client_left_and_never_came_back_is_recorded_once(
    slow_stack: tuple[Stack, str],
) -> None:
    stack, session_id = slow_stack
    before = followers(stack)
    chat_id = leave_after_first_event(stack, session_id)
    assert turns(stack, chat_id) == [("user", QUESTION)]  # the answer is still running
    stored = wait_for_answer(stack, chat_id)
    assert stored == [("user", QUESTION), ("assistant", "There are 2 rows.")], stored
    wait_until(lambda: followers(stack)["recorded"] == before["recorded"] + 1)  # the follower did it
    assert followers(stack)["gave_up"] == before["gave_up"]
    messages = http.get(f"{stack.base_url}/api/chats/{chat_id}/messages", timeout=10).json()["messages"]
    assert messages[1]["card"]["follow_ups"] == ["And by a?"]  # recorded with its card, as a stream does


def test_a_client_that_leaves_then_resumes_gets_one_stored_answer(slow_stack: tuple[Stack, str]) -> None:
    stack, session_id = slow_stack
    chat_id = leave_after_first_event(stack, session_id)
    resume = {"session_id": session_id, "message": QUESTION, "chat_id": chat_id}
    url = f"{stack.base_url}/api/chat/stream"
    with http.stream("POST", url, json=resume, headers={"Last-Event-ID": "1"}, timeout=30) as again:
        assert again.status_code == 200
        sse = parse(again.read().decode())
    assert sse.types[-1] == "final_response" and sse.events[0]["seq"] == 2
    stored = wait_for_answer(stack, chat_id)
    assert stored == [("user", QUESTION), ("assistant", "There are 2 rows.")], stored
    # The next question's history holds that one turn, once.
    body = {"session_id": session_id, "message": "and now?", "chat_id": chat_id}
    assert http.post(url, json=body, timeout=30).status_code == 200
    assert turns(stack, chat_id) == [
        ("user", QUESTION),
        ("assistant", "There are 2 rows."),
        ("user", "and now?"),
        ("assistant", "There are 2 rows."),
    ]
