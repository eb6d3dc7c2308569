"""Two replicas of every service and two gateways over one PostgreSQL and one data directory: an
orchestrator replica killed with SIGKILL in the middle of 10 answers loses none of them.

50 chats are made, spread over both gateways; 10 answers run at once (each client on one gateway, each
answer on whichever orchestrator replica that gateway's round robin picked); when every answer is under
way, one orchestrator replica is killed. Each client then resumes through the OTHER gateway with
`Last-Event-ID`, and must receive every event exactly once, in order (seq strictly +1 from 1), ending in
`final_response`: the answers of the live replica are followed, those of the dead one taken over after
its lease (a `status` with stage `resume`, seq going on). Afterwards every chat, message and dataset is
still listed through the API.

The model is the fake OpenAI-wire server of tests/fakes, configured as the LLM gateways' provider and
answering each agent after a delay, so an answer takes a few seconds: long enough to be killed in the
middle (no test-only path in the product).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_llm_server import FakeLlmServer
from tests.fakes.slow_model import SlowModel
from tests.gateway.sse import parse
from tests.gateway.stacks import upload
from tools.postgres_server import PostgresServer
from tools.stack import SERVICES, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

TOKEN = "failover-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHATS, IN_FLIGHT = 50, 10
DELAY_S = {"classifier": 0.6, "sql": 0.6, "validator": 0.5, "composer": 1.2}


@dataclass
class Suite:
    """Two of everything: `stacks[i]` holds replica i of each service and gateway i."""

    stacks: tuple[Stack, Stack]
    model: SlowModel

    @property
    def gateways(self) -> tuple[str, str]:
        return self.stacks[0].base_url, self.stacks[1].base_url


def _wait_ready(stack: Stack, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}; see {stack.log_dir}"
        try:
            last = httpx.get(f"{stack.base_url}/health", timeout=3).json()
            if all(last["services"].get(s) == "SERVING" for s in SERVICES):
                return
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise TimeoutError(f"not ready: {last}")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Suite]:
    root = tmp_path_factory.mktemp("failover")
    data = root / "data"
    data.mkdir()
    model = SlowModel(DELAY_S, 40, "And by bank?")
    with FakeLlmServer(keys=["k1"], responder=model) as fake:
        shared = {
            "INSIGHTX_DATABASE_URL": postgres_server.new_database(),
            "INSIGHTX_AUTH_TOKEN": TOKEN,
            "INSIGHTX_GRPC_LISTEN_HOST": "127.0.0.1",
            "BYTEZ_BASE_URL": fake.base_url,
            "BYTEZ_API_KEYS": "k1",
            "INSIGHTX_LLM_BYTEZ_MAX_IN_FLIGHT_PER_KEY": "0",
            "INSIGHTX_ANSWER_CACHE_SIZE": "0",
            "INSIGHTX_ANSWER_LEASE_S": "2",
            "INSIGHTX_SSE_PING_S": "0.5",
            "INSIGHTX_SANDBOX_ZYGOTES": "1",
        }
        first = Stack.on_free_ports(data, log_dir=root / "logs-1", inherit_config=False)
        second = Stack.on_free_ports(data, log_dir=root / "logs-2", inherit_config=False, tokens=first.tokens)
        stacks = (first, second)
        # Every caller is given both replicas of each service; each process binds its own port.
        replicas = {
            f"INSIGHTX_{name.upper()}_ADDR": f"{first.address(name)},{second.address(name)}"
            for name in SERVICES
        }
        try:
            for name in (*SERVICES, "gateway"):
                for stack in stacks:
                    own = {f"INSIGHTX_{name.upper()}_ADDR": stack.address(name)} if name in SERVICES else {}
                    stack.extra_env = {**shared, **replicas, **own}
                    stack.start_one(name)
            for stack in stacks:
                _wait_ready(stack)
            yield Suite(stacks, model)
        except BaseException:
            for log in sorted(root.glob("logs-*/*.log")):
                print(f"--- {log.parent.name}/{log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            for stack in stacks:
                stack.stop()


@dataclass
class Client:
    """One question's reader: the events it received, over however many connections it took."""

    gateway: int
    chat_id: str
    session_id: str
    message: str
    events: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in ("final_response", "error")

    def read(self, base: str, leave: threading.Event | None = None) -> None:
        """One connection: reads events until the terminal one, the end of the stream, or `leave`."""
        headers = {**AUTH, "Last-Event-ID": str(self.last_seq)} if self.events else AUTH
        body = {"chat_id": self.chat_id, "session_id": self.session_id, "message": self.message}
        self.connections += 1
        try:
            with httpx.stream(
                "POST", f"{base}/api/chat/stream", json=body, headers=headers, timeout=60
            ) as reply:
                if reply.status_code == 204:
                    return
                assert reply.status_code == 200, reply.read()
                lines: list[str] = []
                for line in reply.iter_lines():
                    lines.append(line)
                    if line.startswith("data: "):
                        self.events.extend(parse(line).events)
                        if self.done:
                            return
                    if leave is not None and leave.is_set():
                        return  # the client goes away (closing the connection)
        except httpx.HTTPError:
            return  # a dropped connection: resumed like any other end

    def resume(self, base: str) -> None:
        """Reconnects with Last-Event-ID until the terminal event (as the page's reader does: retries)."""
        for _ in range(5):
            self.read(base)
            if self.done:
                return
            time.sleep(0.2)


