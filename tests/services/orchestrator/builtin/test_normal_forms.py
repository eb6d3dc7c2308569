"""Normal forms and negation, table-driven: which other names a column's own values support, and which
words before a value exclude it."""

from __future__ import annotations

import pytest

from services.orchestrator.builtin.negation import negated
from services.orchestrator.builtin.normal_forms import aliases
from services.orchestrator.builtin.text import tokenize

STATE_CODES = ("TX", "CA", "NY", "OR", "ME")
STATE_NAMES = ("Texas", "California", "New York", "Oregon")
WEEKDAYS_SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS_FULL = ("January", "February", "March", "April")
INITIALS = ("OR", "ME", "AB", "XY", "QQ", "ZZ")  # two state codes among other initials


@pytest.mark.parametrize(
    ("value", "column", "expected"),
    [
        ("TX", STATE_CODES, ["Texas"]),
        ("Oregon", STATE_NAMES, ["OR"]),
        ("New York", STATE_NAMES, ["NY"]),
        ("Sun", WEEKDAYS_SHORT, ["sunday"]),
        ("Thu", WEEKDAYS_SHORT, ["thursday"]),
        ("March", MONTHS_FULL, ["mar"]),
        # the column does not use a scheme: no alias, whatever the value looks like
        ("OR", INITIALS, []),
        ("ME", INITIALS, []),
        ("Sun", ("Sun", "Moon", "Star"), []),
        # a single value is no evidence of a scheme
        ("TX", ("TX",), []),
    ],
)
def test_aliases_follow_the_columns_scheme(value: str, column: tuple[str, ...], expected: list[str]) -> None:
    assert aliases(value, column) == expected


@pytest.mark.parametrize(
    ("question", "value", "expected"),
    [
        ("total amount outside Boston", "boston", True),
        ("total amount other than Boston", "boston", True),
        ("total amount excluding Boston", "boston", True),
        ("how many rows are not in Boston", "boston", True),
        ("everyone but Boston", "boston", True),
        ("total amount in Boston", "boston", False),
        ("Boston but not Denver", "boston", False),
        ("more than Boston", "boston", False),
    ],
)
def test_negation_cues_before_a_value(question: str, value: str, expected: bool) -> None:
    tokens = tokenize(question)
    index = next(i for i, t in enumerate(tokens) if t.text == value)
    assert negated(tokens, index) is expected


@pytest.mark.parametrize(
    ("word", "base"),
    [
        ("hottest", "hot"),
        ("windiest", "windy"),
        ("priciest", "pricey"),
        ("northernmost", "northern"),
        ("coldest", "cold"),
        ("interest", None),
        ("forest", None),
        ("latest", None),
    ],
)
def test_gradable_forms_fold_to_their_adjective(word: str, base: str | None) -> None:
    from services.orchestrator.builtin.degrees import base_of

    assert base_of(word) == base


@pytest.mark.parametrize(
    ("question_word", "header_word", "links"),
    [
        ("japanese", "japan", True),
        ("european", "europe", True),
        ("asian", "asia", True),
        ("canadian", "canada", True),
        ("popul", "pop", True),  # stems of "population" and a clipped header
        ("unemploy", "unemp", True),
        ("maximum", "max", False),  # an operator's abbreviation is not a clipped header
        ("card", "car", False),  # too short a difference for a three-letter header
    ],
)
def test_place_adjectives_and_clipped_headers_link(question_word: str, header_word: str, links: bool) -> None:
    from services.orchestrator.builtin.linking import _word_strength

    assert (_word_strength(question_word, header_word) > 0) is links


def test_an_operator_is_never_read_as_a_place_adjective() -> None:
    from services.orchestrator.builtin.linking import _demonym

    assert not _demonym("median", "media")
    assert _demonym("italian", "italy")
