"""Gateway under load: N concurrent chat streams (default 200) against one gateway with the built-in analyst.

Starts the whole stack as processes on free ports (no provider keys: the built-in analyst answers), loads
the demo dataset (250k UPI rows), then measures, in the same run:

  1. baseline    one stream at a time through the gateway (uncontended latency);
  2. direct      N concurrent Chat calls straight to the orchestrator over gRPC (no HTTP edge);
  3. gateway     N concurrent SSE streams through the gateway, parsed like the web page does.

For each: streams completed, errors, p50/p95 time to first event and to the final answer; then the ratios
gateway/direct (what the HTTP edge costs under load) and gateway/baseline (what concurrency costs).

    .venv/bin/python bench/gateway.py                     # 200 streams
    INSIGHTX_BENCH_STREAMS=500 .venv/bin/python bench/gateway.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.channels import open_channel
from gateway.signin import bearer, embedded_token
from insightx.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tools.demo_data import write_csv
from tools.stack import Stack

STREAMS = int(os.environ.get("INSIGHTX_BENCH_STREAMS", "200"))
BASELINE_RUNS = int(os.environ.get("INSIGHTX_BENCH_BASELINE", "20"))
QUESTIONS = [
    "How many rows are there?",
    "How many transactions per day of week?",
    "What is the average amount (INR) by transaction type?",
    "Which sender bank has the most transactions?",
    "What is the total amount (INR) by device_type?",
    "How many transactions failed?",
    "What share of transactions are P2P?",
    "What is the median amount (INR)?",
]


@dataclass
class Run:
    """The timings of one batch of streams."""

    name: str
    first: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    cached: int = 0
    wall_s: float = 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _read_chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The body of a chunked HTTP/1.1 response, chunk by chunk."""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


AUTH_TOKEN = [""]  # the embedded user's token, read once the stack is up


async def one_sse(base: tuple[str, int], session_id: str, question: str, run: Run) -> None:
    """One stream over a bare HTTP/1.1 connection (httpx's pool would dominate the timings at 200 streams)."""
    # no chat_id: the server makes the chat
    payload = json.dumps({"session_id": session_id, "message": question}).encode()
    start = time.perf_counter()
    first = None
    writer = None
    try:
        reader, writer = await asyncio.open_connection(*base)
        writer.write(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nAccept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (AUTH_TOKEN[0].encode(), len(payload), payload)
        )
        await writer.drain()
        status = await reader.readline()
        headers = (await reader.readuntil(b"\r\n\r\n")).lower()
        if b" 200 " not in status or b"transfer-encoding: chunked" not in headers:
            run.errors.append(f"HTTP {status.decode().strip()}")
            return
        pending = b""
        async for chunk in _read_chunked(reader):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                now = time.perf_counter() - start
                if first is None:
                    first = now
                    run.first.append(now)
                if event["type"] == "final_response":
                    run.final.append(now)
                    run.completed += 1
                    run.cached += bool(event["data"].get("cached"))
                    return
                if event["type"] == "error":
                    run.errors.append(f"{event.get('code')}: {event.get('message')}")
                    return
        run.errors.append("stream ended without a final answer")
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        run.errors.append(repr(exc))
    finally:
        if writer is not None:
            writer.close()


async def one_grpc(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, session_id: str, question: str, run: Run
) -> None:
    request = orchestrator_pb2.ChatRequest(chat_id=uuid.uuid4().hex, session_id=session_id, message=question)
    start = time.perf_counter()
    first = None
    try:
        async for event in stub.Chat(request, timeout=120):
            now = time.perf_counter() - start
            if first is None:
                first = now
                run.first.append(now)
            kind = event.WhichOneof("payload")
            if kind == "final_response":
                run.final.append(now)
                run.completed += 1
                run.cached += event.final_response.cached
                return
            if kind == "error":
                run.errors.append(f"{event.error.code}: {event.error.message}")
                return
        run.errors.append("stream ended without a final answer")
    except Exception as exc:
        run.errors.append(repr(exc))


