"""The sandbox container's least privilege: its own seccomp allow-list instead of `unconfined`, all
capabilities dropped but the four confinement needs, and the real service confining children under it.

No Docker engine runs here, so the profile is loaded with libseccomp (pyseccomp) exactly as runc would
load it (default: EPERM; x86_64 only) into a process that then becomes the real service.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.channels import open_channel
from common.errors import error_info
from insightx.v1 import common_pb2, py_sandbox_pb2_grpc
from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox.server import SERVICE_NAME

REPO = Path(__file__).resolve().parents[3]
PROFILE = REPO / "docker" / "py_sandbox.seccomp.json"
# What no sandbox process needs and every container escape likes.
NEVER = {
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv",
    "process_vm_writev", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "setns", "unshare", "userfaultfd", "io_uring_setup",
    "fsopen", "fsmount", "move_mount", "open_tree", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "syslog", "iopl", "ioperm", "personality", "chroot", "settimeofday", "clock_settime", "lookup_dcookie",
}  # fmt: skip
CONFINEMENT = {"clone", "mount", "umount2", "pivot_root", "sethostname", "seccomp", "prctl", "setresuid"}

LOADER = """
import json, os, sys
import pyseccomp
profile = json.load(open(sys.argv[1]))
flt = pyseccomp.SyscallFilter(defaction=pyseccomp.ERRNO(profile["defaultErrnoRet"]))
for rule in profile["syscalls"]:
    for name in rule["names"]:
        flt.add_rule(pyseccomp.ALLOW, name)
flt.load()
os.execv(sys.executable, [sys.executable, "-m", "services.py_sandbox"])
"""


def allowed() -> set[str]:
    profile = json.loads(PROFILE.read_text())
    return {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}


def test_the_profile_is_an_allow_list_without_the_escape_hatches() -> None:
    profile = json.loads(PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["architectures"] == ["SCMP_ARCH_X86_64"]
    assert not NEVER & allowed()
    assert allowed() >= CONFINEMENT
    assert all(not rule.get("args") and not rule.get("includes") for rule in profile["syscalls"])


def test_compose_runs_the_sandbox_with_that_profile_and_four_capabilities() -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["py_sandbox"]
    assert service["cap_drop"] == ["ALL"]
    assert sorted(service["cap_add"]) == ["KILL", "SETGID", "SETUID", "SYS_ADMIN"]
    options = service["security_opt"]
    assert "seccomp=./docker/py_sandbox.seccomp.json" in options
    assert not any(o.startswith("seccomp") and "unconfined" in o for o in options)
    assert "privileged" not in service


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def small_table() -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.table({"x": [1, 2, 3]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.asyncio
async def test_the_service_confines_children_under_the_profile(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("confinement needs root (CAP_SYS_ADMIN)")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "INSIGHTX_PY_SANDBOX_ADDR": f"127.0.0.1:{port}",
        "INSIGHTX_DATA_DIR": str(tmp_path),
        "INSIGHTX_SANDBOX_ZYGOTES": "1",
        **{k: v for k, v in os.environ.items() if k.startswith("INSIGHTX_INTERNAL")},
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", LOADER, str(PROFILE)], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            for _ in range(300):
                try:
                    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                    status = (await health.Check(request, timeout=1)).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = py_sandbox_pb2_grpc.PySandboxServiceStub(channel)
            report = await stub.GetSandboxStatus(pb.GetSandboxStatusRequest(), timeout=5)
            assert report.isolation.level == "strong", report.isolation.problems
            given = pb.RunCodeRequest(session_id="c", code="result = int(df['x'].sum())", timeout_s=5)
            given.input_table.CopyFrom(common_pb2.TableResult(arrow_ipc=small_table()))
            assert (await stub.RunCode(given, timeout=15)).result_json == "6"
            given.input_table.arrow_ipc = small_table()[:-20]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RunCode(given, timeout=15)
            assert error_info(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
