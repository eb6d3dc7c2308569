"""Links the words of a question to columns, to values found in the data, and to numbers.

A column is linked by its header's words (any order, small gaps), their forms, synonyms and abbreviations; a
value by its words in the profile's top values (or its initials: "HR" → "Human Resources"). Every link keeps
the token span it covers, so that the planner can read the question's structure around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache

from services.orchestrator.builtin.lexicon import GENERIC, STOP_STEMS, abbreviation_of, synonyms
from services.orchestrator.builtin.normal_forms import aliases
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.builtin.text import (
    ORDINALS,
    Token,
    same_word,
    split_name,
    stem,
    tokenize,
    word_number,
)


@dataclass
class ColumnLink:
    """A span of the question that names a column (best candidate first)."""

    start: int
    end: int  # exclusive token index
    candidates: list[tuple[Column, float]]

    @property
    def column(self) -> Column:
        return self.candidates[0][0]

    @property
    def score(self) -> float:
        return self.candidates[0][1]


@dataclass
class ValueLink:
    """A span of the question that names a value of a column."""

    start: int
    end: int
    column: Column
    value: str
    score: float
    element: bool = False  # an element of a list-like column's lists


@dataclass
class NumberLink:
    """A number in the question (digits or words)."""

    index: int
    value: float
    percent: bool = False


@dataclass
class Links:
    """Everything linked in one question."""

    tokens: list[Token]
    columns: list[ColumnLink] = field(default_factory=list)
    values: list[ValueLink] = field(default_factory=list)
    numbers: list[NumberLink] = field(default_factory=list)
    quoted: list[tuple[int, int, str]] = field(default_factory=list)
    entities: list[tuple[int, str]] = field(default_factory=list)

    def covered(self, index: int) -> bool:
        spans: list[ColumnLink | ValueLink] = [*self.columns, *self.values]
        return any(span.start <= index < span.end for span in spans)

    def column_at(self, index: int) -> ColumnLink | None:
        return next((c for c in self.columns if c.start <= index < c.end), None)


def _word_strength(q: str, h: str) -> float:
    if h.startswith("="):
        return 1.0 if q == h[1:] else 0.0
    if q == h:
        return 1.0
    if same_word(q, h):
        return 0.9
    if len(q) >= 4 and h.endswith(q) and len(h) - len(q) <= 2 and h.isalpha():
        return 0.8  # "class" in "Pclass"
    if h in synonyms(q) or (len(q) >= 6 and any(same_word(q, s) for s in synonyms(h) if s != h)):
        return 0.7
    if _typo(q, h):
        return 0.75  # "departmnet", "salery"
    if _clipped(q, h):
        return 0.7  # "pop" for "population", "unemp" for "unemployment"
    if _demonym(q, h):
        return 0.8  # "Japanese" for Japan, "European" for Europe
    return 0.0


_DEMONYM_SUFFIXES = ("ese", "ian", "ean", "an", "ish", "i")
_NOT_DEMONYMS = frozenset({"median", "meridian", "mean", "media"})


def _demonym(q: str, h: str) -> bool:
    """Whether `q` is the adjective of the place `h` by the regular English suffixes (Japan-ese,
    Europe-an, Canad-ian, Swed-ish); irregular ones ("French", "Dutch") are not guessed."""
    if not (q.isalpha() and h.isalpha()) or len(h) < 4 or q in _NOT_DEMONYMS:
        return False
    for suffix in _DEMONYM_SUFFIXES:
        if q.endswith(suffix):
            root = q[: -len(suffix)]
            if h == root + "a":
                return True  # Asi-an
            if len(root) >= 4 and h.startswith(root) and len(h) - len(root) <= 3 and h != q:
                return True
    return False


_NOT_CLIPPINGS = frozenset(
    {"max", "min", "avg", "sum", "num", "no", "tot", "per", "pre", "sub", "non", "con"}
)


def _clipped(q: str, h: str) -> bool:
    """Whether header word `h` is `q` cut short, as headers abbreviate ("pop" ← "population", "temp" ←
    "temperature", "grad" ← "graduation"); never an operator's abbreviation ("max" ← "maximum")."""
    return (
        len(h) >= 3
        and len(q) >= len(h) + (1 if len(h) >= 4 else 2)
        and h.isalpha()
        and q.startswith(h)
        and h not in _NOT_CLIPPINGS
    )


