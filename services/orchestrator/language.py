"""Whether a question is written in a language other than English, for the built-in analyst's sake.

The built-in analyst reads English only; a question in another language would be refused as if it made no
sense, or worse, half-read. Two cheap signals, both conservative (a question is English unless the evidence
against it is clear), computed after removing the words of the table's own column names and values:
- the script: most letters outside the Latin alphabet (Cyrillic, Greek, Arabic, Han, Devanagari, ...);
- function words: the common words of some Latin-script language (the `stop-words` package's lists)
  outnumber the English ones, with at least two of them; one word spelled with diacritics, or Spanish's
  opening `¿`/`¡`, adds to that evidence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache

from stop_words import get_stop_words

#: Latin-script languages the `stop-words` package has lists for (others are caught by their script).
LATIN_SCRIPT_LANGUAGES = (
    "catalan",
    "czech",
    "danish",
    "dutch",
    "finnish",
    "french",
    "german",
    "hungarian",
    "indonesian",
    "italian",
    "malaysian",
    "norwegian",
    "polish",
    "portuguese",
    "romanian",
    "slovak",
    "spanish",
    "swedish",
    "turkish",
    "vietnamese",
)

NOT_ENGLISH_MESSAGE = (
    "The built-in analyst reads questions in English only. Ask again in English, or configure a language "
    "model (it reads other languages too)."
)

_WORD = re.compile(r"[^\W\d_]+")


@cache
def _function_words() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    english = frozenset(get_stop_words("english"))
    others = {name: frozenset(get_stop_words(name)) for name in LATIN_SCRIPT_LANGUAGES}
    return english, others


def warm_up() -> None:
    """Reads the word lists now (~25 ms) rather than during the first question."""
    _function_words()


def _is_latin(letter: str) -> bool:
    return unicodedata.name(letter, "").startswith("LATIN")


def words_of(texts: Iterable[str]) -> set[str]:
    """The lowercase words of `texts` (column names, values): removed from the question before judging."""
    return {word for text in texts for word in _WORD.findall(text.lower())}


def reads_as_english(question: str, table_words: set[str] | None = None) -> bool:
    """False only when the question is clearly in another language (script, or function words)."""
    known = table_words or set()
    words = [w for w in _WORD.findall(question.lower()) if w not in known]
    letters = [c for w in words for c in w]
    if not letters:
        return True
    if sum(not _is_latin(c) for c in letters) * 2 > len(letters):
        return False
    english, others = _function_words()
    in_english = sum(w in english for w in words)
    in_other = max(sum(w in vocabulary for w in words) for vocabulary in others.values())
    accented = any(not c.isascii() for w in words for c in w)
    opening_marks = 2 if ("¿" in question or "¡" in question) else 0
    evidence = in_other + int(accented) + opening_marks
    return not (evidence >= 2 and evidence > in_english)
