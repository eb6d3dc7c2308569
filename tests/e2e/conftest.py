"""The whole stack as real processes on free loopback ports, shared by the end-to-end tests of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.stacks import http
from tools.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    running = Stack.on_free_ports(root / "data", log_dir=root / "logs", inherit_config=False)
    running.start()
    try:
        running.wait_healthy(timeout_s=120)
        http.register(running)  # requests to it carry the embedded user's token
        yield running
    except Exception:
        for log in sorted((root / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        running.stop()


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV with awkward headers and a known row count (137)."""
    path = tmp_path_factory.mktemp("csv") / "Sales Report (2024).csv"
    lines = ['order id,"amount (INR)",Region,order date']
    for i in range(137):
        lines.append(
            f"{i},{(i * 37) % 500 + 0.5},{['North', 'South', 'East'][i % 3]},2024-0{1 + i % 9}-1{i % 9}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path
