"""The engine's side of the query workers: a pool of processes, each running one query at a time.

Why processes: DuckDB keeps what a query allocated (a `len(range(250000000))` leaves gigabytes mapped), and
running out of memory or threads inside the engine process takes every user down. In a worker, a query past
its memory fails inside its own capped address space (SQL_TOO_LARGE), and a worker that dies, stops
answering, or grows past `recycle_rss_bytes` is replaced; the engine keeps serving.

Workers are forked from a multiprocessing fork server that has DuckDB and pyarrow imported (~15 ms each).
Each busy worker is driven by one thread of `_threads`, which only waits on its pipes. Everything else
(who runs next, per-caller caps) happens on the event loop in `WorkerPool.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pyarrow as pa

from common.errors import (
    DeadlineExceeded,
    InsightError,
    InvalidInput,
    ResourceExhausted,
    Unavailable,
)
from services.sql_engine import worker as worker_module
from services.sql_engine.executor import QueryHandle
from services.sql_engine.readonly import ReadOnlyState
from services.sql_engine.worker import WorkerConfig

log = logging.getLogger(__name__)

#: How long a worker may overrun its query's timeout (or a cancel) before it is killed and replaced.
GRACE_S = 5.0
_POLL_S = 0.25
_STARTUP_S = 30.0
_CODES = {code.name: code for code in grpc.StatusCode}
_ERRORS: dict[grpc.StatusCode, type[InsightError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


@dataclass(frozen=True)
class Job:
    """One request for a worker. `parquet` is relative to the store's sessions folder."""

    op: str  # "query", "bind" or "probe"
    key: str = ""
    table: str = ""
    parquet: str = ""
    sql: str = ""
    max_rows: int = 0
    timeout_ms: int = 0


@dataclass(frozen=True)
class Reply:
    """A worker's answer: its JSON header and, for a query, the result table."""

    header: dict[str, Any]
    table: pa.Table | None = None


class WorkerDied(Exception):
    """The worker ended (or was killed) while it held a request."""


class _Interrupter:
    """What a QueryHandle interrupts in the engine process: a cancel message to the worker."""

    def __init__(self, process: WorkerProcess, request_id: int) -> None:
        self.process = process
        self.request_id = request_id

    def interrupt(self) -> None:
        self.process.cancel(self.request_id)


class WorkerProcess:
    """One worker process and its two pipes, as seen from the engine."""

    _ids = itertools.count(1)

    def __init__(self, context: Any, config: WorkerConfig) -> None:
        self.requests, child_requests = context.Pipe()
        self.control, child_control = context.Pipe()
        self.process = context.Process(
            target=worker_module.main, args=(config, child_requests, child_control), daemon=True
        )
        self.process.start()
        child_requests.close()
        child_control.close()
        self._send_lock = threading.Lock()
        self.open: list[str] = []
        self.rss = 0
        self.vm = 0
        self.deadline: float | None = None  # while busy: when it is killed if it has not answered
        if not self.requests.poll(_STARTUP_S):
            self.kill()
            raise WorkerDied("a query worker did not start in time")
        hello = json.loads(self.requests.recv_bytes())
        self.read_only = bool(hello["read_only"])
        self.error = str(hello["error"])

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def cancel(self, request_id: int) -> None:
        try:
            with self._send_lock:
                self.control.send_bytes(json.dumps({"cancel": request_id}).encode())
        except OSError:
            pass  # it is gone already; the thread waiting for it sees that

    def run(self, job: Job, handle: QueryHandle, timeout_s: float, grace_s: float = GRACE_S) -> Reply:
        """Sends `job` and waits for the answer; blocking, on a pool thread.

        Kills the worker when it has not answered `grace_s` after the job's timeout or its cancel.
        """
        request_id = next(self._ids)
        request = {"op": job.op, "id": request_id, **{k: v for k, v in job.__dict__.items() if k != "op"}}
        self.deadline = time.monotonic() + timeout_s + grace_s
        try:
            self.requests.send_bytes(json.dumps(request).encode())
            handle.attach(_Interrupter(self, request_id))  # type: ignore[arg-type]
            cancelled_at: float | None = None
            while not self.requests.poll(_POLL_S):
                now = time.monotonic()
                if handle.cancelled and cancelled_at is None:
                    cancelled_at = now
                    self.deadline = min(self.deadline, now + GRACE_S)
                if now > self.deadline or not self.process.is_alive():
                    why = "ended" if self.process.exitcode is not None else "stopped answering"
                    self.kill()
                    raise WorkerDied(why)
            header = json.loads(self.requests.recv_bytes())
            table = None
            if header.get("ok") and job.op == "query":
                table = pa.ipc.open_stream(self.requests.recv_bytes()).read_all()
        except (EOFError, OSError, ConnectionError) as exc:
            self.kill()
            raise WorkerDied("ended") from exc
        finally:
            handle.attach(None)
            self.deadline = None
        self.rss = int(header.get("rss", 0))
        self.vm = int(header.get("vm", 0))
        self.open = list(header.get("open", []))
        return Reply(header, table)

    def kill(self) -> None:
        """Ends the worker now (SIGKILL) and reaps it."""
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.join(5)
        self.close_pipes()

    def stop(self) -> None:
        """Asks the worker to exit, then makes sure it did."""
        try:
            with self._send_lock:
                self.requests.send_bytes(b'{"op": "exit"}')
        except OSError:
            pass
        self.process.join(1)
        self.kill()

    def close_pipes(self) -> None:
        for pipe in (self.requests, self.control):
            pipe.close()


