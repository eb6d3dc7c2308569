"""Gateway settings (`INSIGHTX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import Settings

_WEB = Path(__file__).resolve().parent / "web"


class GatewaySettings(Settings):
    """CORS origins, body limits, SSE timing, where the page's npm assets live, who may call, and how much."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    cors_origins: list[str] = Field(
        ["http://localhost:3000", "http://localhost:5173"], description="origins allowed by CORS (JSON list)"
    )
    upload_chunk_bytes: int = Field(1 << 20, description="bytes per ImportDataset chunk")
    sse_max_rows: int = Field(200, description="rows of a sql_result sent in one SSE event")
    sse_ping_s: float = Field(15.0, description="seconds between SSE heartbeat comments")
    sse_retry_ms: int = Field(3000, description="reconnection delay announced with `retry:`")
    answer_followers: int = Field(
        64,
        ge=0,
        description="answers whose client left before their end that one gateway reads on in the background"
        " to record them in the chat store; beyond it an answer is recorded only when resumed",
    )
    max_json_bytes: int = Field(1 << 20, description="largest accepted JSON request body (bytes)")
    workspace_max_rows: int = Field(1000, description="rows returned by the SQL editor endpoint")
    profile_wait_s: float = Field(
        120.0, description="longest GET /api/datasets/{id}?wait_for_profile=true waits for a profile"
    )
    web_modules_dir: Path = Field(_WEB / "node_modules", description="node_modules of gateway/web (npm ci)")

    # --- where the gateway's state lives (gateway/stores.py) -------------------------------------------
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL connection string (postgresql://user:password@host:5432/db, Supabase's"
        " included): chats, owners, API tokens and usage shared by every gateway, and, given to sql_engine"
        " too, datasets' records and profiles; unset: SQLite and files under INSIGHTX_DATA_DIR (secret)",
    )
    database_pool_size: int = Field(
        10, ge=1, description="most connections a process opens to INSIGHTX_DATABASE_URL"
    )
    database_connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="how long the gateway waits for INSIGHTX_DATABASE_URL at start before it stops",
    )

    # --- who calls (gateway/auth.py) -------------------------------------------------------------------
    auth_token: SecretStr | None = Field(
        None,
        description="secret token of the embedded user (`make run` makes one and prints a URL carrying it);"
        " unset: the gateway makes one in <data_dir>/gateway/auth_token",
    )
    local_user: str = Field("local", description="user id of whoever holds INSIGHTX_AUTH_TOKEN")
    secret_key: SecretStr | None = Field(
        None, description="key signing the login cookie; unset: made once in <data_dir>/gateway/secret_key"
    )
    cookie_max_age_s: int = Field(7 * 86400, description="lifetime of the login cookie (seconds)")
    cookie_secure: bool = Field(False, description="mark the login cookie Secure (set it behind HTTPS)")
    supabase_jwt_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "INSIGHTX_SUPABASE_JWT_SECRET"),
        description="Supabase project's JWT secret: accept its HS256 access tokens (secret)",
    )
    supabase_jwks_url: str = Field(
        "",
        validation_alias=AliasChoices("SUPABASE_JWKS_URL", "INSIGHTX_SUPABASE_JWKS_URL"),
        description="JWKS of the Supabase project (…/auth/v1/.well-known/jwks.json): accept its RS256/ES256"
        " access tokens",
    )
    supabase_jwt_audience: str = Field(
        "authenticated",
        validation_alias=AliasChoices("SUPABASE_JWT_AUDIENCE", "INSIGHTX_SUPABASE_JWT_AUDIENCE"),
        description="required `aud` of Supabase access tokens",
    )
    supabase_jwt_issuer: str = Field(
        "",
        validation_alias=AliasChoices("SUPABASE_JWT_ISSUER", "INSIGHTX_SUPABASE_JWT_ISSUER"),
        description="required `iss` of Supabase access tokens (e.g. https://<project>.supabase.co/auth/v1)",
    )

    # --- the web edge (gateway/edge.py) ----------------------------------------------------------------
    allowed_hosts: list[str] = Field(
        ["localhost", "127.0.0.1", "[::1]"],
        description='Host header names the gateway answers (JSON list; ["*"] answers any: only behind a'
        " proxy that checks it)",
    )

    # --- retention and quotas (gateway/quotas.py); 0 means no limit -----------------------------------
    retention_days: float = Field(0.0, description="days a dataset (with its chats) is kept; 0 keeps it")
    retention_sweep_s: float = Field(3600.0, description="seconds between sweeps for expired datasets")
    quota_uploads_per_day: int = Field(200, description="uploads per user per UTC day")
    quota_storage_bytes: int = Field(20 << 30, description="bytes of uploads a user may keep")
    quota_chats_per_day: int = Field(
        2000, description="chat answers (each spends model calls) per user per day"
    )
    quota_python_runs_per_day: int = Field(2000, description="workspace Python runs per user per day")
    quota_sql_queries_per_day: int = Field(20000, description="workspace SQL queries per user per day")
