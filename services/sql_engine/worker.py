"""One query worker process: runs the engine's SELECTs so that a query's memory, threads or crash stay here.

The engine (workers.py) starts each worker from a fork server, so DuckDB and pyarrow are already imported.
A worker, before it takes its first query:
- caps its own address space (RLIMIT_AS): an allocation bomb fails inside this process only;
- enters a private mount namespace where the dataset store is read-only, and also visible at a neutral
  path (`/mnt`), so no path a query can print (settings, view definitions, errors) names the data directory;
- dies with the engine (PR_SET_PDEATHSIG).

Protocol, on two pipes from the engine (never pickle in either direction, only JSON and Arrow IPC bytes):
- `requests`: the engine sends one JSON request (`query`, `bind` or `probe`); the worker answers with a JSON
  header, and after a successful query one more message holding the result as Arrow IPC.
- `control`: `{"cancel": id}` interrupts the running request with that id (a thread here waits for it).
The header always carries the worker's RSS and the datasets it holds open, so the engine can retire a worker
that grew past its high-water mark.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from common.errors import InsightError, ResourceExhausted, Unavailable
from common.server import is_resource_exhaustion
from services.sql_engine.connection import DatabaseCache
from services.sql_engine.executor import QueryHandle, cap_bytes, run_select, translate_error
from services.sql_engine.readonly import enter_read_only_view

PR_SET_PDEATHSIG = 1
NEUTRAL_ROOT = Path("/mnt")  # where a worker sees the store's sessions (a folder every image has)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK_S = 0.1


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know; sent once when it starts (plain values only)."""

    sessions: str  # the store's sessions folder, as the engine sees it
    memory_limit: str
    threads: int
    address_space_bytes: int
    max_open_databases: int
    max_result_bytes: int
    read_only_mount: bool


def memory() -> tuple[int, int]:
    """This process's address space and resident set size now, in bytes."""
    with open("/proc/self/statm") as statm:
        size, resident = statm.read().split()[:2]
    return int(size) * _PAGE, int(resident) * _PAGE


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _cap_address_space(limit: int) -> None:
    if limit <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def isolate(config: WorkerConfig) -> tuple[bool, str, str]:
    """Everything a worker does to itself before serving: (data read-only?, why not, root queries see).

    Runs while the process has one thread, so the mount namespace is the whole process's.
    """
    _die_with_parent()
    sessions = Path(config.sessions)
    root = str(sessions)
    read_only, error = False, ""
    if config.read_only_mount:
        try:
            enter_read_only_view([sessions], alias=NEUTRAL_ROOT if NEUTRAL_ROOT.is_dir() else None)
            read_only = True
            if NEUTRAL_ROOT.is_dir():
                root = str(NEUTRAL_ROOT)
        except OSError as exc:
            error = str(exc)
    _cap_address_space(config.address_space_bytes)
    return read_only, error, root


