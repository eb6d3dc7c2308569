"""A scripted language model that answers each agent of the model path after a delay.

Why: tests of answers in flight (a client leaving, a replica killed mid-answer) need answers that take a
known while; the fake LLM server plays this responder over the real OpenAI wire contract.
"""

from __future__ import annotations

from typing import Any

from services.llm_gateway.agents import default_agents
from tests.fakes.fake_llm_server import Reply

AGENT_BY_PROMPT = {config.system_prompt: name for name, config in default_agents().items()}


class SlowModel:
    """Plays the classifier, SQL writer, validator and composer, each after its delay in seconds; the
    composer says `rows_said` rows (what the test's table holds)."""

    def __init__(self, delays: dict[str, float], rows_said: int, follow_up: str) -> None:
        self.table = "t"
        self.delays = delays
        self.rows_said = rows_said
        self.follow_up = follow_up

    def __call__(self, messages: list[dict[str, Any]], model: str) -> Reply:
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        agent = AGENT_BY_PROMPT.get(system, "unknown")
        replies = {
            "classifier": '{"classification": "SQL_ONLY", "reasoning": "one aggregate"}',
            "sql": f'SELECT count(*) AS n FROM "{self.table}"',
            "validator": '{"valid": true, "issues": [], "confidence": 0.9}',
            "composer": f'There are {self.rows_said} rows.\n{{"follow_ups": ["{self.follow_up}"]}}',
        }
        return Reply(text=replies.get(agent, "Nothing scripted."), delay_s=self.delays.get(agent, 0.0))
