"""Words of questions and column headers, normalized so that spelling does not decide a match.

`Amount (INR)`, `amount_inr`, `AmountINR` and "amounts in INR" all become the tokens `amount`, `inr`; word
forms are folded by a light stemmer (`failure`/`failed` → `fail`, `countries` → `country`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.orchestrator.builtin.degrees import base_of

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[A-Za-z]+\d[A-Za-z\d]*|\d+[A-Za-z]+[A-Za-z\d]*|[A-Za-z]+|\d+(?:[.,]\d+)*%?|&")

_IRREGULAR = {
    "children": "child",
    "people": "person",
    "men": "man",
    "women": "woman",
    "data": "data",
    "indices": "index",
    "indexes": "index",
    "older": "old",
    "oldest": "old",
    "elder": "old",
    "eldest": "old",
    "younger": "young",
    "youngest": "young",
    "bigger": "big",
    "biggest": "big",
    "larger": "large",
    "largest": "large",
    "smaller": "small",
    "smallest": "small",
    "higher": "high",
    "highest": "high",
    "lower": "low",
    "lowest": "low",
    "cheaper": "cheap",
    "cheapest": "cheap",
    "foggy": "fog",  # weather adjectives name the weather ("foggy days" → `fog`)
    "sunny": "sun",
    "rainy": "rain",
    "snowy": "snow",
    "cloudy": "cloud",
    "stormy": "storm",
    "windy": "wind",
    "won": "win",
    "winning": "win",
    "lost": "loss",
    "lose": "loss",
    "loses": "loss",
    "losing": "loss",
    "losses": "loss",
    "better": "good",
    "best": "good",
    "worse": "bad",
    "worst": "bad",
    "longer": "long",
    "longest": "long",
    "was": "be",
    "were": "be",
    "is": "be",
    "are": "be",
    "has": "have",
    "had": "have",
    "does": "do",
    "did": "do",
    "analysis": "analysis",
    "rating": "rate",
    "ratings": "rate",
    "rated": "rate",
    "daily": "daily",
    "monthly": "month",
    "yearly": "year",
    "hourly": "hour",
    "weekly": "week",
    "status": "status",
    "gas": "gas",
    "bus": "bus",
    "yes": "yes",
    "this": "this",
    "its": "it",
    "less": "less",
    "across": "across",
    "business": "business",
}
_SUFFIXES = (
    "ational",
    "ations",
    "ation",
    "ities",
    "ity",
    "ments",
    "ment",
    "ings",
    "ing",
    "ies",
    "ied",
    "ure",
    "ers",
    "er",
    "ed",
    "es",
    "s",
    "ly",
)


_ACRONYM_PLURAL = re.compile(r"\b([A-Z]{2,})s\b")


def camel_parts(word: str) -> list[str]:
    """ "DailyRate" → Daily, Rate; "iOS" and "eBay" stay whole (a one-letter part is not a word)."""
    if not word.isalpha():
        return [word]
    parts = _CAMEL.sub(" ", word).split()
    return [word] if any(len(p) == 1 for p in parts) else parts


def split_name(name: str) -> list[str]:
    """The lowercase words of a header or phrase: camelCase, `_`, `-`, `.`, parentheses and units split."""
    words: list[str] = []
    for word in _WORD.findall(_ACRONYM_PLURAL.sub(r"\1", name)):
        words.extend(camel_parts(word))
    return [w.lower() for w in words]


def stem(word: str) -> str:
    """A light, predictable stem: enough to fold plurals and common verb/noun forms."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    graded = base_of(w)
    if graded is not None:
        return _IRREGULAR.get(graded, graded)  # "hottest" → "hot", "windiest" → "wind"
    if not w.isalpha() or len(w) <= 3:
        return w
    for suffix in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            base = w[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return base + "y"
            if suffix == "es" and not base.endswith(("s", "x", "z", "ch", "sh")):
                return w[:-1] if w[:-1].endswith("e") else base
            if (
                suffix in ("er", "ers", "ed", "ing")
                and len(base) > 3
                and base[-1] == base[-2]
                and base[-1] not in "ls"
            ):
                return base[:-1]
            return base
    return w


def same_word(a: str, b: str) -> bool:
    """Whether two stems are forms of one word: equal, or sharing a long common start."""
    if a == b or a == b + "e" or b == a + "e":
        return True
    if not (a.isalpha() and b.isalpha()):
        return False
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) < 5:
        return False
    common = 0
    for x, y in zip(short, long_, strict=False):
        if x != y:
            break
        common += 1
    if common == 5 and len(long_) - len(short) > 1:
        return False  # "count" is not "country"
    return common >= 5 and common >= 0.75 * len(short) and len(long_) - common <= 6


@dataclass(frozen=True)
class Token:
    """One word of a question with its position (character span) and stem."""

    text: str
    stem: str
    start: int
    end: int


_PIECE = re.compile(
    r"\d+(?:st|nd|rd|th)(?![a-z])|[A-Za-z]+\d[A-Za-z\d]*|\d+[A-Za-z]+[A-Za-z\d]*|[A-Za-z]+"
    r"|(?<![A-Za-z\d-])-\d+(?:\.\d+)?(?![\d-])"  # a negative number ("below -5"), not "1973-74"
    r"|\d+(?:[.,]\d+)*%?|&"
)


def tokenize(question: str) -> list[Token]:
    """The question's words, camelCase split, each with its stem and span."""
    tokens: list[Token] = []
    question = _ACRONYM_PLURAL.sub(r"\1 ", question)
    for match in re.finditer(r"[A-Za-z0-9_.,%&$'-]+", question):
        chunk, offset = match.group(0), match.start()
        for piece in re.finditer(_PIECE, chunk):
            word = piece.group(0)
            parts = camel_parts(word)
            pos = offset + piece.start()
            for part in parts:
                low = part.lower().rstrip(",.")
                word_stem = str(ORDINALS[low]) if low in ORDINALS else stem(low)
                tokens.append(Token(low, word_stem, pos, pos + len(part)))
                pos += len(part)
    return tokens


_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "dozen": 12,
}
ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "1st": 1,
    "2nd": 2,
    "3rd": 3,
    "4th": 4,
    "5th": 5,
}


def word_number(token: str) -> float | None:
    """The number a token spells, digits (`1,000`, `2.5`, `15%`) or words (`five`); else None."""
    t = token.lower().rstrip("%")
    if t in _UNITS:
        return float(_UNITS[t])
    m = re.fullmatch(r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\d+\.\d+)", t)
    if m:
        return float(t.replace(",", ""))
    m = re.fullmatch(r"(\d+)(?:st|nd|rd|th)", t)
    if m:
        return float(m.group(1))
    return None
