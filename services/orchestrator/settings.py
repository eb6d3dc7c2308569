"""Orchestrator settings (`INSIGHTX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import Settings


class OrchestratorSettings(Settings):
    """Deadlines and caps of the pipeline."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    sql_timeout_ms: int = 30_000
    sql_max_rows: int = 5_000
    event_max_rows: int = 200
    python_timeout_s: float = 30.0
