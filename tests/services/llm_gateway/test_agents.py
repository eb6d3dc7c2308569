"""The agent registry: code defaults, YAML/JSON overrides from INSIGHTX_AGENTS_FILE, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.llm_gateway.agents import (
    AGENT_NAMES,
    AGENTS_FILE_ENV,
    RegistryError,
    default_agents,
    load_registry,
)


def test_defaults_cover_every_agent_with_a_prompt() -> None:
    registry = load_registry()
    assert tuple(registry.names()) == AGENT_NAMES and registry.source == "defaults"
    for agent in registry:
        assert agent.provider == "bytez" and agent.model and agent.max_tokens > 0
        assert len(agent.system_prompt) > 50
    classifier = registry.get("classifier")
    assert classifier is not None and "SQL_THEN_PY" in classifier.system_prompt


def test_yaml_file_named_by_the_environment_overrides_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "defaults:\n  provider: openai\n  model: llama3.1:8b\n"
        "agents:\n  sql:\n    temperature: 0.1\n  composer:\n    system_prompt: Be brief.\n"
        "  critic:\n    max_tokens: 99\n"
    )
    monkeypatch.setenv(AGENTS_FILE_ENV, str(path))
    registry = load_registry()
    sql, composer, critic = registry.get("sql"), registry.get("composer"), registry.get("critic")
    assert sql is not None and composer is not None and critic is not None
    assert (sql.provider, sql.model, sql.temperature) == ("openai", "llama3.1:8b", 0.1)
    assert sql.system_prompt == default_agents()["sql"].system_prompt, "unset fields keep their default"
    assert composer.system_prompt == "Be brief." and critic.max_tokens == 99 and critic.model == "llama3.1:8b"
    assert registry.source == str(path)


def test_json_file_with_agents_at_top_level(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"validator": {"model": "acme/judge", "max_tokens": 128}}))
    validator = load_registry(path).get("validator")
    assert validator is not None and (validator.model, validator.max_tokens) == ("acme/judge", 128)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sql: [1, 2]", "must be a mapping"),
        ("sql:\n  provider: acme\n", "agent 'sql'"),
        ("sql:\n  temperature: 7\n", "agent 'sql'"),
        ("sql:\n  colour: blue\n", "agent 'sql'"),
        ("sql: {unclosed", "invalid YAML"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agents.yml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=AGENTS_FILE_ENV):
        load_registry(tmp_path / "nope.yaml")


def test_environment_switches_every_agent_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSIGHTX_LLM_PROVIDER", "openai")
    monkeypatch.setenv("INSIGHTX_LLM_MODEL", "qwen2.5:7b")
    assert {(a.provider, a.model) for a in load_registry()} == {("openai", "qwen2.5:7b")}
    path = tmp_path / "agents.yaml"
    path.write_text("sql:\n  model: sqlcoder:7b\n")
    registry = load_registry(path)
    sql, composer = registry.get("sql"), registry.get("composer")
    assert sql is not None and composer is not None
    assert (sql.provider, sql.model) == ("openai", "sqlcoder:7b") and composer.model == "qwen2.5:7b"
