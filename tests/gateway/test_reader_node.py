"""The frontend's reader (node:test in reader.test.mjs) against the running gateway, incl. a 2 MB event."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gateway.stacks import http, token_of, upload
from tools.stack import Stack

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
# A dataset whose breakdown is a large table: 2,400 groups with ~900-character labels (≈ 2.3 MB of rows).
BIG_GROUPS = 2400
BIG_QUESTION = "How many transactions are there for each note?"


@pytest.fixture(scope="module")
def big_session(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("big") / "notes.csv"
    filler = "₹ paid for groceries, café visits and fuel — " * 20
    with path.open("w", encoding="utf-8") as out:
        out.write("note,amount\n")
        for i in range(BIG_GROUPS * 2):
            out.write(f'"{i % BIG_GROUPS:05d} {filler}",{i}\n')
    return str(upload(stack.base_url, path)["session_id"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_page_reader_parses_every_event(stack: Stack, session_id: str, big_session: str) -> None:
    probe = http.post(
        f"{stack.base_url}/api/chat/stream",
        json={"session_id": big_session, "message": BIG_QUESTION},
        timeout=120,
    )
    assert probe.status_code == 200
    assert max(len(line) for line in probe.text.split("\n")) >= 2_000_000, (
        "the big question must give a 2 MB event"
    )
    env = {
        **os.environ,
        "GATEWAY_URL": stack.base_url,
        "GATEWAY_TOKEN": token_of(stack),
        "SESSION_ID": session_id,
        "BIG_SESSION_ID": big_session,
        "BIG_QUESTION": BIG_QUESTION,
    }
    run = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(HERE / "reader.test.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fail 0" in run.stdout
