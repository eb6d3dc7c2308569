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
    return len(before) > 1 and before[-1].text == "but" and before[-2].text in _ALL_WORDS
