"""The README documents every environment variable the settings read."""

from __future__ import annotations

from tools.env_table import README, render, rows


def test_environment_table_is_current() -> None:
    text = README.read_text()
    assert render(text) == text, "README's variable table is stale: run `python -m tools.env_table --write`"


def test_table_covers_addresses_keys_and_limits() -> None:
    names = {row[0] for row in rows()}
    for needed in (
        "INSIGHTX_ORCHESTRATOR_ADDR",
        "INSIGHTX_DATA_DIR",
        "BYTEZ_API_KEYS",
        "BYTEZ_BASE_URL",
        "OPENAI_BASE_URL",
        "SUPABASE_URL",
        "INSIGHTX_SQL_DEFAULT_TIMEOUT_MS",
        "INSIGHTX_SANDBOX_ALLOW_WEAK",
        "INSIGHTX_CORS_ORIGINS",
    ):
        assert needed in names
