"""SQL engine settings (`INSIGHTX_SQL_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import Settings


class SqlEngineSettings(Settings):
    """Limits of the engine; defaults suit a 2-core, 24 GiB machine."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    sql_default_max_rows: int = Field(10_000, description="row cap when a request gives none")
    sql_hard_max_rows: int = Field(1_000_000, description="largest row cap a request may ask for")
    sql_max_result_bytes: int = Field(48 << 20, description="results are truncated past this many bytes")
    sql_default_timeout_ms: int = Field(30_000, description="timeout when a request gives none")
    sql_max_timeout_ms: int = Field(300_000, description="largest timeout a request may ask for")
    sql_memory_limit: str = Field("2GB", description="DuckDB memory_limit of each open dataset")
    sql_threads: int = Field(2, description="DuckDB threads of each open dataset")
    sql_query_workers: int = Field(
        8, description="query worker processes (each with its own memory cap, the data read-only)"
    )
    sql_queries_per_session: int = Field(4, description="workers one session may hold at once")
    sql_queries_per_user: int = Field(
        6, description="workers one user (gRPC metadata insightx-user-id) may hold at once"
    )
    sql_queued_per_caller: int = Field(
        64, description="queries one session or user may have waiting; past it: RESOURCE_EXHAUSTED"
    )
    sql_worker_address_space_bytes: int = Field(
        4 << 30, description="RLIMIT_AS of each query worker (0: none); a query past it fails alone"
    )
    sql_worker_recycle_rss_bytes: int = Field(
        1 << 30, description="a query worker whose RSS is past this after a query is replaced"
    )
    sql_max_open_databases: int = Field(
        16, description="hardened databases each worker keeps open, least recently used out"
    )
    sql_result_cache_entries: int = Field(256, description="results kept by the result cache (0 disables)")
    sql_result_cache_bytes: int = Field(128 << 20, description="bytes kept by the result cache")
    sql_read_only_mount: bool = Field(True, description="mount the dataset folders read-only for queries")
    sql_address_space_bytes: int = Field(
        12 << 30, description="RLIMIT_AS of the engine process (0: none); turns allocation bombs into errors"
    )
    sql_import_memory_limit: str = Field("4GB", description="DuckDB memory_limit while importing (spills)")
    sql_profile_inline_rows: int = Field(
        100_000,
        description="tables of at most this many rows: profiled before ImportDataset replies",
    )
    sql_profile_workers: int = Field(1, description="threads computing profiles after the import has replied")
