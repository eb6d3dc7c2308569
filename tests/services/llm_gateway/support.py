"""Small builders shared by the gateway's tests."""

from __future__ import annotations

from typing import Any

import grpc

from common.errors import RemoteError, error_info
from insightx.v1 import common_pb2
from insightx.v1 import llm_gateway_pb2 as pb

# Long, distinctive keys: a leak anywhere is easy to find.
KEYS = ["bytez-test-key-ALPHA-6c1f0e", "bytez-test-key-BRAVO-93ad27", "bytez-test-key-CHARLIE-4be810"]


def messages(text: str = "How many rows?") -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role="user", content=text)]


def complete_request(agent: str = "sql", text: str = "How many rows?", **kwargs: Any) -> pb.CompleteRequest:
    return pb.CompleteRequest(agent=agent, messages=messages(text), **kwargs)


def stream_request(
    agent: str = "composer", text: str = "one two three four five", **kwargs: Any
) -> pb.StreamCompleteRequest:
    return pb.StreamCompleteRequest(agent=agent, messages=messages(text), **kwargs)


async def rpc_error(call: Any) -> RemoteError:
    """Awaits a call that must fail and returns what its status says."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return error_info(exc)
    raise AssertionError("the call succeeded")
