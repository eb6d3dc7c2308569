"""Python sandbox benchmark: a warm run against a naive cold subprocess, then concurrent runs.

    .venv/bin/python bench/py_sandbox.py

Measured in one run, side by side, over the same 1M-row Parquet dataset:
- warm: `result = df["x"].mean()` through a real PySandboxService (gRPC on loopback, forked confined child);
- cold: a new interpreter that imports pandas, reads the Parquet and computes the mean (no isolation at all);
- N concurrent runs (default 20): all must complete; wall time and throughput.

Env: BENCH_ROWS (1_000_000), BENCH_WARM_RUNS (30), BENCH_COLD_RUNS (5), BENCH_CONCURRENT (20),
BENCH_PAUSE_MS (50: think time between warm runs, as between two questions of a chat; the zygote uses it to
clone the next child ahead of need — set 0 to measure back-to-back runs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.channels import open_channel
from common.store import DatasetRecord, LocalDatasetStore
from insightx.v1 import py_sandbox_pb2 as pb
from insightx.v1 import py_sandbox_pb2_grpc
from services.py_sandbox.server import start
from services.py_sandbox.settings import PySandboxSettings

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
WARM_RUNS = int(os.environ.get("BENCH_WARM_RUNS", "30"))
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "5"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "20"))
PAUSE_S = float(os.environ.get("BENCH_PAUSE_MS", "50")) / 1000
CODE = 'result = df["x"].mean()'


def make_dataset(root: Path) -> tuple[LocalDatasetStore, Path]:
    rng = np.random.default_rng(7)
    table = pa.table({"x": rng.normal(50.0, 10.0, ROWS), "g": rng.integers(0, 20, ROWS)})
    source = root / "bench.parquet"
    pq.write_table(table, source)
    store = LocalDatasetStore(root / "data")
    store.put(DatasetRecord("bench", "data", "bench.parquet", "bench", ROWS), source, b"")
    return store, store.parquet_path("bench")


def cold_run(parquet: Path) -> tuple[float, str]:
    """The naive way: a fresh interpreter per run."""
    script = f"import pandas as pd; df = pd.read_parquet({str(parquet)!r}); print(df['x'].mean())"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return (time.perf_counter() - started) * 1000, out.stdout.strip()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def main() -> None:
    for name in ("INSIGHTX_INTERNAL_TOKEN", "INSIGHTX_INTERNAL_GATEWAY_TOKEN"):  # this process is both ends
        os.environ.setdefault(name, "bench-internal-token-0123456789abcdef")
    with tempfile.TemporaryDirectory() as tmp:
        _, parquet = make_dataset(Path(tmp))
        # One session sends every concurrent run here: its fair share is raised to the whole burst.
        settings = PySandboxSettings(
            data_dir=Path(tmp) / "data",
            sandbox_session_max_running=CONCURRENT,
            sandbox_session_max_queued=CONCURRENT,
        )
        running = await start(settings, "127.0.0.1:0")
        channel = open_channel(f"127.0.0.1:{running.port}")
        stub = py_sandbox_pb2_grpc.PySandboxServiceStub(channel)
        request = pb.RunCodeRequest(session_id="bench", code=CODE, timeout_s=30)
        try:
            first = await stub.RunCode(request, timeout=60)  # builds the session's Arrow cache
            assert not first.HasField("error"), first.error.message
            warm: list[float] = []
            for _ in range(WARM_RUNS):
                await asyncio.sleep(PAUSE_S)
                started = time.perf_counter()
                reply = await stub.RunCode(request, timeout=60)
                warm.append((time.perf_counter() - started) * 1000)
                assert reply.result_json == first.result_json, reply
            cold = []
            for _ in range(COLD_RUNS):
                ms, text = await asyncio.to_thread(cold_run, parquet)
                cold.append(ms)
                assert abs(float(text) - float(first.result_json)) < 1e-6
            began = time.perf_counter()
            replies = await asyncio.gather(
                *(stub.RunCode(request, timeout=120) for _ in range(CONCURRENT)), return_exceptions=True
            )
            wall = time.perf_counter() - began
            ok = sum(1 for r in replies if isinstance(r, pb.RunCodeResponse) and not r.HasField("error"))
        finally:
            await channel.close()
            await running.stop(1)
    warm_p50, cold_p50 = statistics.median(warm), statistics.median(cold)
    print(f"dataset: {ROWS:,} rows; code: {CODE}; pause between warm runs: {PAUSE_S * 1000:.0f} ms")
    print(f"{'':28}{'p50 ms':>10}{'p90 ms':>10}{'runs':>6}")
    print(f"{'warm (sandbox, gRPC)':28}{warm_p50:>10.1f}{pct(warm, 90):>10.1f}{len(warm):>6}")
    print(f"{'cold (new interpreter)':28}{cold_p50:>10.1f}{pct(cold, 90):>10.1f}{len(cold):>6}")
    print(f"speed-up (cold p50 / warm p50): {cold_p50 / warm_p50:.1f}x (target >= 20x)")
    print(
        f"concurrent: {ok}/{CONCURRENT} completed without error in {wall:.2f} s "
        f"-> {CONCURRENT / wall:.1f} runs/s"
    )
    if ok != CONCURRENT:
        errors = [r for r in replies if not (isinstance(r, pb.RunCodeResponse) and not r.HasField("error"))]
        print("failures:", errors[:3])


if __name__ == "__main__":
    asyncio.run(main())
