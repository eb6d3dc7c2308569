"""The shared store's connection string (INSIGHTX_DATABASE_URL, a password inside) reaches the gateway, the
SQL engine (datasets' records) and the orchestrator (answers' events) only: no other service of `make run`
is given it, and the environment every process shares does not carry it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.stack import SERVICES, Stack

URL = "postgresql://insightx:db-password-1234@127.0.0.1:5432/insightx"


@pytest.mark.parametrize("source", ["environment", "extra_env"])
def test_the_database_url_reaches_the_gateway_the_engine_and_the_orchestrator_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "environment":
        monkeypatch.setenv("INSIGHTX_DATABASE_URL", URL)
    stack = Stack.on_free_ports(
        tmp_path, extra_env={"INSIGHTX_DATABASE_URL": URL} if source == "extra_env" else {}
    )
    assert (
        stack.env("gateway")["INSIGHTX_DATABASE_URL"]
        == stack.env("sql_engine")["INSIGHTX_DATABASE_URL"]
        == stack.env("orchestrator")["INSIGHTX_DATABASE_URL"]
        == URL
    )
    for name in (*(s for s in SERVICES if s not in ("sql_engine", "orchestrator")), None):
        env = stack.env(name)
        assert "INSIGHTX_DATABASE_URL" not in env and not any("db-password" in v for v in env.values()), name
