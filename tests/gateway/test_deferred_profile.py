"""Uploads answered before their profile (the engine's PENDING path, forced for every upload here).

The upload JSON says `pending` with no profile; `?wait_for_profile=true` returns it once computed, with
the counts DuckDB finds in the same CSV; a question asked at once is answered from the profiled table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.gateway.sse import parse
from tests.gateway.stacks import http, start_pending_profile_stack, upload
from tools.stack import Stack

pytestmark = pytest.mark.integration

CITIES = ["Pune", "Delhi", "Mumbai", "Chennai", ""]


@pytest.fixture(scope="module")
def pending_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose engine profiles every table after replying (no table is small enough)."""
    running = start_pending_profile_stack(tmp_path_factory.mktemp("pending-stack"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def payments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 rows with NULLs in three of four columns and few distinct values (exact counts either way)."""
    lines = ["city,amount,status,note"]
    for i in range(300):
        amount = "" if i % 11 == 0 else str(100 + i % 37)
        note = f"n{i % 13}" if i % 3 == 0 else ""
        lines.append(f"{CITIES[i % 5]},{amount},{'FAILED' if i % 6 == 0 else 'SUCCESS'},{note}")
    path = tmp_path_factory.mktemp("pending") / "payments.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def duck_counts(path: Path) -> dict[str, tuple[int, int]]:
    """(null count, distinct count) per column, as DuckDB reads the CSV; distinct counts are approximate
    in the profile (HyperLogLog), so they are compared with DuckDB's own estimate of the same values."""
    names = ["city", "amount", "status", "note"]
    exprs = ", ".join(
        f'count(*) - count("{n}"), least(approx_count_distinct("{n}"), count("{n}"))' for n in names
    )
    row = duckdb.execute(f"SELECT {exprs} FROM read_csv('{path}')").fetchone()
    assert row is not None
    return {n: (int(row[2 * i]), int(row[2 * i + 1])) for i, n in enumerate(names)}


def duck_value(sql: str, path: Path) -> object:
    row = duckdb.execute(sql.replace("payments", f"read_csv('{path}')")).fetchone()
    assert row is not None
    return row[0]


def final_answer(stack: Stack, session_id: str, question: str) -> dict[str, object]:
    request = {"session_id": session_id, "message": question}
    reply = http.post(f"{stack.base_url}/api/chat/stream", json=request, timeout=120)
    assert reply.status_code == 200, reply.text
    events = parse(reply.text).events
    assert events and events[-1]["type"] == "final_response", events[-1:]
    return events[-1]["data"]


def test_the_upload_is_pending_and_the_wait_returns_the_profile(pending_stack: Stack, payments: Path) -> None:
    body = upload(pending_stack.base_url, payments)
    assert body["profile_state"] == "pending"
    assert body["profile"] is None
    assert body["row_count"] == 300
    assert [c["name"] for c in body["columns"]] == ["city", "amount", "status", "note"]  # type: ignore[attr-defined]
    url = f"{pending_stack.base_url}/api/datasets/{body['session_id']}"

    now = http.get(url, timeout=30).json()  # without waiting: the current state, whichever it is
    assert now["profile_state"] in ("pending", "ready")
    assert (now["profile"] is None) == (now["profile_state"] == "pending")

    waited = http.get(url, params={"wait_for_profile": "true"}, timeout=150)
    assert waited.status_code == 200, waited.text
    described = waited.json()
    assert described["profile_state"] == "ready"
    assert described["filename"] == "payments.csv"
    profile = described["profile"]
    assert "failure" not in profile
    assert 0 <= profile["health_score"] <= 100 and profile["suggested_questions"]
    found = {
        c["name"]: (int(c.get("null_count", 0)), int(c.get("distinct_count", 0))) for c in profile["columns"]
    }
    expected = duck_counts(payments)
    assert found == expected
    assert expected["city"] == (60, 4) and expected["note"][0] == 200  # the CSV has the NULLs meant
    exact = duck_value("SELECT count(DISTINCT amount) FROM payments", payments)
    assert abs(found["amount"][1] - int(exact)) <= 2  # type: ignore[call-overload]

    alias = http.get(
        f"{pending_stack.base_url}/api/sessions/{body['session_id']}",
        params={"wait_for_profile": "1"},
        timeout=150,
    ).json()
    assert alias["profile_state"] == "ready" and alias["profile"] == profile

    answer = final_answer(pending_stack, str(body["session_id"]), "how many rows have status FAILED?")
    assert answer["answer"] == duck_value("SELECT count(*) FROM payments WHERE status = 'FAILED'", payments)


def test_a_question_asked_at_once_waits_for_the_profile(pending_stack: Stack, payments: Path) -> None:
    body = upload(pending_stack.base_url, payments)
    assert body["profile_state"] == "pending"
    answer = final_answer(pending_stack, str(body["session_id"]), "what is the average amount in Delhi?")
    expected = duck_value("SELECT avg(amount) FROM payments WHERE city = 'Delhi'", payments)
    assert answer["answer"] == pytest.approx(expected)
    assert "Delhi" in str(answer["sql"])
    assert answer["follow_ups"]  # suggested from the profile's columns
    # the orchestrator kept the profiled context: the page's wait sees the same profile as ready
    described = http.get(
        f"{pending_stack.base_url}/api/datasets/{body['session_id']}",
        params={"wait_for_profile": "true"},
        timeout=150,
    ).json()
    assert described["profile_state"] == "ready"
    assert {c["name"] for c in described["profile"]["columns"]} == {"city", "amount", "status", "note"}


def test_an_unknown_session_is_404_also_when_waiting(pending_stack: Stack) -> None:
    reply = http.get(
        f"{pending_stack.base_url}/api/datasets/{uuid.uuid4().hex}",
        params={"wait_for_profile": "true"},
        timeout=30,
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["code"]
