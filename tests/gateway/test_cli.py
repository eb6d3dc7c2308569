"""`insightx ask` against the running gateway: live steps and the answer, `--json`, and plain errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.stack import ROOT, Stack

pytestmark = pytest.mark.integration


def insightx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "TERM": "dumb"},
    )


def test_ask_prints_steps_and_the_answer(stack: Stack, small_csv: Path) -> None:
    run = insightx("ask", str(small_csv), "how many rows are there?", "--url", stack.base_url)
    assert run.returncode == 0, run.stderr
    assert "120 rows, 3 columns" in run.stdout
    assert "SELECT" in run.stdout.upper() and "SQL_ONLY" in run.stdout
    lines = run.stdout.splitlines()
    after_table = lines[next(i for i, line in enumerate(lines) if "row(s)" in line) + 1 :]
    assert any("120" in line for line in after_table), run.stdout  # the composed answer follows the table


def test_ask_json_prints_only_the_final_event(stack: Stack, small_csv: Path) -> None:
    run = insightx("ask", str(small_csv), "how many rows are there?", "--url", stack.base_url, "--json")
    assert run.returncode == 0, run.stderr
    final = json.loads(run.stdout)
    assert final["type"] == "final_response" and final["data"]["answer"] == 120


def test_ask_reports_errors_plainly(stack: Stack, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    run = insightx("ask", str(empty), "how many rows are there?", "--url", stack.base_url)
    assert run.returncode == 1
    assert "Error:" in run.stdout and "EMPTY_FILE" in run.stdout
    missing = insightx("ask", str(tmp_path / "nope.csv"), "q", "--url", stack.base_url)
    assert missing.returncode == 2
