"""What happens in a forked child: confine it, decode the data, run the code, send the result as frames.

The zygote clones the child straight into new net, mount, pid, ipc and uts namespaces (so it is pid 1 of
its own pid namespace, and killing it ends everything it could have started). Its first act is to join
the cgroup of its run. While still privileged it only *opens* the session's data (a memory map); nothing
is parsed, decompressed or allocated from the request before `confine()`. Confined, it decodes: a
caller's table through `inputs.decode_table` (declared size bounded, full validation), then runs the
untrusted code. It leaves through `os._exit`: nothing of the zygote (atexit handlers, buffered files)
runs twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import math
import os
import resource
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.stats as stats

from services.py_sandbox import cgroups, frames, inputs, isolation
from services.py_sandbox.isolation import Confinement, IsolationReport

RESULT_FD = 3
EXIT_ISOLATION_FAILED = 70


JOB_FD = 4


def child_main(
    conf: Confinement,
    report: IsolationReport,
    fds: tuple[int, int, int, int],
    primed: dict[str, str] | None,
    cgroup: dict[str, str] | None = None,
    warm: bool = True,
) -> None:
    """Entry of a cloned child (pid 1 of its namespaces when it has a pid namespace). Never returns.

    A child is cloned ahead of need: it joins its run's cgroup (so everything it allocates is charged to
    the run), pre-faults the pages a run usually writes (copy-on-write) and, when primed for a session,
    maps that session's dataset, confines itself and decodes it; then it blocks until the zygote hands it
    exactly one job. It serves that job and exits. A primed child only ever serves its own session.
    """
    try:
        _join_cgroup(conf, report, cgroup or {})
        isolation.die_with_parent()
        _wire_fds(fds)
        if warm:  # skipped when a job is already waiting for this child
            _prewarm()
        preloaded = None
        if primed:  # its data is its session's, so it is confined before any code arrives
            try:
                source = open_dataset(primed)
            except Exception:  # left to the run, which reports it (no respawn loop of dying spares)
                source = None
            if source is not None:
                try:
                    confine(conf, report, conf.max_timeout_s)
                except isolation.IsolationError as exc:
                    _fail_isolation(report, exc)
                _report_isolation(report)  # now, so the run itself costs the supervisor one wake-up
                try:
                    preloaded = _to_frame(read_dataset(source))
                    _touch(preloaded)
                except Exception as exc:  # reported to the run it was primed for
                    preloaded = exc
        job, input_ipc = _read_job()
        if primed and (job.get("cache") != primed["cache"] or input_ipc):
            message = "internal: a child primed for another dataset was handed this run; retry."
            _send(frames.RUN_ERROR, json.dumps({"category": "KILLED", "message": message}).encode())
            os._exit(1)
        if preloaded is not None:
            cpu = math.ceil(float(job["timeout_s"])) + 1
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        runner_main(job, conf, report, input_ipc, preloaded)
    finally:
        os._exit(1)


_isolation_reported = False


def _join_cgroup(conf: Confinement, report: IsolationReport, group: dict[str, str]) -> None:
    """Joins the run's cgroup before anything else; a failure is a problem (an error when strict)."""
    if not group:
        return
    try:
        report.cgroup_controllers = cgroups.join(group)
    except OSError as exc:
        report.problems.append(f"cgroup: could not join the run's group ({exc})")


def _report_isolation(report: IsolationReport) -> None:
    """The first frame on the result pipe, written before any untrusted code can write there."""
    global _isolation_reported
    if not _isolation_reported:
        _isolation_reported = True
        _send(frames.ISOLATION, json.dumps(report.to_dict()).encode())


def _fail_isolation(report: IsolationReport, exc: BaseException) -> None:
    _send(frames.ISOLATION, json.dumps(report.to_dict()).encode())
    _send(frames.RUN_ERROR, json.dumps({"category": "KILLED", "message": str(exc)}).encode())
    os._exit(EXIT_ISOLATION_FAILED)


