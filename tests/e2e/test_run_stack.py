"""`make run`'s runner: starts everything, loads the demo dataset, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.stack import CONFIG_PREFIXES, DEFAULT_PORTS, ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


PROVIDER_SECRETS = {
    "BYTEZ_API_KEYS": "bytez-e2e-key-1,bytez-e2e-key-2",
    "BYTEZ_BASE_URL": "http://127.0.0.1:9",
}


def _process(pid: int) -> tuple[str, dict[str, str]]:
    """A child's module name (`sql_engine`, ..., `gateway`) and its environment, as the kernel has them."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    module = argv[argv.index(b"-m") + 1].decode().removeprefix("services.")
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return module, dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def _check_what_each_child_was_given(children: list[int], env: dict[str, str], printed: str) -> None:
    """Provider keys in the LLM gateway alone; internal tokens made, one each, never printed; every service
    where its INSIGHTX_<SERVICE>_ADDR says."""
    processes = dict(_process(pid) for pid in children)
    assert set(processes) == {*DEFAULT_PORTS, "gateway"}
    for name, child_env in processes.items():
        carried = {k for k in child_env if k.startswith(("BYTEZ_", "OPENAI_"))}
        assert carried == (set(PROVIDER_SECRETS) if name == "llm_gateway" else set()), name
        for service in DEFAULT_PORTS:
            key = f"INSIGHTX_{service.upper()}_ADDR"
            assert child_env[key] == env[key], (name, key)
    own = {name: e.get("INSIGHTX_INTERNAL_TOKEN") for name, e in processes.items()}
    assert own["gateway"] and own["orchestrator"] and own["gateway"] != own["orchestrator"]
    assert {k for k, v in own.items() if v} == {"gateway", "orchestrator"}
    assert own["gateway"] not in printed and own["orchestrator"] not in printed
    for service in DEFAULT_PORTS:
        with grpc.insecure_channel(env[f"INSIGHTX_{service.upper()}_ADDR"]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_runner_serves_the_demo_and_stops_every_child_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}
    env.update({f"INSIGHTX_{name.upper()}_ADDR": f"127.0.0.1:{free_port()}" for name in DEFAULT_PORTS})
    http_port = free_port()
    env.update({"INSIGHTX_DATA_DIR": str(tmp_path / "data"), "INSIGHTX_GATEWAY_PORT": str(http_port)})
    env.update(PROVIDER_SECRETS)
    runner = subprocess.Popen(
        [sys.executable, "-m", "tools.run_stack"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        started, lines = time.monotonic(), []
        while time.monotonic() - started < 120:
            line = runner.stdout.readline()
            lines.append(line)
            if "logs:" in line or runner.poll() is not None:  # the last line of the banner
                break
        assert any("InsightX is running" in line for line in lines), "".join(lines)
        assert f"http://localhost:{http_port}" in "".join(lines)
        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        assert health.status_code == 200
        session = next(line.split()[-1] for line in lines if "demo dataset loaded" in line)
        # The printed sign-in link is all a person needs: it trades its token for the login cookie.
        link = next(line.split()[-1] for line in lines if "open it signed in:" in line)
        assert link.startswith(f"http://localhost:{http_port}/?token=")
        browser = httpx.Client()
        signed_in = browser.get(link, follow_redirects=False, timeout=10)
        assert signed_in.status_code == 303 and "insightx_auth" in signed_in.cookies
        anonymous = httpx.get(f"http://localhost:{http_port}/api/datasets/{session}", timeout=10)
        assert anonymous.status_code == 401
        demo = browser.get(f"http://localhost:{http_port}/api/datasets/{session}", timeout=10).json()
        assert demo["row_count"] == 250_000
        assert "amount (INR)" in [c["name"] for c in demo["columns"]]
        children = _children(runner.pid)
        assert len(children) == 5
        _check_what_each_child_was_given(children, env, "".join(lines))
        runner.send_signal(signal.SIGINT)
        assert runner.wait(30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)], "orphans left behind"
    finally:
        if runner.poll() is None:
            runner.kill()
