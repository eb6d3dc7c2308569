"""`insightx ask` against the running gateway: live steps and the answer, `--json`, and plain errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.stacks import token_of
from tools.stack import ROOT, Stack

pytestmark = pytest.mark.integration


def insightx(*args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it, with INSIGHTX_TOKEN in its environment (when given)."""
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "120", "TERM": "dumb"}
    if token:
        env["INSIGHTX_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_ask_prints_steps_and_the_answer(stack: Stack, small_csv: Path) -> None:
    run = insightx(
        "ask", str(small_csv), "how many rows are there?", "--url", stack.base_url, token=token_of(stack)
    )
    assert run.returncode == 0, run.stderr
    assert "120 rows, 3 columns" in run.stdout
    assert "SELECT" in run.stdout.upper() and "SQL_ONLY" in run.stdout
    lines = run.stdout.splitlines()
    after_table = lines[next(i for i, line in enumerate(lines) if "row(s)" in line) + 1 :]
    assert any("120" in line for line in after_table), run.stdout  # the composed answer follows the table


def test_ask_json_prints_only_the_final_event(stack: Stack, small_csv: Path) -> None:
    run = insightx(
        "ask",
        str(small_csv),
        "how many rows are there?",
        "--url",
        stack.base_url,
        "--json",
        token=token_of(stack),
    )
    assert run.returncode == 0, run.stderr
    final = json.loads(run.stdout)
    assert final["type"] == "final_response" and final["data"]["answer"] == 120


def test_ask_reports_errors_plainly(stack: Stack, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    run = insightx(
        "ask", str(empty), "how many rows are there?", "--url", stack.base_url, token=token_of(stack)
    )
    assert run.returncode == 1
    assert "Error:" in run.stdout and "EMPTY_FILE" in run.stdout
    missing = insightx("ask", str(tmp_path / "nope.csv"), "q", "--url", stack.base_url)
    assert missing.returncode == 2


def test_ask_needs_the_token_and_refuses_a_wrong_one(stack: Stack, small_csv: Path) -> None:
    unset = insightx("ask", str(small_csv), "how many rows?", "--url", stack.base_url)
    assert unset.returncode == 1 and "INSIGHTX_TOKEN" in unset.stdout and "NO_TOKEN" in unset.stdout
    wrong = insightx("ask", str(small_csv), "how many rows?", "--url", stack.base_url, token="nope")
    assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stdout
