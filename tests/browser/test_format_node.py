"""The page's formatting module under node:test (format.test.mjs): no browser, no stack."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_page_formats_numbers_and_escapes_csv_formulas() -> None:
    run = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(HERE / "format.test.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "fail 0" in run.stdout
