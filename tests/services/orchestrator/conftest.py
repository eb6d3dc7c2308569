"""Real servers on loopback for the orchestrator's integration tests, and a scripted model behind fake Bytez.

The SQL engine, the sandbox and a demo dataset live for the whole module; each test gets its own fake Bytez
server, LLM gateway and orchestrator (cheap, in-process), so key states and caches never leak between tests.
`ScriptedModel` plays the five agents: it tells them apart by the registry's system prompts and answers from
per-agent queues or handlers, recording every prompt it was shown. `CountingProxy` sits between the
orchestrator and the LLM gateway and counts the calls it forwards, by method.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from common.channels import open_channel
from common.server import RunningServer
from insightx.v1 import (
    common_pb2,
    orchestrator_pb2_grpc,
    py_sandbox_pb2_grpc,
    sql_engine_pb2_grpc,
)
from insightx.v1 import (
    orchestrator_pb2 as opb,
)
from insightx.v1 import (
    sql_engine_pb2 as spb,
)
from services.llm_gateway.agents import default_agents
from services.llm_gateway.server import start as start_llm_gateway
from services.llm_gateway.settings import LlmGatewaySettings
from services.orchestrator.server import start as start_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.py_sandbox.server import start as start_sandbox
from services.py_sandbox.settings import PySandboxSettings
from services.sql_engine.server import start as start_sql_engine
from services.sql_engine.settings import SqlEngineSettings
from tests.fakes.fake_llm_server import FakeLlmServer
from tools.demo_data import write_csv

DEMO_ROWS = 20_000
AGENT_BY_PROMPT = {config.system_prompt: name for name, config in default_agents().items()}

Handler = Callable[[str], str]


class ScriptedModel:
    """The agents' replies: queued per agent, else the agent's handler (given the user prompt)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queues: dict[str, deque[str | Handler]] = defaultdict(deque)
        self.handlers: dict[str, Handler] = {
            "classifier": lambda _: '{"classification": "SQL_ONLY", "reasoning": "one aggregate"}',
            "validator": lambda _: '{"valid": true, "issues": [], "confidence": 0.9}',
            "composer": lambda _: 'Here is what the data says.\n{"follow_ups": ["And by state?"]}',
        }
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []

    def queue(self, agent: str, *replies: str | Handler) -> None:
        with self._lock:
            self.queues[agent].extend(replies)

    def prompts(self, agent: str) -> list[str]:
        """The first user message of each call of `agent`, in order."""
        return [
            next(m["content"] for m in msgs if m["role"] == "user") for a, msgs in self.calls if a == agent
        ]

    def count(self, agent: str) -> int:
        return sum(1 for a, _ in self.calls if a == agent)

    def __call__(self, messages: list[dict[str, Any]], model: str) -> str:
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        agent = AGENT_BY_PROMPT.get(system, "unknown")
        prompt = next((m["content"] for m in messages if m.get("role") == "user"), "")
        with self._lock:
            self.calls.append((agent, messages))
            reply: str | Handler | None = self.queues[agent].popleft() if self.queues[agent] else None
        if reply is None:
            handler = self.handlers.get(agent)
            if handler is None:
                return "I have nothing scripted for this."
            return handler(prompt)
        return reply(prompt) if callable(reply) else reply


class CountingProxy(grpc.GenericRpcHandler):
    """A pass-through for unary calls to `target` (bytes in, bytes out, errors with their details)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.calls: Counter[str] = Counter()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._server: grpc.aio.Server | None = None
        self.address = ""

    def _channel(self) -> grpc.aio.Channel:
        if self.target not in self._channels:
            self._channels[self.target] = grpc.aio.insecure_channel(self.target)
        return self._channels[self.target]

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls[method.rsplit("/", 1)[-1]] += 1
            call = self._channel().unary_unary(method)
            try:
                metadata = [
                    (k, v)
                    for k, v in context.invocation_metadata() or ()
                    if not k.startswith((":", "grpc-")) and k != "user-agent"
                ]
                reply: bytes = await call(request, timeout=context.time_remaining(), metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
                raise
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)

    async def start(self) -> CountingProxy:
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([self])
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        for channel in self._channels.values():
            await channel.close()


@dataclass
class Backend:
    """The module's SQL engine and sandbox, with the demo dataset imported."""

    data_dir: Path
    csv: Path
    sql_addr: str
    sandbox_addr: str
    session_id: str
    table: str
    sql: sql_engine_pb2_grpc.SqlEngineServiceStub
    sandbox: py_sandbox_pb2_grpc.PySandboxServiceStub