@lru_cache(maxsize=65536)
def _typo(q: str, h: str) -> bool:
    """One slip of the keyboard between two longer words (difflib ratio ≥ 0.85, same first letter)."""
    if len(q) < 5 or len(h) < 5 or q[0] != h[0] or abs(len(q) - len(h)) > 2:
        return False
    if not (q.isalpha() and h.isalpha()):
        return False
    return SequenceMatcher(None, q, h).ratio() >= 0.85


def _match_phrase(tokens: list[Token], phrase: list[str]) -> list[tuple[int, int, float, int]]:
    """(start, end, strength, matched) for each maximal run of question words covering phrase words."""
    content = [w for w in phrase if w not in STOP_STEMS and w != "&"]
    if not content:
        return []
    runs = []
    n = len(tokens)
    i = 0
    while i < n:
        strengths: dict[str, float] = {}
        j, last, gap = i, -1, 0
        while j < n:
            q = tokens[j].stem
            best_word, best = None, 0.0
            for w in content:
                if w in strengths:
                    continue
                s = _word_strength(q, w)
                if s > best:
                    best_word, best = w, s
            if best_word is not None:
                strengths[best_word] = best
                last, gap = j, 0
            elif last >= 0 and q in STOP_STEMS and gap < 3 and word_number(tokens[j].text) is None:
                gap += 1
            else:
                break
            j += 1
        if last >= 0:
            runs.append((i, last + 1, sum(strengths.values()), len(strengths)))
            i = last + 1
        else:
            i += 1
    return [(a, b, s, m) for a, b, s, m in runs] if content else []


def _spread_match(tokens: list[Token], content: list[str]) -> tuple[int, int] | None:
    """All of a header's words close together but not adjacent ("standard number of working hours")."""
    positions = []
    for w in content:
        hits = [i for i, t in enumerate(tokens) if _word_strength(t.stem, w) >= 0.9]
        if not hits:
            return None
        positions.append(hits)
    for first in positions[0]:
        chosen = [min(hits, key=lambda i: abs(i - first)) for hits in positions]
        if len(set(chosen)) == len(chosen) and max(chosen) - min(chosen) <= len(content) + 2:
            if any(word_number(t.text) is not None for t in tokens[min(chosen) : max(chosen)]):
                continue  # "amounts over 10000 INR": the number between belongs to a comparison
            return min(chosen), max(chosen) + 1
    return None


def _column_candidates(tokens: list[Token], schema: Schema) -> list[tuple[int, int, Column, float]]:
    found = []
    for column in schema.columns:
        best: dict[tuple[int, int], float] = {}
        for phrase in column.phrases:
            content = [w for w in phrase if w not in STOP_STEMS and w != "&"]
            if not content:
                continue
            specific = [w for w in content if w not in GENERIC]
            for start, end, strength, matched in _match_phrase(tokens, phrase):
                span_stems = {t.stem for t in tokens[start:end]}
                hits_specific = any(any(_word_strength(q, w) > 0 for q in span_stems) for w in specific)
                full = matched == len(content)
                if not full and not hits_specific:
                    continue
                synonym_only = all(_word_strength(q, w) < 0.9 for q in span_stems for w in specific)
                if not full and synonym_only and matched / len(content) < 0.3:
                    continue  # a synonym alone links only short headers
                coverage = matched / len(content)
                score = strength + coverage + (1.0 if full else 0.0)
                key = (start, end)
                best[key] = max(best.get(key, 0.0), score)
            if 2 <= len(content) <= 4 and not any(s >= 3.0 for s in best.values()):
                spread = _spread_match(tokens, content)
                if spread is not None:
                    best[spread] = max(best.get(spread, 0.0), 2.6)
        for key in _fused_spans(tokens, column.name):
            best[key] = max(best.get(key, 0.0), 3.0)
        for (start, end), score in best.items():
            found.append((start, end, column, score))
    return found


