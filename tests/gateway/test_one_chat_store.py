"""One chat store: the gateway's repository is a chat's only record, and the orchestrator keeps none.

Two gateway processes share one data directory (so one chat store), each calling its own orchestrator
process. The turns of one chat alternate between them: a follow-up ("and for HDFC?") only makes sense with
the turn before it, which the answering orchestrator never saw; it is answered right, and the same way
whichever orchestrator answers it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.sse import parse
from tests.gateway.stacks import http, upload
from tools.stack import ROOT, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

BANKS = ("SBI", "HDFC", "ICICI")


def mean_for(bank: str) -> float:
    """The small CSV's amounts (10 + i, bank i % 3), averaged for one bank."""
    amounts = [10 + i for i in range(120) if BANKS[i % 3] == bank]
    return sum(amounts) / len(amounts)


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"a second process exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/health", timeout=2.0).json()["services"].get("orchestrator") == "SERVING":
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready")


@pytest.fixture(scope="module")
def second(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second orchestrator process (with a data directory of its own: nothing of the first one's to
    read), and a second gateway on the first gateway's data directory (its chat store) calling it."""
    port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    orchestrator_env = {
        **stack.env("orchestrator"),
        "INSIGHTX_ORCHESTRATOR_ADDR": address,
        "INSIGHTX_DATA_DIR": str(tmp_path_factory.mktemp("second-orchestrator")),
    }
    gateway_env = {
        **stack.env("gateway"),
        "INSIGHTX_ORCHESTRATOR_ADDR": address,
        "INSIGHTX_GATEWAY_PORT": str(http_port),
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "services.orchestrator"], cwd=ROOT, env=orchestrator_env),
        subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=gateway_env),
    ]
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait(url, procs[1])
        http.tokens[url] = http.tokens[stack.base_url]  # one data directory: the same embedded user
        yield url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ask(
    base: str, session_id: str, message: str, chat_id: str | None = None, **extra: Any
) -> tuple[str, Any]:
    """One turn through the gateway at `base`: the chat's id and the final_response's data."""
    body: dict[str, Any] = {"session_id": session_id, "message": message, **extra}
    if chat_id is not None:
        body["chat_id"] = chat_id
    reply = http.post(f"{base}/api/chat/stream", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    events = parse(reply.text).events
    assert events[-1]["type"] == "final_response", events[-1]
    return reply.headers["x-chat-id"], events[-1]["data"]


@pytest.fixture(scope="module")
def session(stack: Stack, small_csv: Path) -> str:
    return str(upload(stack.base_url, small_csv)["session_id"])


def test_turns_of_one_chat_alternate_between_two_orchestrators(
    stack: Stack, second: str, session: str
) -> None:
    first, other = stack.base_url, second
    question = "What is the average amount for SBI?"
    follow_ups: list[Any] = []
    for one, two in ((first, other), (other, first)):  # A then B, and B then A
        chat_id, opening = ask(one, session, question)
        assert opening["answer"] == mean_for("SBI"), opening
        same_chat, follow_up = ask(two, session, "and for HDFC?", chat_id)
        assert same_chat == chat_id
        assert follow_up["answer"] == mean_for("HDFC"), follow_up
        follow_ups.append(follow_up)
    # the same turn, with the same history, is answered the same way by either orchestrator
    a, b = follow_ups
    assert (a["answer"], a["sql"], a["text"]) == (b["answer"], b["sql"], b["text"])
    # the chat's record is the gateway's, seen alike through either gateway
    one = http.get(f"{first}/api/chats/{chat_id}/messages").json()["messages"]
    two = http.get(f"{other}/api/chats/{chat_id}/messages").json()["messages"]
    assert one == two and [m["role"] for m in one] == ["user", "assistant"] * 2
    # and the orchestrators wrote no chat of their own
    assert not (stack.data_dir / "orchestrator").exists()


def test_a_follow_up_without_its_chat_is_its_own_question(stack: Stack, session: str) -> None:
    """Control: the follow-up's meaning really comes from the stored turn (no chat, no HDFC total)."""
    _, alone = ask(stack.base_url, session, "and for HDFC?")
    assert alone["answer"] != mean_for("HDFC")


def test_a_client_history_starts_a_new_chat_and_is_ignored_for_a_known_one(
    stack: Stack, session: str
) -> None:
    history = [
        {"role": "user", "content": "What is the average amount for SBI?"},
        {"role": "assistant", "content": f"The average is {mean_for('SBI')}."},
    ]
    chat_id, data = ask(stack.base_url, session, "and for HDFC?", history=history)
    assert data["answer"] == mean_for("HDFC")
    stored = http.get(f"{stack.base_url}/api/chats/{chat_id}/messages").json()["messages"]
    assert [m["content"] for m in stored][:3] == [h["content"] for h in history] + ["and for HDFC?"]
    # for a chat the store knows, what the client sends as history does not count: the stored turns do
    chat_id, _ = ask(stack.base_url, session, "What is the average amount for SBI?")
    misleading = [{"role": "user", "content": "How many rows have status FAILED?"}]
    _, data = ask(stack.base_url, session, "and for ICICI?", chat_id, history=misleading)
    assert data["answer"] == mean_for("ICICI")
