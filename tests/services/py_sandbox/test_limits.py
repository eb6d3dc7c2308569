"""Issue 14 against a real sandbox process: untrusted tables decoded only once confined, per-run cgroups
and uids, the memory total across runs, and the fair share between sessions and users."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest
import pytest_asyncio

from common.errors import error_info
from common.identity import with_user
from common.store import LocalDatasetStore
from insightx.v1 import common_pb2
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import cgroups
from tests.services.py_sandbox.conftest import (
    Sandbox,
    sample_frame,
    start_sandbox,
    stop_sandbox,
    write_session,
)

in_module_loop = pytest.mark.asyncio(loop_scope="module")
TOTAL_MB = 2048
ROWS = 3000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    """24 slots of 1100 MiB under a 2 GiB total; small per-session shares; no AST policy in the way."""
    running = await start_sandbox(
        tmp_path_factory.mktemp("limits"),
        sandbox_enforce_policy=False,
        sandbox_zygotes=2,
        sandbox_runs_per_zygote=12,
        sandbox_memory_mb=1100,
        sandbox_memory_total_mb=TOTAL_MB,
        sandbox_session_max_running=4,
        sandbox_session_max_queued=4,
        sandbox_user_max_running=3,
        sandbox_user_max_queued=0,
        sandbox_queue_wait_s=30.0,
        sandbox_max_input_mb=64,
    )
    yield running
    await stop_sandbox(running)


def ipc_of(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def strings_table() -> pa.Table:
    return pa.table({"s": ["a", "bb", "ccc"] * (ROWS // 3), "x": np.arange(ROWS, dtype=np.int64)})


def bomb() -> bytes:
    """~49 KB of zstd that inflates to 1.6 GB (the issue's table)."""
    return ipc_of(pa.table({"x": np.zeros(200_000_000, dtype=np.int64)}), "zstd")


def bad_offsets() -> bytes:
    """The string column's last offset points far past its data buffer."""
    data = bytearray(ipc_of(strings_table()))
    start = data.find(struct.pack("<4i", 0, 1, 3, 6))
    last = start + ROWS * 4
    assert struct.unpack_from("<i", data, last)[0] == 2 * ROWS
    struct.pack_into("<i", data, last, 0x7FFF0000)
    return bytes(data)


def bad_lengths() -> bytes:
    """The batch and its columns claim 1,000x the rows their buffers hold."""
    data = bytes(ipc_of(strings_table()))
    assert data.count(struct.pack("<q", ROWS)) >= 3  # RecordBatch.length and each FieldNode.length
    return data.replace(struct.pack("<q", ROWS), struct.pack("<q", ROWS * 1000))


def bad_buffer_offset() -> bytes:
    """A buffer of the batch lies past the end of the message body."""
    data = bytearray(ipc_of(strings_table()))
    body_len = ROWS * 4 + 8 + 2 * ROWS + 8 * ROWS  # at least; the exact layout does not matter
    position = data.find(struct.pack("<q", ROWS * 4 + 8))  # the offsets buffer's length in the metadata
    assert position > 0 and body_len > 0
    struct.pack_into("<q", data, position - 8, 1 << 40)  # its offset, just before its length
    return bytes(data)


def parent_groups(controller: str) -> list[str]:
    """The runs' parent group(s) this test process's service created, for one controller."""
    hierarchy, _ = cgroups.detect()
    base = hierarchy.dirs.get(controller)
    if not base:
        return []
    prefix = f"{cgroups.PARENT_PREFIX}{os.getpid()}-"
    return [os.path.join(base, name) for name in os.listdir(base) if name.startswith(prefix)]


def null_rows() -> bytes:
    """A column of nulls has no buffers: 10^12 rows in a few hundred bytes, terabytes as a DataFrame."""
    data = ipc_of(pa.table({"n": pa.nulls(1000)}))
    return data.replace(struct.pack("<q", 1000), struct.pack("<q", 10**12))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def service_rss_kib(sandbox: Sandbox) -> int:
    """The server (this test process) and its zygotes (supervisors; their templates are their children)."""
    pids = {os.getpid(), *sandbox.zygote_pids}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid in sandbox.zygote_pids and b"zygote" in Path(f"/proc/{entry}/cmdline").read_bytes():
                pids.add(int(entry))
    return sum(rss_kib(pid) for pid in pids)


async def run_with(
    sandbox: Sandbox,
    code: str,
    table: bytes | None = b"",
    session: str = "limits",
    timeout_s: float = 10.0,
    user: str | None = None,
) -> pb.RunCodeResponse:
    request = pb.RunCodeRequest(session_id=session, code=code, timeout_s=timeout_s)
    if table is not None:
        request.input_table.CopyFrom(common_pb2.TableResult(arrow_ipc=table))
    metadata = with_user((), user) if user else None
    return await sandbox.stub.RunCode(request, timeout=timeout_s + 20, metadata=metadata)


@in_module_loop
@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("bomb", bomb, "decodes to more than 64 MiB"),
        ("rows without buffers", null_rows, "1,000,000,000,000 rows"),
        ("bad offsets", bad_offsets, "not a valid Arrow IPC stream"),
        ("bad lengths", bad_lengths, "not a valid Arrow IPC stream"),
        ("buffer outside the body", bad_buffer_offset, "outside its message body"),
        ("truncated", lambda: ipc_of(strings_table())[:-100], "not a valid Arrow IPC stream"),
        ("cut in the metadata", lambda: ipc_of(strings_table())[:150], "not a valid Arrow IPC stream"),
        ("not arrow", lambda: b"\xff\xff\xff\xff\x10\x00\x00\x00" + os.urandom(64), "not a valid Arrow"),
    ],
)
async def test_a_hostile_table_is_invalid_argument_and_costs_the_service_nothing(
    limited: Sandbox, name: str, make: object, says: str
) -> None:
    payload = make()  # type: ignore[operator]
    before = service_rss_kib(limited)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run_with(limited, "result = len(df)", payload)
    err = error_info(caught.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (name, err)
    assert err.reason == "INVALID_INPUT_TABLE" and says in err.message, (name, err.message)
    assert service_rss_kib(limited) - before < 32 * 1024, name  # the service decoded nothing
    ok = await run_with(limited, "result = int(df['x'].sum())", ipc_of(strings_table()))
    assert not ok.HasField("error") and ok.result_json == str(ROWS * (ROWS - 1) // 2)


@in_module_loop
async def test_a_valid_compressed_table_is_decoded_inside_the_child(limited: Sandbox) -> None:
    reply = await run_with(
        limited, "result = [len(df), df['s'].str.len().sum()]", ipc_of(strings_table(), "zstd")
    )
    assert not reply.HasField("error"), reply.error
    assert reply.result_json == f"[{ROWS},{2 * ROWS}]"


@in_module_loop
async def test_the_status_shows_the_cgroup_and_uid_range_in_force(limited: Sandbox) -> None:
    iso = (await limited.status()).isolation
    hierarchy, _ = cgroups.detect()
    assert iso.uid_first <= iso.uid <= iso.uid_last and iso.uid_last - iso.uid_first + 1 == 4096
    assert iso.run_pids_limit == 256
    if iso.cgroup:  # this machine (root, v1 memory/pids/cpu): every run in a group of its own
        assert iso.cgroup == hierarchy.version
        assert {"memory", "pids"} <= set(iso.cgroup_controllers)
        assert iso.memory_total_bytes == TOTAL_MB << 20
        assert iso.run_memory_limit_bytes > 1100 << 20
    else:  # elsewhere the report says why
        assert any(p.startswith("cgroup:") for p in iso.problems)


@in_module_loop
async def test_each_run_has_its_own_uid_and_cgroup(limited: Sandbox) -> None:
    code = "import os, time\ntime.sleep(0.5)\nresult = [os.getuid(), open('/proc/self/cgroup').read()]"
    replies = await asyncio.gather(*(run_with(limited, code, session=f"uid-{i}") for i in range(4)))
    seen = [r.result_json for r in replies]
    assert all(not r.HasField("error") for r in replies), replies
    uids = {s.split(",")[0] for s in seen}
    assert len(uids) == 4 and all(int(u.strip("[")) >= 1_000_000 for u in uids)
    if (await limited.status()).isolation.cgroup == "v1":
        groups = {line for s in seen for line in s.split("\\n") if ":pids:" in line}
        assert len(groups) == 4 and all("/run-" in g for g in groups)


THREAD_HOG = """
import threading, time
threading.stack_size(1 << 16)
gate = threading.Event()
started = 0
try:
    for _ in range(10_000):
        threading.Thread(target=gate.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
time.sleep(3)
result = started
"""

FEW_THREADS = """
import threading
threads = [threading.Thread(target=lambda: None) for _ in range(20)]
for t in threads:
    t.start()
for t in threads:
    t.join()
result = len(threads)
"""


@in_module_loop
async def test_a_run_starting_10000_threads_does_not_stop_another_from_starting_threads(
    limited: Sandbox,
) -> None:
    hog = asyncio.create_task(run_with(limited, THREAD_HOG, session="threads-hog", timeout_s=15))
    await asyncio.sleep(2.0)  # the hog holds every thread it could get
    other = await run_with(limited, FEW_THREADS, session="threads-other")
    assert not other.HasField("error"), other.error
    assert other.result_json == "20"
    capped = await hog
    assert not capped.HasField("error"), capped.error
    assert 100 <= int(capped.result_json) < 10_000  # it was stopped at its own limit, and only it


@in_module_loop
async def test_24_runs_of_1_gib_stay_under_the_total(limited: Sandbox) -> None:
    status = await limited.status()
    if not status.isolation.memory_total_bytes:
        pytest.skip("no memory cgroup on this host: " + "; ".join(status.isolation.problems))
    groups = parent_groups("memory")
    assert len(groups) == 1
    Path(groups[0], "memory.max_usage_in_bytes").write_text("0")  # reset the peak
    code = "import time\nblock = bytearray(1 << 30)\ntime.sleep(0.5)\nresult = len(block)"
    replies = await asyncio.gather(
        *(run_with(limited, code, session=f"gib-{i}", timeout_s=30) for i in range(24))
    )
    peak = int(Path(groups[0], "memory.max_usage_in_bytes").read_text())
    assert 1 << 30 < peak <= TOTAL_MB << 20  # the runs were charged there, and never past the total
    outcomes = {r.error.category for r in replies}
    assert outcomes <= {pb.RUN_ERROR_CATEGORY_UNSPECIFIED, pb.RUN_ERROR_CATEGORY_MEMORY}, replies
    assert pb.RUN_ERROR_CATEGORY_MEMORY in outcomes
    after = await run_with(limited, "result = 1", session="after-gib")
    assert after.result_json == "1"


@in_module_loop
async def test_40_long_runs_of_one_session_leave_another_session_starting_within_a_second(
    limited: Sandbox,
) -> None:
    hogs = [
        asyncio.create_task(run_with(limited, "import time\ntime.sleep(4)\nresult = 1", session="hog"))
        for _ in range(40)
    ]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    other = await run_with(limited, "result = 2", session="polite")
    assert time.monotonic() - started < 1.0
    assert other.result_json == "2"
    results = await asyncio.gather(*hogs, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 32  # 4 running and 4 waiting were its share
    err = error_info(refused[0])
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "SANDBOX_SESSION_BUSY"
    assert (
        1 <= int(err.metadata["retry_after_s"]) <= 10 and "retry in about" in err.message
    )  # its runs' deadline
    assert sum(1 for r in results if isinstance(r, pb.RunCodeResponse) and r.result_json == "1") == 8


@in_module_loop
async def test_a_user_over_its_share_is_refused_across_sessions(limited: Sandbox) -> None:
    code = "import time\ntime.sleep(2)\nresult = 1"
    calls = [run_with(limited, code, session=f"user-{i}", user="alice") for i in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [error_info(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 2 and all(e.reason == "SANDBOX_USER_BUSY" for e in refused)
    bob = await run_with(limited, "result = 3", session="user-0", user="bob")
    assert bob.result_json == "3"


SIXTY_THREADS_THEN_SLEEP = """
import threading, time
threading.stack_size(1 << 16)
gate = threading.Event()
for _ in range(60):
    threading.Thread(target=gate.wait, daemon=True).start()
time.sleep(30)
"""


@in_module_loop
async def test_a_cancelled_run_ends_its_child_at_once(limited: Sandbox) -> None:
    """A caller that gives up frees its slot and share; the child must not keep running to its deadline."""
    groups = parent_groups("pids")
    if (await limited.status()).isolation.cgroup != "v1" or len(groups) != 1:
        pytest.skip("the task count is read from the runs' v1 pids group")
    tasks = Path(groups[0], "pids.current")
    before = int(tasks.read_text())
    request = pb.RunCodeRequest(session_id="cancelled", code=SIXTY_THREADS_THEN_SLEEP, timeout_s=40)
    request.input_table.CopyFrom(common_pb2.TableResult(arrow_ipc=b""))
    call = asyncio.ensure_future(limited.stub.RunCode(request, timeout=2.0))
    await asyncio.sleep(1.2)
    assert int(tasks.read_text()) >= before + 60  # the run is going, in the runs' group
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(40):
        if int(tasks.read_text()) < before + 30:
            break
        await asyncio.sleep(0.05)
    assert int(tasks.read_text()) < before + 30  # killed within 2 s, not at its 40 s deadline


@in_module_loop
async def test_without_a_memory_cgroup_admission_keeps_the_total(tmp_path: Path) -> None:
    """Elsewhere (no writable cgroup) the total holds by admitting total // (rlimit + /tmp) runs at once."""
    sandbox = await start_sandbox(
        tmp_path,
        sandbox_enforce_policy=False,
        sandbox_cgroups=False,
        sandbox_zygotes=1,
        sandbox_runs_per_zygote=6,
        sandbox_memory_mb=256,
        sandbox_memory_total_mb=600,  # 600 // (256 + 16) = 2 runs at once
    )
    try:
        status = await sandbox.status()
        assert status.isolation.cgroup == "" and status.isolation.memory_total_bytes == 0
        assert any("admitting at most 2 run(s)" in p for p in status.isolation.problems)
        code = "import time\ntime.sleep(1)\nresult = 1"
        started = time.monotonic()
        calls = asyncio.gather(*(run_with(sandbox, code, session=f"adm-{i}") for i in range(4)))
        await asyncio.sleep(0.5)
        assert (await sandbox.status()).running_children == 2
        replies = await calls
        assert [r.result_json for r in replies] == ["1"] * 4
        assert time.monotonic() - started >= 1.9  # two waves of two
    finally:
        await stop_sandbox(sandbox)


@in_module_loop
async def test_a_sessions_first_run_writes_its_arrow_copy_from_inside_the_confinement(
    limited: Sandbox,
) -> None:
    """The Parquet is only mapped while privileged; the confined child decodes it and writes the copy to a
    file the zygote named, and the zygote moves it into place: no partial file is left behind."""
    store = LocalDatasetStore(limited.data_dir)
    write_session(store, "first-run", sample_frame(300), limited.data_dir.parent)
    cache_dir = limited.settings.cache_dir
    before = set(os.listdir(cache_dir))
    first = await limited.run(
        "result = [len(df), round(float(df['amount'].sum()), 6)]", session_id="first-run"
    )
    assert not first.HasField("error"), first.error
    added = set(os.listdir(cache_dir)) - before
    assert len(added) == 1 and not any(name.startswith(".") for name in os.listdir(cache_dir))
    copy = cache_dir / added.pop()
    assert copy.name.startswith("first-run-") and copy.stat().st_mode & 0o777 == 0o400
    again = await limited.run(
        "result = [len(df), round(float(df['amount'].sum()), 6)]", session_id="first-run"
    )
    assert again.result_json == first.result_json and first.result_json.startswith("[300,")


@in_module_loop
async def test_a_running_runs_group_carries_its_limits(limited: Sandbox) -> None:
    """memory (rlimit + /tmp + slack), pids (the NPROC figure) and one CPU, in the group of the run."""
    if (await limited.status()).isolation.cgroup != "v1":
        pytest.skip("the limits are read from the v1 groups of this host")
    code = "import time\ntime.sleep(1.5)\nresult = 1"
    call = asyncio.ensure_future(run_with(limited, code, session="caps"))
    await asyncio.sleep(0.8)
    busy = []
    for pids_parent in parent_groups("pids"):
        for entry in os.scandir(pids_parent):
            if entry.is_dir() and int(Path(entry.path, "pids.current").read_text()) > 0:
                busy.append(entry.name)
    assert busy  # spares and the run
    for name in busy:
        (pids,) = parent_groups("pids")
        (memory,) = parent_groups("memory")
        (cpu,) = parent_groups("cpu")
        assert Path(pids, name, "pids.max").read_text().strip() == "256"
        assert int(Path(memory, name, "memory.limit_in_bytes").read_text()) == (1100 + 16 + 64) << 20
        assert Path(cpu, name, "cpu.cfs_quota_us").read_text().strip() == "100000"
    assert (await call).result_json == "1"
