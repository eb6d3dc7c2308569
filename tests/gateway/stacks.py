"""Starting the real stack (processes on free ports) for the gateway, reader and browser tests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tools.stack import ROOT, Stack

REQUIRED = ("sql_engine", "orchestrator")
OPTIONAL = ("py_sandbox", "llm_gateway")


def startable(name: str) -> bool:
    """Whether the service has an entry point in this checkout (some are written concurrently)."""
    return (ROOT / "services" / name / "__main__.py").exists()


def start_stack(
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    services: Iterable[str] = (*REQUIRED, *OPTIONAL),
    log_dir: Path | None = None,
) -> Stack:
    """Starts the given services that exist plus the gateway; waits until the required ones are SERVING."""
    stack = Stack.on_free_ports(data_dir, extra_env=dict(extra_env or {}), log_dir=log_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in services:
        if startable(name):
            stack.start_one(name)
    stack.start_one("gateway")
    try:
        wait_serving(stack, [s for s in services if s in REQUIRED])
        http.register(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_serving(stack: Stack, names: Iterable[str], timeout_s: float = 90.0) -> dict[str, str]:
    """Polls /health until the named services are SERVING (the others may still be missing)."""
    wanted = list(names)
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        for name in [*wanted, "gateway"]:
            proc = stack.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")
        try:
            last = httpx.get(f"{stack.base_url}/health", timeout=3.0).json()
            services = last["services"]  # type: ignore[index]
            if all(services.get(n) == "SERVING" for n in wanted):
                return dict(services)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise TimeoutError(f"stack not ready after {timeout_s:.0f} s: {last}")


def serving(stack: Stack, name: str) -> bool:
    """Whether one service answers SERVING now."""
    try:
        return httpx.get(f"{stack.base_url}/health", timeout=3.0).json()["services"].get(name) == "SERVING"
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def token_of(stack: Stack) -> str:
    """The embedded user's token: the configured one, else the one the gateway made in its data directory
    (as under `make run`)."""
    configured = stack.extra_env.get("INSIGHTX_AUTH_TOKEN")
    return configured or (stack.data_dir / "gateway" / "auth_token").read_text().strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Authed:
    """httpx's functions, signed in as the embedded user of whichever test stack the URL points at.

    Tests call `http.post(f"{stack.base_url}/api/...")` as they would `httpx.post`; an explicit
    Authorization header (another user's) wins, and `Authorization: ""` sends none.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def register(self, stack: Stack) -> None:
        self.tokens[stack.base_url] = token_of(stack)

    def _headers(self, url: str, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = {k: v for k, v in (headers or {}).items()}
        if not any(k.lower() == "authorization" for k in merged):
            for base, token in self.tokens.items():
                if url == base or url.startswith(base + "/"):  # :8000 is not :80001
                    merged.update(bearer(token))
        return {k: v for k, v in merged.items() if not (k.lower() == "authorization" and not v)}

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = self._headers(url, kwargs.get("headers"))
        return httpx.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        kwargs["headers"] = self._headers(url, kwargs.get("headers"))
        with httpx.stream(method, url, **kwargs) as response:
            yield response


http = Authed()


def upload(
    base_url: str, path: Path, content_type: str = "text/csv", token: str | None = None
) -> dict[str, object]:
    """Uploads a file (as the stack's embedded user, or the given token's); returns the session JSON."""
    headers = bearer(token) if token else None
    with path.open("rb") as handle:
        reply = http.post(
            f"{base_url}/api/datasets",
            files={"file": (path.name, handle, content_type)},
            timeout=300,
            headers=headers,
        )
    reply.raise_for_status()
    return reply.json()  # type: ignore[no-any-return]


def start_pending_profile_stack(root: Path) -> Stack:
    """A stack whose engine profiles every table after replying (no table is small enough to profile
    before), for the tests of the pending-profile path."""
    return start_stack(root / "data", {"INSIGHTX_SQL_PROFILE_INLINE_ROWS": "0"}, log_dir=root / "logs")
