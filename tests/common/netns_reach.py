"""Reachability of a service from another host, made with network namespaces (run under `unshare --net`).

`python -m tests.common.netns_reach` (already in a fresh network namespace): gives this namespace a veth
interface with 10.77.0.1/24, starts the LLM gateway twice as real processes (one with its address on
127.0.0.1, one on 0.0.0.0), then starts a "remote host" in a namespace of its own holding the other end of
the veth (10.77.0.2/24) and asks it which of the two it can reach. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

HOST_IP, REMOTE_IP = "10.77.0.1", "10.77.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _reach(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def remote(ports: list[int]) -> None:
    """The remote host: waits for its interface, then tries each port of the service host."""
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "link", "show", "ix1"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("the veth end never arrived")
        time.sleep(0.05)
    _ip("link", "set", "lo", "up")
    _ip("addr", "add", f"{REMOTE_IP}/24", "dev", "ix1")
    _ip("link", "set", "ix1", "up")
    # Wait for the link itself (the gateway on 0.0.0.0 is the control that it carries traffic).
    deadline = time.monotonic() + 5
    while not _reach(HOST_IP, ports[-1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({str(port): _reach(HOST_IP, port) for port in ports}), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    _ip("link", "set", "lo", "up")
    _ip("link", "add", "ix0", "type", "veth", "peer", "name", "ix1")
    _ip("addr", "add", f"{HOST_IP}/24", "dev", "ix0")
    _ip("link", "set", "ix0", "up")
    loopback_port, all_port = _free_port(), _free_port()
    services = []
    for host, port in (("127.0.0.1", loopback_port), ("0.0.0.0", all_port)):
        env = {**os.environ, "INSIGHTX_LLM_GATEWAY_ADDR": f"{host}:{port}", "INSIGHTX_LOG_LEVEL": "WARNING"}
        services.append(subprocess.Popen([sys.executable, "-m", "services.llm_gateway"], env=env))
    try:
        deadline = time.monotonic() + 60
        while not (_reach("127.0.0.1", loopback_port) and _reach("127.0.0.1", all_port)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in services):
                raise SystemExit("the LLM gateways did not start")
            time.sleep(0.1)
        local = {"loopback_on_host_ip": _reach(HOST_IP, loopback_port)}
        other = subprocess.Popen(
            [
                "unshare",
                "--net",
                sys.executable,
                "-m",
                "tests.common.netns_reach",
                "remote",
                str(loopback_port),
                str(all_port),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        # The veth end may move only once the remote process is in its own namespace.
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{other.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise SystemExit("the remote host never got a namespace")
            time.sleep(0.01)
        _ip("link", "set", "ix1", "netns", str(other.pid))
        out, _ = other.communicate(timeout=30)
        remote_view = json.loads(out.strip().splitlines()[-1])
        print(
            json.dumps(
                {
                    **local,
                    "remote_to_loopback_service": remote_view[str(loopback_port)],
                    "remote_to_all_interfaces_service": remote_view[str(all_port)],
                }
            ),
            flush=True,
        )
    finally:
        for process in services:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "remote":
        remote([int(p) for p in sys.argv[2:]])
    else:
        main()
