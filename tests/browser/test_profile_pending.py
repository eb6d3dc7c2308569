"""The page with an engine that profiles every table after replying: schema at once, "Profiling…", then
the profile (health, suggestion chips, column stats) once the gateway's wait returns it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_page import open_page
from tests.gateway.stacks import http, start_pending_profile_stack
from tools.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Records every state of the profile area, so that a short "Profiling…" is seen however fast it passes.
WATCH = """() => {
    window.profileStates = [];
    const status = document.getElementById("profile-status");
    const note = () => window.profileStates.push({
        text: status.textContent, hidden: status.hidden,
        question: !document.getElementById("question").disabled,
        body: !document.getElementById("profile-body").hidden });
    new MutationObserver(note).observe(status, { childList: true, characterData: true, subtree: true,
        attributes: true });
}"""


@pytest.fixture(scope="module")
def pending_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_pending_profile_stack(tmp_path_factory.mktemp("browser-pending"))
    yield stack
    stack.stop()


def test_a_pending_profile_shows_profiling_then_the_profile(
    browser: Any, pending_stack: Stack, demo_file: Path, artifacts: Path
) -> None:
    page = open_page(browser, pending_stack, 1280)
    page.evaluate(WATCH)
    page.set_input_files("#file-input", str(demo_file))
    page.wait_for_selector("#profile:not([hidden])", timeout=120_000)
    assert "250,000 rows" in page.inner_text("#dataset-meta")  # the schema comes with the upload's reply
    assert page.locator("#columns tbody tr").count() == 17
    # Polled with evaluate: wait_for_function evaluates a string predicate, which the page's CSP refuses.
    deadline = time.monotonic() + 30
    seen = "window.profileStates.some((s) => s.text.startsWith('Profiling 250,000 rows'))"
    while not page.evaluate(seen):
        assert time.monotonic() < deadline, page.evaluate("window.profileStates")
        page.wait_for_timeout(100)
    profiling = next(s for s in page.evaluate("window.profileStates") if s["text"].startswith("Profiling"))
    assert profiling["question"] and not profiling["hidden"] and not profiling["body"]

    page.wait_for_selector("#profile-body:not([hidden]) #suggestions .chip", timeout=120_000)
    assert page.locator("#profile-status").is_hidden()
    score = page.inner_text("#health")
    assert score.isdigit() and 0 <= int(score) <= 100
    session_id = page.evaluate("location.hash").split("session=")[1]
    described = http.get(f"{pending_stack.base_url}/api/datasets/{session_id}", timeout=30).json()
    assert described["profile_state"] == "ready"
    assert page.locator("#suggestions .chip").all_inner_texts() == described["profile"]["suggested_questions"]
    assert str(round(described["profile"]["health_score"])) == score
    nulls = page.locator("#columns tbody tr td:nth-child(4)").all_inner_texts()
    assert nulls and "…" not in nulls
    page.screenshot(path=str(artifacts / "profile-after-pending.png"), full_page=True)

    page.locator("#suggestions .chip").first.click()  # a suggestion asks its question
    page.wait_for_selector(".answer.final, .msg .error-box", timeout=60_000)
    assert page.locator(".answer.final").count() == 1
    assert page.js_errors == []
    page.close()
