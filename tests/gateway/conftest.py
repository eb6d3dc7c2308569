"""One real stack for the gateway tests: sql_engine, orchestrator and the others that exist, gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.stacks import start_stack, upload
from tools.demo_data import write_csv
from tools.stack import Stack

SMALL_UPLOAD_LIMIT = 8 << 20


@pytest.fixture(scope="package")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo CSV (250k rows) written once per test session."""
    return write_csv(tmp_path_factory.mktemp("demo") / "upi_transactions.csv")


@pytest.fixture(scope="package")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CSV with a group-by shape: 3 banks × 40 rows."""
    path = tmp_path_factory.mktemp("small") / "payments.csv"
    lines = ["bank,amount,status"]
    for i in range(120):
        lines.append(f"{['SBI', 'HDFC', 'ICICI'][i % 3]},{10 + i},{'FAILED' if i % 7 == 0 else 'SUCCESS'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with small limits so that 413s are cheap to provoke, and fast heartbeats."""
    root = tmp_path_factory.mktemp("stack")
    env = {
        "INSIGHTX_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD_LIMIT),
        "INSIGHTX_MAX_JSON_BYTES": str(64 << 10),
        "INSIGHTX_SSE_PING_S": "0.5",
        "INSIGHTX_SSE_MAX_ROWS": "5000",
        "INSIGHTX_EVENT_MAX_ROWS": "5000",
        "INSIGHTX_CORS_ORIGINS": '["http://allowed.example"]',
    }
    running = start_stack(root / "data", env, log_dir=root / "logs")
    yield running
    running.stop()


@pytest.fixture(scope="package")
def session_id(stack: Stack, small_csv: Path) -> str:
    return str(upload(stack.base_url, small_csv)["session_id"])
