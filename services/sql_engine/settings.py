"""SQL engine settings (`INSIGHTX_SQL_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import Settings


class SqlEngineSettings(Settings):
    """Limits of the engine; defaults suit a 2-core, 24 GiB machine."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    sql_default_max_rows: int = 10_000
    sql_hard_max_rows: int = 1_000_000
    sql_default_timeout_ms: int = 30_000
    sql_memory_limit: str = "2GB"
    sql_threads: int = 2
