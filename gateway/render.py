"""How `insightx ask` shows an answer in a terminal: the steps as they happen, then the result once.

The result (the answer's text, its table with numbers formatted as the page formats them, follow-ups) is
printed one time, when the answer arrives; a successful query's rows are not printed as they come and then
again in the answer. A refusal is one sentence plus the questions the analyst offers instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table

TABLE_ROWS = 15


def format_number(value: float) -> str:
    """A number as a person reads it (as gateway/static/format.js does): 250,000; 2.998; 1,234.57; 0.0042."""
    if isinstance(value, bool) or not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def format_value(value: Any) -> str:
    """Any cell or answer value as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def is_refusal(data: dict[str, Any]) -> bool:
    """A final_response that gives no answer: the analyst asks instead, or would not guess."""
    return data.get("answer") is None and (bool(data.get("clarifications")) or not data.get("confidence"))


def result_table(data: dict[str, Any], limit: int = TABLE_ROWS) -> Table:
    """A sql_result's rows, numbers formatted and right-aligned."""
    columns = [str(c) for c in data.get("columns", [])]
    rows = data.get("rows", [])
    table = Table(show_edge=False, header_style="bold")
    for column in columns:
        numeric = any(
            isinstance(r.get(column), int | float) and not isinstance(r.get(column), bool) for r in rows
        )
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows[:limit]:
        table.add_row(*(format_value(row.get(c)) for c in columns))
    return table


class Renderer:
    """Prints one answer's events; `show` takes each event in order."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: dict[str, Any] | None = None  # the last query that ran, shown with the answer

    def show(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        kind = event["type"]
        if kind == "orchestrator_result":
            self.console.print(
                f"[bold]plan[/] {data.get('classification')}: [dim]{data.get('reasoning', '')}[/]"
            )
        elif kind == "sql_result":
            self.console.print(Syntax(data.get("query", ""), "sql", word_wrap=True))
            if data.get("error"):
                self.console.print(f"[yellow]SQL attempt {data.get('attempt', 1)} failed:[/] {data['error']}")
            else:
                self.rows = data
        elif kind == "python_result":
            self.console.print(Syntax(data.get("code", ""), "python", word_wrap=True))
            if data.get("stdout"):
                self.console.print(data["stdout"].rstrip())
            if data.get("error"):
                self.console.print(f"[yellow]Python failed:[/] {data['error']}")
        elif kind == "final_response":
            self.final(data)
        elif kind == "error":
            self.console.print(f"[bold red]Error:[/] {event.get('message')} [dim]({event.get('code')})[/]")
        elif kind == "key_rotation":
            self.console.print(f"[dim]{event.get('message')}[/]")

    def final(self, data: dict[str, Any]) -> None:
        """The result, once: the answer's text, its rows (unless the text states or tabulates them already),
        follow-ups."""
        self.console.print()
        if is_refusal(data):
            self.console.print(f"[bold yellow]Not answered:[/] {first_sentence(data.get('text') or '')}")
            for choice in data.get("clarifications") or []:
                self.console.print(f"  • {choice}")
            return
        text = data.get("text", "")
        self.console.print(Markdown(text))
        rows = self.rows
        if rows is not None and not _just_the_answer(rows) and not _has_table(text):
            self.console.print(result_table(rows))
            total = int(rows.get("row_count") or 0)
            shown = min(TABLE_ROWS, len(rows.get("rows", [])))
            more = f", first {shown} shown" if total > shown else ""
            self.console.print(f"[dim]{format_number(total)} row{'s' if total != 1 else ''}{more}[/]")
        if data.get("cached"):
            self.console.print("[dim](from the answer cache)[/]")
        if data.get("follow_ups"):
            self.console.print("[dim]Next: " + " · ".join(data["follow_ups"]) + "[/]")


def _has_table(markdown: str) -> bool:
    """The answer's text already lays the rows out as a table (a breakdown's composer does)."""
    return any(line.lstrip().startswith("|") for line in markdown.splitlines())


def _just_the_answer(rows: dict[str, Any]) -> bool:
    """One row (a value, or the winner of a ranking): the answer's text already states it."""
    return len(rows.get("rows", [])) <= 1


def first_sentence(text: str) -> str:
    """The refusal's one line: its first sentence (the offered questions follow as a list)."""
    lines = text.strip().splitlines()
    if not lines:
        return "No answer."
    return re.split(r"(?<=[.!?])\s", lines[0].strip(), maxsplit=1)[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
