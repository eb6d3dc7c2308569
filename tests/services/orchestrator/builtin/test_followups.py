"""Follow-up questions come from the question's own columns, and the analyst answers each of them."""

from __future__ import annotations

from collections.abc import Callable

from tests.services.orchestrator.builtin.conftest import Asked


def _answered(asked: Asked) -> bool:
    return asked.answer.answer is not None and not asked.answer.clarifications


def test_follow_ups_drill_down_trend_and_compare_the_asked_measure(ask: Callable[[str], Asked]) -> None:
    first = ask("What is the average Monthly Income (USD)?")
    assert _answered(first)
    ups = first.answer.follow_ups
    assert len(ups) == 3 and all("Monthly Income (USD)" in up for up in ups)
    assert any("by month of Joined On" in up for up in ups)  # the trend
    for up in ups:
        assert _answered(ask(up)), up


def test_follow_ups_differ_with_the_question(ask: Callable[[str], Asked]) -> None:
    by_income = ask("What is the average Monthly Income (USD)?").answer.follow_ups
    by_age = ask("What is the average Age?").answer.follow_ups
    assert by_income != by_age and any("Age" in up for up in by_age)
    for up in by_age:
        assert _answered(ask(up)), up


def test_follow_ups_of_a_breakdown_keep_its_dimension(ask: Callable[[str], Asked]) -> None:
    asked = ask("How many rows are there for each Department?")
    assert asked.rows, "the breakdown itself is answered"
    ups = asked.answer.follow_ups
    assert ups and any("Department" in up for up in ups)
    for up in ups:
        assert _answered(ask(up)), up
