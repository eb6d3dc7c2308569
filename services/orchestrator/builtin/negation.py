"""Whether the words before a value exclude it ("outside Boston", "other than Italy", "not in 2007").

Why one place: the hand-written shapes and the reader both turn a value into a filter, and both must read
"outside X" as `<> X`, never as `= X` (nor drop the word).
"""

from __future__ import annotations

import itertools

from services.orchestrator.builtin.text import Token

# single words that exclude what follows them
NEGATING_WORDS = frozenset(
    {
        "not",
        "no",
        "non",
        "without",
        "never",
        "don't",
        "doesn't",
        "didn't",
        "dont",
        "excluding",
        "exclude",
        "except",
        "excepting",
        "nt",
        "t",
        "childless",
        "outside",
        "besides",
        "but",
    }
)
# two-word cues, read as (first, second)
_ALL_WORDS = frozenset({"all", "everyone", "everything", "anyone", "everybody"})
_NEGATING_PAIRS = frozenset({("other", "than"), ("apart", "from"), ("aside", "from"), ("aside", "of")})


def negated(tokens: list[Token], index: int, window: int = 3) -> bool:
    """Whether a cue among the `window` tokens before `index` excludes the value that starts there."""
    before = tokens[max(0, index - window) : index]
    if any(t.text in NEGATING_WORDS and t.text != "but" for t in before):
        return True
    words = [t.text for t in before]
    if any((a, b) in _NEGATING_PAIRS for a, b in itertools.pairwise(words)):
        return True
    # "all but Boston": "but" right before the value (a plain "but" elsewhere joins two clauses)
    if len(before) > 1 and before[-1].text == "but" and before[-2].text in _ALL_WORDS:
        return True
    return _negated_through_a_participle(tokens, index)


_BRIDGES = frozenset({"in", "from", "at", "by", "the", "a", "an", "of", "made", "born", "built", "sold"})


def _negated_through_a_participle(tokens: list[Token], index: int) -> bool:
    """ "not made in the USA", "not born in Ohio": a negation, then only a participle and prepositions."""
    for back in range(index - 1, max(-1, index - 6), -1):
        word = tokens[back].text
        if word in ("not", "never", "non"):
            between = [t.text for t in tokens[back + 1 : index]]
            return any(w in ("in", "from", "at", "by") for w in between)
        if word not in _BRIDGES and not (word.endswith("ed") and len(word) > 4):
            return False
    return False
