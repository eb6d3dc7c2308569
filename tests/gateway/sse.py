"""Reading a raw SSE body in tests: events, ids, comments and `retry:` exactly as sent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SseBody:
    """What a stream carried."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def parse(text: str) -> SseBody:
    body = SseBody()
    for line in text.split("\n"):
        if line.startswith("data: "):
            body.events.append(json.loads(line[6:]))
        elif line.startswith("id: "):
            body.ids.append(line[4:])
        elif line.startswith(":"):
            body.comments.append(line[1:].strip())
        elif line.startswith("retry: "):
            body.retry.append(int(line[7:]))
    return body
