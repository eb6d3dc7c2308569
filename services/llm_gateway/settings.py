"""LLM gateway settings: limits (`INSIGHTX_LLM_*`) and providers (`BYTEZ_*`, `OPENAI_*`), read once.

Keys are held as `SecretStr` so that no repr, log or validation error ever shows one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import Settings

BYTEZ_DEFAULT_BASE_URL = "https://api.bytez.com/models/v2/openai/v1"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class LlmGatewaySettings(Settings):
    """Timeouts, retry bounds and per-key concurrency of the gateway, plus the providers' URLs and keys."""

    model_config = SettingsConfigDict(env_prefix="INSIGHTX_", env_file=".env", extra="ignore")

    agents_file: Path | None = Field(None, description="YAML or JSON file overriding the agent registry")
    llm_provider: str = Field("", description="provider of every agent (bytez or openai); empty: registry's")
    llm_model: str = Field("", description="model of every agent; empty: the registry's")
    llm_bytez_max_in_flight_per_key: int = Field(1, ge=0, description="Bytez free plan: 1; 0 = no cap")
    llm_openai_max_in_flight_per_key: int = Field(16, ge=0, description="0 = no cap")
    llm_connect_timeout_s: float = Field(10.0, gt=0, description="TCP/TLS connect timeout to a provider")
    llm_first_byte_timeout_s: float = Field(
        180.0, gt=0, description="read timeout; open models cold-start, so it is long"
    )
    llm_write_timeout_s: float = Field(30.0, gt=0, description="timeout sending a request body")
    llm_max_connections: int = Field(256, gt=0, description="HTTP connection pool size per provider")
    llm_max_attempts: int = Field(4, ge=1, description="tries after 5xx, timeouts and connection errors")
    llm_retry_backoff_s: float = Field(0.2, ge=0, description="first retry delay after a transient failure")
    llm_retry_backoff_cap_s: float = Field(5.0, ge=0, description="longest retry delay")
    llm_cooldown_base_s: float = Field(1.0, gt=0, description="first 429 cool-down without Retry-After")
    llm_cooldown_cap_s: float = Field(300.0, gt=0, description="longest 429 cool-down without Retry-After")
    llm_slot_wait_s: float = Field(60.0, gt=0, description="longest wait for a free in-flight slot")

    bytez_base_url: str = Field(
        BYTEZ_DEFAULT_BASE_URL,
        validation_alias=AliasChoices("BYTEZ_BASE_URL"),
        description="Bytez OpenAI-compatible base URL",
    )
    bytez_api_keys: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("BYTEZ_API_KEYS"),
        description="Bytez keys, comma-separated (also BYTEZ_API_KEY_1..N)",
    )
    bytez_api_key: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("BYTEZ_API_KEY"), description="one Bytez key"
    )
    openai_base_url: str = Field(
        "",
        validation_alias=AliasChoices("OPENAI_BASE_URL"),
        description="any OpenAI-compatible base URL (OpenAI, Ollama, vLLM, llama.cpp)",
    )
    openai_api_keys: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("OPENAI_API_KEYS"),
        description="OpenAI-compatible keys, comma-separated (also OPENAI_API_KEY_1..N)",
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="one OpenAI-compatible key",
    )

    def keys_for(self, provider: str, environ: Mapping[str, str] | None = None) -> list[str]:
        """The provider's keys, deduplicated in order: `<P>_API_KEY_1..N`, `<P>_API_KEYS`, `<P>_API_KEY`."""
        prefix = provider.upper()
        env = dict(environ) if environ is not None else _environment()
        numbered = sorted(
            (int(m.group(1)), value)
            for name, value in env.items()
            if (m := re.fullmatch(rf"{prefix}_API_KEY_(\d+)", name)) and value
        )
        listed: SecretStr = getattr(self, f"{provider}_api_keys")
        single: SecretStr = getattr(self, f"{provider}_api_key")
        candidates = [v for _, v in numbered]
        candidates += listed.get_secret_value().split(",")
        candidates.append(single.get_secret_value())
        keys: list[str] = []
        for raw in candidates:
            key = raw.strip()
            if key and key not in keys:
                keys.append(key)
        return keys


def _environment() -> dict[str, str]:
    """The process environment over `.env` (numbered keys cannot be declared as fields)."""
    values: dict[str, str] = {}
    if Path(".env").is_file():
        values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    values.update(os.environ)
    return values