def _touch(df: pd.DataFrame) -> None:
    """Faults the mapped numeric columns in now rather than during the run."""
    for column in df.columns:
        values = df[column].to_numpy() if df[column].dtype.kind in "iufb" else None
        if values is not None and values.size:
            values[:: max(1, 4096 // max(values.itemsize, 1))].sum()


def _read_job() -> tuple[dict[str, Any], bytes]:
    reader = frames.FrameReader(frozenset({frames.CONTROL_JSON, frames.CONTROL_BLOB}), 1 << 31)
    got: list[tuple[bytes, bytes]] = []
    while len(got) < 2:
        chunk = os.read(JOB_FD, 1 << 20)
        if not chunk:  # the zygote let this spare go
            os._exit(0)
        got += reader.feed(chunk)
    os.close(JOB_FD)
    return json.loads(got[0][1]), got[1][1]


def _prewarm() -> None:
    """Touches the usual code path once, so a run does not pay its copy-on-write faults."""
    table = pa.table({"x": [1.0, 2.0], "g": [1, 2], "s": ["a", "b"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    frame = pa.ipc.open_stream(pa.py_buffer(sink.getvalue().to_pybytes())).read_all()
    df = frame.to_pandas(use_threads=False, split_blocks=True)
    json.dumps(to_jsonable({"m": df["x"].mean(), "s": df.groupby("g")["x"].sum().to_dict()}))
    compile("result = df['x'].mean()", "<analysis>", "exec")
    _prefault_heap(HEAP_PREFAULT_BYTES)


HEAP_PREFAULT_BYTES = 32 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _prefault_heap(size: int) -> None:
    """Large arrays would each get fresh mmap'd pages (a fault per 4 KiB during the run); instead the heap
    keeps blocks up to `size` and this child faults them in while it waits."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, size)
    libc.mallopt(M_TRIM_THRESHOLD, size * 2)
    block = bytearray(size)  # zero-filled: every page touched
    del block


def _wire_fds(fds: tuple[int, int, int, int]) -> None:
    """stdout, stderr, the result pipe and the job pipe on fds 1-4; /dev/null on 0; every other fd closed."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    high = [os.dup(fd) for fd in fds]  # first out of the way of 1..4
    for target, fd in zip((1, 2, RESULT_FD, JOB_FD), high, strict=True):
        os.dup2(fd, target)
    os.closerange(JOB_FD + 1, 1 << 16)


def runner_main(
    job: dict[str, Any],
    conf: Confinement,
    report: IsolationReport,
    input_ipc: bytes,
    preloaded: pd.DataFrame | BaseException | None = None,
) -> None:
    """Open the data, confine, decode, run, report. Never returns."""
    source = None
    try:
        if conf.strict and any(p.startswith("ns:") and "skipped" not in p for p in report.problems):
            raise isolation.IsolationError("namespaces missing: " + "; ".join(report.problems))
        if preloaded is None and not input_ipc and job.get("dataset"):
            source = open_dataset(job)  # opened and mapped while privileged; decoded only once confined
        if not _confined:  # a primed child confined itself while it waited; any other child does it now
            # Room for one larger file, the session's Arrow copy, until the code runs (then the cap).
            copy_bytes = conf.memory_bytes if source is not None and source.partial_fd >= 0 else None
            confine(conf, report, float(job["timeout_s"]), copy_bytes)
    except isolation.IsolationError as exc:
        _fail_isolation(report, exc)
    except Exception as exc:
        _send(frames.RUN_ERROR, json.dumps({"category": "EXCEPTION", "message": _describe(exc)}).encode())
        os._exit(1)
    _report_isolation(report)
    df = _decode(job, input_ipc, source, preloaded)
    isolation.tighten_file_size(conf)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    run_code(job, df)
    os._exit(0)


def _decode(
    job: dict[str, Any],
    input_ipc: bytes,
    source: DatasetSource | None,
    preloaded: pd.DataFrame | BaseException | None,
) -> pd.DataFrame:
    """`df` for the run, decoded inside the confinement; a bad caller's table ends it as INVALID_INPUT."""
    try:
        if isinstance(preloaded, BaseException):
            raise preloaded
        if preloaded is not None:
            return preloaded
        if input_ipc:
            try:
                table = inputs.decode_table(input_ipc, int(job.get("max_input_bytes") or 256 << 20))
                df = _to_frame(table)
            except MemoryError as exc:
                raise inputs.InputError(
                    f"The input table does not fit in the run's memory ({job['memory_mb']} MiB); send fewer "
                    "rows or columns."
                ) from exc
            _send(frames.INPUT_READY, b"")  # past this frame a crash is the code's, not the input's
            return df
        if source is not None:
            return _to_frame(read_dataset(source))
        return pd.DataFrame()
    except inputs.InputError as exc:
        _send(frames.RUN_ERROR, json.dumps({"category": "INVALID_INPUT", "message": str(exc)}).encode())
        os._exit(1)
    except MemoryError:
        message = f"The dataset does not fit in the run's memory ({job['memory_mb']} MiB)."
        _send(frames.RUN_ERROR, json.dumps({"category": "MEMORY", "message": message}).encode())
        os._exit(1)
    except Exception as exc:
        message = f"The dataset could not be loaded: {_describe(exc)}"
        _send(frames.RUN_ERROR, json.dumps({"category": "EXCEPTION", "message": message}).encode())
        os._exit(1)


def _to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(use_threads=False, split_blocks=True)


@dataclass
class DatasetSource:
    """What a child opened while privileged; nothing of it is parsed until the child is confined."""

    mapped: pa.MemoryMappedFile  # the session's Arrow copy, or its Parquet when there is no copy yet
    is_parquet: bool = False
    partial_fd: int = -1  # where the Arrow copy is written (the zygote renames it into place)


def open_dataset(job: dict[str, Any]) -> DatasetSource:
    """The session's per-session Arrow copy, memory-mapped (not read: decoding waits for the confinement).

    Decoding Parquet costs tens of ms per run; a memory-mapped Arrow stream costs almost nothing. The
    stream format (not the file format) on purpose: its reader starts no thread pool. Without a copy (a
    session's first run, or a pruned copy) the Parquet is mapped, and a file the zygote named is opened for
    the copy: the confined child writes it and the zygote moves it into place once the run is over.
    """
    try:
        return DatasetSource(pa.memory_map(str(job["cache"])))
    except FileNotFoundError:
        pass
    parquet = pa.memory_map(str(job["dataset"]))
    partial = job.get("cache_partial")
    if not partial:
        return DatasetSource(parquet, is_parquet=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    return DatasetSource(parquet, is_parquet=True, partial_fd=os.open(str(partial), flags, 0o400))


def read_dataset(source: DatasetSource) -> pa.Table:
    """Decodes the mapped data (confined); writes the Arrow copy first when this child was asked to."""
    if not source.is_parquet:
        return pa.ipc.open_stream(source.mapped).read_all()
    table = pq.read_table(source.mapped, use_threads=False)
    if source.partial_fd >= 0:
        fd, source.partial_fd = source.partial_fd, -1
        with open(fd, "wb") as raw, pa.ipc.new_stream(pa.PythonFile(raw, mode="w"), table.schema) as writer:
            writer.write_table(table)
        _send(frames.CACHE_READY, b"")  # right after ISOLATION: no code has run, the copy is whole
    return table


_confined = False


def confine(
    conf: Confinement, report: IsolationReport, timeout_s: float, file_bytes: int | None = None
) -> None:  # in this order
    """The steps, in order; each records what it achieved."""
    global _confined
    _confined = True  # set first: a step that fails raises (strict) or is reported, never retried
    isolation.private_root(conf, report)
    isolation.set_hostname(report)
    isolation.apply_rlimits(conf, report, cpu_seconds=math.ceil(timeout_s) + 1, file_bytes=file_bytes)
    isolation.drop_privileges(conf, report)
    isolation.die_with_parent()
    isolation.clean_environment(report)
    isolation.no_new_privs(conf, report)
    isolation.install_seccomp(conf, report)


def run_code(job: dict[str, Any], df: pd.DataFrame) -> None:
    """Runs the code with `df` and friends in scope, then sends `result`, the figures and DONE."""
    namespace: dict[str, Any] = {
        "__name__": "__analysis__",
        "df": df,
        "pd": pd,
        "np": np,
        "plt": plt,
        "stats": stats,
        "result": None,
    }
    try:
        exec(compile(job["code"], "<analysis>", "exec"), namespace)  # the boundary is the OS, not this line
    except MemoryError:
        _flush()
        _send(
            frames.RUN_ERROR,
            json.dumps(
                {
                    "category": "MEMORY",
                    "message": f"MemoryError: the run exceeded its memory limit ({job['memory_mb']} MiB).",
                }
            ).encode(),
        )
        os._exit(0)
    except BaseException as exc:
        _flush()
        _send(frames.RUN_ERROR, json.dumps({"category": "EXCEPTION", "message": _describe(exc)}).encode())
        os._exit(0)
    _flush()
    try:
        _send_result(namespace.get("result"), job)
        _send_figures(job)
    except MemoryError:
        _send(
            frames.RUN_ERROR,
            json.dumps({"category": "MEMORY", "message": "MemoryError while encoding the result."}).encode(),
        )
        os._exit(0)
    except _OutputLimit as exc:
        _send(frames.RUN_ERROR, json.dumps({"category": "OUTPUT_LIMIT", "message": str(exc)}).encode())
        os._exit(0)
    except Exception as exc:
        _send(
            frames.RUN_ERROR,
            json.dumps(
                {"category": "EXCEPTION", "message": f"The result could not be encoded: {_describe(exc)}"}
            ).encode(),
        )
        os._exit(0)
    _queue(frames.DONE, b"")
    _write(b"".join(_outbox))  # result, figures and DONE in one write: one wake-up for the supervisor


class _OutputLimit(Exception):
    pass


def _send_result(value: Any, job: dict[str, Any]) -> None:
    if isinstance(value, pd.Series):
        value = value.to_frame(name=value.name if value.name is not None else "value")
    if isinstance(value, pd.DataFrame):
        max_rows = int(job["max_result_rows"])
        truncated = len(value) > max_rows
        frame = value.head(max_rows)
        if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
            frame = frame.reset_index()
        frame.columns = [str(c) for c in frame.columns]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payload = (b"\x01" if truncated else b"\x00") + sink.getvalue().to_pybytes()
        if len(payload) > int(job["max_result_bytes"]):
            raise _OutputLimit(
                f"The result table is {len(payload):,} bytes, over the "
                f"{int(job['max_result_bytes']):,}-byte cap; aggregate it or return fewer rows."
            )
        _queue(frames.RESULT_TABLE, payload)
        return
    text = json.dumps(to_jsonable(value), allow_nan=False, separators=(",", ":"))
    if len(text) > int(job["max_result_bytes"]):
        raise _OutputLimit(f"The result is {len(text):,} bytes of JSON, over the cap; return a summary.")
    _queue(frames.RESULT_JSON, text.encode())


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """numpy/pandas scalars to Python, NaN/inf to None, containers recursively, anything else as str."""
    if depth > 20:
        return str(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, int):
        return value
    if isinstance(value, pd.Timestamp | pd.Timedelta):
        return str(value)
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.ndarray):
        return [to_jsonable(v, depth + 1) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, depth + 1) for v in value]
    if hasattr(value, "_asdict"):  # scipy result tuples (TtestResult, LinregressResult, ...)
        return {str(k): to_jsonable(v, depth + 1) for k, v in value._asdict().items()}
    return str(value)


def _send_figures(job: dict[str, Any]) -> None:
    max_figures, max_bytes = int(job["max_figures"]), int(job["max_figure_bytes"])
    numbers = plt.get_fignums()
    if len(numbers) > max_figures:
        print(
            f"[sandbox] {len(numbers)} figures made; only the first {max_figures} are returned.",
            file=sys.stderr,
        )
        _flush()
    for number in numbers[:max_figures]:
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        data = buffer.getvalue()
        if len(data) > max_bytes:
            raise _OutputLimit(f"A figure is {len(data):,} bytes as PNG, over the {max_bytes:,}-byte cap.")
        _queue(frames.FIGURE_PNG, data)


def _describe(exc: BaseException) -> str:
    """The exception and the line of the analysis code that raised it (no sandbox internals)."""
    line = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<analysis>":
            line = f" (line {frame.lineno})"
            break
    return f"{type(exc).__name__}: {exc}{line}"[:2000]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


_outbox: list[bytes] = []


def _queue(kind: bytes, payload: bytes) -> None:
    _outbox.append(frames.encode(kind, payload))


def _send(kind: bytes, payload: bytes) -> None:
    _write(frames.encode(kind, payload))


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(RESULT_FD, view)
        view = view[written:]
