"""A chat's stored answers carry their card (chart, follow-ups, clarifications, confidence, answer type),
so any browser, not only the one that watched the stream, draws the answer again."""

from __future__ import annotations

import pytest

from gateway.chats import CARD_FIELDS
from tests.gateway.sse import parse
from tests.gateway.stacks import http
from tools.stack import Stack

pytestmark = pytest.mark.integration


def test_a_chats_messages_carry_the_answers_chart_and_follow_ups(stack: Stack, session_id: str) -> None:
    request = {"session_id": session_id, "message": "how many payments per bank?"}
    streamed = http.post(f"{stack.base_url}/api/chat/stream", json=request, timeout=60)
    streamed.raise_for_status()
    final = parse(streamed.text).events[-1]
    assert final["type"] == "final_response", streamed.text
    shown = final["data"]
    assert shown["chart"] and shown["follow_ups"], shown  # the question has a chart and follow-ups
    chat_id = streamed.headers["x-chat-id"]
    reply = http.get(f"{stack.base_url}/api/chats/{chat_id}/messages", params={"session_id": session_id})
    assert reply.status_code == 200
    question, answer = reply.json()["messages"]
    assert question["card"] is None
    assert answer["card"] == {key: shown[key] for key in CARD_FIELDS}
    assert answer["card"]["chart"]["mark"] and answer["content"] == shown["text"]
