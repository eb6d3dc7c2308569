"""DataBench accuracy and answer latency of the built-in analyst, through the real services.

Starts sql_engine, orchestrator and the HTTP gateway (plus py_sandbox when it starts) as processes on free
ports with no LLM key, uploads each DataBench table through `POST /api/datasets`, asks every question through
`POST /api/chat/stream`, scores the `final_response` answer as the benchmark does, and prints accuracy per
answer type and overall. Then uploads the 250k-row demo table and prints the median end-to-end answer time.

    .venv/bin/python bench/databench.py            # full run (~1-2 min)
    DATABENCH_LIMIT=40 .venv/bin/python bench/databench.py
    DATABENCH_LATENCY_QUESTIONS=10 ...             # questions timed on the demo table (each asked 3 times)

Scoring (README of the benchmark): booleans True/False; numbers compared after truncation to 2 decimals;
lists compared as sets of the same length; categories as case-insensitive strings.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(
    os.environ.get("DATABENCH_DIR", Path(__file__).resolve().parents[2] / "shared/benchmarks/databench")
)
if not ROOT.exists():
    ROOT = Path("/work/shared/benchmarks/databench")
REPO = Path(__file__).resolve().parents[1]

LATENCY_QUESTIONS = [
    "How many transactions are there?",
    "What is the average amount (INR)?",
    "What is the failure rate?",
    "What is the failure rate by device type?",
    "Which merchant category has the highest total amount?",
    "How many failed transactions on Android?",
    "What is the median amount for 5G transactions?",
    "List the top 5 sender states by number of transactions.",
    "What is the average amount by hour of day?",
    "Is the average amount of P2P transactions higher than P2M?",
    "How many distinct sender banks are there?",
    "What is the total amount of transactions above 10000?",
]


# ---- scoring: tools/analyst_eval.py (one copy for every tool) ----------------------------------------

sys.path.insert(0, str(REPO))
from tools.analyst_eval import score  # noqa: E402

# ---- the real services ----------------------------------------


def _start_stack(data_dir: Path) -> Any:
    sys.path.insert(0, str(REPO))
    from tools.stack import Stack

    stack = Stack.on_free_ports(
        data_dir,
        inherit_config=False,
        extra_env={"INSIGHTX_ANSWER_CACHE_SIZE": "0", "INSIGHTX_LOG_LEVEL": "WARNING"},
        log_dir=data_dir / "logs",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("sql_engine", "py_sandbox", "llm_gateway", "orchestrator", "gateway"):
        stack.start_one(name)
    return stack


def _wait_ready(stack: Any, timeout_s: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in ("sql_engine", "orchestrator", "gateway"):
            proc = stack.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {stack.data_dir}/logs")
        try:
            body = httpx.get(f"{stack.base_url}/health", timeout=3.0).json()
            services = body.get("services", {})
            if all(services.get(n) == "SERVING" for n in ("sql_engine", "orchestrator")):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise TimeoutError("sql_engine/orchestrator/gateway not ready")


def _upload(client: Any, base: str, path: Path, name: str) -> str:
    with path.open("rb") as fh:
        reply = client.post(
            f"{base}/api/datasets", files={"file": (name, fh, "application/octet-stream")}, timeout=300.0
        )
    reply.raise_for_status()
    return str(reply.json()["session_id"])


def ask(client: Any, base: str, session_id: str, question: str) -> dict[str, Any]:
    """The final_response (or error) event's payload for one question."""
    body = {
        "chat_id": f"bench-{time.monotonic_ns()}",
        "session_id": session_id,
        "message": question,
        "history": [],
    }
    final: dict[str, Any] = {"type": "error", "message": "no final event"}
    with client.stream("POST", f"{base}/api/chat/stream", json=body, timeout=120.0) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:].strip())
            if event.get("type") in ("final_response", "error"):
                final = event
    return final


def baseline_accuracy(limit: int | None) -> float:
    """The same-run baseline: what answering "True" to every yes/no question (and nothing else) scores."""
    questions = [
        json.loads(line) for line in (ROOT / "questions.jsonl").read_text().splitlines() if line.strip()
    ]
    questions = questions[:limit] if limit else questions
    right = sum(score(True, q["answer"], q["type"]) for q in questions if q["type"] == "boolean")
    return right / max(len(questions), 1)


