"""`insightx ask` against the running gateway: live steps and the result once, `--json`, exit statuses
(0 answered, 1 error, 2 usage, 3 refused) and plain errors. Ctrl-C (exit 130, the answer stopped) needs an
answer that hangs: it is tested on the hanging stack of test_disconnect.py."""

from __future__ import annotations

import json
import re
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


@pytest.fixture(scope="module")
def prices_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Amounts with long decimals (10 + i/7), three banks."""
    path = tmp_path_factory.mktemp("prices") / "prices.csv"
    rows = [f"{('SBI', 'HDFC', 'ICICI')[i % 3]},{10 + i / 7}" for i in range(60)]
    path.write_text("bank,amount\n" + "\n".join(rows) + "\n")
    return path


def mean_for(bank: str) -> float:
    amounts = [10 + i / 7 for i in range(60) if ("SBI", "HDFC", "ICICI")[i % 3] == bank]
    return sum(amounts) / len(amounts)


def test_ask_prints_the_steps_then_the_result_once(stack: Stack, prices_csv: Path) -> None:
    question = "What is the average amount for each bank?"
    run = insightx("ask", str(prices_csv), question, "--url", stack.base_url, token=token_of(stack))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "60 rows, 2 columns" in out and "SELECT" in out.upper() and "plan" in out
    # numbers as a person reads them, never a 15-digit float (and so never shown twice, raw then rounded)
    assert not re.search(r"\d\.\d{6,}", out), out
    for bank in ("SBI", "HDFC", "ICICI"):
        value = f"{mean_for(bank):.4g}"
        rows = [line for line in out.splitlines() if line.split()[:1] == [bank] and value in line]
        assert len(rows) == 1, out  # the result's row, printed once


def test_ask_json_prints_only_the_final_event(stack: Stack, prices_csv: Path) -> None:
    question = "How many rows have bank SBI?"
    run = insightx("ask", str(prices_csv), question, "--url", stack.base_url, "--json", token=token_of(stack))
    assert run.returncode == 0, run.stderr
    final = json.loads(run.stdout)
    assert final["type"] == "final_response" and final["data"]["answer"] == 20


def test_a_refusal_exits_3_with_the_offered_questions(stack: Stack, prices_csv: Path) -> None:
    question = "What is the weather on Mars?"
    run = insightx("ask", str(prices_csv), question, "--url", stack.base_url, token=token_of(stack))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Not answered:" in run.stdout
    as_json = insightx(
        "ask", str(prices_csv), question, "--url", stack.base_url, "--json", token=token_of(stack)
    )
    assert as_json.returncode == 3
    final = json.loads(as_json.stdout)
    assert final["data"]["answer"] is None
    for choice in final["data"]["clarifications"]:
        assert choice in " ".join(run.stdout.split())  # each offered question is printed


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
