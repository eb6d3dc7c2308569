"""The shared fake speaks the wire contract and does what it is scripted to do."""

from __future__ import annotations

import httpx
import pytest

from services.llm_gateway.agents import default_agents
from tests.fakes.fake_llm_server import FakeLlmServer, cut_stream, rate_limited, server_error
from tests.fakes.fixtures import agent_of, fake_llm, responder_by_agent

__all__ = ["fake_llm"]


def _body(system: str, user: str = "hi", stream: bool = False) -> dict[str, object]:
    return {
        "model": "m",
        "stream": stream,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


def test_checks_authorization_and_scripts_per_key() -> None:
    with FakeLlmServer(keys=["good"]) as fake:
        url, auth = fake.completions_url, {"authorization": "Bearer good"}
        assert httpx.post(url, json=_body("s"), headers={"authorization": "Bearer bad"}).status_code == 401
        fake.script("good", rate_limited(retry_after=3))
        limited = httpx.post(url, json=_body("s"), headers=auth)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
        answered = httpx.post(url, json=_body("s", "ping"), headers=auth)
        assert answered.json()["choices"][0]["message"]["content"] == "Echo: ping"
        assert [r.status for r in fake.requests] == [401, 429, 200]
        assert httpx.post(url, json={"model": "m"}, headers=auth).status_code == 400


def test_streams_sse_chunks_and_can_cut_the_connection(fake_llm: FakeLlmServer) -> None:
    with httpx.stream("POST", fake_llm.completions_url, json=_body("s", "a b", stream=True)) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == 2 + 3 + 1  # role, 3 words, stop, DONE
    fake_llm.script(None, cut_stream(after=1))
    cut = httpx.stream("POST", fake_llm.completions_url, json=_body("s", stream=True))
    with pytest.raises(httpx.RemoteProtocolError), cut as reply:
        list(reply.iter_lines())


def test_responder_by_agent_recognises_the_registry_prompts(fake_llm: FakeLlmServer) -> None:
    agents = default_agents()
    fake_llm.responder = responder_by_agent(
        {
            "sql": "SELECT 1",
            "composer": lambda messages, model: f"model {model}",
            "validator": server_error(503),
        }
    )
    sql_prompt = agents["sql"].system_prompt + "\n\nTable: data(a INTEGER)"
    assert agent_of([{"role": "system", "content": sql_prompt}]) == "sql"
    post = lambda system: httpx.post(fake_llm.completions_url, json=_body(system))  # noqa: E731
    assert post(sql_prompt).json()["choices"][0]["message"]["content"] == "SELECT 1"
    assert post(agents["composer"].system_prompt).json()["choices"][0]["message"]["content"] == "model m"
    assert post(agents["validator"].system_prompt).status_code == 503
    assert post("You are someone else.").json()["choices"][0]["message"]["content"] == "Echo: hi"