def _fused_spans(tokens: list[Token], header: str) -> list[tuple[int, int]]:
    """Spans of two or three words that a header writes as one ("real GDP" for `realgdp`, "T-bill rate"
    for `tbilrate`)."""
    fused = re.sub(r"[^a-z0-9]", "", header.lower())
    if len(fused) < 5:
        return []
    return [
        (i, i + n)
        for n in (2, 3)
        for i in range(len(tokens) - n + 1)
        if _same_or_slip([t.text for t in tokens[i : i + n]], fused)
    ]


def _same_or_slip(words: list[str], fused: str) -> bool:
    """The words joined are the header, or one slip inside a long one that starts with the first word and
    ends with the last ("t bill rate" for `tbilrate`)."""
    joined = "".join(words)
    if joined == fused:
        return True
    return (
        len(fused) >= 7 and fused.startswith(words[0]) and fused.endswith(words[-1]) and _typo(joined, fused)
    )


def _select_columns(found: list[tuple[int, int, Column, float]]) -> list[ColumnLink]:
    found.sort(key=lambda f: (-f[3], -(f[1] - f[0]), f[2].position))
    links: list[ColumnLink] = []
    for start, end, column, score in found:
        clash = next((lk for lk in links if start < lk.end and lk.start < end), None)
        if clash is None:
            links.append(ColumnLink(start, end, [(column, score)]))
        elif clash.start <= start and end <= clash.end and column not in [c for c, _ in clash.candidates]:
            clash.candidates.append((column, score))
    links.sort(key=lambda lk: lk.start)
    # a partial link right before a full one qualifies it ("product codes" → code, not product_name)
    full = {id(lk) for lk in links if lk.score >= 3.0}
    return [
        lk
        for i, lk in enumerate(links)
        if not (
            1.3 <= lk.score < 2.0  # a word of the header, not a synonym ("most expensive country" keeps cost)
            and i + 1 < len(links)
            and id(links[i + 1]) in full
            and links[i + 1].start == lk.end
        )
    ]


def _value_words(value: str) -> list[str]:
    words = [stem(w) for w in split_name(value) if w != "&"]
    longer = [w for w in words if len(w) > 2 or not w.isalpha()]
    return longer or words


def _elements(column: Column) -> list[tuple[str, int]]:
    out: dict[str, int] = {}
    for value, count in column.values:
        for part in value.strip("[]").split(","):
            part = part.strip().strip("'\"")
            if part:
                out[part] = out.get(part, 0) + count
    return list(out.items())


_CONNECTORS = {"in", "of", "is", "equal", "equals", "to", "for", "as", "the", "=", "from", "at", "on"}
# "cities in California": a place after a noun locates it; it is not that column's value
_PLACE_PREPOSITIONS = frozenset({"in", "from", "at", "on"})
_STRUCTURAL_VALUE_WORDS = {
    "frequent",
    "frequently",
    "common",
    "most",
    "least",
    "number",
    "total",
    "average",
    "highest",
    "lowest",
    "top",
    "first",
    "last",
    "unique",
    "different",
    "values",
    "value",
}


def _named_before(tokens: list[Token], start: int, column: Column) -> bool:
    """Whether the column's own words come right before `start` ("Parent 150", "code 1522")."""
    window = {t.stem for t in tokens[max(0, start - 3) : start]}
    return any(any(_word_strength(q, w) >= 0.9 for q in window) for w in column.words if w not in STOP_STEMS)


