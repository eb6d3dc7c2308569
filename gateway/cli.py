"""`insightx`: ask a question about a file from the terminal, or start the whole stack.

    insightx ask data.csv "how many rows are there?"     steps live, then the answer (once)
    insightx ask data.csv "..." --json                    only the final event, as JSON
    insightx serve                                        the stack on http://localhost:8000 (like make run)

Exit status of `ask`: 0 answered, 1 an error (the answer's `error` event, or a failed upload or request),
2 wrong usage, 3 not answered (the analyst asked back or would not guess; the questions it offers are
printed, and are in the JSON's `data.clarifications`), 130 interrupted: Ctrl-C asks the gateway to stop
the answer (`POST /api/chat/stop`, best effort), since a client that only leaves does not stop it.

`ask` uses the gateway at --url when one answers there, signed in with the token in INSIGHTX_TOKEN (the one
`make run` printed, or an API token); otherwise it starts a private stack on free ports for the one
question, uses the token that stack's gateway made, and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from common.chat_events import TERMINAL
from gateway.render import Renderer, is_refusal

app = typer.Typer(add_completion=False, no_args_is_help=True, help="InsightX: ask your tables questions.")
DEFAULT_URL = "http://localhost:8000"
TOKEN_ENV = "INSIGHTX_TOKEN"
EXIT_ERROR = 1
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
STOP_TIMEOUT_S = 5.0


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON of every `data: ` line (the same reading rule as the web page's)."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[6:])


def _reachable(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code in (200, 503)
    except httpx.HTTPError:
        return False


@contextmanager
def gateway_at(url: str | None, token: str, console: Console) -> Iterator[tuple[str, str]]:
    """A gateway's base URL and the token to sign in with: the given URL, the default one if it answers,
    else a private stack (whose gateway made its own token in its data directory)."""
    if url:
        yield url.rstrip("/"), token
        return
    if _reachable(DEFAULT_URL):
        yield DEFAULT_URL, token
        return
    from gateway.stack import Stack

    with tempfile.TemporaryDirectory(prefix="insightx-") as tmp:
        stack = Stack.on_free_ports(Path(tmp) / "data")
        with console.status("Starting the InsightX stack (first answer takes a few seconds)…"):
            stack.start()
            try:
                stack.wait_healthy()
            except BaseException:
                stack.stop()
                raise
        try:
            yield stack.base_url, (stack.data_dir / "gateway" / "auth_token").read_text().strip()
        finally:
            stack.stop()


def _fail(console: Console, message: str, code: str = "") -> None:
    console.print(f"[bold red]Error:[/] {message}" + (f" [dim]({code})[/]" if code else ""))
    raise typer.Exit(EXIT_ERROR)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        err = response.json()["error"]
        return str(err["message"]), str(err["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}", ""


def _stop(base: str, auth: dict[str, str], chat: dict[str, str], console: Console) -> None:
    """Asks the gateway to stop the chat's answer (Ctrl-C): best effort, never a second failure."""
    try:
        reply = httpx.post(f"{base}/api/chat/stop", json=chat, headers=auth, timeout=STOP_TIMEOUT_S)
        stopped = reply.status_code == 200 and bool(reply.json().get("stopped"))
    except (httpx.HTTPError, ValueError):
        stopped = False
    said = "the answer was stopped" if stopped else "no answer was running to stop"
    console.print(f"[yellow]Interrupted:[/] {said} (chat {chat['chat_id']}).")


@app.command()
def ask(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV, Parquet, JSON…")
    ],
    question: Annotated[str, typer.Argument(help="The question, in plain language")],
    url: Annotated[
        str | None, typer.Option(help="Gateway URL (default: localhost:8000, else a private stack)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the final event as JSON")] = False,
) -> None:
    """Uploads FILE and asks QUESTION; prints each step as it happens, then the answer.

    Signs in with the token in INSIGHTX_TOKEN (printed by `make run`, or an API token from POST /api/tokens).
    """
    console = Console(stderr=as_json)
    with gateway_at(url, os.environ.get(TOKEN_ENV, "").strip(), console) as (base, token):
        if not token:
            _fail(console, f"Set {TOKEN_ENV} to the token `make run` printed (or an API token).", "NO_TOKEN")
        auth = {"Authorization": f"Bearer {token}"}
        with console.status(f"Uploading {file.name}…"), file.open("rb") as handle:
            reply = httpx.post(
                f"{base}/api/datasets", files={"file": (file.name, handle)}, headers=auth, timeout=600.0
            )
        if reply.status_code != 200:
            _fail(console, *_error_of(reply))
        session = reply.json()
        console.print(
            f"[dim]{file.name}: {session['row_count']:,} rows, {len(session['columns'])} columns[/]"
        )
        # The chat is made first, so that a Ctrl-C at any moment knows which answer to stop.
        made = httpx.post(
            f"{base}/api/chats",
            json={"session_id": session["session_id"], "title": question[:80]},
            headers=auth,
            timeout=30.0,
        )
        if made.status_code != 201:
            _fail(console, *_error_of(made))
        chat = {"chat_id": made.json()["chat_id"], "session_id": session["session_id"]}
        body = {**chat, "message": question}
        final: dict[str, Any] | None = None
        renderer = Renderer(console)
        timeout = httpx.Timeout(10.0, read=300.0)
        try:
            with (
                console.status("Thinking…") as spinner,
                httpx.stream(
                    "POST", f"{base}/api/chat/stream", json=body, headers=auth, timeout=timeout
                ) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    _fail(console, *_error_of(response))
                for event in sse_events(response.iter_lines()):
                    if event["type"] == "status":
                        spinner.update(str(event.get("message", "")) + "…")
                    elif not as_json:
                        renderer.show(event)
                    if event["type"] in TERMINAL:
                        final = event
                        break
        except KeyboardInterrupt:
            _stop(base, auth, chat, console)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if final is None:
        _fail(console, "The answer stream ended before the answer.", "STREAM_ENDED")
    assert final is not None
    if as_json:
        sys.stdout.write(json.dumps(final, ensure_ascii=False) + "\n")
    if final["type"] == "error":
        raise typer.Exit(EXIT_ERROR)
    if is_refusal(final.get("data") or {}):
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def serve() -> None:
    """Starts the whole stack with the demo dataset on http://localhost:8000 (Ctrl-C stops it)."""
    from gateway.serve import main

    raise typer.Exit(main())


if __name__ == "__main__":
    app()
