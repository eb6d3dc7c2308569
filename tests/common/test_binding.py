"""Where a service listens: the interface its address names, and never a port another process holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from common.server import create_server
from common.settings import listen_address
from tools.stack import ROOT


@pytest.mark.parametrize(
    ("address", "host", "expected"),
    [
        ("localhost:50053", "", "localhost:50053"),
        ("127.0.0.1:50053", "", "127.0.0.1:50053"),
        ("sql_engine:50053", "0.0.0.0", "0.0.0.0:50053"),
        ("[::1]:50052", "", "[::1]:50052"),
        ("localhost:50051", "::", "[::]:50051"),
        (":50054", "", "localhost:50054"),
        ("10.0.0.5:50053,10.0.0.6:50053", "0.0.0.0", "0.0.0.0:50053"),  # replicas: the port, on the host
        ("dns:///sql-engine.insightx.svc:50053", "0.0.0.0", "0.0.0.0:50053"),
    ],
)
def test_a_service_binds_the_interface_its_address_names(address: str, host: str, expected: str) -> None:
    assert listen_address(address, host) == expected


@pytest.mark.parametrize("address", ["localhost", "localhost:http", ""])
def test_an_address_without_a_port_stops_the_start_with_a_message(address: str) -> None:
    with pytest.raises(SystemExit, match="host:port"):
        listen_address(address)


@pytest.mark.parametrize("address", ["10.0.0.5:50053,10.0.0.6:50053", "dns:///sql-engine:50053"])
def test_a_replica_list_without_a_listen_host_stops_the_start_with_a_message(address: str) -> None:
    with pytest.raises(SystemExit, match="INSIGHTX_GRPC_LISTEN_HOST"):
        listen_address(address)


async def test_a_second_server_on_a_taken_port_fails_with_a_message_naming_the_port() -> None:
    first = await create_server("127.0.0.1:0", ["x.v1.XService"], lambda s: None)
    try:
        with pytest.raises(SystemExit) as caught:
            await create_server(f"127.0.0.1:{first.port}", ["x.v1.XService"], lambda s: None)
        assert f"port {first.port} is taken" in str(caught.value)
    finally:
        await first.stop(0)


async def test_a_second_service_process_on_a_taken_port_exits_at_start(tmp_path: object) -> None:
    held = await create_server("127.0.0.1:0", ["x.v1.XService"], lambda s: None)
    try:
        env = {**os.environ, "INSIGHTX_LLM_GATEWAY_ADDR": f"127.0.0.1:{held.port}"}
        done = subprocess.run(
            [sys.executable, "-m", "services.llm_gateway"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await held.stop(0)
    assert done.returncode != 0
    assert f"port {held.port} is taken by another process" in done.stderr


def _namespaces_available() -> str | None:
    """Why the namespace test cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces and a veth pair"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs util-linux unshare and iproute2 ip (make system-deps)"
    probe = subprocess.run(
        ["unshare", "--net", "ip", "link", "add", "ix0", "type", "veth", "peer", "name", "ix1"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"this kernel or container cannot make a veth pair in a namespace: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_a_service_on_loopback_is_unreachable_from_another_host() -> None:
    reason = _namespaces_available()
    if reason:
        pytest.skip(reason)
    # A host of its own (a network namespace with a veth interface, 10.77.0.1) runs the LLM gateway twice:
    # once with INSIGHTX_LLM_GATEWAY_ADDR on 127.0.0.1, once on 0.0.0.0 (the control: it is reachable, so
    # the path works). A second namespace holding the other end of the veth plays the remote host.
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.common.netns_reach"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "loopback_on_host_ip": False,
        "remote_to_loopback_service": False,
        "remote_to_all_interfaces_service": True,
    }
