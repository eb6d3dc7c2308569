"""Keys never leave the gateway: not in any log line (with extras, at DEBUG), error, event or status."""

from __future__ import annotations

import logging

import pytest

from common.logging import JsonFormatter
from insightx.v1 import llm_gateway_pb2 as pb
from tests.fakes.fake_llm_server import (
    FakeLlmServer,
    Reply,
    cut_stream,
    rate_limited,
    server_error,
    unauthorized,
)
from tests.services.llm_gateway.conftest import GatewayFactory
from tests.services.llm_gateway.support import KEYS, complete_request, rpc_error, stream_request

pytestmark = pytest.mark.integration

K1, K2, K3 = KEYS


class _Capture(logging.Handler):
    """Every record, formatted the way the service writes it (JSON with extras)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("llm_gateway"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_no_key_appears_in_logs_errors_events_or_status(
    fake_llm: FakeLlmServer, gateway: GatewayFactory
) -> None:
    capture = _Capture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    surfaces: list[str] = []
    try:
        fake_llm.always(K1, unauthorized())
        fake_llm.script(K2, rate_limited(retry_after=1), server_error(502))
        # A provider that echoes the key in its error body: the gateway must not pass it on.
        fake_llm.script(K3, Reply(status=400, error=f"bad request for key {K3}"))
        async with gateway(KEYS) as stub:
            rejected = await rpc_error(stub.Complete(complete_request(), timeout=10))
            surfaces += [rejected.message, str(rejected.metadata)]
            surfaces.append(str(await stub.Complete(complete_request(), timeout=10)))
            fake_llm.script(K2, cut_stream(after=1))
            fake_llm.script(K3, cut_stream(after=1))
            async for message in stub.StreamComplete(stream_request(), timeout=10):
                surfaces.append(str(message))
                break
            fake_llm.always(K2, rate_limited(retry_after=30))
            fake_llm.always(K3, rate_limited(retry_after=30))
            for _ in range(3):
                error = await rpc_error(stub.Complete(complete_request(), timeout=10))
                surfaces += [error.message, str(error.metadata)]
            surfaces.append(str(await stub.GetKeyStatus(pb.GetKeyStatusRequest(), timeout=5)))
            async for event in stub.WatchKeyEvents(pb.WatchKeyEventsRequest(replay_recent=True), timeout=2):
                surfaces.append(str(event))
                if event.type == pb.KEY_EVENT_TYPE_ALL_KEYS_EXHAUSTED:
                    break
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)

    assert rejected.reason == "UPSTREAM_REJECTED_REQUEST" and "bad request for key <key " in rejected.message
    assert any("upstream attempt failed" in line for line in capture.lines), "the capture saw the gateway"
    assert any("key event" in line for line in capture.lines)
    assert len(capture.lines) > 10
    everything = "\n".join(capture.lines + surfaces)
    for key in KEYS:
        assert key not in everything
        assert key[-12:] not in everything, "not even a recognisable part of a key"
