"""The stack supervisor lives in the installed package (gateway/stack.py); this name stays for the
repository's tests and benchmarks, with ROOT the repository itself."""

from __future__ import annotations

from pathlib import Path

from gateway.stack import (
    ACCEPTS,
    CONFIG_PREFIXES,
    DEFAULT_PORTS,
    INTERNAL_PREFIX,
    OWN_TOKEN,
    PROVIDER_PREFIXES,
    SERVICES,
    Stack,
    Supervisor,
    free_port,
    internal_tokens,
    probe_health,
    split_address,
)

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ACCEPTS",
    "CONFIG_PREFIXES",
    "DEFAULT_PORTS",
    "INTERNAL_PREFIX",
    "OWN_TOKEN",
    "PROVIDER_PREFIXES",
    "ROOT",
    "SERVICES",
    "Stack",
    "Supervisor",
    "free_port",
    "internal_tokens",
    "probe_health",
    "split_address",
]
