"""Suite-wide fixtures: every test starts from an environment without InsightX or provider settings, except
the internal credential that every in-process server and channel of the tests shares."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from common.settings import get_settings
from tools.postgres_server import INSTALL_HINT, PostgresServer, bin_dir

_PREFIXES = ("INSIGHTX_", "BYTEZ_", "OPENAI_", "SUPABASE_")

# One internal token for the whole test run, as every caller's own and as every service's verifier, so
# in-process servers and `open_channel` channels authenticate each other (tests/common/test_auth.py checks
# distinct callers). Processes started through tools.stack get tokens of their own.
TEST_INTERNAL_TOKEN = "test-internal-token-" + secrets.token_hex(16)
TEST_CREDENTIALS = {
    "INSIGHTX_INTERNAL_TOKEN": TEST_INTERNAL_TOKEN,
    "INSIGHTX_INTERNAL_GATEWAY_TOKEN": TEST_INTERNAL_TOKEN,
    "INSIGHTX_INTERNAL_ORCHESTRATOR_TOKEN": TEST_INTERNAL_TOKEN,
}
os.environ.update(TEST_CREDENTIALS)  # also for fixtures of wider scope, which start before the one below


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Removes configuration variables so a developer's shell or .env cannot change a test's outcome."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on loopback for the whole run (tests/postgres_server.py); fails when missing."""
    binaries = bin_dir()
    if binaries is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = PostgresServer(binaries).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The connection string of an empty database of its own for one test."""
    return postgres_server.new_database()