@dataclass
class Chat:
    """A running orchestrator (with its own gateway and fake Bytez) and a client to it."""

    backend: Backend
    fake: FakeLlmServer
    model: ScriptedModel
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub
    settings: OrchestratorSettings
    proxy: CountingProxy
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def model_calls(self) -> int:
        """Completions the orchestrator asked the LLM gateway for (failed ones included)."""
        return self.proxy.calls["Complete"] + self.proxy.calls["StreamComplete"]

    async def ask(
        self,
        message: str,
        chat_id: str = "chat-1",
        history: list[tuple[str, str]] | None = None,
        last_event_seq: int = 0,
        timeout: float = 60.0,
    ) -> list[opb.ChatEvent]:
        request = opb.ChatRequest(
            chat_id=chat_id,
            session_id=self.backend.session_id,
            message=message,
            history=[common_pb2.ChatMessage(role=r, content=c) for r, c in history or []],
            last_event_seq=last_event_seq,
        )
        return [event async for event in self.stub.Chat(request, timeout=timeout)]


def kinds(events: list[opb.ChatEvent]) -> list[str]:
    return [str(e.WhichOneof("payload")) for e in events]


def of_kind(events: list[opb.ChatEvent], kind: str) -> list[Any]:
    return [getattr(e, kind) for e in events if e.WhichOneof("payload") == kind]


async def _import(stub: sql_engine_pb2_grpc.SqlEngineServiceStub, path: Path) -> spb.ImportDatasetResponse:
    async def chunks() -> AsyncIterator[spb.ImportDatasetRequest]:
        yield spb.ImportDatasetRequest(metadata=spb.ImportMetadata(filename=path.name))
        with path.open("rb") as source:
            while block := source.read(1 << 20):
                yield spb.ImportDatasetRequest(chunk=block)

    return await stub.ImportDataset(chunks(), timeout=120)


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("demo") / "upi_transactions.csv", rows=DEMO_ROWS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path) -> AsyncIterator[Backend]:
    data_dir = tmp_path_factory.mktemp("data")
    sql = await start_sql_engine(SqlEngineSettings(data_dir=data_dir), "[::]:0")
    sandbox = await start_sandbox(
        PySandboxSettings(data_dir=data_dir, sandbox_zygotes=1, sandbox_allow_weak=True), "[::]:0"
    )
    sql_channel = open_channel(f"127.0.0.1:{sql.port}")
    sandbox_channel = open_channel(f"127.0.0.1:{sandbox.port}")
    sql_stub = sql_engine_pb2_grpc.SqlEngineServiceStub(sql_channel)
    imported = await _import(sql_stub, demo_csv)
    try:
        yield Backend(
            data_dir=data_dir,
            csv=demo_csv,
            sql_addr=f"127.0.0.1:{sql.port}",
            sandbox_addr=f"127.0.0.1:{sandbox.port}",
            session_id=imported.session_id,
            table=imported.table,
            sql=sql_stub,
            sandbox=py_sandbox_pb2_grpc.PySandboxServiceStub(sandbox_channel),
        )
    finally:
        await sql_channel.close()
        await sandbox_channel.close()
        await sandbox.stop(0)
        await sql.stop(0)


StartChat = Callable[..., Awaitable[Chat]]


@pytest.fixture
def fake_llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer(keys=["key-one", "key-two"]) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module")
async def start_chat(backend: Backend, fake_llm: FakeLlmServer, tmp_path: Path) -> AsyncIterator[StartChat]:
    """Starts gateway + orchestrator; `keys=None` configures no key at all; settings override defaults."""
    running: list[RunningServer] = []
    proxies: list[CountingProxy] = []
    chats: list[Chat] = []

    async def start(keys: str | None = "key-one,key-two", **overrides: Any) -> Chat:
        model = ScriptedModel()
        fake_llm.responder = model
        llm_settings: dict[str, Any] = {"data_dir": tmp_path, "BYTEZ_BASE_URL": fake_llm.base_url}
        if keys:
            llm_settings["BYTEZ_API_KEYS"] = keys
        gateway = await start_llm_gateway(
            LlmGatewaySettings(**llm_settings, llm_retry_backoff_s=0.0, llm_max_attempts=2), "[::]:0"
        )
        running.append(gateway)
        proxy = await CountingProxy(f"127.0.0.1:{gateway.port}").start()
        proxies.append(proxy)
        settings = OrchestratorSettings(
            **{
                "data_dir": tmp_path,
                "sql_engine_addr": backend.sql_addr,
                "py_sandbox_addr": backend.sandbox_addr,
                "llm_gateway_addr": proxy.address,
                **overrides,
            }
        )
        orchestrator = await start_orchestrator(settings, "[::]:0")
        running.append(orchestrator)
        channel = open_channel(f"127.0.0.1:{orchestrator.port}")
        chat = Chat(
            backend,
            fake_llm,
            model,
            orchestrator_pb2_grpc.OrchestratorServiceStub(channel),
            settings,
            proxy,
            [channel],
        )
        chats.append(chat)
        return chat

    yield start
    for chat in chats:
        for channel in chat.channels:
            await channel.close()
    for proxy in proxies:
        await proxy.stop()
    for server in reversed(running):
        await server.stop(0)
