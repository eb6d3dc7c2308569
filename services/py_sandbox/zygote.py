"""The zygote: a warm interpreter (numpy, pandas, scipy, pyarrow, matplotlib already imported) that clones
one confined child per run and supervises it; it never runs untrusted code itself.

`python -m services.py_sandbox.zygote '<confinement json>' '<options json>'`, started by the server with a
clean environment. Control: requests arrive on stdin and replies leave on the original stdout, as pairs of
frames (a JSON header, then a blob).

Children are cloned ahead of need ("spares"): a blank one, and for each recent session two "primed" ones
that have already mapped that session's data and confined themselves. A run takes a spare, hands it the
job on its own pipe, and the spare serves that one job and exits. One single-threaded loop (selectors +
pidfds) watches every child: it drains stdout, stderr and the result pipe under their caps, kills on the
wall-clock deadline or a flood, and turns the child's frames into a validated RunCodeResponse. The zygote
must stay single-threaded: clone() skips pthread_atfork handlers, so another thread's lock would be
inherited held.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import pyarrow as pa

from common.arrow import to_table_result
from insightx.v1 import common_pb2
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import frames, harness, isolation
from services.py_sandbox.isolation import Confinement
from services.py_sandbox.template import Template

PIPE_CHUNK = 1 << 16
PRIMED_PER_SESSION = 2  # two, so back-to-back runs of a session find one ready while the next is cloned
EXIT_GRACE_S = 0.5
CATEGORIES = {
    "POLICY": pb.RUN_ERROR_CATEGORY_POLICY,
    "EXCEPTION": pb.RUN_ERROR_CATEGORY_EXCEPTION,
    "TIMEOUT": pb.RUN_ERROR_CATEGORY_TIMEOUT,
    "MEMORY": pb.RUN_ERROR_CATEGORY_MEMORY,
    "OUTPUT_LIMIT": pb.RUN_ERROR_CATEGORY_OUTPUT_LIMIT,
    "KILLED": pb.RUN_ERROR_CATEGORY_KILLED,
    "INVALID_RESULT": pb.RUN_ERROR_CATEGORY_INVALID_RESULT,
    "INVALID_INPUT": pb.RUN_ERROR_CATEGORY_INVALID_INPUT,
}
DONE_FRAME = frames.encode(frames.DONE, b"")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Spare:
    """A child cloned ahead of need, waiting for its one job."""

    pid: int
    pidfd: int
    job_w: int
    reads: list[int]
    primed: str = ""  # the cache path of the session whose data it already holds


@dataclass
class Run:
    """One child under supervision."""

    run_id: str
    job: dict[str, Any]
    pid: int
    pidfd: int
    started: float
    deadline: float
    streams: dict[int, str] = field(default_factory=dict)
    data: dict[str, bytearray] = field(
        default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
    )
    truncated: set[str] = field(default_factory=set)
    kill_reason: tuple[str, str] | None = None
    exit_code: int | None = None
    exited_at: float = 0.0
    done_seen: bool = False
    has_input: bool = False  # the caller sent its own table
    oom: bool = False  # the kernel OOM-killed in the run's cgroup


class Supervisor:
    """Hands jobs to children cloned by the template, supervises them and answers the server."""

    def __init__(
        self,
        conf: Confinement,
        ctrl_in: int,
        ctrl_out: int,
        template: socket.socket,
        spares: int = 1,
        primed: int = 2,
    ) -> None:
        self.conf = conf
        self.ctrl_in = ctrl_in
        self.ctrl_out = ctrl_out
        self.template = template
        self.spare_target = spares
        self.primed_target = primed
        self.spares: list[Spare] = []
        self.requests: dict[int, str] = {}  # spawn tag -> cache path it is primed for ("" = blank)
        self.next_tag = 0
        self.pending: deque[tuple[dict[str, Any], bytes, float]] = deque()  # jobs waiting for a child
        self.recent: OrderedDict[str, dict[str, str]] = OrderedDict()  # sessions to keep primed children for
        self.children: dict[int, Run | Spare | int] = {}  # pid -> its run, its spare, or a pidfd to close
        self.selector = selectors.DefaultSelector()
        self.runs: dict[str, Run] = {}
        self.reader = frames.FrameReader(frozenset({frames.CONTROL_JSON, frames.CONTROL_BLOB}), 1 << 30)
        self.pending_header: dict[str, Any] | None = None
        self.isolation: dict[str, Any] = {}
        self.closing = False

    # -- control pipe ---------------------------------------------------------------------------------
    def reply(self, header: dict[str, Any], blob: bytes = b"") -> None:
        data = frames.encode(frames.CONTROL_JSON, json.dumps(header).encode()) + frames.encode(
            frames.CONTROL_BLOB, blob
        )
        view = memoryview(data)
        while view:
            view = view[os.write(self.ctrl_out, view) :]

    def on_control(self) -> None:
        chunk = os.read(self.ctrl_in, PIPE_CHUNK)
        if not chunk:  # the server is gone: end every child and leave (the template follows)
            self.closing = True
            self.selector.unregister(self.ctrl_in)
            for run in self.runs.values():
                self.kill(run, "KILLED", "The sandbox service stopped.")
            for spare in self.spares:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(spare.pidfd, signal.SIGKILL)
            return
        for kind, payload in self.reader.feed(chunk):
            if kind == frames.CONTROL_JSON:
                self.pending_header = json.loads(payload)
            elif self.pending_header is not None:
                header, self.pending_header = self.pending_header, None
                if header.get("op") == "run":
                    self.start(header, payload)
                elif header.get("op") == "cancel":
                    self.cancel(str(header.get("run_id")))

    # -- the template -----------------------------------------------------------------------------------
    def request_spare(self, primed: dict[str, str] | None = None, urgent: bool = False) -> None:
        self.next_tag += 1
        self.requests[self.next_tag] = primed["cache"] if primed else ""
        request = {"op": "spawn", "tag": self.next_tag, "primed": primed, "urgent": urgent}
        socket.send_fds(self.template, [json.dumps(request).encode()], [])

    def on_template(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.template, 1 << 16, 8)
            except BlockingIOError:
                return
            if not data:
                raise SystemExit("zygote: the template died")  # the server restarts the whole zygote
            message = json.loads(data)
            if message["op"] == "spawned":
                pidfd, job_w, *reads = fds
                primed = self.requests.pop(int(message["tag"]), "")
                spare = Spare(pid=int(message["pid"]), pidfd=pidfd, job_w=job_w, reads=reads, primed=primed)
                self.children[spare.pid] = spare
                if self.closing:
                    signal.pidfd_send_signal(spare.pidfd, signal.SIGKILL)
                self.spares.append(spare)
                self.dispatch_pending()
            elif message["op"] == "failed":
                self.requests.pop(int(message["tag"]), None)
                print(
                    f"zygote: the template could not clone a child: {message.get('error')}", file=sys.stderr
                )
                for job, _, _ in list(self.pending):
                    self.reply_error(
                        job, "KILLED", f"The sandbox could not start a child: {message.get('error')}"
                    )
                self.pending.clear()
            elif message["op"] == "exited":
                self.on_exit(int(message["pid"]), int(message["status"]), bool(message.get("oom")))

    # -- spares -----------------------------------------------------------------------------------------
    def take_spare(self, cache: str) -> Spare | None:
        """A child primed for this session, else a blank one (it loads the data itself)."""
        for wanted in (cache, ""):
            for spare in self.spares:
                if spare.primed == wanted:
                    self.spares.remove(spare)
                    return spare
        return None

    def replenish(self) -> None:
        """Keeps a blank child and two primed children per recent session on the way or waiting."""
        if self.closing:
            return
        for spare in [s for s in self.spares if s.primed and s.primed not in self.recent]:
            self.spares.remove(spare)
            self.release(spare)  # primed for a session no longer recent
        blank = sum(1 for s in self.spares if not s.primed) + sum(1 for c in self.requests.values() if not c)
        for i in range(self.spare_target - blank + len(self.pending)):
            self.request_spare(urgent=i < len(self.pending))  # a job waits: skip the warm-up
        for cache, prime in self.recent.items():
            have = sum(1 for s in self.spares if s.primed == cache) + sum(
                1 for c in self.requests.values() if c == cache
            )
            if os.path.exists(cache):
                for _ in range(PRIMED_PER_SESSION - have):
                    self.request_spare(prime)

    def release(self, spare: Spare) -> None:
        """A spare's job pipe closes: it exits, and the template reports it reaped."""
        os.close(spare.job_w)
        for fd in spare.reads:
            os.close(fd)
        self.children[spare.pid] = spare.pidfd

    # -- runs -------------------------------------------------------------------------------------------
    def start(self, job: dict[str, Any], input_ipc: bytes) -> None:
        """The deadline counts from now, even if the job waits a moment for a child."""
        if self.isolation and "expected_level" not in job:
            job["expected_level"] = self.isolation.get("level", "none")
        cache = "" if input_ipc else str(job.get("cache") or "")
        if cache and job.get("dataset"):
            self.recent.pop(cache, None)
            self.recent[cache] = {"dataset": str(job["dataset"]), "cache": cache}
            while len(self.recent) > self.primed_target:
                self.recent.pop(next(iter(self.recent)))
        self.pending.append((job, input_ipc, time.monotonic()))
        self.dispatch_pending()

    def cancel(self, run_id: str) -> None:
        """The caller gave up: its child is killed now rather than at its deadline."""
        run = self.runs.get(run_id)
        if run is not None:
            self.kill(run, "KILLED", "The caller cancelled the run.")
            return
        for entry in list(self.pending):
            if entry[0].get("run_id") == run_id:
                self.pending.remove(entry)

    def dispatch_pending(self) -> None:
        while self.pending:
            job, input_ipc, received = self.pending[0]
            spare = self.take_spare("" if input_ipc else str(job.get("cache") or ""))
            if spare is None:
                return
            self.pending.popleft()
            self.dispatch(spare, job, input_ipc, received)

    def dispatch(self, spare: Spare, job: dict[str, Any], input_ipc: bytes, received: float) -> None:
        cache = "" if input_ipc else str(job.get("cache") or "")
        if cache and job.get("dataset") and not os.path.exists(cache):  # the child writes the copy, confined
            partial = os.path.join(os.path.dirname(cache), f".{os.path.basename(cache)}.{job['run_id']}")
            job = {**job, "cache_partial": partial}
        run = Run(
            run_id=job["run_id"],
            job=job,
            pid=spare.pid,
            pidfd=spare.pidfd,
            started=received,
            deadline=received + float(job["timeout_s"]),
            has_input=bool(input_ipc),
        )
        for r, name in zip(spare.reads, ("stdout", "stderr", "result"), strict=True):
            os.set_blocking(r, False)
            run.streams[r] = name
            self.selector.register(r, selectors.EVENT_READ, ("stream", run))
        self.children[run.pid] = run
        self.runs[run.run_id] = run
        data = frames.encode(frames.CONTROL_JSON, json.dumps(job).encode()) + frames.encode(
            frames.CONTROL_BLOB, input_ipc
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(spare.job_w, view) :]
        except OSError:
            pass  # the child is gone; the template reports its exit like any other
        finally:
            os.close(spare.job_w)

    def reply_error(self, job: dict[str, Any], category: str, message: str) -> None:
        response = _with_error(pb.RunCodeResponse(), category, message)
        if not job.get("probe"):
            self.reply({"op": "done", "run_id": job["run_id"]}, response.SerializeToString())

    def kill(self, run: Run, category: str, message: str) -> None:
        if run.kill_reason is None and run.exit_code is None:
            run.kill_reason = (category, message)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(run.pidfd, signal.SIGKILL)

    def on_stream(self, fd: int, run: Run) -> None:
        name = run.streams[fd]
        try:
            chunk = os.read(fd, PIPE_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(fd)
            os.close(fd)
            del run.streams[fd]
            return
        buffer = run.data[name]
        if name == "result":
            buffer += chunk
            if len(buffer) > int(run.job["max_result_pipe_bytes"]):
                self.kill(run, "OUTPUT_LIMIT", "The result exceeded its size cap.")
            elif buffer.endswith(DONE_FRAME):
                run.done_seen = True  # answer now; the exit of the process is only housekeeping
            return
        cap = int(run.job["max_output_bytes"])
        room = cap - len(buffer)
        buffer += chunk[: max(room, 0)]
        if len(chunk) > room:
            run.truncated.add(name)
            self.kill(
                run, "OUTPUT_LIMIT", f"The run printed more than {cap // 1024} KiB to {name}; it was stopped."
            )

    def drain(self, run: Run) -> None:
        """Reads what stdout and stderr still hold (the child flushed them before its DONE frame)."""
        for fd in list(run.streams):
            for _ in range(64):
                if fd not in run.streams:
                    break
                before = sum(len(b) for b in run.data.values())
                self.on_stream(fd, run)
                if sum(len(b) for b in run.data.values()) == before:
                    break

    def on_exit(self, pid: int, status: int, oom: bool = False) -> None:
        child = self.children.pop(pid, None)
        if isinstance(child, Run):
            child.exit_code = status
            child.oom = oom
            child.exited_at = time.monotonic()
        elif isinstance(child, Spare):  # died before it got a job (it should not)
            if child in self.spares:
                self.spares.remove(child)
                self.release(child)
                self.children.pop(pid, None)
            os.close(child.pidfd)
        elif isinstance(child, int):
            os.close(child)  # the pidfd of a child answered for earlier or released

    def promote_copy(self, run: Run) -> None:
        """Moves the session's Arrow copy into place when the child wrote it whole: its CACHE_READY frame
        came right after ISOLATION, before the code could write anything; otherwise the partial file goes."""
        partial = str(run.job.get("cache_partial") or "")
        if not partial:
            return
        try:
            if frames.leading_kinds(bytes(run.data["result"]), 2) == [frames.ISOLATION, frames.CACHE_READY]:
                os.replace(partial, str(run.job["cache"]))
            else:
                os.unlink(partial)
        except OSError as exc:
            print(f"zygote: the session's Arrow copy was not kept ({exc})", file=sys.stderr)

    def finish(self, run: Run) -> None:
        self.promote_copy(run)
        for fd in list(run.streams):
            self.selector.unregister(fd)
            os.close(fd)
        run.streams.clear()
        if run.exit_code is None:  # answered on DONE: end the child now; the template reaps it
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(run.pidfd, signal.SIGKILL)
            self.children[run.pid] = run.pidfd
        else:
            os.close(run.pidfd)
        del self.runs[run.run_id]
        try:
            response = build_response(run)
        except Exception as exc:  # a bug here must cost one run, not the zygote
            response = _with_error(
                pb.RunCodeResponse(), "INVALID_RESULT", f"The result could not be read ({exc})."
            )
        if run.job.get("probe"):
            self.isolation = _isolation_of(run)
            return
        self.reply({"op": "done", "run_id": run.run_id}, response.SerializeToString())

    # -- loop -----------------------------------------------------------------------------------------
    def step(self) -> None:
        self.replenish()  # before waiting: a pending job may need a child requested
        now = time.monotonic()
        waits = [r.deadline - now for r in self.runs.values() if r.exit_code is None]
        waits += [r.exited_at + EXIT_GRACE_S - now for r in self.runs.values() if r.exit_code is not None]
        waits += [received + float(job["timeout_s"]) - now for job, _, received in self.pending]
        timeout = max(0.0, min(waits)) if waits else None
        for key, _ in self.selector.select(timeout):
            kind, run = key.data
            if kind == "control":
                self.on_control()
            elif kind == "template":
                self.on_template()
            elif kind == "stream":
                self.on_stream(key.fd, run)
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.done_seen and run.exit_code is None and run.kill_reason is None:
                self.drain(run)
                self.finish(run)
                continue
            if run.exit_code is None and now >= run.deadline:
                self.kill(
                    run,
                    "TIMEOUT",
                    f"The run took longer than {float(run.job['timeout_s']):g} s; it was stopped.",
                )
            if run.exit_code is not None and (not run.streams or now >= run.exited_at + EXIT_GRACE_S):
                self.finish(run)
        while self.pending and now >= self.pending[0][2] + float(self.pending[0][0]["timeout_s"]):
            job, _, _ = self.pending.popleft()
            self.reply_error(job, "TIMEOUT", "No sandbox child became free in time.")

    def probe(self) -> dict[str, Any]:
        """A harmless run through the real path, so the isolation report is measured, not assumed."""
        job = {
            "op": "run",
            "run_id": "probe",
            "probe": True,
            "code": "result = 1",
            "timeout_s": 30.0,
            "dataset": "",
            "cache": "",
            "max_output_bytes": 65536,
            "max_result_pipe_bytes": 1 << 20,
            "max_result_bytes": 1 << 20,
            "max_result_rows": 10,
            "max_figures": 1,
            "max_figure_bytes": 1 << 20,
            "memory_mb": self.conf.memory_bytes >> 20,
        }
        self.start(job, b"")
        while not self.isolation:
            self.step()
        return dict(self.isolation)

    def serve(self) -> None:
        self.selector.register(self.ctrl_in, selectors.EVENT_READ, ("control", None))
        while not (self.closing and not self.runs):
            self.step()


def _isolation_of(run: Run) -> dict[str, Any]:
    try:
        for kind, payload in frames.decode_all(bytes(run.data["result"]), frames.CHILD_KINDS, 1 << 20):
            if kind == frames.ISOLATION:
                return dict(json.loads(payload))
    except (frames.FrameError, ValueError):
        pass
    return {"level": "none", "problems": [f"the probe run failed (exit {run.exit_code})"]}


def build_response(run: Run) -> pb.RunCodeResponse:
    """Validates what the child sent; never trusts it further than its parsers."""
    response = pb.RunCodeResponse(
        stdout=run.data["stdout"].decode("utf-8", "replace"),
        stderr=run.data["stderr"].decode("utf-8", "replace"),
        stdout_truncated="stdout" in run.truncated,
        stderr_truncated="stderr" in run.truncated,
        elapsed_ms=(time.monotonic() - run.started) * 1000.0,
    )
    if run.kill_reason is not None:
        category, message = run.kill_reason
        return _with_error(response, category, message)
    try:
        parsed = frames.decode_all(
            bytes(run.data["result"]), frames.CHILD_KINDS, int(run.job["max_result_pipe_bytes"])
        )
    except frames.FrameError as exc:
        return _with_error(response, "INVALID_RESULT", f"The run sent malformed result data ({exc}).")
    kinds = [kind for kind, _ in parsed]
    if run.job.get("expected_level") and not _isolation_held(parsed, str(run.job["expected_level"])):
        return _with_error(
            response, "KILLED", "The run's isolation was weaker than the sandbox's; its output is withheld."
        )
    error = next((p for k, p in parsed if k == frames.RUN_ERROR), None)
    if error is not None:
        try:
            detail = json.loads(error)
            return _with_error(response, str(detail["category"]), str(detail["message"])[:4000])
        except (ValueError, KeyError, TypeError):
            return _with_error(response, "INVALID_RESULT", "The run sent a malformed error.")
    if frames.DONE not in kinds:
        if run.has_input and frames.INPUT_READY not in kinds and (run.exit_code or 0) < 0 and not run.oom:
            signum = signal.Signals(-(run.exit_code or 0)).name
            message = f"The input table crashed the Arrow decoder ({signum}); it is malformed."
            return _with_error(response, "INVALID_INPUT", message)
        if run.oom:
            return _with_error(
                response,
                "MEMORY",
                "The run was stopped by the kernel for memory: it went over its own limit, or all runs "
                "together reached the sandbox's total.",
            )
        return _with_error(response, *_exit_reason(run.exit_code))
    if (
        kinds.count(frames.RESULT_JSON) + kinds.count(frames.RESULT_TABLE) != 1
        or kinds.count(frames.DONE) != 1
    ):
        return _with_error(response, "INVALID_RESULT", "The run sent more than one result (forged frames?).")
    try:
        _fill(response, parsed, run.job)
    except (ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        response.ClearField("result_table")
        response.ClearField("figures")
        response.result_json = ""
        return _with_error(response, "INVALID_RESULT", f"The run sent an invalid result ({exc}).")
    return response


LEVELS = {"none": 0, "partial": 1, "strong": 2}


def _isolation_held(parsed: list[tuple[bytes, bytes]], expected: str) -> bool:
    """The child reports its isolation before the code runs (so the code cannot forge the first frame)."""
    if not parsed or parsed[0][0] != frames.ISOLATION:
        return not parsed or parsed[0][0] == frames.RUN_ERROR  # failed before confining: nothing ran
    try:
        level = str(json.loads(parsed[0][1]).get("level"))
    except (ValueError, AttributeError):
        return False
    return LEVELS.get(level, 0) >= LEVELS.get(expected, 0)


def _fill(response: pb.RunCodeResponse, parsed: list[tuple[bytes, bytes]], job: dict[str, Any]) -> None:
    figures = 0
    for kind, payload in parsed:
        if kind == frames.RESULT_JSON:
            text = payload.decode("utf-8")
            json.loads(text)
            response.result_json = text
        elif kind == frames.RESULT_TABLE:
            truncated, ipc = payload[:1] == b"\x01", payload[1:]
            table = pa.ipc.open_stream(pa.py_buffer(ipc)).read_all()
            table.validate(full=True)
            if table.num_rows > int(job["max_result_rows"]):
                raise ValueError("too many rows")
            response.result_table.CopyFrom(to_table_result(table, truncated))
        elif kind == frames.FIGURE_PNG:
            figures += 1
            if figures > int(job["max_figures"]) or len(payload) > int(job["max_figure_bytes"]):
                raise ValueError("figures over their caps")
            if not payload.startswith(PNG_SIGNATURE):
                raise ValueError("a figure is not a PNG")
            response.figures.append(common_pb2.Figure(mime_type="image/png", data=payload))


def _exit_reason(code: int | None) -> tuple[str, str]:
    """Why a child ended without saying DONE (a negative code is the signal that ended it)."""
    signum = -code if code is not None and code < 0 else None
    if signum == signal.SIGXCPU:
        return "TIMEOUT", "The run used up its CPU time limit."
    if signum == signal.SIGKILL:
        return "KILLED", "The run was killed by the kernel (most often: memory)."
    if signum == signal.SIGSYS:
        return "KILLED", "The run made a forbidden system call."
    if signum == signal.SIGXFSZ:
        return "OUTPUT_LIMIT", "The run wrote a file over the size limit."
    if signum is not None:
        return "KILLED", f"The run died with signal {signal.Signals(signum).name}."
    return "INVALID_RESULT", f"The run ended (exit status {code}) without returning a result."


def _with_error(response: pb.RunCodeResponse, category: str, message: str) -> pb.RunCodeResponse:
    response.error.CopyFrom(
        pb.RunError(category=CATEGORIES.get(category, pb.RUN_ERROR_CATEGORY_KILLED), message=message)
    )
    return response


def _warm_up() -> None:
    """Exercises every lazy import of the run path once, so no child pays for (or needs files for) it."""
    import tempfile

    import numpy as np
    import pandas as pd
    import scipy.stats

    frame = pd.DataFrame(
        {
            "f": [1.5, 2.5, np.nan],
            "i": [1, 2, 3],
            "s": ["a", "b", None],
            "t": pd.to_datetime(["2024-01-01", "2024-02-01", None]),
            "c": pd.Categorical(["x", "y", "x"]),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # No Parquet or Arrow *file* readers here: they start thread pools, and clone() must find one thread.
    with tempfile.TemporaryDirectory() as tmp:
        with pa.OSFile(f"{tmp}/w.arrow", "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        mapped = pa.ipc.open_stream(pa.memory_map(f"{tmp}/w.arrow")).read_all()
        restored = mapped.to_pandas(use_threads=False, split_blocks=True)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    pa.ipc.open_stream(pa.py_buffer(sink.getvalue().to_pybytes())).read_all().validate(full=True)
    restored.groupby("s")["f"].agg(["mean", "sum", "count"])
    restored.describe()
    restored["f"].rolling(2).mean()
    scipy.stats.ttest_ind([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    scipy.stats.pearsonr([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    harness.to_jsonable({"a": np.float64(1.0), "b": [np.int64(1)]})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.bar(["a", "b"], [1, 2])
    ax.set_title("warm")
    fig.savefig(io.BytesIO(), format="png", dpi=100, bbox_inches="tight")
    plt.close("all")


def main() -> None:
    conf = Confinement(**json.loads(sys.argv[1]))
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    ctrl_out = os.dup(1)
    os.dup2(2, 1)  # a stray print must never corrupt the control pipe
    _warm_up()
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # clone() skips pthread_atfork handlers: another thread could hold a lock forever
        print(f"zygote: {threads} threads before serving; children may deadlock", file=sys.stderr)
    to_template, to_supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:  # the template: warm, single-threaded, and it never sees a job
        to_template.close()
        os.close(0)
        os.close(ctrl_out)
        isolation.die_with_parent()
        try:
            Template(conf, to_supervisor).serve()
        finally:
            os._exit(0)
    to_supervisor.close()
    to_template.setblocking(False)
    supervisor = Supervisor(
        conf,
        0,
        ctrl_out,
        to_template,
        spares=int(options.get("spares", 1)),
        primed=int(options.get("primed", 2)),
    )
    supervisor.selector.register(to_template, selectors.EVENT_READ, ("template", None))
    report = supervisor.probe()
    supervisor.reply({"op": "ready", "pid": os.getpid(), "isolation": report})
    supervisor.serve()


if __name__ == "__main__":
    main()