def _value_candidates(tokens: list[Token], schema: Schema, raw: str) -> list[ValueLink]:
    found: list[ValueLink] = []
    upper = {i for i, t in enumerate(tokens) if raw[t.start : t.end].isupper() and len(t.text) >= 2}
    for column in schema.columns:
        if not column.textual or not column.values:
            continue
        values = _elements(column) if column.listlike else column.values
        shown = tuple(v for v, _ in values)
        spelled = [(value, count, _value_words(value)) for value, count in values]
        # the same value under another name the column's scheme supports ("Texas" for `TX`)
        spelled += [(value, count, _value_words(a)) for value, count in values for a in aliases(value, shown)]
        for value, count, words in spelled:
            if not words or len(words) > 6:
                continue
            initials = abbreviation_of(split_name(value))
            for i, t in enumerate(tokens):
                if len(words) >= 2 and i in upper and t.text == initials:
                    found.append(ValueLink(i, i + 1, column, value, 1.5, column.listlike))
            for start, end, strength, matched in _match_phrase(tokens, words):
                full = matched == len(words)
                span_stems = [t.stem for t in tokens[start:end]]
                exactish = all(
                    q in STOP_STEMS
                    or max(_word_strength(q, w) for w in words) >= 0.9
                    or (full and len(words) == 1 and _demonym(q, words[0]))  # "Japanese" for `Japan`
                    for q in span_stems
                )
                if not exactish or all(t.text in _STRUCTURAL_VALUE_WORDS for t in tokens[start:end]):
                    continue
                if not full and (matched < 1 or len(words) < 2 or all(w in GENERIC for w in span_stems)):
                    continue
                if not full and (
                    matched / len(words) < 0.5
                    or not any(_word_strength(q, words[0]) >= 0.9 for q in span_stems)
                ):
                    continue  # "contain" alone is not "en:may-contain-palm-oil"; "research" is "Research & …"
                if not full and any(
                    len(q) <= 3 or q in ("non", "not") or any(_word_strength(q, h) > 0 for h in column.words)
                    for q in span_stems
                    if q not in STOP_STEMS
                ):
                    continue  # "contributed" names the creator column, not "openfoodfacts-contributors"
                if all(w.isdigit() for w in words) and not (
                    all(t.text.isdigit() for t in tokens[start:end])
                    and any(c.words and c is column for c in [column])
                    and _named_before(tokens, start, column)
                ):
                    continue  # "first" or "3" alone is not the value "1" or "3" of some text column
                score = strength + (1.0 if full else 0.0) + min(count, 1000) / 10000
                found.append(ValueLink(start, end, column, value, score, column.listlike))
    return found


# a word before a column's words that its header abbreviates ("maximum temperature" → `temp_max`)
_QUALIFIERS = {
    "maximum": "max",
    "max": "max",
    "highest": "max",
    "minimum": "min",
    "min": "min",
    "lowest": "min",
    "average": "avg",
    "mean": "mean",
}


_AGGREGATE_WORDS = frozenset({"average", "mean", "median", "total", "sum", "avg"})


def _with_qualifier(link: ColumnLink, tokens: list[Token]) -> ColumnLink:
    """After an aggregate word, the link grown over the word before it when that word is part of a
    candidate's header: that candidate first ("average maximum temperature" links `temp_max`, and asks
    for an average, not a maximum)."""
    short = _QUALIFIERS.get(tokens[link.start - 1].text) if link.start >= 1 else None
    if short is None:
        return link
    full = {"max": "maximum", "min": "minimum", "avg": "average", "mean": "mean"}[short]
    fitting = [(c, s) for c, s in link.candidates if short in c.words or full in c.words]
    if not fitting:
        return link
    others = [(c, s) for c, s in link.candidates if (c, s) not in fitting]
    if link.start < 2 or tokens[link.start - 2].text not in _AGGREGATE_WORDS:
        # "the minimum temperature" still asks for a minimum, and of `temp_min` rather than `temp_max`
        return ColumnLink(link.start, link.end, [(c, s + 0.5) for c, s in fitting] + others)
    return ColumnLink(link.start - 1, link.end, [(c, s + 1.0) for c, s in fitting] + others)


