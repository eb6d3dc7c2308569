"""Runs the five processes of the suite on one machine, waits for health, and stops them all.

Used by `insightx serve` and `make run` (gateway/serve.py), `insightx ask`'s private stack and the
end-to-end tests. It is part of the installed package (tools/stack.py re-exports it for the repository's
tests and benchmarks). Children get PR_SET_PDEATHSIG so that they
die with the runner even if it is killed outright: no orphans. `Supervisor` restarts a process that exited
or whose health has failed for a few seconds.

Each child gets only the secrets it needs (`Stack.env`): the provider keys (`BYTEZ_*`, `OPENAI_*`) go to the
LLM gateway alone; each caller (gateway, orchestrator) gets its own internal token, and each service only the
SHA-256 digests of its callers' tokens, so no service can act as another.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import CALLERS, token_digest

# The directory holding the packages (gateway/, services/, common/): a checkout, or site-packages.
ROOT = Path(__file__).resolve().parent.parent
# Children run in the checkout (and read its .env) from a repository; installed, in the caller's directory.
CHILD_CWD: Path | None = ROOT if (ROOT / "pyproject.toml").is_file() else None
PR_SET_PDEATHSIG = 1
CONFIG_PREFIXES = ("INSIGHTX_", "BYTEZ_", "OPENAI_", "SUPABASE_")
PROVIDER_PREFIXES = ("BYTEZ_", "OPENAI_")  # the language-model providers' keys and URLs: LLM gateway only
INTERNAL_PREFIX = "INSIGHTX_INTERNAL_"
# The shared store's connection string (a password inside): the gateway's state, the engine's dataset records,
# the orchestrator's answers' events.
DATABASE_USERS = {"INSIGHTX_DATABASE_URL": ("gateway", "sql_engine", "orchestrator")}

# Whose internal token each process holds (its own) and whose digests it is given (the callers it accepts).
OWN_TOKEN = {"gateway": "gateway", "orchestrator": "orchestrator"}
ACCEPTS = {
    "orchestrator": ("gateway",),
    "llm_gateway": ("orchestrator",),
    "sql_engine": ("gateway", "orchestrator"),
    "py_sandbox": ("gateway", "orchestrator"),
}

SERVICES = ("sql_engine", "py_sandbox", "llm_gateway", "orchestrator")
DEFAULT_PORTS = {"orchestrator": 50051, "llm_gateway": 50052, "sql_engine": 50053, "py_sandbox": 50054}


def free_port() -> int:
    """A port that is free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def internal_tokens(source: Mapping[str, object] | None = None) -> dict[str, str]:
    """Each caller's internal token: `INSIGHTX_INTERNAL_<CALLER>_TOKEN` from `source` if set, else a new one.

    A configured value must be the token itself (a `sha256:` digest cannot be presented by its owner).
    """
    tokens: dict[str, str] = {}
    for caller in CALLERS:
        name = f"INSIGHTX_INTERNAL_{caller.upper()}_TOKEN"
        value = (source or {}).get(name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if value and str(value).startswith("sha256:"):
            raise SystemExit(f"{name} must be the token itself for make run, not its sha256: digest")
        tokens[caller] = str(value) if value else secrets.token_urlsafe(32)
    return tokens


def split_address(address: str) -> tuple[str, int]:
    """`host:port` → (host, port); the host may be a name, an IPv4 or a bracketed IPv6 address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"{address!r} is not host:port (e.g. 127.0.0.1:50053)")
    return host or "127.0.0.1", int(port)


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
    # The host each service's address names (and binds): loopback unless configured otherwise.
    hosts: dict[str, str] = field(default_factory=dict)
    http_host: str = "127.0.0.1"
    # Each caller's internal token; default: from the environment when inherited, else made now.
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tokens:
            source = {**(os.environ if self.inherit_config else {}), **self.extra_env}
            self.tokens = internal_tokens(source)

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: object) -> Stack:
        """A stack whose ports are all picked free (for tests)."""
        ports = {name: free_port() for name in DEFAULT_PORTS}
        return cls(data_dir=data_dir, ports=ports, http_port=free_port(), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_addresses(cls, data_dir: Path, addresses: Mapping[str, str], **kwargs: object) -> Stack:
        """A stack on the given `host:port` of each service (`make run` passes INSIGHTX_<SERVICE>_ADDR)."""
        split = {name: split_address(addresses[name]) for name in DEFAULT_PORTS}
        return cls(
            data_dir=data_dir,
            ports={name: port for name, (_, port) in split.items()},
            hosts={name: host for name, (host, _) in split.items()},
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def base_url(self) -> str:
        host = self.http_host if self.http_host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
        return f"http://{host}:{self.http_port}"

    def address(self, name: str) -> str:
        """The `host:port` a service listens on and its peers call."""
        return f"{self.hosts.get(name, '127.0.0.1')}:{self.ports[name]}"

    def env(self, name: str | None = None) -> dict[str, str]:
        """The environment of process `name` (`gateway` or a service): addresses, data dir, extras, and
        only the secrets that process needs. Without a name: what every process shares, no secret at all.
        """
        env = dict(os.environ)
        if not self.inherit_config:
            env = {k: v for k, v in env.items() if not k.startswith(CONFIG_PREFIXES)}
        env.update({f"INSIGHTX_{service.upper()}_ADDR": self.address(service) for service in self.ports})
        env["INSIGHTX_DATA_DIR"] = str(self.data_dir)
        env["INSIGHTX_GATEWAY_PORT"] = str(self.http_port)
        env["INSIGHTX_GATEWAY_HOST"] = self.http_host
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        for key in list(env):
            if (
                key.startswith(INTERNAL_PREFIX)
                or (key.startswith(PROVIDER_PREFIXES) and name != "llm_gateway")
                or (key in DATABASE_USERS and name not in DATABASE_USERS[key])
            ):
                del env[key]
        if name in OWN_TOKEN:
            env["INSIGHTX_INTERNAL_TOKEN"] = self.tokens[OWN_TOKEN[name]]
        for caller in ACCEPTS.get(name or "", ()):
            env[f"INSIGHTX_INTERNAL_{caller.upper()}_TOKEN"] = token_digest(self.tokens[caller])
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
            cwd=CHILD_CWD,
            env=self.env(name),
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


def probe_health(address: str, timeout_s: float = 1.0) -> str:
    """A gRPC service's overall health (SERVING, NOT_SERVING, ...), or UNREACHABLE. Blocking."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@dataclass
class Supervisor:
    """Keeps a Stack's processes alive (crash-only): one that exited is started again, and so is one whose
    health has failed for `unhealthy_s` (killed first: a wedged or stopped process may not exit by itself).

    A process just started gets `startup_s` to report SERVING. `make run` calls `check_once` every half
    second; tests drive it the same way.
    """

    stack: Stack
    unhealthy_s: float = 5.0
    startup_s: float = 60.0
    probe_timeout_s: float = 1.0
    restarts: list[tuple[str, str]] = field(default_factory=list)
    _started: dict[str, float] = field(default_factory=dict)
    _healthy: dict[str, float] = field(default_factory=dict)

    def status(self, name: str) -> str:
        """SERVING (or NOT_SERVING, UNREACHABLE, ...) for a service; for the gateway, whether HTTP answers."""
        if name == "gateway":
            try:
                httpx.get(f"{self.stack.base_url}/health", timeout=self.probe_timeout_s * 2)
            except httpx.HTTPError:
                return "UNREACHABLE"
            return "SERVING"
        return probe_health(self.stack.address(name), self.probe_timeout_s)

    def check_once(self) -> list[tuple[str, str]]:
        """Restarts what needs it now; answers [(process, why)] for each restart."""
        done: list[tuple[str, str]] = []
        for name, proc in list(self.stack.procs.items()):
            started = self._started.setdefault(name, time.monotonic())
            if proc.poll() is not None:
                done.append((name, f"exited with code {proc.returncode}"))
                continue
            status = self.status(name)
            if status == "SERVING":
                self._healthy[name] = time.monotonic()
                continue
            since = self._healthy.get(name)
            if since is None and time.monotonic() - started > self.startup_s:
                done.append((name, f"not SERVING {self.startup_s:.0f} s after its start ({status})"))
            elif since is not None and time.monotonic() - since > self.unhealthy_s:
                done.append((name, f"{status} for {time.monotonic() - since:.0f} s"))
        for name, _ in done:
            self.restart(name)
        self.restarts.extend(done)
        return done

    def restart(self, name: str) -> None:
        """Kills `name` (SIGKILL works on a stopped or wedged process too) and starts it again."""
        proc = self.stack.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._healthy.pop(name, None)
        self._started[name] = time.monotonic()
        self.stack.start_one(name)
