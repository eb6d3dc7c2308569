"""What each process of `make run` is given: its addresses, and only the secrets it needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.auth import ServerAuth, caller_verifiers
from common.settings import Settings
from tools.stack import SERVICES, Stack

PROCESSES = (*SERVICES, "gateway")
PROVIDER_SECRETS = {
    "BYTEZ_API_KEYS": "bytez-key-a,bytez-key-b",
    "BYTEZ_API_KEY_1": "bytez-key-1",
    "OPENAI_API_KEY": "sk-openai",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name, value in PROVIDER_SECRETS.items():
        monkeypatch.setenv(name, value)
    return Stack.from_addresses(
        tmp_path,
        {
            "orchestrator": "127.0.0.1:51051",
            "llm_gateway": "127.0.0.2:51052",
            "sql_engine": "localhost:51053",
            "py_sandbox": "[::1]:51054",
        },
        extra_env={"OPENAI_API_KEY": "sk-from-extra"},
        tokens={"gateway": "g" * 43, "orchestrator": "o" * 43},
    )


def test_provider_keys_reach_the_llm_gateway_only(stack: Stack) -> None:
    for name in PROCESSES:
        env = stack.env(name)
        carried = {k for k in env if k.startswith(("BYTEZ_", "OPENAI_"))}
        if name == "llm_gateway":
            assert carried == set(PROVIDER_SECRETS)
            assert env["OPENAI_API_KEY"] == "sk-from-extra"
        else:
            assert carried == set(), name
            assert not any(secret in "".join(env.values()) for secret in PROVIDER_SECRETS.values()), name


def test_each_process_holds_its_own_token_and_only_digests_of_its_callers(stack: Stack) -> None:
    gateway, orchestrator = stack.tokens["gateway"], stack.tokens["orchestrator"]
    for name in PROCESSES:
        env = stack.env(name)
        own = env.get("INSIGHTX_INTERNAL_TOKEN")
        assert own == {"gateway": gateway, "orchestrator": orchestrator}.get(name)
        others = [
            v for k, v in env.items() if k.startswith("INSIGHTX_INTERNAL_") and k != "INSIGHTX_INTERNAL_TOKEN"
        ]
        assert all(v.startswith("sha256:") for v in others), name
        # No process can present another's token.
        foreign = {gateway, orchestrator} - {own}
        assert not foreign & set(env.values()), name
    assert "INSIGHTX_INTERNAL_TOKEN" not in stack.env()  # the shared part carries no secret


@pytest.mark.parametrize(
    ("service", "caller", "callers"),
    [
        ("orchestrator", "gateway", ("gateway",)),
        ("llm_gateway", "orchestrator", ("orchestrator",)),
        ("sql_engine", "gateway", ("gateway", "orchestrator")),
        ("py_sandbox", "orchestrator", ("gateway", "orchestrator")),
    ],
)
def test_a_service_recognises_its_callers_from_its_environment(
    stack: Stack, service: str, caller: str, callers: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stack.env(service)
    for key in [k for k in os.environ if k.startswith("INSIGHTX_INTERNAL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    auth = ServerAuth.from_settings(Settings(), callers)
    assert auth.identify(stack.tokens[caller]) == caller
    assert set(caller_verifiers(Settings())) == set(callers)


def test_services_listen_where_their_addresses_say(stack: Stack) -> None:
    env = stack.env("sql_engine")
    assert env["INSIGHTX_ORCHESTRATOR_ADDR"] == "127.0.0.1:51051"
    assert env["INSIGHTX_LLM_GATEWAY_ADDR"] == "127.0.0.2:51052"
    assert env["INSIGHTX_SQL_ENGINE_ADDR"] == "localhost:51053"
    assert env["INSIGHTX_PY_SANDBOX_ADDR"] == "[::1]:51054"


def test_tokens_are_made_when_not_configured_and_taken_when_they_are(tmp_path: Path) -> None:
    made, again = Stack(tmp_path, inherit_config=False), Stack(tmp_path, inherit_config=False)
    assert made.tokens["gateway"] != made.tokens["orchestrator"]
    assert made.tokens["gateway"] != again.tokens["gateway"] and len(made.tokens["gateway"]) >= 32
    configured = Stack(tmp_path, extra_env={"INSIGHTX_INTERNAL_GATEWAY_TOKEN": "c" * 40})
    assert configured.tokens["gateway"] == "c" * 40
    with pytest.raises(SystemExit, match="not its sha256"):
        Stack(tmp_path, extra_env={"INSIGHTX_INTERNAL_GATEWAY_TOKEN": "sha256:" + "0" * 64})
