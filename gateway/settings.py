"""Gateway settings (`INSIGHTX_*`), on top of the suite's shared settings."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from common.settings import Settings


class GatewaySettings(Settings):
    """CORS origins and upload chunking of the HTTP gateway."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    cors_origins: list[str] = ["http://localhost:3000", "http://localhost:5173"]
    upload_chunk_bytes: int = 1 << 20
    sse_max_rows: int = 200
