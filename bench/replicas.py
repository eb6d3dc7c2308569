"""Answers per second with one replica of each service and with two, on this machine, and what the shared
PostgreSQL store adds to an answer against the embedded one.

Three setups, one after the other in the same run, each a fresh stack of real processes (no provider key:
the built-in analyst answers) over a 20,000-row table:

  1. one replica of each service, one gateway, the embedded store (SQLite)     the baseline;
  2. the same with the gateway's state on PostgreSQL (INSIGHTX_DATABASE_URL)   the store's cost;
  3. two replicas of sql_engine, orchestrator and py_sandbox (every address lists both, one data
     directory) and two gateways over that PostgreSQL, the clients split over the gateways.

Each: CONCURRENCY clients (default 16) ask questions until ANSWERS (default 240) are answered; printed:
answers per second, p50/p95 time to the final answer, errors; then the ratios 2 / 1 (PostgreSQL against
SQLite: p50, p95) and 3 / 2 (answers per second with two replicas against one). On a machine with few
cores two replicas share the same CPUs, so the third ratio shows the cost of spreading more than a gain.

    .venv/bin/python bench/replicas.py
    INSIGHTX_BENCH_ANSWERS=600 INSIGHTX_BENCH_CONCURRENCY=32 .venv/bin/python bench/replicas.py
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.demo import write_csv
from tools.postgres_server import PostgresServer, bin_dir
from tools.stack import ROOT, Stack, free_port

ANSWERS = int(os.environ.get("INSIGHTX_BENCH_ANSWERS", "240"))
CONCURRENCY = int(os.environ.get("INSIGHTX_BENCH_CONCURRENCY", "16"))
ROWS = 20_000
REPLICATED = ("sql_engine", "orchestrator", "py_sandbox")
QUESTIONS = [
    "How many rows are there?",
    "What is the average amount (INR) by transaction type?",
    "Which sender bank has the most transactions?",
    "What is the total amount (INR) by device_type?",
    "How many transactions failed?",
    "What share of transactions are P2P?",
    "What is the median amount (INR)?",
]


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return (
            ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000 if ordered else float("nan")
        )


@dataclass
class Setup:
    stack: Stack
    gateways: list[str]
    extra: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in self.extra:
            proc.terminate()
        for proc in self.extra:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.stack.stop()


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a process exited with {proc.returncode} (see its log)")
        try:
            services = httpx.get(f"{url}/health", timeout=3).json()["services"]
            if all(services.get(name) == "SERVING" for name in REPLICATED):
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not get ready")


def start(root: Path, replicas: int, database_url: str, token: str) -> Setup:
    """A stack with `replicas` of each replicated service (the first ones the stack's own)."""
    env = {"INSIGHTX_AUTH_TOKEN": token, "INSIGHTX_LOG_LEVEL": "WARNING"}
    if database_url:
        env["INSIGHTX_DATABASE_URL"] = database_url
    stack = Stack.on_free_ports(root / "data", extra_env={}, log_dir=root / "logs")
    more = {name: [f"127.0.0.1:{free_port()}" for _ in range(replicas - 1)] for name in REPLICATED}
    if replicas > 1:
        env["INSIGHTX_GRPC_LISTEN_HOST"] = "127.0.0.1"  # each replica binds its own first port
        for name in REPLICATED:
            env[f"INSIGHTX_{name.upper()}_ADDR"] = ",".join([stack.address(name), *more[name]])
    stack.extra_env = {**stack.extra_env, **env}
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    for name in (*REPLICATED, "llm_gateway", "gateway"):
        stack.start_one(name)
    extra: list[subprocess.Popen[bytes]] = []
    gateways = [stack.base_url]

    def spawn(module: str, child_env: dict[str, str], log: str) -> None:
        with (root / "logs" / log).open("ab") as out:
            extra.append(
                subprocess.Popen(
                    [sys.executable, "-m", module], cwd=ROOT, env=child_env, stdout=out, stderr=out
                )
            )

    for name in REPLICATED:
        for i, address in enumerate(more[name], start=2):
            spawn(
                f"services.{name}",
                {**stack.env(name), f"INSIGHTX_{name.upper()}_ADDR": address},
                f"{name}-{i}.log",
            )
    if replicas > 1:
        port = free_port()
        gateway_env = {
            **stack.env("gateway"),
            "INSIGHTX_GATEWAY_PORT": str(port),
            "INSIGHTX_DATA_DIR": str(root / "gateway-2"),
        }
        spawn("gateway", gateway_env, "gateway-2.log")
        gateways.append(f"http://127.0.0.1:{port}")
    setup = Setup(stack, gateways, extra)
    try:
        for url in gateways:
            _wait_ready(url, [*stack.procs.values(), *extra])
    except BaseException:
        setup.stop()
        raise
    return setup


async def ask(client: httpx.AsyncClient, url: str, session_id: str, question: str, result: Result) -> None:
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST",
            f"{url}/api/chat/stream",
            json={"session_id": session_id, "message": question},
            timeout=120,
        ) as reply:
            if reply.status_code != 200:
                result.errors.append(f"HTTP {reply.status_code}")
                return
            async for line in reply.aiter_lines():
                if not line.startswith("data: "):
                    continue
                kind = json.loads(line[6:])["type"]
                if kind == "final_response":
                    result.latencies.append(time.perf_counter() - started)
                    return
                if kind == "error":
                    result.errors.append(line[6:200])
                    return
        result.errors.append("no final answer")
    except httpx.HTTPError as exc:
        result.errors.append(repr(exc))


