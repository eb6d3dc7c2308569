"""The final_response carries the analyst's clarifications over the wire; a refusal states no confidence."""

from __future__ import annotations

import pytest

from gateway.events import event_to_json
from insightx.v1 import orchestrator_pb2 as pb
from services.orchestrator.events import EventBuilder
from tests.services.orchestrator.conftest import StartChat, kinds

CHOICES = [
    "Did you mean the average `lifeExp` where `year` = 2007?",
    "Did you mean the average `lifeExp` by `year`?",
]


def _over_the_wire(event: pb.ChatEvent) -> pb.ChatEvent:
    return pb.ChatEvent.FromString(event.SerializeToString())


def _final(**overrides: object) -> pb.ChatEvent:
    fields: dict[str, object] = {
        "text": "I could read this two ways.",
        "answer": None,
        "answer_type": "none",
        "chart": None,
        "follow_ups": [],
        "sql": "",
        "confidence": 0.0,
    }
    fields.update(overrides)
    return EventBuilder("chat-1").final_response(**fields)  # type: ignore[arg-type]


def test_clarifications_reach_the_sse_json_in_order() -> None:
    event = _over_the_wire(_final(clarifications=CHOICES))
    assert list(event.final_response.clarifications) == CHOICES
    data = event_to_json(event)["data"]
    assert data["clarifications"] == CHOICES
    assert data["answer"] is None and data["confidence"] == 0.0


def test_an_answer_without_clarifications_says_an_empty_list() -> None:
    event = _over_the_wire(_final(answer=42, answer_type="number", confidence=0.9))
    data = event_to_json(event)["data"]
    assert data["clarifications"] == [] and data["answer"] == 42


def test_a_replayed_answer_keeps_its_clarifications() -> None:
    replayed = EventBuilder("chat-2", start_seq=5).replay(_final(clarifications=CHOICES))
    assert replayed.seq == 6 and list(replayed.final_response.clarifications) == CHOICES


# Questions the built-in analyst cannot answer as asked: it refuses, or offers readings to choose from.
UNANSWERABLE = [
    "Tell me a joke about penguins.",
    "What will the weather be on Mars next week?",
    "How many?",
    "Top states",
    "Is it good?",
]


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_a_builtin_refusal_states_no_answer_and_no_confidence(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    refused = 0
    for n, question in enumerate(UNANSWERABLE):
        events = await chat.ask(question, chat_id=f"refused-{n}")
        assert kinds(events)[-1] == "final_response", events[-1]
        final = events[-1].final_response
        data = event_to_json(events[-1])["data"]
        assert final.text and all(isinstance(c, str) and c for c in data["clarifications"])
        if final.answer.WhichOneof("kind") != "null_value":
            continue  # answered after all: nothing to check here
        refused += 1
        assert data["answer"] is None
        assert final.confidence == 0.0 and data["confidence"] == 0.0, (question, final.confidence)
    assert refused >= 2
