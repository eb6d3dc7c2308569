"""Where keys come from: numbered, comma-separated and single variables, in that order, deduplicated."""

from __future__ import annotations

import pytest

from services.llm_gateway.settings import BYTEZ_DEFAULT_BASE_URL, LlmGatewaySettings


def test_keys_from_every_source_in_order_without_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEZ_API_KEY_10", "k10")
    monkeypatch.setenv("BYTEZ_API_KEY_2", "k2")
    monkeypatch.setenv("BYTEZ_API_KEY_1", "k1")
    monkeypatch.setenv("BYTEZ_API_KEYS", " k2 , kx,,ky ")
    monkeypatch.setenv("BYTEZ_API_KEY", "kz")
    monkeypatch.setenv("OPENAI_API_KEYS", "o1,o2")
    monkeypatch.setenv("OPENAI_API_KEY", "o2")
    settings = LlmGatewaySettings()
    assert settings.keys_for("bytez") == ["k1", "k2", "k10", "kx", "ky", "kz"]
    assert settings.keys_for("openai") == ["o1", "o2"]
    assert "k1" not in repr(settings) and "kx" not in repr(settings) and "o1" not in repr(settings)


def test_defaults_without_configuration() -> None:
    settings = LlmGatewaySettings()
    assert settings.keys_for("bytez") == [] and settings.keys_for("openai") == []
    assert settings.bytez_base_url == BYTEZ_DEFAULT_BASE_URL and settings.llm_gateway_addr.endswith(":50052")
    assert settings.llm_bytez_max_in_flight_per_key == 1, "Bytez free plan: one request in flight"


def test_base_urls_and_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEZ_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("INSIGHTX_LLM_BYTEZ_MAX_IN_FLIGHT_PER_KEY", "3")
    settings = LlmGatewaySettings()
    assert settings.bytez_base_url == "http://127.0.0.1:9/v1"
    assert settings.openai_base_url == "http://127.0.0.1:11434/v1"
    assert settings.llm_bytez_max_in_flight_per_key == 3