_QUOTED = re.compile(r"'([^']{2,})'|\"([^\"]{2,})\"|‘([^’]{2,})’|“([^”]{2,})”")


def link(question: str, schema: Schema) -> Links:
    """All links of `question` against `schema`."""
    tokens = tokenize(question)
    links = Links(tokens=tokens)
    for match in _QUOTED.finditer(question):
        text = next(g for g in match.groups() if g)
        if len(text.split()) > 8 or match.start() <= 2:
            continue  # a quoted sentence is the question itself, not a value
        if any(col.name.lower() == text.lower() for col in schema.columns):
            continue  # a quoted header names a column, not a value
        start = next((i for i, t in enumerate(tokens) if t.start >= match.start()), len(tokens))
        end = next((i for i, t in enumerate(tokens) if t.start >= match.end()), len(tokens))
        links.quoted.append((start, end, text))
    columns = _select_columns(_column_candidates(tokens, schema))
    values = _value_candidates(tokens, schema, question)
    for value in values:  # a value next to its column's name ("the HR department") is that column's
        if any(
            c.column is value.column and (0 <= c.start - value.end <= 2 or 0 <= value.start - c.end <= 3)
            for c in columns
        ):
            value.score += 0.5
    # a full value match beats a partial column match over the same words ("Sales" the department)
    chosen: list[ValueLink] = []
    for value in sorted(values, key=lambda v: (-v.score, -(v.end - v.start))):
        if any(value.start < c.end and c.start < value.end for c in chosen):
            continue
        overlapping = [c for c in columns if value.start < c.end and c.start < value.end]
        words = len(_value_words(value.value))
        full = value.score >= 2.0 or value.end - value.start >= words
        if overlapping and not full:
            continue
        if overlapping and any(
            c.score >= 3.0 and (c.end - c.start) > (value.end - value.start) for c in overlapping
        ):
            continue
        if overlapping and any(
            c.column.name.lower() == value.value.lower() or (c.score >= 3.0 and value.score < 2.5)
            for c in overlapping
        ):
            continue
        chosen.append(value)
        columns = [c for c in columns if c not in overlapping]
    for start, end, text in links.quoted:
        chosen = [v for v in chosen if not (start <= v.start < end and v.value.lower() != text.lower())]
    for value in chosen:
        # "val3 in alpha_0": the column named next to a value wins, even without the value in its top ten
        named = next(
            (
                c.column
                for c in columns
                # the column, then its value ("Department equal to Android"); a value before a noun
                # qualifies it instead ("mexican swimmers": swimmers whose country is Mexico)
                if 0 <= value.start - c.end <= 2
                and all(
                    t.text in _CONNECTORS and t.text not in _PLACE_PREPOSITIONS
                    for t in tokens[min(c.end, value.end) : max(c.start, value.start)]
                )
                and c.column.textual
                and not c.column.listlike
                and c.score >= 2.5
            ),
            None,
        )
        if (
            named is not None
            and named is not value.column
            and not any(v == value.value for v, _ in named.values)
        ):
            value.column, value.element = named, False
    links.values = sorted(chosen, key=lambda v: v.start)
    links.columns = [_with_qualifier(c, tokens) for c in columns]
    for i, t in enumerate(tokens):
        if links.covered(i):
            continue
        number = word_number(t.text)
        if number is not None and t.text not in ("single",):
            links.numbers.append(NumberLink(i, number, t.text.endswith("%")))
        elif t.text in ORDINALS:
            continue
    for i, t in enumerate(tokens):
        word = question[t.start : t.end]
        if (
            i > 0
            and word[:1].isupper()
            and not links.covered(i)
            and t.stem not in STOP_STEMS
            and not word.isupper()
            and word_number(t.text) is None
            and not (t.start > 0 and question[t.start - 1].isalnum())  # "Rate" of "DailyRate"
            and not (t.end < len(question) and question[t.end].isupper())
            and t.text not in ("true", "false", "yes", "no")
        ):
            links.entities.append((i, word))
    return links
