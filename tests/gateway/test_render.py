"""The terminal's rendering of an answer: numbers as a person reads them (as the page does), a refusal in
one sentence with its offered questions, and the result printed once."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gateway.render import Renderer, first_sentence, format_number, format_value, is_refusal


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (250000, "250,000"),
        (250000.0, "250,000"),
        (2.998, "2.998"),
        (14.214285714285714, "14.21"),
        (1234.5678, "1,234.57"),
        (0.0042, "0.0042"),
        (-3.0, "-3"),
        (float("nan"), "nan"),
    ],
)
def test_numbers_read_like_the_pages(value: float, text: str) -> None:
    assert format_number(value) == text


def test_values() -> None:
    assert format_value(None) == "—" and format_value(True) == "yes" and format_value([1, 2.5]) == "1, 2.5"


def test_a_refusal_is_no_answer_with_choices_or_no_confidence() -> None:
    assert is_refusal({"answer": None, "clarifications": ["What is x?"], "confidence": 0.7})
    assert is_refusal({"answer": None, "clarifications": [], "confidence": 0.0})
    assert not is_refusal({"answer": None, "clarifications": [], "confidence": 0.6})  # an explanation
    assert not is_refusal({"answer": 0, "clarifications": [], "confidence": 0.0})


def test_first_sentence() -> None:
    text = 'I found no column for "weather". Without a model I answer counts. Did you mean: "x"?'
    assert first_sentence(text) == 'I found no column for "weather".'
    assert first_sentence("") == "No answer."


def render(*events: dict[str, object]) -> str:
    out = io.StringIO()
    renderer = Renderer(Console(file=out, width=100, color_system=None))
    for event in events:
        renderer.show(event)  # type: ignore[arg-type]
    return out.getvalue()


SQL = {
    "type": "sql_result",
    "seq": 3,
    "data": {
        "query": "SELECT bank, avg(amount) FROM t GROUP BY 1",
        "columns": ["bank", "avg"],
        "rows": [{"bank": "SBI", "avg": 14.071428571428571}, {"bank": "HDFC", "avg": 14.214285714285714}],
        "row_count": 2,
        "error": None,
        "attempt": 1,
    },
}


def test_the_rows_are_printed_once_after_the_answer_with_numbers_formatted() -> None:
    final = {
        "type": "final_response",
        "seq": 4,
        "data": {"text": "HDFC is highest.", "answer": ["HDFC"], "confidence": 0.8},
    }
    out = render(SQL, final)
    assert "14.0714" not in out and out.count("14.07") == 1 and out.count("14.21") == 1
    assert out.index("HDFC is highest.") < out.index("14.07")  # the answer, then its rows
    tabulated = {**final, "data": {**final["data"], "text": "| bank | avg |\n|---|---|\n| SBI | 14.07 |"}}
    assert render(SQL, tabulated).count("14.07") == 1  # the text's own table is the only one


def test_a_refusal_prints_one_sentence_and_its_choices() -> None:
    final = {
        "type": "final_response",
        "seq": 2,
        "data": {
            "text": "I am not sure what is asked. Did you mean: “A?” or “B?”",
            "answer": None,
            "confidence": 0.0,
            "clarifications": ["A?", "B?"],
        },
    }
    out = render(final)
    assert "Not answered: I am not sure what is asked.\n" in out and "Did you mean" not in out
    assert "• A?" in out and "• B?" in out