def run_accuracy(client: Any, base: str, limit: int | None) -> dict[str, list[int]]:
    questions = [
        json.loads(line) for line in (ROOT / "questions.jsonl").read_text().splitlines() if line.strip()
    ]
    if limit:
        questions = questions[:limit]
    sessions: dict[str, str] = {}
    by_type: dict[str, list[int]] = {}
    failures: list[str] = []
    for item in questions:
        dataset = item["dataset"]
        if dataset not in sessions:
            sessions[dataset] = _upload(client, base, ROOT / dataset / "all.parquet", f"{dataset}.parquet")
        event = ask(client, base, sessions[dataset], item["question"])
        got = event.get("data", {}).get("answer") if event.get("type") == "final_response" else None
        ok = score(got, item["answer"], item["type"])
        counts = by_type.setdefault(item["type"], [0, 0])
        counts[0] += ok
        counts[1] += 1
        if not ok and os.environ.get("DATABENCH_VERBOSE"):
            failures.append(
                f"  #{item['id']} {item['question']!r}: gold {item['answer'][:60]!r}, got {got!r:.60}"
            )
    for line in failures:
        print(line)
    return by_type


def run_latency(
    client: Any, base: str, work: Path, n_questions: int, repeats: int
) -> tuple[float, float, float, int, float]:
    sys.path.insert(0, str(REPO))
    from tools.demo_data import write_csv

    csv_path = work / "upi_transactions.csv"
    write_csv(csv_path)
    session = _upload(client, base, csv_path, "upi_transactions.csv")
    questions = LATENCY_QUESTIONS[:n_questions]
    first: list[float] = []
    sqls: list[str] = []
    for q in questions:  # first asks: nothing cached for these questions yet
        start = time.perf_counter()
        event = ask(client, base, session, q)
        first.append((time.perf_counter() - start) * 1000)
        sql = (event.get("data") or {}).get("sql")
        if sql:
            sqls.append(sql)
    direct = _direct_sql_ms(csv_path, work, sqls)
    times: list[float] = []
    answered = 0
    for _ in range(repeats):
        for q in questions:
            start = time.perf_counter()
            event = ask(client, base, session, q)
            times.append((time.perf_counter() - start) * 1000)
            answered += event.get("type") == "final_response" and event["data"].get("answer") is not None
    return statistics.median(first), statistics.median(times), max(times + first), answered, direct


def _direct_sql_ms(csv_path: Path, work: Path, sqls: list[str]) -> float:
    """The same-run baseline: the answers' own SQL run in-process on DuckDB (no services), median ms."""
    import duckdb

    parquet = work / "direct.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_csv_auto('{csv_path}')) TO '{parquet}' (FORMAT parquet)"
    ).fetchall()
    con.execute(f"CREATE VIEW upi_transactions AS SELECT * FROM read_parquet('{parquet}')").fetchall()
    times = []
    for sql in sqls:
        start = time.perf_counter()
        con.execute(sql).fetchall()
        times.append((time.perf_counter() - start) * 1000)
    con.close()
    return statistics.median(times) if times else float("nan")


def main() -> int:
    import httpx

    limit = int(os.environ.get("DATABENCH_LIMIT", "0")) or None
    n_latency = int(os.environ.get("DATABENCH_LATENCY_QUESTIONS", str(len(LATENCY_QUESTIONS))))
    repeats = int(os.environ.get("DATABENCH_LATENCY_REPEATS", "3"))
    with tempfile.TemporaryDirectory(prefix="databench-") as tmp:
        work = Path(tmp)
        stack = _start_stack(work / "data")
        try:
            _wait_ready(stack)
            base = stack.base_url
            with httpx.Client() as client:
                started = time.perf_counter()
                by_type = run_accuracy(client, base, limit)
                elapsed = time.perf_counter() - started
                total = sum(v[1] for v in by_type.values())
                right = sum(v[0] for v in by_type.values())
                print(
                    f"DataBench ({ROOT.name}): {total} questions through the real services in {elapsed:.1f} s"
                )
                for kind in sorted(by_type):
                    ok, n = by_type[kind]
                    print(f"  {kind:<15} {ok:>3}/{n:<3} = {ok / n:6.1%}")
                print(f"  {'overall':<15} {right:>3}/{total:<3} = {right / total:6.1%}   (target >= 60%)")
                base_rate = baseline_accuracy(limit)
                print(
                    f"  baseline (answer True to every yes/no, nothing else): {base_rate:.1%}; "
                    f"the analyst scores {right / total / base_rate:.1f}x that"
                )
                if n_latency:
                    cold, median, worst, answered, direct = run_latency(
                        client, base, work, n_latency, repeats
                    )
                    print(
                        f"Demo table (250,000 rows): median end-to-end answer {cold:.0f} ms on first asks "
                        f"({n_latency} questions), {median:.0f} ms on repeats ({n_latency * repeats} asks; "
                        f"max {worst:.0f} ms; {answered} answered)   (target <= 300 ms)"
                    )
                    print(
                        f"  baseline: the same SQL in-process on DuckDB, median {direct:.1f} ms; end-to-end "
                        f"first asks are {cold / direct:.1f}x that"
                    )
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
