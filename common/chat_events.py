"""The kinds of `ChatEvent` and which of them end an answer: one list for every reader of a chat stream.

The gateway's encoders (gateway/events.py), the CLI, the orchestrator's resume buffer
(services/orchestrator/streams.py) and, through `GET /events.json`, the web page all read `TERMINAL`
from here; docs/events.md describes each kind. The kinds themselves are the `payload` oneof of
`insightx.v1.ChatEvent`, read from its descriptor so that a kind added to the proto is known at once.
"""

from __future__ import annotations

from insightx.v1 import orchestrator_pb2 as pb

KINDS: tuple[str, ...] = tuple(f.name for f in pb.ChatEvent.DESCRIPTOR.oneofs_by_name["payload"].fields)
"""Every event type, in the proto's order."""

TERMINAL: tuple[str, ...] = ("final_response", "error")
"""The event types after which an answer's stream ends: the answer, or why there is none."""


def is_terminal(kind: str | None) -> bool:
    """Whether an event of `kind` is the last of its answer."""
    return kind in TERMINAL