@dataclass
class _Waiter:
    callers: tuple[str, ...]
    seq: int
    future: asyncio.Future[WorkerProcess]
    key: str = ""  # the dataset: a worker that has it open already is preferred


@dataclass
class PoolLimits:
    """How many workers, and how many of them (and of the waiting line) one caller may hold."""

    workers: int = 8
    per_session: int = 4
    per_user: int = 6
    waiting_per_caller: int = 64
    recycle_rss_bytes: int = 1 << 30


@dataclass
class PoolCounts:
    running: int = 0
    queued: int = 0
    replaced: int = 0
    by_caller: Counter[str] = field(default_factory=Counter)  # running + waiting, per caller key


class WorkerPool:
    """Worker processes, per-caller caps, and fair dispatch (the caller holding fewest workers goes first)."""

    def __init__(self, config: WorkerConfig, limits: PoolLimits) -> None:
        self.config = config
        self.limits = limits
        self.read_only = ReadOnlyState()
        self.counts = PoolCounts()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["services.sql_engine.worker"])
        size = max(1, limits.workers)
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sql-worker")
        self._idle: list[WorkerProcess] = []
        self._busy: set[WorkerProcess] = set()
        self._holding: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._size = size
        self._closed = False
        self._replenishing = False

    # --- life ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts every worker (blocking) and every pool thread, so neither is created under pressure."""
        for _ in range(self._size):
            self._idle.append(self._spawn())
        barrier = threading.Barrier(self._size)
        for future in [self._threads.submit(barrier.wait, 10) for _ in range(self._size)]:
            future.result()

    def _spawn(self) -> WorkerProcess:
        process = WorkerProcess(self._context, self.config)
        if self.config.read_only_mount:
            self.read_only.record(process.read_only, process.error)
        return process

    def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(
                    Unavailable("ENGINE_STOPPING", "The SQL engine is shutting down.")
                )
        self._waiters.clear()
        for process in [*list(self._idle), *list(self._busy)]:
            process.kill()
        self._idle.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # --- status ----------------------------------------------------------------------------------------

    @property
    def open_databases(self) -> int:
        return len({key for process in [*self._idle, *self._busy] for key in process.open})

    def worker_pids(self) -> list[int]:
        return [process.pid for process in [*self._idle, *self._busy]]

    # --- running ---------------------------------------------------------------------------------------

    async def run(
        self, job: Job, callers: tuple[str, ...], handle: QueryHandle, timeout_s: float, wait_s: float
    ) -> Reply:
        """Runs `job` on a worker once one is free for these callers (waiting at most `wait_s`)."""
        self._admit(callers)
        process = await self._acquire(callers, wait_s, job.key)
        loop = asyncio.get_running_loop()
        self.counts.running += 1
        try:
            outcome = loop.run_in_executor(
                self._threads, self._run_on, process, callers, job, handle, timeout_s, loop
            )
            try:
                return await asyncio.shield(outcome)
            except asyncio.CancelledError:
                handle.cancel()  # the worker stops; its thread hands it back once it has answered
                raise
        finally:
            self.counts.running -= 1

    async def probe(self, timeout_s: float) -> bool:
        """Can a worker run a trivial query now? When all are busy within their deadlines, that is alive."""
        self._replenish()
        process = self._take_idle((), oldest=True)  # in turn, so every idle worker gets probed
        if process is None:
            now = time.monotonic()
            return bool(self._busy) and all(p.deadline is None or p.deadline > now for p in self._busy)
        loop = asyncio.get_running_loop()
        job = Job("probe")
        outcome = loop.run_in_executor(
            self._threads, self._run_on, process, (), job, QueryHandle(), timeout_s, loop
        )
        try:
            reply = await asyncio.wait_for(asyncio.shield(outcome), timeout_s)
        except (TimeoutError, InsightError):
            return False
        return reply.header.get("value") == 42

    def _replenish(self) -> None:
        """Starts one worker when some could not be replaced (e.g. a fork failed); on the event loop."""
        missing = self._size - len(self._idle) - len(self._busy)
        if missing <= 0 or self._replenishing or self._closed:
            return
        self._replenishing = True
        future = asyncio.get_running_loop().run_in_executor(self._threads, self._spawn)

        def done(future: asyncio.Future[WorkerProcess]) -> None:
            self._replenishing = False
            error = None if future.cancelled() else future.exception()
            if future.cancelled() or error is not None:
                log.error("query worker could not be started", extra={"error": repr(error)[:300]})
                return
            if self._closed:
                future.result().kill()
                return
            self._idle.append(future.result())
            self._dispatch()

        future.add_done_callback(done)

    def _admit(self, callers: tuple[str, ...]) -> None:
        if self._closed:
            raise Unavailable("ENGINE_STOPPING", "The SQL engine is shutting down.")
        for caller in callers:
            allowed = self._cap(caller) + self.limits.waiting_per_caller
            if self.counts.by_caller[caller] >= allowed:
                kind = caller.split(":", 1)[0]
                raise ResourceExhausted(
                    "TOO_MANY_QUERIES",
                    f"This {kind} already has {self.counts.by_caller[caller]} queries running or waiting "
                    f"(at most {allowed}); wait for some to finish and retry in a few seconds.",
                    {"retry_after_ms": "2000"},
                )

    def _cap(self, caller: str) -> int:
        limit = self.limits.per_user if caller.startswith("user:") else self.limits.per_session
        return max(1, min(limit, self._size))

    async def _acquire(self, callers: tuple[str, ...], wait_s: float, key: str = "") -> WorkerProcess:
        waiter = _Waiter(callers, next(self._seq), asyncio.get_running_loop().create_future(), key)
        self._waiters.append(waiter)
        for caller in callers:
            self.counts.by_caller[caller] += 1
        self.counts.queued += 1
        try:
            self._dispatch()
            return await asyncio.wait_for(asyncio.shield(waiter.future), wait_s)
        except TimeoutError as exc:
            self._forget(waiter)
            raise DeadlineExceeded(
                "SQL_TIMEOUT",
                f"No query worker was free for {wait_s:.0f} s (this caller's other queries, or everyone's, "
                "hold them); retry later.",
            ) from exc
        except BaseException:
            self._forget(waiter)
            raise
        finally:
            self.counts.queued -= 1
            for caller in callers:
                self.counts.by_caller[caller] -= 1

    def _forget(self, waiter: _Waiter) -> None:
        """A waiter that left: out of the line, and a worker it was just given goes back."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        elif waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
            process = waiter.future.result()
            self._release(waiter.callers, process, process)

    def _take_idle(
        self, callers: tuple[str, ...], oldest: bool = False, key: str = ""
    ) -> WorkerProcess | None:
        """An idle worker: the oldest (probes), else the most recent that has `key` open, else the most
        recent (its caches are warm)."""
        if not self._idle or any(self._holding[c] >= self._cap(c) for c in callers):
            return None
        index = 0 if oldest else len(self._idle) - 1
        if key and not oldest:
            for position in range(len(self._idle) - 1, -1, -1):
                if key in self._idle[position].open:
                    index = position
                    break
        process = self._idle.pop(index)
        self._busy.add(process)
        return process

    def _hold(self, callers: tuple[str, ...]) -> None:
        for caller in callers:
            self._holding[caller] += 1
            self.counts.by_caller[caller] += 1

    def _dispatch(self) -> None:
        """Gives free workers to waiters: the one whose callers hold fewest workers first, then in order."""
        while self._idle and self._waiters:
            eligible = [w for w in self._waiters if all(self._holding[c] < self._cap(c) for c in w.callers)]
            if not eligible:
                return
            chosen = min(
                eligible, key=lambda w: (max((self._holding[c] for c in w.callers), default=0), w.seq)
            )
            self._waiters.remove(chosen)
            process = self._take_idle((), key=chosen.key)
            assert process is not None
            self._hold(chosen.callers)
            chosen.future.set_result(process)

    def _fairness(self, waiter: _Waiter) -> tuple[int, int]:
        return max((self._holding[c] for c in waiter.callers), default=0), waiter.seq

    def _release(
        self, callers: tuple[str, ...], process: WorkerProcess | None, used: WorkerProcess | None = None
    ) -> None:
        """On the event loop: the worker `used` is done; `process` (the same one, its replacement, or None
        when it could not be replaced) is free. The pool's lists change on the loop only."""
        if used is not None:
            self._busy.discard(used)
        for caller in callers:
            self._holding[caller] -= 1
            self.counts.by_caller[caller] -= 1
            if self._holding[caller] <= 0:
                del self._holding[caller]
            if self.counts.by_caller[caller] <= 0:
                del self.counts.by_caller[caller]
        if process is not None and not self._closed:
            self._idle.append(process)
        self._dispatch()

    def _run_on(
        self,
        process: WorkerProcess,
        callers: tuple[str, ...],
        job: Job,
        handle: QueryHandle,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> Reply:
        """On a pool thread: runs the job, replaces the worker when it died or grew too big, hands it back."""
        current: WorkerProcess | None = process
        try:
            # A probe is a trivial query: a worker that does not answer it in time is replaced at once.
            reply = process.run(job, handle, timeout_s, 0.0 if job.op == "probe" else GRACE_S)
            if self._spent(process, reply):
                log.info(
                    "query worker retired",
                    extra={"pid": process.pid, "rss": process.rss, "address_space": process.vm},
                )
                current = self._replace(process, stop=True)
            return _raise_for(reply)
        except WorkerDied as exc:
            log.warning(
                "query worker replaced",
                extra={"pid": process.pid, "why": str(exc), "exit_code": process.process.exitcode},
            )
            current = self._replace(process, stop=False)
            if handle.cancelled:
                raise InvalidInput("SQL_CANCELLED", "The query was cancelled by its caller.") from exc
            if str(exc) == "stopped answering":
                raise DeadlineExceeded(
                    "SQL_TIMEOUT", "The query ran past its time and did not stop; its worker was replaced."
                ) from exc
            raise ResourceExhausted(
                "SQL_TOO_LARGE",
                "The query ended its worker process (most likely it needed more memory than a query may "
                "use); the engine replaced the worker. Aggregate or filter to ask for less.",
            ) from exc
        finally:
            try:
                loop.call_soon_threadsafe(self._release, callers, current, process)
            except RuntimeError:  # the loop is closed: the engine is stopping
                if current is not None:
                    current.kill()

    def _spent(self, process: WorkerProcess, reply: Reply) -> bool:
        """Retire a worker that grew past the high-water mark, kept most of its address space mapped
        (DuckDB keeps what a big query reserved: the next one would fail to allocate), or ran out of it."""
        cap = self.config.address_space_bytes
        return (
            process.rss > self.limits.recycle_rss_bytes
            or (cap > 0 and process.vm > cap * 3 // 4)
            or reply.header.get("reason") == "SQL_TOO_LARGE"
        )

    def _replace(self, process: WorkerProcess, stop: bool) -> WorkerProcess | None:
        if stop:
            process.stop()
        else:
            process.kill()
        self.counts.replaced += 1
        if self._closed:
            return None
        try:
            return self._spawn()
        except Exception as exc:  # cannot fork now: the pool shrinks, and health reports it if none are left
            log.error("query worker could not be replaced", extra={"error": repr(exc)[:300]})
            return None


def _raise_for(reply: Reply) -> Reply:
    header = reply.header
    if header.get("ok"):
        return reply
    code = _CODES.get(str(header.get("code")), grpc.StatusCode.INVALID_ARGUMENT)
    error = _ERRORS.get(code, InvalidInput)
    raise error(str(header.get("reason", "SQL_ERROR")), str(header.get("message", "")))
