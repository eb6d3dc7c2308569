"""Runs the five processes of the suite on one machine, waits for health, and stops them all.

Used by `make run` (tools.run_stack) and by the end-to-end tests. Children get PR_SET_PDEATHSIG so that they
die with the runner even if it is killed outright: no orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1
CONFIG_PREFIXES = ("INSIGHTX_", "BYTEZ_", "OPENAI_", "SUPABASE_")

SERVICES = ("sql_engine", "py_sandbox", "llm_gateway", "orchestrator")
DEFAULT_PORTS = {"orchestrator": 50051, "llm_gateway": 50052, "sql_engine": 50053, "py_sandbox": 50054}


def free_port() -> int:
    """A port that is free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Stack:
    """The four gRPC services and the HTTP gateway as child processes."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    http_port: int = 8000
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    inherit_config: bool = True
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: object) -> Stack:
        """A stack whose ports are all picked free (for tests)."""
        ports = {name: free_port() for name in DEFAULT_PORTS}
        return cls(data_dir=data_dir, ports=ports, http_port=free_port(), **kwargs)  # type: ignore[arg-type]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        """The environment every child shares: addresses, data dir, plus extras."""
        env = dict(os.environ)
        if not self.inherit_config:
            env = {k: v for k, v in env.items() if not k.startswith(CONFIG_PREFIXES)}
        env.update(
            {f"INSIGHTX_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in self.ports.items()}
        )
        env["INSIGHTX_DATA_DIR"] = str(self.data_dir)
        env["INSIGHTX_GATEWAY_PORT"] = str(self.http_port)
        env["INSIGHTX_GATEWAY_HOST"] = "0.0.0.0"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start_one(self, name: str) -> None:
        """Starts one process (`gateway` or a service name)."""
        module = "gateway" if name == "gateway" else f"services.{name}"
        out: int | object = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=self.env(),
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def start(self) -> None:
        """Starts every process (services first, then the gateway)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in (*SERVICES, "gateway"):
            self.start_one(name)

    def wait_healthy(self, timeout_s: float = 120.0) -> dict[str, str]:
        """Polls GET /health until every service is SERVING; raises with the last answer if not."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode}; see its log")
            try:
                reply = httpx.get(f"{self.base_url}/health", timeout=3.0)
                last = reply.json()
                if reply.status_code == 200:
                    return dict(reply.json()["services"])
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"stack not healthy after {timeout_s:.0f} s: {last}")

    def stop_one(self, name: str, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stops every process, gateway first."""
        for name in ("gateway", *reversed(SERVICES)):
            self.stop_one(name)