def test_a_killed_orchestrator_replica_loses_no_answer_chat_message_or_dataset(
    suite: Suite, tmp_path: Path
) -> None:
    gateways = suite.gateways
    csv = tmp_path / "payments.csv"
    csv.write_text("bank,amount\n" + "".join(f"{('SBI', 'HDFC')[i % 2]},{10 + i}\n" for i in range(40)))
    sessions = [str(upload(gateways[i], csv, token=TOKEN)["session_id"]) for i in (0, 1)]
    described = httpx.get(f"{gateways[1]}/api/datasets/{sessions[0]}", headers=AUTH, timeout=30).json()
    suite.model.table = described["table"]

    chats: list[str] = []
    for n in range(CHATS):
        made = httpx.post(
            f"{gateways[n % 2]}/api/chats",
            json={"session_id": sessions[0], "title": f"chat {n}"},
            headers=AUTH,
            timeout=30,
        )
        assert made.status_code == 201, made.text
        chats.append(made.json()["chat_id"])

    clients = [
        Client(n % 2, chats[n], sessions[0], f"How many payments are there? ({n})") for n in range(IN_FLIGHT)
    ]
    leave = threading.Event()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        first_legs = [pool.submit(c.read, gateways[c.gateway], leave) for c in clients]
        deadline = time.monotonic() + 60
        while not all(len(c.events) >= 2 for c in clients):  # every answer is under way
            assert time.monotonic() < deadline, [len(c.events) for c in clients]
            assert not any(f.done() and not c.events for f, c in zip(first_legs, clients, strict=True))
            time.sleep(0.05)
        assert not any(c.done for c in clients), "an answer ended before the kill: make the model slower"
        victim = suite.stacks[0].procs["orchestrator"]
        victim.kill()  # SIGKILL: no goodbye, no lease released
        victim.wait()
        time.sleep(0.3)
        leave.set()
        for leg in first_legs:
            leg.result(timeout=30)
        at_kill = {c.chat_id: c.last_seq for c in clients}
        # Each client resumes through the other gateway, from the last event it has.
        for leg in [pool.submit(c.resume, gateways[1 - c.gateway]) for c in clients]:
            leg.result(timeout=90)

    taken_over = 0
    for client in clients:
        seqs = [int(e["seq"]) for e in client.events]
        assert seqs == list(range(1, len(seqs) + 1)), (client.chat_id, seqs)  # each once, in order
        assert client.events[-1]["type"] == "final_response", client.events[-1]
        assert client.connections >= 2 and at_kill[client.chat_id] < seqs[-1]
        stages = [e.get("data", {}).get("stage") for e in client.events if e["type"] == "status"]
        taken_over += stages.count("resume")
        assert stages.count("resume") <= 1
    assert taken_over >= 1, "no answer ran on the killed replica: the round robin used one replica only"
    print(
        f"{taken_over} of {IN_FLIGHT} answers taken over;"
        f" seq at the kill {sorted(at_kill.values())}, at the end {sorted(c.last_seq for c in clients)}"
    )

    # Nothing is lost: every chat, both datasets, and each answered chat's question and answer, once.
    for base in gateways:
        listed = httpx.get(f"{base}/api/sessions/{sessions[0]}/chats", headers=AUTH, timeout=30).json()
        assert {c["chat_id"] for c in listed["chats"]} == set(chats)
        datasets = httpx.get(f"{base}/api/datasets", headers=AUTH, timeout=30).json()
        assert set(sessions) <= {d["session_id"] for d in datasets["datasets"]}
    for client in clients:
        reply = httpx.get(f"{gateways[0]}/api/chats/{client.chat_id}/messages", headers=AUTH, timeout=30)
        messages = reply.json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"], messages
        assert messages[0]["content"] == client.message
        assert messages[1]["content"] == client.events[-1]["data"]["text"]
