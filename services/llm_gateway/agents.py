"""The agent registry: which provider, model, temperature, token budget and system prompt each agent uses.

Defaults live in code. `INSIGHTX_LLM_PROVIDER` / `INSIGHTX_LLM_MODEL` switch every agent's provider / model
(e.g. to a local Ollama through the `openai` provider); then a YAML or JSON file named by
`INSIGHTX_AGENTS_FILE` overrides them, field by field:

    defaults:            # applied to every agent before its own entry (optional)
      provider: openai
      model: llama3.1:8b
    agents:
      sql:
        temperature: 0.0
        max_tokens: 800
      composer:
        system_prompt: "Answer in two sentences."

A file may also list the agents at top level (without `agents:`). This module imports nothing from gRPC:
the orchestrator reads the same registry for its prompts with `load_registry()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "AGENTS_FILE_ENV",
    "AGENT_NAMES",
    "DEFAULT_MODEL",
    "MODEL_ENV",
    "PROVIDERS",
    "PROVIDER_ENV",
    "AgentConfig",
    "AgentRegistry",
    "RegistryError",
    "default_agents",
    "load_registry",
]

AGENTS_FILE_ENV = "INSIGHTX_AGENTS_FILE"
PROVIDER_ENV = "INSIGHTX_LLM_PROVIDER"
MODEL_ENV = "INSIGHTX_LLM_MODEL"
AGENT_NAMES = ("classifier", "sql", "python", "validator", "composer")
PROVIDERS = ("bytez", "openai")
DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"


class RegistryError(ValueError):
    """The registry file cannot be read or does not describe valid agents."""


class AgentConfig(BaseModel):
    """How one agent talks to a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    provider: str = Field("bytez", pattern="^(bytez|openai)$")
    model: str = DEFAULT_MODEL
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, gt=0)
    system_prompt: str = ""


_CLASSIFIER_PROMPT = """You route questions about one tabular dataset. Reply with JSON only:
{"classification": "SQL_ONLY" | "PY_ONLY" | "SQL_THEN_PY" | "EXPLAIN_ONLY", "reasoning": "<one sentence>"}
- SQL_ONLY: counts, sums, averages, filters, group-by, top-k, distinct values, time buckets.
- SQL_THEN_PY: statistics SQL cannot do well (correlation tests, regressions, distributions, forecasts):
  select the rows with SQL, then analyse them in Python.
- PY_ONLY: analysis of the whole table that needs Python from the start.
- EXPLAIN_ONLY: questions about the dataset itself (columns, meaning, quality) answered from its profile."""

_SQL_PROMPT = """You write one DuckDB SELECT statement that answers the user's question over the table
described. Rules: a single read-only SELECT (WITH allowed); quote every column name with double quotes
exactly as given; never invent columns; filter on values that exist in the data; add ORDER BY and LIMIT
for top/bottom-k.
Reply with the SQL only, no explanation, no markdown fences. If you are given an error from a previous
attempt, fix the statement and reply with the corrected SQL only."""

_PYTHON_PROMPT = """You write Python analysis code. A pandas DataFrame named `df` holds the data; numpy (np),
pandas (pd), scipy and matplotlib are imported. Assign the answer to a variable named `result` (a number,
string, list, dict or DataFrame). No file, network or system access. Reply with the code only, no
markdown fences."""

_VALIDATOR_PROMPT = """You check whether a result answers the user's question. You receive the question, the
SQL and/or Python that ran, and a preview of the result. Reply with JSON only:
{"valid": true | false, "issues": ["<problem>", ...], "confidence": <0..1>}"""

_COMPOSER_PROMPT = """You are InsightX, a careful data analyst. Using only the result given (never invent
numbers), answer the user's question in short markdown: the answer first, then one or two sentences of
context. Then reply with JSON on the last line:
{"answer": <the answer value>, "follow_ups": ["...", "..."]}"""


def default_agents() -> dict[str, AgentConfig]:
    """The built-in registry: Bytez for every agent, deterministic for code, a little warmth for prose."""
    return {
        "classifier": AgentConfig(
            name="classifier", temperature=0.0, max_tokens=256, system_prompt=_CLASSIFIER_PROMPT
        ),
        "sql": AgentConfig(name="sql", temperature=0.0, max_tokens=1024, system_prompt=_SQL_PROMPT),
        "python": AgentConfig(name="python", temperature=0.0, max_tokens=1536, system_prompt=_PYTHON_PROMPT),
        "validator": AgentConfig(
            name="validator", temperature=0.0, max_tokens=384, system_prompt=_VALIDATOR_PROMPT
        ),
        "composer": AgentConfig(
            name="composer", temperature=0.3, max_tokens=1024, system_prompt=_COMPOSER_PROMPT
        ),
    }


class AgentRegistry:
    """The agents by name, after overrides."""

    def __init__(self, agents: Mapping[str, AgentConfig], source: str = "defaults") -> None:
        self._agents = dict(agents)
        self.source = source

    def get(self, name: str) -> AgentConfig | None:
        """The agent named `name`, or None when the registry has no such agent."""
        return self._agents.get(name)

    def names(self) -> list[str]:
        return list(self._agents)

    def __iter__(self) -> Iterator[AgentConfig]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}: invalid JSON ({exc})") from exc
    import yaml  # YAML is a superset of JSON: any other suffix is read as YAML.

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: invalid YAML ({exc})") from exc


def apply_overrides(base: Mapping[str, AgentConfig], data: Any, source: str) -> dict[str, AgentConfig]:
    """Merges a parsed registry document over `base` (new agent names are added)."""
    if data is None:
        return dict(base)
    if not isinstance(data, Mapping):
        raise RegistryError(f"{source}: expected a mapping of agents")
    shared = data.get("defaults") or {}
    entries = data.get("agents", {k: v for k, v in data.items() if k != "defaults"})
    if not isinstance(shared, Mapping) or not isinstance(entries, Mapping):
        raise RegistryError(f"{source}: 'defaults' and 'agents' must be mappings")
    merged = dict(base)
    for name in set(merged) | set(entries):
        entry = entries.get(name) or {}
        if not isinstance(entry, Mapping):
            raise RegistryError(f"{source}: agent {name!r} must be a mapping")
        current = merged[name].model_dump() if name in merged else {"name": name}
        try:
            merged[name] = AgentConfig(**{**current, **shared, **entry, "name": name})
        except ValidationError as exc:
            raise RegistryError(f"{source}: agent {name!r}: {exc.errors()[0]['msg']}") from exc
    return merged


def load_registry(
    path: str | os.PathLike[str] | None = None, provider: str | None = None, model: str | None = None
) -> AgentRegistry:
    """The registry: defaults, with every agent's provider/model switched (arguments, else
    `INSIGHTX_LLM_PROVIDER` / `INSIGHTX_LLM_MODEL`), then overridden by `path` or else by the file
    `INSIGHTX_AGENTS_FILE` names."""
    provider = provider or os.environ.get(PROVIDER_ENV) or None
    model = model or os.environ.get(MODEL_ENV) or None
    switched = {k: v for k, v in (("provider", provider), ("model", model)) if v}
    base = apply_overrides(default_agents(), {"defaults": switched}, "environment") if switched else None
    agents = base or default_agents()
    chosen = path if path is not None else os.environ.get(AGENTS_FILE_ENV) or None
    if chosen is None:
        return AgentRegistry(agents, source="environment" if switched else "defaults")
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{AGENTS_FILE_ENV}={file}: cannot read ({exc.strerror})") from exc
    return AgentRegistry(apply_overrides(agents, _parse(text, file), str(file)), source=str(file))
