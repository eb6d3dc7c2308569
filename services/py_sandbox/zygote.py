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
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import pyarrow as pa

from common.arrow import to_table_result
from insightx.v1 import common_pb2
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import frames, harness, isolation
from services.py_sandbox.isolation import Confinement, IsolationReport

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


class Zygote:
    """Forks and supervises children; answers the server on the control pipe."""

    def __init__(
        self, conf: Confinement, ctrl_in: int, ctrl_out: int, spares: int = 1, primed: int = 2
    ) -> None:
        self.conf = conf
        self.spare_target = spares
        self.primed_target = primed
        self.spares: list[Spare] = []
        self.recent: OrderedDict[str, dict[str, str]] = OrderedDict()  # sessions to keep a primed spare for
        self.ctrl_in = ctrl_in
        self.ctrl_out = ctrl_out
        self.selector = selectors.DefaultSelector()
        self.runs: dict[str, Run] = {}
        self.reader = frames.FrameReader(frozenset({frames.CONTROL_JSON, frames.CONTROL_BLOB}), 1 << 30)
        self.pending_header: dict[str, Any] | None = None
        self.isolation: dict[str, Any] = {}
        self.closing = False
        self.reaping: dict[int, int] = {}  # pidfd -> pid of children answered for but not yet reaped
        self.namespaces, self.namespace_problems = isolation.available_namespaces(conf)
        self.clone_flags = isolation.namespace_flags(self.namespaces)
        isolation.prepare_seccomp()

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
        if not chunk:  # the server is gone: stop taking work, let the children be killed
            self.closing = True
            self.selector.unregister(self.ctrl_in)
            for run in self.runs.values():
                self.kill(run, "KILLED", "The sandbox service stopped.")
            for spare in list(self.spares):
                self.release_spare(spare)
            return
        for kind, payload in self.reader.feed(chunk):
            if kind == frames.CONTROL_JSON:
                self.pending_header = json.loads(payload)
            elif self.pending_header is not None:
                header, self.pending_header = self.pending_header, None
                self.handle(header, payload)

    def handle(self, header: dict[str, Any], blob: bytes) -> None:
        if header.get("op") == "run":
            try:
                self.start(header, blob)
            except OSError as exc:
                response = pb.RunCodeResponse(
                    error=pb.RunError(
                        category=pb.RUN_ERROR_CATEGORY_KILLED, message=f"Could not start: {exc}"
                    )
                )
                self.reply({"op": "done", "run_id": header["run_id"]}, response.SerializeToString())

    # -- children -------------------------------------------------------------------------------------
    def spawn_spare(self, primed: dict[str, str] | None = None) -> Spare:
        """Clones a child into its namespaces now; it waits for a job on its own pipe."""
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(4)]  # stdout, stderr, result, job
        try:
            pid, pidfd = isolation.clone_into_namespaces(self.clone_flags)
        except OSError:
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        if pid == 0:
            report = IsolationReport(namespaces=list(self.namespaces), problems=list(self.namespace_problems))
            harness.child_main(
                self.conf, report, (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]), primed
            )
        for fd in (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]):
            os.close(fd)
        spare = Spare(
            pid=pid,
            pidfd=pidfd,
            job_w=pipes[3][1],
            reads=[pipes[i][0] for i in range(3)],
            primed=primed["cache"] if primed else "",
        )
        self.selector.register(pidfd, selectors.EVENT_READ, ("spare", spare))
        return spare

    def take_spare(self, job: dict[str, Any], input_ipc: bytes) -> Spare:
        """A spare primed for the job's session, else a blank one, else a new one."""
        cache = "" if input_ipc else str(job.get("cache") or "")
        if cache and job.get("dataset"):
            self.recent.pop(cache, None)
            self.recent[cache] = {"dataset": str(job["dataset"]), "cache": cache}
            while len(self.recent) > self.primed_target:
                self.recent.pop(next(iter(self.recent)))
        for spare in self.spares:
            if spare.primed == cache:  # blank spares have primed == "" and serve blank-cache jobs
                self.spares.remove(spare)
                return spare
        for spare in self.spares:
            if not spare.primed:
                self.spares.remove(spare)
                return spare
        return self.spawn_spare()

    def replenish(self) -> None:
        """One clone per loop turn: a blank spare first, then one primed for each recent session."""
        blank = sum(1 for s in self.spares if not s.primed)
        for spare in [s for s in self.spares if s.primed and s.primed not in self.recent]:
            self.release_spare(spare)  # primed for a session no longer recent
        try:
            if blank < self.spare_target:
                self.spares.append(self.spawn_spare())
                return
            for cache, prime in reversed(self.recent.items()):
                if self._primed_count(cache) < PRIMED_PER_SESSION and os.path.exists(cache):
                    self.spares.append(self.spawn_spare(prime))
                    return
        except OSError as exc:
            print(f"zygote: could not clone a spare child: {exc}", file=sys.stderr)

    def needs_spares(self) -> bool:
        if self.closing:
            return False
        blank = sum(1 for s in self.spares if not s.primed)
        return blank < self.spare_target or any(
            self._primed_count(c) < PRIMED_PER_SESSION and os.path.exists(c) for c in self.recent
        )

    def _primed_count(self, cache: str) -> int:
        return sum(1 for s in self.spares if s.primed == cache)

    def release_spare(self, spare: Spare) -> None:
        """Closing its job pipe makes a spare exit; its pidfd then reports and it is reaped."""
        if spare.job_w >= 0:
            os.close(spare.job_w)
            spare.job_w = -1
        spare.primed = "\0released"

    def on_spare_exit(self, spare: Spare) -> None:
        """A spare died before it got a job (it should not): forget it; the loop clones another."""
        self.selector.unregister(spare.pidfd)
        os.waitpid(spare.pid, 0)
        for fd in (spare.pidfd, spare.job_w, *spare.reads):
            if fd >= 0:
                os.close(fd)
        self.spares.remove(spare)

    def start(self, job: dict[str, Any], input_ipc: bytes) -> Run:
        """Hands the job to a spare (cloning one if none is ready); the deadline starts now."""
        if self.isolation and "expected_level" not in job:
            job["expected_level"] = self.isolation.get("level", "none")
        spare = self.take_spare(job, input_ipc)
        self.selector.unregister(spare.pidfd)
        started = time.monotonic()
        run = Run(
            run_id=job["run_id"],
            job=job,
            pid=spare.pid,
            pidfd=spare.pidfd,
            started=started,
            deadline=started + float(job["timeout_s"]),
        )
        for r, name in zip(spare.reads, ("stdout", "stderr", "result"), strict=True):
            os.set_blocking(r, False)
            run.streams[r] = name
            self.selector.register(r, selectors.EVENT_READ, ("stream", run))
        self.selector.register(run.pidfd, selectors.EVENT_READ, ("exit", run))
        self.runs[run.run_id] = run
        data = frames.encode(frames.CONTROL_JSON, json.dumps(job).encode()) + frames.encode(
            frames.CONTROL_BLOB, input_ipc
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(spare.job_w, view) :]
        except OSError:
            pass  # the child is gone; its exit is reported through the pidfd like any other
        finally:
            os.close(spare.job_w)
        return run

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

    def on_reaped(self, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        os.waitpid(self.reaping.pop(pidfd), 0)
        os.close(pidfd)

    def on_exit(self, run: Run) -> None:
        self.selector.unregister(run.pidfd)
        _, status = os.waitpid(run.pid, 0)
        run.exit_code = os.waitstatus_to_exitcode(status)
        run.exited_at = time.monotonic()

    def finish(self, run: Run) -> None:
        for fd in list(run.streams):
            self.selector.unregister(fd)
            os.close(fd)
        run.streams.clear()
        if run.exit_code is None:  # answered on DONE: end the child now, reap it when it is gone
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(run.pidfd, signal.SIGKILL)
            self.selector.modify(run.pidfd, selectors.EVENT_READ, ("reap", None))
            self.reaping[run.pidfd] = run.pid
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
        now = time.monotonic()
        waits = [r.deadline - now for r in self.runs.values() if r.exit_code is None]
        waits += [r.exited_at + EXIT_GRACE_S - now for r in self.runs.values() if r.exit_code is not None]
        if self.needs_spares():
            waits.append(0.0)
        timeout = max(0.0, min(waits)) if waits else None
        for key, _ in self.selector.select(timeout):
            kind, run = key.data
            if kind == "control":
                self.on_control()
            elif kind == "stream":
                self.on_stream(key.fd, run)
            elif kind == "exit":
                self.on_exit(run)
            elif kind == "reap":
                self.on_reaped(key.fd)
            elif kind == "spare":
                self.on_spare_exit(run)
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
        if self.needs_spares():
            self.replenish()

    def probe(self) -> dict[str, Any]:
        """A harmless run through the real path, so the isolation report is measured, not assumed."""
        job = {
            "op": "run",
            "run_id": "probe",
            "probe": True,
            "code": "result = 1",
            "timeout_s": 10.0,
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
        while "probe" in self.runs:
            self.step()
        return dict(self.isolation)

    def serve(self) -> None:
        self.selector.register(self.ctrl_in, selectors.EVENT_READ, ("control", None))
        while not (self.closing and not self.runs and not self.spares):
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
    zygote = Zygote(
        conf, 0, ctrl_out, spares=int(options.get("spares", 1)), primed=int(options.get("primed", 2))
    )
    report = zygote.probe()
    zygote.reply({"op": "ready", "pid": os.getpid(), "isolation": report})
    zygote.serve()


if __name__ == "__main__":
    main()
