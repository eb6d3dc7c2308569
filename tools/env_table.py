"""The README's table of environment variables, generated from the typed settings of every service.

`python -m tools.env_table --write` rewrites the table between the README's markers; a test fails when the
README is stale, so a new setting cannot ship undocumented.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

from common.settings import Settings
from gateway.settings import GatewaySettings
from services.llm_gateway.settings import LlmGatewaySettings
from services.orchestrator.settings import OrchestratorSettings
from services.py_sandbox.settings import PySandboxSettings
from services.sql_engine.settings import SqlEngineSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- env-table:start -->", "<!-- env-table:end -->"

OWNERS: list[tuple[str, type[BaseSettings]]] = [
    ("every service", Settings),
    ("sql_engine", SqlEngineSettings),
    ("py_sandbox", PySandboxSettings),
    ("llm_gateway", LlmGatewaySettings),
    ("orchestrator", OrchestratorSettings),
    ("gateway", GatewaySettings),
]

# Read directly from the environment by the dataset store (common/store/datasets.py), not by a settings class.
EXTRA = [
    (
        "SUPABASE_URL",
        "",
        "sql_engine, py_sandbox, orchestrator",
        "Supabase project URL; with the key, datasets live in Supabase",
    ),
    ("SUPABASE_SERVICE_KEY", "", "sql_engine, py_sandbox, orchestrator", "Supabase service key (secret)"),
]


def _env_name(settings: type[BaseSettings], name: str, field: Any) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    prefix = settings.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def _default(field: Any) -> str:
    value = field.default
    if isinstance(value, SecretStr):
        return ""
    if value is None:
        return ""
    if isinstance(value, Path):
        # Defaults under the checkout are shown relative to it, so the table is the same in every clone.
        return str(value.relative_to(ROOT)) if value.is_relative_to(ROOT) else str(value)
    return str(value).replace("|", "\\|")


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, used by, meaning), one per setting, shared settings first."""
    seen: dict[str, list[Any]] = {}
    for owner, settings in OWNERS:
        base_fields = set(Settings.model_fields) if settings is not Settings else set()
        for name, field in settings.model_fields.items():
            if name in base_fields:
                continue
            env = _env_name(settings, name, field)
            if env in seen:
                seen[env][2] += f", {owner}"
                continue
            seen[env] = [env, _default(field), owner, (field.description or "").replace("|", "\\|")]
    table = [tuple(row) for row in seen.values()]
    table.extend(EXTRA)
    return table  # type: ignore[return-value]


def markdown() -> str:
    lines = [START, "| variable | default | used by | meaning |", "|---|---|---|---|"]
    for env, default, owner, meaning in rows():
        shown = f"`{default}`" if default else "—"
        lines.append(f"| `{env}` | {shown} | {owner} | {meaning} |")
    lines.append(END)
    return "\n".join(lines)


def render(readme: str) -> str:
    """The README with its table replaced by the current one."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + markdown() + tail


if __name__ == "__main__":
    if "--write" in sys.argv:
        README.write_text(render(README.read_text()))
        print(f"README.md: {len(rows())} variables")
    else:
        print(markdown())
