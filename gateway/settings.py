"""Gateway settings (`INSIGHTX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import Settings

_WEB = Path(__file__).resolve().parent / "web"


class GatewaySettings(Settings):
    """CORS origins, body limits, SSE timing and where the page's npm assets live."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    cors_origins: list[str] = Field(
        ["http://localhost:3000", "http://localhost:5173"], description="origins allowed by CORS (JSON list)"
    )
    upload_chunk_bytes: int = Field(1 << 20, description="bytes per ImportDataset chunk")
    sse_max_rows: int = Field(200, description="rows of a sql_result sent in one SSE event")
    sse_ping_s: float = Field(15.0, description="seconds between SSE heartbeat comments")
    sse_retry_ms: int = Field(3000, description="reconnection delay announced with `retry:`")
    max_json_bytes: int = Field(1 << 20, description="largest accepted JSON request body (bytes)")
    workspace_max_rows: int = Field(1000, description="rows returned by the SQL editor endpoint")
    profile_wait_s: float = Field(
        120.0, description="longest GET /api/datasets/{id}?wait_for_profile=true waits for a profile"
    )
    web_modules_dir: Path = Field(_WEB / "node_modules", description="node_modules of gateway/web (npm ci)")
