"""The built-in page in headless Chromium: upload the demo file, ask, see the steps, answer and chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.signin import signin_url
from tests.gateway.stacks import token_of
from tools.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "How many transactions per day of week?"
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def open_page(browser: Any, stack: Stack, width: int, height: int = 900) -> Any:
    """A new browser signed in the way a person is: through the URL `make run` prints (`/?token=…`)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    refused: list[str] = []  # what the page's CSP blocked: nothing, in normal use
    page.on(
        "console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None
    )
    page.csp_violations = refused
    page.goto(signin_url(stack.base_url, token_of(stack)))  # the link run_stack prints, made the same way
    page.wait_for_selector("#workspace:not([hidden])", timeout=30_000)
    return page


def test_upload_ask_and_see_answer_with_a_drawn_chart(
    browser: Any, browser_stack: Stack, demo_file: Path, artifacts: Path
) -> None:
    page = open_page(browser, browser_stack, 1280)
    page.set_input_files("#file-input", str(demo_file))
    page.wait_for_selector("#profile:not([hidden])", timeout=120_000)
    assert "250,000 rows" in page.inner_text("#dataset-meta")
    assert page.locator("#columns tbody tr").count() == 17
    assert page.locator("#suggestions .chip").count() >= 1
    page.fill("#question", QUESTION)
    page.click("#ask-button")
    page.wait_for_selector(".answer.final", timeout=60_000)
    page.wait_for_selector(".chart[data-drawn='true'] svg", timeout=30_000)
    page.click(".msg.assistant details.work > summary")  # the work is folded under the answer
    steps = page.inner_text(".msg.assistant .steps")
    assert "Running SQL" in steps
    assert page.locator(".msg.assistant textarea.sql-edit").first.input_value().upper().startswith("SELECT")
    assert page.locator(".step .tag").first.inner_text() == "SQL_ONLY"
    answer = page.inner_text(".answer.final")
    assert all(day in answer for day in DAYS)
    marks = page.locator(".chart svg .marks path, .chart svg .mark-symbol path, .chart svg .mark-rect path")
    assert marks.count() >= 1
    axis = page.locator(".chart svg").first.text_content() or ""
    assert "Monday" in axis and "Sunday" in axis
    page.locator(".chart svg .mark-rect path, .chart svg .mark-symbol path").first.hover()
    page.wait_for_timeout(300)  # a tooltip, if the chart has one, draws with the page's own styles
    assert page.csp_violations == []
    assert page.locator(".follow-ups .chip").count() >= 1
    page.screenshot(path=str(artifacts / "answer-desktop.png"), full_page=True)

    page.locator(".follow-ups .chip").first.click()  # a follow-up chip asks its question
    page.locator(".answer.final, .msg .error-box").nth(1).wait_for(timeout=60_000)
    assert page.locator(".msg.user").count() == 2
    assert page.js_errors == []
    page.close()


def test_phone_width_has_no_sideways_scroll(
    browser: Any, browser_stack: Stack, demo_file: Path, artifacts: Path
) -> None:
    page = open_page(browser, browser_stack, 390, 844)
    page.set_input_files("#file-input", str(demo_file))
    page.wait_for_selector("#profile:not([hidden])", timeout=120_000)
    page.fill("#question", QUESTION)
    page.click("#ask-button")
    page.wait_for_selector(".chart[data-drawn='true'] svg", timeout=60_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    box = page.locator("#ask-button").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    page.screenshot(path=str(artifacts / "answer-phone.png"), full_page=True)
    assert page.js_errors == []
    page.close()


def test_drop_and_errors_are_shown_plainly(browser: Any, browser_stack: Stack, artifacts: Path) -> None:
    page = open_page(browser, browser_stack, 1024)
    drop = """([name, text]) => {
        const data = new DataTransfer();
        data.items.add(new File([text], name, { type: "text/csv" }));
        const event = new DragEvent("drop", { dataTransfer: data, bubbles: true });
        document.getElementById("dropzone").dispatchEvent(event);
    }"""
    page.evaluate(drop, ["empty.csv", ""])
    page.wait_for_selector("#upload-status .error-box", timeout=30_000)
    assert page.inner_text("#upload-status .error-box").strip()
    page.screenshot(path=str(artifacts / "upload-error.png"))
    page.evaluate(drop, ["scores.csv", "team,score\nred,3\nblue,5\ngreen,4\n"])
    page.wait_for_selector("#profile:not([hidden])", timeout=30_000)
    assert "3 rows" in page.inner_text("#dataset-meta")
    page.fill("#question", "how many rows are there?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".answer.final", timeout=60_000)
    assert page.inner_text(".answer-value") == "3"
    page.click(".save-insight")  # the answer becomes an insight of the session
    page.wait_for_selector("#insights-box:not([hidden]) #insights li", timeout=10_000)
    assert "3" in page.inner_text("#insights li")
    assert page.inner_text(".save-insight").startswith("★")
    assert page.js_errors == []
    page.close()
