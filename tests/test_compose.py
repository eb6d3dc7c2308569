"""docker-compose.yml and the Dockerfiles: valid without an engine, one non-root container per service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["sql_engine", "py_sandbox", "llm_gateway", "orchestrator", "gateway"]


def test_compose_file_validates() -> None:
    assert shutil.which("docker-compose"), "install Debian's docker-compose (make system-deps)"
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in SERVICES:
        assert f"  {name}:" in result.stdout
    assert "insightx-data" in result.stdout


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_non_root_image_with_a_health_check(name: str) -> None:
    dockerfile = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2, "multi-stage build expected"
    user_lines = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines
    if name == "py_sandbox":
        # The supervisor needs root to confine children; each child runs as an unprivileged uid.
        assert user_lines[-1].split()[1] == "root" and "a uid of its own" in dockerfile
    else:
        assert user_lines[-1].split()[1] not in {"root", "0"}
    assert "HEALTHCHECK" in dockerfile


def test_compose_file_carries_no_secret() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${BYTEZ_API_KEYS:-}" in text
    for line in text.splitlines():
        if "KEY" in line and ":" in line:
            assert "${" in line, f"a key must come from the environment: {line.strip()}"
