"""Suite-wide fixtures: every test starts from an environment without InsightX or provider settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from common.settings import get_settings

_PREFIXES = ("INSIGHTX_", "BYTEZ_", "OPENAI_", "SUPABASE_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Removes configuration variables so a developer's shell or .env cannot change a test's outcome."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
