"""The gateway over HTTP against the real stack: uploads, SSE, chats, workspace, bad input, CORS."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import SMALL_UPLOAD_LIMIT
from tests.gateway.sse import parse
from tests.gateway.stacks import bearer, http, startable, token_of, upload, wait_serving
from tools.stack import Stack

pytestmark = pytest.mark.integration


def ask(
    session_id: str, message: str = "how many rows are there?", chat_id: str | None = None
) -> dict[str, str]:
    """A question's body; without a chat_id the server makes the chat (its id comes in X-Chat-Id)."""
    body = {"session_id": session_id, "message": message}
    return {**body, "chat_id": chat_id} if chat_id else body


def test_upload_answers_the_session_with_its_profile(stack: Stack, small_csv: Path) -> None:
    with small_csv.open("rb") as handle:
        reply = http.post(
            f"{stack.base_url}/api/datasets", files={"file": ("payments.csv", handle, "text/csv")}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["row_count"] == 120
    assert [c["name"] for c in body["columns"]] == ["bank", "amount", "status"]
    assert body["profile_state"] == "ready"  # a small table is profiled before the reply
    assert {c["name"] for c in body["profile"]["columns"]} == {"bank", "amount", "status"}
    for path in ("datasets", "sessions"):
        for wait in ("false", "true"):
            again = http.get(
                f"{stack.base_url}/api/{path}/{body['session_id']}", params={"wait_for_profile": wait}
            )
            assert again.status_code == 200
            assert again.json()["dataset_hash"] == body["dataset_hash"]
            assert again.json()["profile_state"] == "ready"
            assert again.json()["profile"] == body["profile"]
    odd = http.get(f"{stack.base_url}/api/datasets/{body['session_id']}", params={"wait_for_profile": "soon"})
    assert odd.status_code == 422 and odd.json()["error"]["code"] == "INVALID_REQUEST"


def test_chat_stream_sends_ids_from_seq_retry_and_a_final_answer(stack: Stack, session_id: str) -> None:
    request = ask(session_id)
    reply = http.post(f"{stack.base_url}/api/chat/stream", json=request, timeout=60)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    sse = parse(reply.text)
    assert sse.retry == [3000]
    assert sse.ids == [str(e["seq"]) for e in sse.events]
    assert [e["seq"] for e in sse.events] == list(range(1, len(sse.events) + 1))
    assert sse.types[-1] == "final_response"
    assert sse.events[-1]["data"]["answer"] == 120
    assert "sql_result" in sse.types and "orchestrator_result" in sse.types


def test_the_chat_and_its_messages_are_recorded(stack: Stack, session_id: str) -> None:
    request = ask(session_id, "how many rows are there?")
    streamed = http.post(f"{stack.base_url}/api/chat/stream", json=request, timeout=60)
    streamed.raise_for_status()
    request["chat_id"] = streamed.headers["x-chat-id"]  # the chat the server made for the question
    reply = http.get(
        f"{stack.base_url}/api/chats/{request['chat_id']}/messages", params={"session_id": session_id}
    )
    assert reply.status_code == 200
    messages = reply.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "how many rows are there?"
    assert messages[1]["answer"] == 120 and "count" in messages[1]["sql"].lower()
    chats = http.get(f"{stack.base_url}/api/sessions/{session_id}/chats").json()["chats"]
    assert request["chat_id"] in {c["chat_id"] for c in chats}


def test_resume_with_last_event_id_sends_only_later_events(stack: Stack, session_id: str) -> None:
    request = ask(session_id)
    first = http.post(f"{stack.base_url}/api/chat/stream", json=request, timeout=60)
    full = parse(first.text)
    request["chat_id"] = first.headers["x-chat-id"]
    resumed_reply = http.post(
        f"{stack.base_url}/api/chat/stream", json=request, headers={"Last-Event-ID": "3"}, timeout=60
    )
    resumed = parse(resumed_reply.text)
    assert resumed.events, resumed_reply.text
    assert all(e["seq"] > 3 for e in resumed.events)
    assert resumed.types[-1] == "final_response"
    assert resumed.events[-1]["data"]["answer"] == full.events[-1]["data"]["answer"]
    messages = http.get(
        f"{stack.base_url}/api/chats/{request['chat_id']}/messages", params={"session_id": session_id}
    ).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # the resumed answer is stored once
    last = str(full.events[-1]["seq"])
    for past_the_end in (last, "999"):
        ended = http.post(
            f"{stack.base_url}/api/chat/stream",
            json=request,
            headers={"Last-Event-ID": past_the_end},
            timeout=60,
        )
        assert ended.status_code == 204 and ended.content == b"", (past_the_end, ended.text)
    bad = http.post(f"{stack.base_url}/api/chat/stream", json=request, headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"
    anonymous = {k: v for k, v in request.items() if k != "chat_id"}
    lost = http.post(f"{stack.base_url}/api/chat/stream", json=anonymous, headers={"Last-Event-ID": "3"})
    assert lost.status_code == 400 and lost.json()["error"]["code"] == "MISSING_CHAT_ID"


def test_chats_can_be_created_listed_and_appended(stack: Stack, session_id: str) -> None:
    base = stack.base_url
    created = http.post(f"{base}/api/chats", json={"session_id": session_id, "title": "Banks"})
    assert created.status_code == 201
    chat_id = created.json()["chat_id"]
    scope = {"session_id": session_id}
    added = http.post(
        f"{base}/api/chats/{chat_id}/messages", json={"role": "user", "content": "hello"}, params=scope
    )
    assert added.status_code == 201 and added.json()["content"] == "hello"
    listed = http.get(f"{base}/api/chats/{chat_id}/messages", params=scope).json()
    assert listed["chat"]["title"] == "Banks" and [m["content"] for m in listed["messages"]] == ["hello"]
    assert chat_id in [
        c["chat_id"] for c in http.get(f"{base}/api/sessions/{session_id}/chats").json()["chats"]
    ]
    missing = http.get(f"{base}/api/chats/no-such-chat/messages", params=scope)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "CHAT_NOT_FOUND"
    orphan = http.post(f"{base}/api/chats", json={"session_id": "0" * 32})
    assert orphan.status_code == 404 and orphan.json()["error"]["code"] == "DATASET_NOT_FOUND"


def test_chat_ids_are_the_servers_and_never_cross_sessions(
    stack: Stack, session_id: str, small_csv: Path
) -> None:
    base = stack.base_url
    other = str(upload(base, small_csv)["session_id"])
    chat_id = http.post(f"{base}/api/chats", json={"session_id": session_id}).json()["chat_id"]
    http.post(f"{base}/api/chat/stream", json=ask(session_id, chat_id=chat_id), timeout=60).raise_for_status()
    invented = http.post(f"{base}/api/chat/stream", json=ask(session_id, chat_id=uuid.uuid4().hex))
    assert invented.status_code == 404 and invented.json()["error"]["code"] == "CHAT_NOT_FOUND"
    crossed = http.post(f"{base}/api/chat/stream", json=ask(other, chat_id=chat_id), timeout=60)
    assert crossed.status_code == 404 and crossed.json()["error"]["code"] == "CHAT_NOT_FOUND"
    assert session_id not in crossed.text
    claim = http.post(f"{base}/api/chats", json={"session_id": other, "chat_id": chat_id})
    assert claim.status_code == 404 and session_id not in claim.text
    again = http.post(f"{base}/api/chats", json={"session_id": session_id, "chat_id": chat_id})
    assert again.status_code == 200 and again.json()["chat_id"] == chat_id
    peek = http.get(f"{base}/api/chats/{chat_id}/messages", params={"session_id": other})
    assert peek.status_code == 404 and session_id not in peek.text
    own = http.get(f"{base}/api/chats/{chat_id}/messages")
    assert [m["role"] for m in own.json()["messages"]] == ["user", "assistant"]
    assert http.get(f"{base}/api/sessions/{other}/chats").json()["chats"] == []


def test_insights_are_appended_to_a_session(stack: Stack, session_id: str) -> None:
    base = stack.base_url
    first = http.post(
        f"{base}/api/sessions/{session_id}/insights",
        json={"text": "SBI leads", "sql": "SELECT 1", "answer": 3},
    )
    second = http.post(f"{base}/api/sessions/{session_id}/insights", json={"text": "Few failures"})
    assert first.status_code == 201 and second.status_code == 201
    texts = [i["text"] for i in http.get(f"{base}/api/sessions/{session_id}/insights").json()["insights"]]
    assert texts[-2:] == ["SBI leads", "Few failures"]
    unknown = http.post(f"{base}/api/sessions/{'0' * 32}/insights", json={"text": "x"})
    assert unknown.status_code == 404


def test_workspace_sql_runs_selects_and_refuses_writes(stack: Stack, session_id: str) -> None:
    base = stack.base_url
    table = http.get(f"{base}/api/datasets/{session_id}").json()["table"]
    sql = f'SELECT bank, count(*) AS n FROM "{table}" GROUP BY bank ORDER BY bank'
    reply = http.post(f"{base}/api/sql/execute", json={"session_id": session_id, "sql": sql})
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == [
        {"bank": "HDFC", "n": 40},
        {"bank": "ICICI", "n": 40},
        {"bank": "SBI", "n": 40},
    ]
    drop = http.post(
        f"{base}/api/sql/execute", json={"session_id": session_id, "sql": f'DROP TABLE "{table}"'}
    )
    assert drop.status_code == 400 and drop.json()["error"]["code"] == "SQL_NOT_READ_ONLY"
    verdict = http.post(f"{base}/api/sql/validate", json={"session_id": session_id, "sql": "SELEC 1"}).json()
    assert verdict["valid"] is False and verdict["reason"]
    capped = http.post(
        f"{base}/api/sql/execute",
        json={"session_id": session_id, "sql": f'SELECT * FROM "{table}"', "max_rows": 5},
    ).json()
    assert len(capped["rows"]) == 5 and capped["truncated"] is True


def test_workspace_python_runs_in_the_sandbox(stack: Stack, session_id: str) -> None:
    if not startable("py_sandbox"):
        pytest.skip("py_sandbox has no entry point in this checkout yet")
    wait_serving(stack, ["py_sandbox"], timeout_s=60)
    reply = http.post(
        f"{stack.base_url}/api/python/run",
        json={"session_id": session_id, "code": "print('hi')\nresult = int(df['amount'].sum())"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["error"] is None and body["result"] == sum(range(10, 130)) and body["stdout"].strip() == "hi"
    table = http.post(
        f"{stack.base_url}/api/python/run",
        json={
            "session_id": session_id,
            "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
            "result = df.groupby('bank')['amount'].count()",
        },
        timeout=60,
    ).json()
    assert table["error"] is None and table["table"]["row_count"] == 3
    assert table["figures"] and table["figures"][0].startswith("data:image/png;base64,")
    escape = http.post(
        f"{stack.base_url}/api/python/run",
        json={
            "session_id": session_id,
            "code": "import socket\nresult = socket.create_connection(('1.1.1.1', 80))",
        },
        timeout=60,
    )
    assert escape.status_code == 200 and escape.json()["error"]["category"] in (
        "POLICY",
        "KILLED",
        "EXCEPTION",
    )
    assert escape.json()["result"] is None
    slow = http.post(
        f"{stack.base_url}/api/python/run",
        json={"session_id": session_id, "code": "while True:\n    pass", "timeout_s": 1},
        timeout=60,
    ).json()
    assert slow["error"]["category"] == "TIMEOUT"


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "MALFORMED_JSON"),
        (b'{"chat_id": "c"}', {"content-type": "application/json"}, 422, "MISSING_FIELD"),
        (b"chat_id=c", {"content-type": "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"{}", {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            b'{"chat_id": "' + b"x" * (70 << 10) + b'"}',
            {"content-type": "application/json"},
            413,
            "REQUEST_TOO_LARGE",
        ),
    ],
)
def test_bad_chat_requests_get_json_errors(
    stack: Stack, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    reply = http.post(f"{stack.base_url}/api/chat/stream", content=content, headers=headers)
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["code"] == code and error["message"]


def test_unknown_session_is_404_on_every_route(stack: Stack) -> None:
    reply = http.post(f"{stack.base_url}/api/chat/stream", json=ask("f" * 32), timeout=30)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "DATASET_NOT_FOUND"
    assert "upload" in reply.json()["error"]["message"].lower()
    assert http.get(f"{stack.base_url}/api/sessions/{'f' * 32}/chats").status_code == 404
    assert http.get(f"{stack.base_url}/api/datasets/{'f' * 32}").status_code == 404
    invalid = http.get(f"{stack.base_url}/api/datasets/bad%20id")
    assert invalid.status_code == 404  # not the caller's, so not looked at


def test_oversized_upload_is_413_declared_or_streamed(stack: Stack) -> None:
    big = b"a,b\n" + b"1,2\n" * ((SMALL_UPLOAD_LIMIT // 4) + (1 << 16))
    declared = http.post(f"{stack.base_url}/api/datasets", files={"file": ("big.csv", big, "text/csv")})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "FILE_TOO_LARGE"

    def chunked() -> object:
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        yield boundary
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]
        yield b"\r\n--xyz--\r\n"

    streamed = http.post(
        f"{stack.base_url}/api/datasets",
        content=chunked(),  # type: ignore[arg-type]
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "FILE_TOO_LARGE"
    wrong = http.post(f"{stack.base_url}/api/datasets", json={"file": "x"})
    assert wrong.status_code == 415
    missing = http.post(f"{stack.base_url}/api/datasets", files={"other": ("a.csv", b"a\n1\n")})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "MISSING_FIELD"


def test_cors_allows_only_configured_origins(stack: Stack) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = http.options(
        f"{stack.base_url}/api/chat/stream", headers={"Origin": "http://allowed.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    denied = http.options(
        f"{stack.base_url}/api/chat/stream", headers={"Origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in denied.headers


def test_page_and_chart_assets_are_served(stack: Stack) -> None:
    page = http.get(f"{stack.base_url}/")
    assert page.status_code == 200 and "/vendor/vega-embed.min.js" in page.text
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        asset = http.get(f"{stack.base_url}/vendor/{name}")
        assert asset.status_code == 200 and len(asset.content) > 10_000, name
    assert http.get(f"{stack.base_url}/vendor/../../pyproject.toml").status_code == 404
    assert http.get(f"{stack.base_url}/static/sse.js").status_code == 200


async def test_one_clients_failure_never_disturbs_another_stream(stack: Stack, session_id: str) -> None:
    signed_in = bearer(token_of(stack))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, headers=signed_in) as client:

        async def good() -> list[dict[str, object]]:
            reply = await client.post("/api/chat/stream", json=ask(session_id))
            return parse(reply.text).events

        async def malformed() -> int:
            reply = await client.post(
                "/api/chat/stream", content=b"{oops", headers={"content-type": "application/json"}
            )
            return reply.status_code

        async def leaver() -> None:
            async with client.stream("POST", "/api/chat/stream", json=ask(session_id)) as reply:
                async for _ in reply.aiter_lines():
                    break  # hang up after the first line

        results = await asyncio.gather(
            *(good() for _ in range(6)), *(malformed() for _ in range(6)), *(leaver() for _ in range(6))
        )
    for events in results[:6]:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # type: ignore[index]
        assert events[-1]["type"] == "final_response"  # type: ignore[index]
    assert results[6:12] == [400] * 6


def test_error_body_shape_for_unknown_routes(stack: Stack) -> None:
    reply = http.get(f"{stack.base_url}/api/nothing-here")
    assert reply.status_code == 404
    assert json.loads(reply.text)["error"]["code"] == "NOT_FOUND"


def test_odd_last_event_ids_are_400_not_500(stack: Stack, session_id: str) -> None:
    request = ask(session_id)
    for header in ("²", "99999999999999999999999", "-1", "1e3"):
        reply = http.post(
            f"{stack.base_url}/api/chat/stream",
            json=request,
            headers={"Last-Event-ID": header.encode("latin-1")},
            timeout=30,
        )
        assert reply.status_code == 400, (header, reply.text)
        assert reply.json()["error"]["code"] == "INVALID_LAST_EVENT_ID"
    huge = http.post(
        f"{stack.base_url}/api/chat/stream", json={**request, "last_event_id": 10**23}, timeout=30
    )
    assert huge.status_code == 422 and huge.json()["error"]["code"]


def test_a_date_python_cannot_hold_is_answered_not_dropped(stack: Stack, session_id: str) -> None:
    reply = http.post(
        f"{stack.base_url}/api/sql/execute",
        json={"session_id": session_id, "sql": "SELECT 'infinity'::DATE AS d, 1 AS a, 2 AS a"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["columns"] == ["d", "a", "a_2"]
    assert body["rows"][0]["a"] == 1 and body["rows"][0]["a_2"] == 2
