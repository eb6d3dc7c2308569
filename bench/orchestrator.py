"""The orchestrator's own overhead: a SQL_THEN_PY answer end to end against its SQL and sandbox calls alone.

Starts sql_engine, py_sandbox, llm_gateway and orchestrator as processes on free ports (tools/stack.py), with
the LLM gateway pointed at a fake Bytez server in this process whose scripted model answers at once (zero
latency). Imports the 250k-row demo table, then alternates:

  end to end  Chat("Is the transaction amount related to the hour of day?") → classifier, SQL writer,
              ExecuteSql (every row of two columns), RunCode on that result (Pearson and Spearman),
              validator, composer, final_response — the answer cache is off, so every run does all of it;
  direct      the same ExecuteSql and RunCode(input_table=…) called straight on the services.

and prints the p50 of each and their ratio (target ≤ 1.3): what the pipeline adds — five model hops
through the gateway (two keys, so the SQL draft overlaps the classifier and the composer's draft overlaps
the validator, as in production), events, prompts — over the work it cannot avoid. One model hop's p50 is
printed too.

    .venv/bin/python bench/orchestrator.py
    BENCH_RUNS=50 BENCH_WARMUP=5 .venv/bin/python bench/orchestrator.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.channels import check_health, open_channel  # noqa: E402
from insightx.v1 import (  # noqa: E402
    common_pb2,
    llm_gateway_pb2,
    llm_gateway_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    py_sandbox_pb2,
    py_sandbox_pb2_grpc,
    sql_engine_pb2,
    sql_engine_pb2_grpc,
)
from services.llm_gateway.agents import default_agents  # noqa: E402
from tests.fakes.fake_llm_server import FakeLlmServer  # noqa: E402
from tools.demo_data import write_csv  # noqa: E402
from tools.stack import Stack  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "30"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
TRACE = os.environ.get("BENCH_TRACE") == "1"  # print each event's arrival time
QUESTION = "Is the transaction amount related to the hour of day?"
SQL = 'SELECT "amount (INR)" AS amount, "hour_of_day" AS hour FROM "upi_transactions"'
CODE = (
    "result = {'pearson': float(df['amount'].corr(df['hour'])),\n"
    "          'spearman': float(df['amount'].corr(df['hour'], method='spearman')),\n"
    "          'rows': int(len(df))}"
)
REPLIES = {
    "classifier": '{"classification": "SQL_THEN_PY", "reasoning": "a correlation over every row"}',
    "sql": f"```sql\n{SQL}\n```",
    "python": f"```python\n{CODE}\n```",
    "validator": '{"valid": true, "issues": [], "confidence": 0.9}',
    "composer": 'The amount barely depends on the hour of day.\n{"follow_ups": ["And by weekday?"]}',
}
AGENT_BY_PROMPT = {config.system_prompt: name for name, config in default_agents().items()}


def scripted_model(messages: list[dict[str, Any]], model: str) -> str:
    """A model that answers every agent at once with the scripted reply."""
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    return REPLIES.get(AGENT_BY_PROMPT.get(system, ""), "")


async def wait_serving(addresses: dict[str, str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    for name, address in addresses.items():
        channel = open_channel(address)
        try:
            while await check_health(channel) != "SERVING":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} at {address} is not serving")
                await asyncio.sleep(0.2)
        finally:
            await channel.close()


async def import_demo(stub: sql_engine_pb2_grpc.SqlEngineServiceStub, csv: Path) -> str:
    async def chunks() -> AsyncIterator[sql_engine_pb2.ImportDatasetRequest]:
        yield sql_engine_pb2.ImportDatasetRequest(metadata=sql_engine_pb2.ImportMetadata(filename=csv.name))
        with csv.open("rb") as source:
            while block := source.read(1 << 20):
                yield sql_engine_pb2.ImportDatasetRequest(chunk=block)

    reply = await stub.ImportDataset(chunks(), timeout=300)
    return reply.session_id


async def end_to_end(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, session_id: str, n: int) -> float:
    request = orchestrator_pb2.ChatRequest(chat_id=f"bench-{n}", session_id=session_id, message=QUESTION)
    started = time.perf_counter()
    events = []
    async for event in stub.Chat(request, timeout=120):
        events.append(event)
        if TRACE:
            kind = event.WhichOneof("payload")
            stage = event.status.stage if kind == "status" else ""
            print(f"  {1000 * (time.perf_counter() - started):7.1f} ms  {kind} {stage}")
    elapsed = time.perf_counter() - started
    last = events[-1]
    if last.WhichOneof("payload") != "final_response":
        raise RuntimeError(f"the pipeline did not answer: {last}")
    if last.final_response.cached:
        raise RuntimeError("the answer came from the cache; the benchmark needs it off")
    return elapsed


async def direct(
    sql: sql_engine_pb2_grpc.SqlEngineServiceStub,
    sandbox: py_sandbox_pb2_grpc.PySandboxServiceStub,
    session_id: str,
) -> tuple[float, float, dict[str, Any]]:
    started = time.perf_counter()
    rows = await sql.ExecuteSql(
        sql_engine_pb2.ExecuteSqlRequest(session_id=session_id, sql=SQL, max_rows=1_000_000), timeout=60
    )
    sql_s = time.perf_counter() - started
    started = time.perf_counter()
    request = py_sandbox_pb2.RunCodeRequest(session_id=session_id, code=CODE, timeout_s=30)
    request.input_table.CopyFrom(rows.result)
    run = await sandbox.RunCode(request, timeout=60)
    py_s = time.perf_counter() - started
    if run.error.category:
        raise RuntimeError(f"the direct run failed: {run.error.message}")
    return sql_s, py_s, json.loads(run.result_json)


async def model_hop(stub: llm_gateway_pb2_grpc.LlmGatewayServiceStub) -> float:
    """One scripted completion through the gateway (what each of the five agent steps pays at least)."""
    started = time.perf_counter()
    await stub.Complete(
        llm_gateway_pb2.CompleteRequest(
            agent="validator", messages=[common_pb2.ChatMessage(role="user", content="ok?")]
        ),
        timeout=30,
    )
    return time.perf_counter() - started


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-orchestrator-"))
    csv = write_csv(REPO / "data" / "demo" / "upi_transactions.csv")
    with FakeLlmServer(keys=["bench-key-1", "bench-key-2"], responder=scripted_model) as fake:
        stack = Stack.on_free_ports(
            root / "data",
            log_dir=root / "logs",
            inherit_config=False,
            extra_env={
                "BYTEZ_BASE_URL": fake.base_url,
                "BYTEZ_API_KEYS": "bench-key-1,bench-key-2",  # two keys: validator and composer overlap
                "INSIGHTX_ANSWER_CACHE_SIZE": "0",
                "INSIGHTX_SANDBOX_ZYGOTES": "1",
                "INSIGHTX_LOG_LEVEL": "WARNING",
            },
        )
        services = ("sql_engine", "py_sandbox", "llm_gateway", "orchestrator")
        stack.data_dir.mkdir(parents=True, exist_ok=True)
        for name in services:
            stack.start_one(name)
        try:
            await wait_serving({name: f"127.0.0.1:{stack.ports[name]}" for name in services})
            sql_channel = open_channel(stack.address("sql_engine"), token=stack.tokens["orchestrator"])
            sandbox_channel = open_channel(stack.address("py_sandbox"), token=stack.tokens["orchestrator"])
            chat_channel = open_channel(stack.address("orchestrator"), token=stack.tokens["gateway"])
            sql = sql_engine_pb2_grpc.SqlEngineServiceStub(sql_channel)
            sandbox = py_sandbox_pb2_grpc.PySandboxServiceStub(sandbox_channel)
            chat = orchestrator_pb2_grpc.OrchestratorServiceStub(chat_channel)
            llm_channel = open_channel(stack.address("llm_gateway"), token=stack.tokens["orchestrator"])
            llm = llm_gateway_pb2_grpc.LlmGatewayServiceStub(llm_channel)
            session_id = await import_demo(sql, csv)
            print(f"demo table imported ({csv.name}); {WARMUP} warm-up and {RUNS} timed runs of each")
            for n in range(WARMUP):
                await end_to_end(chat, session_id, -n - 1)
                await direct(sql, sandbox, session_id)
            e2e: list[float] = []
            sql_times: list[float] = []
            py_times: list[float] = []
            sums: list[float] = []
            hops: list[float] = []
            result: dict[str, Any] = {}
            for n in range(RUNS):
                e2e.append(await end_to_end(chat, session_id, n))
                sql_s, py_s, result = await direct(sql, sandbox, session_id)
                sql_times.append(sql_s)
                py_times.append(py_s)
                sums.append(sql_s + py_s)
                hops.append(await model_hop(llm))
            model_calls = len(fake.requests)
            for channel in (sql_channel, sandbox_channel, chat_channel, llm_channel):
                await channel.close()
        finally:
            stack.stop()
    ratio = p50(e2e) / p50(sums)
    print(f"direct ExecuteSql p50        {p50(sql_times):8.1f} ms")
    print(f"direct RunCode p50           {p50(py_times):8.1f} ms  (result: {result})")
    print(f"direct SQL + sandbox p50     {p50(sums):8.1f} ms")
    print(f"one model hop p50            {p50(hops):8.1f} ms  (gateway + fake Bytez; five per answer)")
    print(f"end to end (pipeline) p50    {p50(e2e):8.1f} ms  ({model_calls} model calls in all)")
    verdict = "met" if ratio <= 1.3 else "NOT met"
    print(f"ratio end-to-end / direct    {ratio:8.2f}   (target <= 1.30: {verdict})")


if __name__ == "__main__":
    asyncio.run(main())