async def load(setup: Setup, session_id: str, token: str, name: str) -> Result:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(headers=headers, limits=limits) as client:
        warm = Result("warm-up")
        for i in range(2 * len(setup.gateways) * len(QUESTIONS)):  # every process, every question shape
            await ask(
                client,
                setup.gateways[i % len(setup.gateways)],
                session_id,
                QUESTIONS[i % len(QUESTIONS)],
                warm,
            )
        if warm.errors:
            raise RuntimeError(f"{name}: warm-up failed: {warm.errors[:3]}")
        result, issued = Result(name), iter(range(ANSWERS))
        started = time.perf_counter()

        async def client_loop(k: int) -> None:
            for i in issued:
                url = setup.gateways[(k + i) % len(setup.gateways)]
                await ask(client, url, session_id, QUESTIONS[i % len(QUESTIONS)], result)

        await asyncio.gather(*(client_loop(k) for k in range(CONCURRENCY)))
        result.wall_s = time.perf_counter() - started
    return result


def run_setup(server: PostgresServer | None, replicas: int, csv: Path, name: str) -> Result:
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="insightx-bench-") as tmp:
        setup = start(Path(tmp), replicas, server.new_database() if server else "", token)
        try:
            with csv.open("rb") as handle:
                reply = httpx.post(
                    f"{setup.gateways[0]}/api/datasets",
                    files={"file": (csv.name, handle, "text/csv")},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=300,
                )
            reply.raise_for_status()
            session_id = reply.json()["session_id"]
            time.sleep(6)  # channels reach every replica (reconnect backoff at most 5 s)
            return asyncio.run(load(setup, session_id, token, name))
        finally:
            setup.stop()


def main() -> None:
    binaries = bin_dir()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)")
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_csv(Path(tmp) / "upi.csv", rows=ROWS)
        server = PostgresServer(binaries).start()
        try:
            results = [
                run_setup(None, 1, csv, "1 replica each, SQLite"),
                run_setup(server, 1, csv, "1 replica each, PostgreSQL"),
                run_setup(server, 2, csv, "2 replicas each, PostgreSQL"),
            ]
        finally:
            server.stop()
    print(f"{ANSWERS} answers, {CONCURRENCY} clients at once, {ROWS:,}-row table, {os.cpu_count()} CPUs")
    print(f"{'setup':30}{'answers/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")
    for r in results:
        print(f"{r.name:30}{r.rate:10.1f}{r.pct(0.5):9.0f}{r.pct(0.95):9.0f}{len(r.errors):8}")
    embedded, shared, two = results
    print(
        f"PostgreSQL / SQLite: p50 {shared.pct(0.5) / embedded.pct(0.5):.2f}x,"
        f" p95 {shared.pct(0.95) / embedded.pct(0.95):.2f}x,"
        f" added p50 {shared.pct(0.5) - embedded.pct(0.5):+.0f} ms,"
        f" p95 {shared.pct(0.95) - embedded.pct(0.95):+.0f} ms"
    )
    print(f"two replicas / one: {two.rate / shared.rate:.2f}x answers per second")
    for r in results:
        if r.errors:
            print(f"{r.name}: first errors {r.errors[:3]}")


if __name__ == "__main__":
    main()
