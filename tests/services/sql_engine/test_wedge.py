"""Liveness, not only exit codes: an engine wedged on purpose is seen and replaced within 15 s.

Each test runs `python -m services.sql_engine` under `tools.stack.Supervisor` (what `make run` uses), wedges
it in one way (the whole process stopped, every query worker stopped, one busy worker stopped, the address
space taken away so no thread can start), and checks what health said and that a SERVING engine answers
again in time: a fresh process, or the same one with its worker replaced (and a log line saying so).
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_INTERNAL_TOKEN
from tools.stack import Stack, Supervisor, probe_health

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET_S = 15.0


def _children(pid: int) -> list[int]:
    """Every child of `pid`, whichever of its threads started it."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


class Supervised:
    """One engine process under a supervisor, with a blocking client of its own."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        tokens = {"gateway": TEST_INTERNAL_TOKEN, "orchestrator": TEST_INTERNAL_TOKEN}
        self.stack = Stack.on_free_ports(data_dir, log_dir=data_dir / "logs", tokens=tokens, extra_env=env)
        self.stack.data_dir.mkdir(parents=True, exist_ok=True)
        self.stack.start_one("sql_engine")
        self.supervisor = Supervisor(self.stack, probe_timeout_s=0.5)
        self.address = self.stack.address("sql_engine")
        self.wait_serving(60)

    @property
    def pid(self) -> int:
        return self.stack.procs["sql_engine"].pid

    def log(self) -> str:
        return (self.stack.data_dir / "logs" / "sql_engine.log").read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The query workers: children of the engine's fork server (itself a child of the engine)."""
        workers = []
        for server in _children(self.pid):
            workers += _children(server)
        return workers

    def wait_serving(self, timeout_s: float) -> float:
        """Drives the supervisor until the engine is SERVING; answers the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.supervisor.check_once()
            if probe_health(self.address, 0.5) == "SERVING":
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"no SERVING engine within {timeout_s} s; log:\n{self.log()[-3000:]}")

    def watch_until_not_serving(self, timeout_s: float) -> tuple[str, float]:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            status = probe_health(self.address, 0.5)
            if status != "SERVING":
                return status, time.monotonic() - started
            self.supervisor.check_once()
            time.sleep(0.1)
        return "SERVING", timeout_s

    def query(self, sql: str, timeout_s: float = 10) -> object:
        import grpc

        from common.arrow import ipc_to_table
        from common.channels import internal_metadata
        from insightx.v1 import sql_engine_pb2 as pb
        from insightx.v1 import sql_engine_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = sql_engine_pb2_grpc.SqlEngineServiceStub(channel)
            metadata = internal_metadata(TEST_INTERNAL_TOKEN)
            upload = iter(
                [
                    pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="t.csv")),
                    pb.ImportDatasetRequest(chunk=b"a,b\n1,2\n3,4\n"),
                ]
            )
            session = stub.ImportDataset(upload, timeout=timeout_s, metadata=metadata).session_id
            reply = stub.ExecuteSql(
                pb.ExecuteSqlRequest(session_id=session, sql=sql), timeout=timeout_s, metadata=metadata
            )
            return ipc_to_table(reply.result.arrow_ipc).to_pylist()

    def stop(self) -> None:
        for proc in self.stack.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        self.stack.stop()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    engine = Supervised(tmp_path / "data", INSIGHTX_SQL_DEFAULT_TIMEOUT_MS="3000")
    try:
        yield engine
    finally:
        engine.stop()


def test_a_stopped_engine_is_unreachable_then_replaced(supervised: Supervised) -> None:
    old = supervised.pid
    os.kill(old, signal.SIGSTOP)  # wedged: alive, answers nothing
    started = time.monotonic()
    status, _ = supervised.watch_until_not_serving(BUDGET_S)
    assert status == "UNREACHABLE"
    supervised.wait_serving(BUDGET_S)
    assert time.monotonic() - started < BUDGET_S
    assert supervised.pid != old
    assert any(name == "sql_engine" and "UNREACHABLE" in why for name, why in supervised.supervisor.restarts)
    assert supervised.query("SELECT 1 AS x") == [{"x": 1}]


def test_an_engine_whose_workers_stop_answering_says_so_and_is_replaced(supervised: Supervised) -> None:
    old = supervised.pid
    stopped = supervised.worker_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    status, seen_after = supervised.watch_until_not_serving(BUDGET_S)
    assert status in ("NOT_SERVING", "UNREACHABLE") and seen_after < 5
    supervised.wait_serving(BUDGET_S)
    assert time.monotonic() - started < BUDGET_S
    # Probes find the stopped workers one by one and the health keeps failing: the supervisor replaces the
    # engine after 5 s NOT_SERVING, or the engine gives up by itself after 6 s (exit 70), whichever is first.
    assert supervised.pid != old
    (why,) = [why for name, why in supervised.supervisor.restarts if name == "sql_engine"]
    assert "NOT_SERVING for" in why or "exited with code 70" in why
    assert supervised.query("SELECT 2 AS x") == [{"x": 2}]


def test_one_busy_worker_that_stops_is_replaced_and_the_engine_keeps_serving(supervised: Supervised) -> None:
    import threading

    import grpc

    from common.errors import error_info

    outcome: dict[str, object] = {}

    def long_query() -> None:
        try:
            supervised.query("SELECT count(*) FROM range(1000000000000) a", timeout_s=30)
        except grpc.RpcError as exc:
            outcome["reason"] = error_info(exc).reason

    def cpu(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(stat[11]) + int(stat[12])  # utime + stime

    workers = supervised.worker_pids()
    before = {pid: cpu(pid) for pid in workers}
    thread = threading.Thread(target=long_query)
    thread.start()
    time.sleep(1.0)
    busy = [max(workers, key=lambda pid: cpu(pid) - before[pid])]  # the one burning CPU runs the query
    os.kill(busy[0], signal.SIGSTOP)
    started = time.monotonic()
    # Other workers answer meanwhile; the stopped one is killed past its timeout (3 s) and grace (5 s).
    assert supervised.query("SELECT 3 AS x") == [{"x": 3}]
    thread.join(BUDGET_S)
    assert outcome.get("reason") == "SQL_TIMEOUT", outcome
    assert time.monotonic() - started < BUDGET_S
    assert probe_health(supervised.address) == "SERVING"
    assert busy[0] not in supervised.worker_pids()
    assert "query worker replaced" in supervised.log()
    assert not supervised.supervisor.restarts  # the engine itself never stopped serving


def test_an_engine_that_cannot_start_a_thread_exits_and_is_replaced(supervised: Supervised) -> None:
    import grpc

    old = supervised.pid
    status = Path(f"/proc/{old}/status").read_text()
    (size_kb,) = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:")]
    # No more address space: the next thread stack (8 MiB) or large allocation fails.
    resource.prlimit(old, resource.RLIMIT_AS, ((size_kb << 10) + (1 << 20), resource.RLIM_INFINITY))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError):
        for _ in range(20):  # imports run on new threads of the engine process itself
            supervised.query("SELECT 1", timeout_s=5)
    supervised.wait_serving(BUDGET_S)
    assert time.monotonic() - started < BUDGET_S
    assert supervised.pid != old
    assert "resource exhaustion; exiting for a clean restart" in supervised.log()
