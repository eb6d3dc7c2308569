"""`insightx serve` and `make run`: the whole stack with the built-in analyst and the demo dataset, on
http://localhost:8000 (`python -m gateway.serve`; `python -m tools.run_stack` is the same)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import httpx

from common.auth import CALLERS
from common.settings import Settings
from gateway.demo import write_csv
from gateway.signin import bearer, embedded_token, signin_url
from gateway.stack import DEFAULT_PORTS, Stack, Supervisor, internal_tokens


def load_demo(stack: Stack, data_dir: Path, token: str) -> str:
    """Uploads the demo CSV once (as the embedded user); later runs reuse its session."""
    marker = data_dir / "demo" / "session.json"
    auth = bearer(token)
    if marker.exists():
        session_id = json.loads(marker.read_text())["session_id"]
        reply = httpx.get(f"{stack.base_url}/api/datasets/{session_id}", headers=auth, timeout=10)
        if reply.status_code == 200:
            return str(session_id)
    csv = write_csv(data_dir / "demo" / "upi_transactions.csv")
    with csv.open("rb") as handle:
        reply = httpx.post(
            f"{stack.base_url}/api/datasets",
            files={"file": (csv.name, handle, "text/csv")},
            headers=auth,
            timeout=300,
        )
    reply.raise_for_status()
    session_id = reply.json()["session_id"]
    marker.write_text(json.dumps({"session_id": session_id}))
    return str(session_id)


def main() -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    # The services listen where INSIGHTX_<SERVICE>_ADDR says; internal tokens are the configured ones or
    # new ones (never printed: each process gets its own, see gateway/stack.py).
    stack = Stack.from_addresses(
        data_dir,
        {name: getattr(settings, f"{name}_addr") for name in DEFAULT_PORTS},
        http_port=settings.gateway_port,
        http_host=settings.gateway_host,
        log_dir=data_dir / "logs",
        tokens=internal_tokens(
            {
                f"INSIGHTX_INTERNAL_{caller.upper()}_TOKEN": getattr(settings, f"internal_{caller}_token")
                for caller in CALLERS
            }
        ),
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print("starting orchestrator, llm_gateway, sql_engine, py_sandbox and the gateway ...", flush=True)
    stack.start()
    try:
        services = stack.wait_healthy()
        print("healthy: " + ", ".join(f"{k}={v}" for k, v in services.items()), flush=True)
        # INSIGHTX_AUTH_TOKEN, else the one the gateway made (none behind Supabase unless configured)
        token = embedded_token(data_dir)
        if token:
            session_id = load_demo(stack, data_dir, token)
            print(f"demo dataset loaded: session {session_id}", flush=True)
        print(f"\n  InsightX is running on http://localhost:{stack.http_port}   (Ctrl-C stops everything)")
        if token:
            print(f"  open it signed in: {signin_url(f'http://localhost:{stack.http_port}', token)}")
            print(f"  CLI: export INSIGHTX_TOKEN={token}")
        else:
            print("  sign in with a Supabase access token (POST /api/auth/login)")
        print(f"  logs: {data_dir / 'logs'}\n", flush=True)
        supervisor = Supervisor(stack)
        while not stopping:
            for name, why in supervisor.check_once():  # exited, or unhealthy for a few seconds
                print(f"{name} {why}; restarting it", flush=True)
            time.sleep(0.5)
    except Exception as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
