"""Orchestrator settings (`INSIGHTX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import Settings


class OrchestratorSettings(Settings):
    """Deadlines, caps, retries, cache, resume window and event store of the pipeline."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    sql_timeout_ms: int = Field(30_000, description="longest a pipeline query may run")
    sql_max_rows: int = Field(5_000, description="rows fetched from a query")
    python_input_max_rows: int = Field(1_000_000, description="rows a query may hand to Python as `df`")
    event_max_rows: int = Field(200, description="rows carried by a sql_result event")
    python_timeout_s: float = Field(30.0, description="wall-clock limit of one sandbox run")
    llm_timeout_s: float = Field(60.0, description="longest one model call may take")
    sql_max_attempts: int = Field(3, description="SQL tries per question, first one included")
    python_max_attempts: int = Field(2, description="Python tries per question, first one included")
    reply_max_attempts: int = Field(2, description="tries to get a parseable reply from one agent")
    validator_retries: int = Field(1, description="times the validator may send the work back")
    model_status_ttl_s: float = Field(
        10.0, description="how long the LLM gateway's key status is trusted (0: always try the model)"
    )
    speculative_sql: bool = Field(True, description="draft the SQL while the classifier decides")
    prompt_max_history: int = Field(10, description="earlier turns carried into prompts")
    prompt_max_rows: int = Field(30, description="result rows shown to the validator and composer")
    answer_cache_size: int = Field(256, description="answers kept in the answer cache (0 turns it off)")
    answer_cache_ttl_s: float = Field(3600.0, description="how long a cached answer is served")
    resume_retention_s: float = Field(
        300.0, description="how long a finished answer's events can be resumed (in memory or PostgreSQL)"
    )
    resume_max_chats: int = Field(
        500, description="finished answers kept in memory for resume (oldest dropped first; no database)"
    )
    resume_max_events: int = Field(1_000, description="events kept per answer in memory (no database)")
    answer_lease_s: float = Field(
        3.0,
        gt=0,
        description="how long an answer's replica holds it without a heartbeat before another replica that"
        " resumes it takes it over (answers again, seq going on)",
    )
    event_poll_s: float = Field(
        0.5,
        gt=0,
        description="how often a stream re-reads the event store unwoken (PostgreSQL's NOTIFY wakes it at"
        " once): the fallback, and how soon a dead replica's lease is seen to run out",
    )
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL connection string (postgresql://user:password@host:5432/db, Supabase's"
        " included): chats, owners, API tokens and usage shared by every gateway; given to sql_engine too,"
        " datasets' records and profiles; to the orchestrator, each answer's events, so a stream resumes on"
        " any replica; unset: SQLite and files under INSIGHTX_DATA_DIR, answers' events in memory (secret)",
    )
    database_pool_size: int = Field(
        10, ge=1, description="most connections a process opens to INSIGHTX_DATABASE_URL"
    )
    database_connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="how long a process waits for INSIGHTX_DATABASE_URL at start before it stops",
    )
    agents_file: Path | None = Field(None, description="YAML or JSON file overriding the agent registry")