async def measure(stack: Stack, session_id: str, orchestrator_addr: str) -> list[Run]:
    runs = []
    client = ("127.0.0.1", stack.http_port)
    baseline = Run("baseline (1 at a time, gateway)")
    start = time.perf_counter()
    for i in range(BASELINE_RUNS):
        await one_sse(client, session_id, QUESTIONS[i % len(QUESTIONS)], baseline)
    baseline.wall_s = time.perf_counter() - start
    runs.append(baseline)

    channel = open_channel(orchestrator_addr, token=stack.tokens["gateway"])
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    direct = Run(f"direct gRPC ({STREAMS} concurrent)")
    start = time.perf_counter()
    await asyncio.gather(
        *(one_grpc(stub, session_id, QUESTIONS[i % len(QUESTIONS)], direct) for i in range(STREAMS))
    )
    direct.wall_s = time.perf_counter() - start
    await channel.close()
    runs.append(direct)

    gateway = Run(f"gateway SSE ({STREAMS} concurrent)")
    start = time.perf_counter()
    await asyncio.gather(
        *(one_sse(client, session_id, QUESTIONS[i % len(QUESTIONS)], gateway) for i in range(STREAMS))
    )
    gateway.wall_s = time.perf_counter() - start
    runs.append(gateway)
    return runs


def report(runs: list[Run]) -> bool:
    print(
        f"{'run':36} {'done':>9} {'errors':>6} {'cached':>6} {'first p50':>10} {'first p95':>10}"
        f" {'final p50':>10} {'final p95':>10} {'wall':>7}"
    )
    for run in runs:
        total = len(run.final) + len(run.errors)
        print(
            f"{run.name:36} {run.completed:>4}/{total:<4} {len(run.errors):>6} {run.cached:>6}"
            f" {pct(run.first, 0.5) * 1000:>8.1f}ms {pct(run.first, 0.95) * 1000:>8.1f}ms"
            f" {pct(run.final, 0.5) * 1000:>8.1f}ms {pct(run.final, 0.95) * 1000:>8.1f}ms {run.wall_s:>6.2f}s"
        )
    baseline, direct, gateway = runs
    for name, base in (("gateway / direct gRPC", direct), ("gateway / baseline", baseline)):
        print(
            f"{name:24} first event p50 x{pct(gateway.first, 0.5) / pct(base.first, 0.5):.2f}"
            f" p95 x{pct(gateway.first, 0.95) / pct(base.first, 0.95):.2f};"
            f" final answer p50 x{pct(gateway.final, 0.5) / pct(base.final, 0.5):.2f}"
            f" p95 x{pct(gateway.final, 0.95) / pct(base.final, 0.95):.2f}"
        )
    print(
        f"throughput through the gateway: {gateway.completed / gateway.wall_s:.0f} answers/s "
        f"(mean final {statistics.fmean(gateway.final) * 1000:.0f} ms)"
        if gateway.final
        else "no answers"
    )
    for run in runs:
        for error in sorted(set(run.errors))[:5]:
            print(f"  {run.name}: {error}")
    ok = all(run.completed == (STREAMS if "concurrent" in run.name else BASELINE_RUNS) for run in runs)
    ok = ok and not any(run.errors for run in runs)
    print("OK: every stream completed with 0 errors" if ok else "FAILED: some streams did not complete")
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="insightx-bench-") as tmp:
        data = Path(tmp) / "data"
        stack = Stack.on_free_ports(data, inherit_config=False, log_dir=Path(tmp) / "logs")
        print(f"starting the stack (gateway {stack.base_url}) ...", flush=True)
        stack.start()
        try:
            stack.wait_healthy()
            AUTH_TOKEN[0] = embedded_token(data)  # the token the gateway made, as make run prints it
            csv = write_csv(Path(tmp) / "upi_transactions.csv")
            with csv.open("rb") as handle:
                reply = httpx.post(
                    f"{stack.base_url}/api/datasets",
                    files={"file": (csv.name, handle)},
                    headers=bearer(AUTH_TOKEN[0]),
                    timeout=300,
                )
            reply.raise_for_status()
            session_id = reply.json()["session_id"]
            print(
                f"demo dataset loaded ({reply.json()['row_count']:,} rows); {STREAMS} streams, "
                f"{len(QUESTIONS)} questions in rotation\n",
                flush=True,
            )
            runs = asyncio.run(measure(stack, session_id, f"127.0.0.1:{stack.ports['orchestrator']}"))
            return 0 if report(runs) else 1
        finally:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
