"""What the LLM gateway adds to a completion: `Complete` through the gateway vs a direct httpx call.

Both go to the same fake Bytez server (tests/fakes/fake_llm_server.py) running in its own process; the
gateway runs as its own process too (`python -m services.llm_gateway`), as in production. Calls are
interleaved (direct, gateway, direct, ...) so that drift hits both sides alike. Then 200 concurrent calls
through the gateway, once with Bytez's free-plan cap (1 in flight per key, the gateway queues) and once
uncapped: every one must succeed.

    .venv/bin/python bench/llm_gateway.py            # BENCH_N=1000 BENCH_CONCURRENCY=200 BENCH_KEYS=4

Targets (issue 5): added p50 <= 2 ms; 0 errors at 200 concurrent calls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.channels import check_health, open_channel  # noqa: E402
from insightx.v1 import common_pb2, llm_gateway_pb2_grpc  # noqa: E402
from insightx.v1 import llm_gateway_pb2 as pb  # noqa: E402
from services.llm_gateway.agents import default_agents  # noqa: E402
from tools.stack import free_port  # noqa: E402

N = int(os.environ.get("BENCH_N", "1000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "200"))
KEY_COUNT = int(os.environ.get("BENCH_KEYS", "4"))
KEYS = [f"bench-key-{i}-{os.urandom(6).hex()}" for i in range(KEY_COUNT)]
CALLER_TOKEN = os.urandom(24).hex()  # the bench calls the gateway as the orchestrator would
QUESTION = "Which passenger class had the highest survival rate, and by how much?"
ADDED_P50_TARGET_MS = 2.0


def _clean_env() -> dict[str, str]:
    prefixes = ("INSIGHTX_", "BYTEZ_", "OPENAI_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | {"PYTHONUNBUFFERED": "1"}


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values: list[float]) -> str:
    return (
        f"  {name:<28} p50 {statistics.median(values):7.3f} ms   p95 {percentile(values, 0.95):7.3f} ms"
        f"   p99 {percentile(values, 0.99):7.3f} ms"
    )


async def wait_serving(address: str, service: str, child: subprocess.Popen[str]) -> None:
    channel = open_channel(address)
    try:
        deadline = time.monotonic() + 30
        while await check_health(channel, service, timeout_s=1) != "SERVING":
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not start")
            await asyncio.sleep(0.1)
    finally:
        await channel.close()


async def sequential(
    base_url: str, stub: llm_gateway_pb2_grpc.LlmGatewayServiceStub
) -> dict[str, list[float]]:
    """Latencies (ms) of: direct httpx, Complete through the gateway, and a bare gRPC call to it."""
    agent = default_agents()["sql"]
    body = {
        "model": agent.model,
        "messages": [
            {"role": "system", "content": agent.system_prompt},
            {"role": "user", "content": QUESTION},
        ],
        "temperature": agent.temperature,
        "max_tokens": agent.max_tokens,
        "stream": False,
    }
    request = pb.CompleteRequest(
        agent="sql", messages=[common_pb2.ChatMessage(role="user", content=QUESTION)]
    )
    direct: list[float] = []
    through: list[float] = []
    bare: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        url = f"{base_url}/chat/completions"
        headers = {"authorization": f"Bearer {KEYS[0]}"}
        for i in range(N + 50):
            started = time.perf_counter()
            reply = await client.post(url, json=body, headers=headers)
            content = reply.json()["choices"][0]["message"]["content"]
            direct_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            answer = await stub.Complete(request, timeout=30)
            gateway_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=30)
            bare_ms = (time.perf_counter() - started) * 1000
            assert reply.status_code == 200 and answer.content == content
            if i >= 50:  # warm-up: connections, caches
                direct.append(direct_ms)
                through.append(gateway_ms)
                bare.append(bare_ms)
    return {"direct": direct, "gateway": through, "grpc": bare}


async def concurrent(stub: llm_gateway_pb2_grpc.LlmGatewayServiceStub) -> tuple[float, list[float], int]:
    async def one(i: int) -> float | None:
        request = pb.CompleteRequest(
            agent="composer", messages=[common_pb2.ChatMessage(role="user", content=f"{QUESTION} #{i}")]
        )
        started = time.perf_counter()
        try:
            reply = await stub.Complete(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            print(f"    error: {exc.code().name} {exc.details()}")
            return None
        assert reply.content.endswith(f"#{i}")
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))
    wall_ms = (time.perf_counter() - started) * 1000
    latencies = [r for r in results if r is not None]
    return wall_ms, latencies, len(results) - len(latencies)


Burst = tuple[float, list[float], int]


async def run_gateway(
    base_url: str, cap: int, measure_sequential: bool
) -> tuple[dict[str, list[float]], Burst]:
    """Starts a gateway process over the fake with `cap` in flight per key and measures it."""
    port = free_port()
    env = _clean_env() | {
        "INSIGHTX_LLM_GATEWAY_ADDR": f"127.0.0.1:{port}",
        "INSIGHTX_LOG_LEVEL": "INFO",  # as in production: one JSON line per completion
        "INSIGHTX_LLM_BYTEZ_MAX_IN_FLIGHT_PER_KEY": str(cap),
        "BYTEZ_BASE_URL": base_url,
        "BYTEZ_API_KEYS": ",".join(KEYS),
        "INSIGHTX_INTERNAL_ORCHESTRATOR_TOKEN": CALLER_TOKEN,
    }
    address = f"127.0.0.1:{port}"
    results: dict[str, list[float]] = {}
    with process([sys.executable, "-m", "services.llm_gateway"], env) as child:
        await wait_serving(address, "insightx.v1.LlmGatewayService", child)
        channel = open_channel(address, token=CALLER_TOKEN)
        stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
        try:
            if measure_sequential:
                results.update(await sequential(base_url, stub))
            burst = await concurrent(stub)
        finally:
            await channel.close()
    return results, burst


async def main() -> int:
    fake_port = free_port()
    with process(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_llm_server",
            "--port",
            str(fake_port),
            "--keys",
            ",".join(KEYS),
        ],
        _clean_env(),
    ) as fake:
        assert fake.stdout is not None
        base_url = fake.stdout.readline().strip()
        print(
            f"fake Bytez server at {base_url}; {KEY_COUNT} keys; "
            f"{N} sequential calls; {CONCURRENCY} concurrent\n"
        )
        sequential_ms, capped = await run_gateway(base_url, cap=1, measure_sequential=True)
        _, uncapped = await run_gateway(base_url, cap=0, measure_sequential=False)
    direct, through, bare = (sequential_ms[name] for name in ("direct", "gateway", "grpc"))
    added_p50 = statistics.median(through) - statistics.median(direct)
    print("sequential Complete, same fake server, interleaved:")
    print(row("direct httpx (baseline)", direct))
    print(row("through the gateway (gRPC)", through))
    print(row("bare gRPC hop (GetKeyStatus)", bare))
    print(
        f"  added p50 {added_p50:.3f} ms (target <= {ADDED_P50_TARGET_MS} ms)   "
        f"ratio p50 {statistics.median(through) / statistics.median(direct):.2f}x\n"
    )
    ok = added_p50 <= ADDED_P50_TARGET_MS
    for label, (wall_ms, latencies, errors) in (
        (f"free-plan cap (1 in flight x {KEY_COUNT} keys)", capped),
        ("uncapped", uncapped),
    ):
        print(f"{CONCURRENCY} concurrent calls, {label}:")
        print(f"  wall {wall_ms:.1f} ms, {CONCURRENCY / wall_ms * 1000:.0f} calls/s, errors {errors}")
        if latencies:
            print(row("per call", latencies))
        ok = ok and errors == 0
    print("\nRESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
