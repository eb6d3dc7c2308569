"""Gradable adjectives: the measure a superlative ranks by, and which way ("the hottest day" → the
largest temperature, "the lightest car" → the smallest weight).

Why: a superlative often names its measure only through an adjective. This is English, not any table: each
adjective lists the header words its measure is usually called by, and `lexicon.synonyms` links them; the
forms (-est, -iest, doubled consonants, -er) are generated here, so the reader, the shapes and the stemmer
agree on them. Self-contained (no imports from the analyst) because `text.stem` uses it.
"""

from __future__ import annotations

import re

# base adjective → (direction, header words of the measure it grades)
GRADABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "hot": ("desc", ("temperature", "temp", "heat")),
    "warm": ("desc", ("temperature", "temp", "heat")),
    "cold": ("asc", ("temperature", "temp")),
    "cool": ("asc", ("temperature", "temp")),
    "windy": ("desc", ("wind",)),
    "rainy": ("desc", ("precipitation", "precip", "rain", "rainfall")),
    "wet": ("desc", ("precipitation", "precip", "rain", "rainfall")),
    "dry": ("asc", ("precipitation", "precip", "rain", "rainfall")),
    "heavy": ("desc", ("weight", "mass")),
    "light": ("asc", ("weight", "mass")),
    "tall": ("desc", ("height",)),
    "short": ("asc", ("height", "length", "duration")),
    "long": ("desc", ("length", "duration")),
    "slow": ("asc", ("speed", "velocity")),
    "old": ("desc", ("age",)),
    "young": ("asc", ("age",)),
    "expensive": ("desc", ("price", "cost")),
    "cheap": ("asc", ("price", "cost")),
    "pricey": ("desc", ("price", "cost")),
    "populous": ("desc", ("population", "pop", "inhabitant")),
    "rich": ("desc", ("income", "wealth", "worth", "gdp")),
    "poor": ("asc", ("income", "wealth", "worth", "gdp")),
    "deep": ("desc", ("depth",)),
    "shallow": ("asc", ("depth",)),
    "wide": ("desc", ("width",)),
    "narrow": ("asc", ("width",)),
    "northern": ("desc", ("latitude", "lat")),
    "southern": ("asc", ("latitude", "lat")),
    "eastern": ("desc", ("longitude", "lon", "lng")),
    "western": ("asc", ("longitude", "lon", "lng")),
}
_DOUBLED = {"hot", "wet", "big", "thin", "fat", "sad"}
_GRADED_WITH_MOST = {"expensive", "populous"}


def _forms(base: str) -> dict[str, str]:
    """Comparative and superlative forms of `base`, each mapped to its kind ("er" or "est")."""
    if base in _GRADED_WITH_MOST:
        return {}  # "the most expensive"
    if base.endswith("ern"):
        return {base + "most": "est"}  # northernmost
    if base.endswith("y"):
        stemmed = (base[:-2] if base.endswith("ey") else base[:-1]) + "i"  # windiest, priciest
        return {stemmed + "est": "est", stemmed + "er": "er"}
    if base.endswith("e"):
        return {base + "st": "est", base + "r": "er"}
    if base in _DOUBLED:
        return {base + base[-1] + "est": "est", base + base[-1] + "er": "er"}
    return {base + "est": "est", base + "er": "er"}


FORMS: dict[str, str] = {form: base for base in GRADABLE for form in _forms(base)}
SUPERLATIVES: dict[str, str] = {
    form: base for base in GRADABLE for form, kind in _forms(base).items() if kind == "est"
}


def base_of(word: str) -> str | None:
    """The gradable adjective a word is a form of ("hottest" → "hot"), else None."""
    return FORMS.get(word.lower())


def _alternation(direction: str) -> str:
    words = sorted(
        (form for form, base in SUPERLATIVES.items() if GRADABLE[base][0] == direction), key=len, reverse=True
    )
    long_ = sorted(
        (base for base, (d, _) in GRADABLE.items() if d == direction and not _forms(base)),
        key=len,
        reverse=True,
    )
    parts = [re.escape(w) for w in words] + [rf"most {re.escape(b)}" for b in long_]
    return "|".join(parts)


DESC_SUPERLATIVES = _alternation("desc")  # a regex alternation, for the shapes' and the reader's patterns
ASC_SUPERLATIVES = _alternation("asc")


def measure_groups() -> list[list[str]]:
    """Synonym groups linking each adjective (and its forms' base) to its measure's header words."""
    return [[base, *words] for base, (_, words) in GRADABLE.items()]


def _comparatives(direction: str) -> str:
    words = [
        form
        for base, (d, _) in GRADABLE.items()
        if d == direction
        for form, kind in _forms(base).items()
        if kind == "er"
    ]
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


MORE_COMPARATIVES = _comparatives("desc")  # "hotter", "older": a regex alternation
LESS_COMPARATIVES = _comparatives("asc")  # "colder", "younger"
