"""`pip install .` into a fresh virtual environment outside the repository, then `insightx serve` answers
/health (with the page and its chart libraries) and `insightx ask` answers a question, run from a directory
that is not the repository.

To stay fast and offline, the package is installed with `--no-deps --no-index --no-build-isolation`, and
the new environment finds its dependencies in the repository's `.venv` through a `.pth` line (a plain path:
the `.venv`'s own `.pth` files, among them its editable install of this repository, are not processed, so
the code that runs is the installed copy; the test checks that too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools.stack import CONFIG_PREFIXES, DEFAULT_PORTS, ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

SKIP = {
    ".git",
    ".venv",
    "data",
    "build",
    "dist",
    "node_modules",
    "__pycache__",
    "artifacts",
    "tests",
    "bench",
}
VENDOR = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")


def _copy_source(target: Path) -> Path:
    """The source tree as `pip install .` reads it (no venv, no data, no build output; the three chart
    library builds of node_modules that the package carries)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP or n.endswith((".egg-info", ".pyc")) or n.startswith(".")}

    shutil.copytree(ROOT, target, ignore=ignore)
    for relative in VENDOR:
        source = ROOT / "gateway" / "web" / "node_modules" / relative
        if source.is_file():
            destination = target / "gateway" / "web" / "node_modules" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def _clean_env(venv: Path) -> dict[str, str]:
    """A person's shell: the new environment's bin first, no InsightX settings, no PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(CONFIG_PREFIXES) and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["COLUMNS"] = "120"
    env["TERM"] = "dumb"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with `pip install .` done in a copy of the source; yields the venv."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    # no pip of its own (ensurepip's old setuptools would build nothing offline): `python -m pip` in it
    # is the .venv's pip through the .pth, installing into the new environment (its sys.prefix)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "insightx-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = _copy_source(root / "src")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--no-build-isolation", "."], cwd=source, check=True, timeout=300, env=_clean_env(venv)
    )
    shutil.rmtree(source)  # nothing may come from the copy: only the installed package remains
    yield venv


def test_the_installed_package_is_what_runs(installed: Path, tmp_path: Path) -> None:
    code = (
        "import gateway, services, common, insightx.v1 as v1; from pathlib import Path; "
        "print(*(Path(m.__file__).parent for m in (gateway, services, common, v1)))"
    )
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_clean_env(installed),
        check=True,
    ).stdout.split()
    assert all(str(installed) in where and str(ROOT) not in where for where in found), found
    gateway_dir = Path(found[0])
    assert (gateway_dir / "static" / "index.html").is_file() and (gateway_dir / "stack.py").is_file()


def test_serve_then_ask_from_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    home = tmp_path / "somewhere"
    home.mkdir()
    env = _clean_env(installed)
    http_port = free_port()
    env["INSIGHTX_GATEWAY_PORT"] = str(http_port)
    for name in DEFAULT_PORTS:
        env[f"INSIGHTX_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "serve.log").open("w+")
    serve = subprocess.Popen(
        [str(installed / "bin" / "insightx"), "serve"],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        token = _wait_for_token(serve, tmp_path / "serve.log")
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200 and set(health.json()["services"].values()) == {"SERVING"}
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()  # the page, from the package
        if (ROOT / "gateway" / "web" / "node_modules" / VENDOR[0]).is_file():
            assert httpx.get(f"{base}/vendor/vega.min.js", timeout=10).status_code == 200
        assert httpx.get(f"{base}/events.json", timeout=10).json()["terminal"] == ["final_response", "error"]
        assert (home / "data" / "demo").is_dir()  # the data directory is the caller's, not the package's

        table = home / "prices.csv"
        table.write_text(
            "bank,amount\n" + "\n".join(f"{('SBI', 'HDFC')[i % 2]},{i}" for i in range(40)) + "\n"
        )
        ask = subprocess.run(
            [
                str(installed / "bin" / "insightx"),
                "ask",
                str(table),
                "How many rows have bank SBI?",
                "--url",
                base,
                "--json",
            ],
            cwd=home,
            env={**env, "INSIGHTX_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ask.returncode == 0, ask.stdout + ask.stderr
        assert "40 rows, 2 columns" in ask.stderr  # with --json, the steps go to stderr
        final = json.loads(ask.stdout)
        assert final["type"] == "final_response" and final["data"]["answer"] == 20
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()


def _wait_for_token(serve: subprocess.Popen[bytes], log: Path, timeout_s: float = 240.0) -> str:
    """The CLI token `insightx serve` prints once the stack is healthy and the demo loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text()
        found = re.search(r"export INSIGHTX_TOKEN=(\S+)", text)
        if found:
            return found.group(1)
        if serve.poll() is not None:
            raise AssertionError(f"insightx serve exited with {serve.returncode}:\n{text}")
        time.sleep(0.5)
    raise TimeoutError(f"insightx serve printed no token in {timeout_s:.0f} s:\n{log.read_text()}")