class _Worker:
    """The request loop of one worker process."""

    def __init__(self, config: WorkerConfig, root: str, requests: Connection, control: Connection) -> None:
        self.config = config
        self.root = root
        self.requests = requests
        self.control = control
        self.databases = DatabaseCache(config.max_open_databases, config.memory_limit, config.threads)
        self.probe_database = duckdb.connect(":memory:", config={"threads": 1})
        self._current: tuple[int, QueryHandle] | None = None
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def parquet(self, relative: str) -> Path:
        """A dataset's Parquet as this worker sees it; `relative` is its path under the sessions folder."""
        path = Path(self.root) / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise ValueError("dataset path outside the store")
        return path

    def listen_for_cancels(self) -> None:
        """The worker's one other thread: cancels from the engine, and the running query's timeout."""
        while True:
            with self._lock:
                current, deadline = self._current, self._deadline
            # A new query's deadline is seen within a tick: no thread per query, no wake-up pipe.
            wait = _TICK_S if deadline is None else min(_TICK_S, max(0.0, deadline - time.monotonic()))
            try:
                if not self.control.poll(wait):
                    if current is not None and deadline is not None and time.monotonic() >= deadline:
                        current[1].expire()
                        with self._lock:
                            if self._current is current:
                                self._deadline = None
                    continue
                message = json.loads(self.control.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)  # the engine is gone
            with self._lock:
                current = self._current
            if current is not None and current[0] == message.get("cancel"):
                current[1].cancel()

    def header(self, **fields: Any) -> bytes:
        vm, rss = memory()
        fields.update(rss=rss, vm=vm, open=self.databases.keys())
        return json.dumps(fields).encode()

    def serve(self) -> None:
        while True:
            try:
                request = json.loads(self.requests.recv_bytes())
            except (EOFError, OSError):
                return
            op = request.get("op")
            if op == "exit":
                return
            handle = QueryHandle()
            timeout_ms = int(request.get("timeout_ms") or 0)
            with self._lock:
                self._current = (int(request.get("id", 0)), handle)
                self._deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
            try:
                payload = self.handle(op, request, handle)
            except Exception as exc:
                if is_resource_exhaustion(exc):
                    raise  # this process is spent: the engine replaces it
                error = exc if isinstance(exc, InsightError) else _unexpected(exc)
                self.requests.send_bytes(
                    self.header(
                        ok=False, code=error.code.name, reason=error.reason, message=self.scrub(error.message)
                    )
                )
                continue
            finally:
                with self._lock:
                    self._current = None
                    self._deadline = None
            header, body = payload
            self.requests.send_bytes(header)
            if body is not None:
                self.requests.send_bytes(body)

    def handle(self, op: str, request: dict[str, Any], handle: QueryHandle) -> tuple[bytes, bytes | None]:
        if op == "probe":
            cursor = self.probe_database.cursor()
            try:
                (value,) = cursor.execute("SELECT 42").fetchall()[0]
            finally:
                cursor.close()
            return self.header(ok=True, value=int(value)), None
        sql = str(request["sql"])  # checked by the engine (safety.py) before it was sent
        key, table = str(request["key"]), str(request["table"])
        parquet = self.parquet(str(request["parquet"]))
        with self.databases.borrow(key, parquet, table) as cursor:
            if op == "bind":
                return self.header(ok=True, columns=bind(cursor, sql)), None
            result = run_select(
                cursor,
                sql,
                max_rows=int(request["max_rows"]),
                timeout_ms=int(request["timeout_ms"]),
                handle=handle,
                own_timer=False,  # listen_for_cancels expires it
                max_bytes=self.config.max_result_bytes,
            )
        result = cap_bytes(result, self.config.max_result_bytes)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.table.schema) as writer:
            writer.write_table(result.table)
        header = self.header(ok=True, truncated=result.truncated, elapsed_ms=result.elapsed_ms)
        return header, sink.getvalue().to_pybytes()

    def scrub(self, message: str) -> str:
        """Error texts name the neutral root, never the engine's data directory."""
        return message.replace(self.config.sessions, str(NEUTRAL_ROOT))


def _unexpected(exc: Exception) -> InsightError:
    if isinstance(exc, OSError):  # in practice no memory left to map (pyarrow, a pipe): this worker retires
        return ResourceExhausted(
            "SQL_TOO_LARGE", f"The query needs more memory than a query may use ({type(exc).__name__})."
        )
    if isinstance(exc, duckdb.Error | ValueError):
        return Unavailable("DATASET_UNREADABLE", f"The session's dataset could not be opened: {exc}")
    return Unavailable("SQL_ENGINE_ERROR", f"The query worker failed: {type(exc).__name__}")


def bind(cursor: duckdb.DuckDBPyConnection, sql: str) -> list[list[str]]:
    """The result columns of `sql` without running it."""
    try:
        relation = cursor.sql(sql)
        return [[str(n), str(t)] for n, t in zip(relation.columns, relation.types, strict=True)]
    except duckdb.Error as exc:
        raise translate_error(exc, QueryHandle(), 0) from exc


def main(config: WorkerConfig, requests: Connection, control: Connection) -> None:
    """The worker process's entry point (a multiprocessing target)."""
    try:
        read_only, error, root = isolate(config)
        worker = _Worker(config, root, requests, control)
        requests.send_bytes(json.dumps({"ready": True, "read_only": read_only, "error": error}).encode())
        threading.Thread(target=worker.listen_for_cancels, name="cancels", daemon=True).start()
        worker.serve()
    except BaseException as exc:  # out of memory or threads: the engine replaces this process
        print(f"query worker ending: {exc!r}"[:300], file=sys.stderr, flush=True)
        os._exit(70)
    os._exit(0)
