"""The reader: a question → the plausible `form.Query` readings over this table, each with its features.

Why: one question has several readings (which column answers, which words are values, largest or first);
rather than deciding with one rule, the reader lists the readings the table's schema, values and types allow,
and describes each by features that name no table (lexical overlap, types, the question's form, trigger
words, words left unexplained). `scorer.py` ranks them with weights fitted on the train split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import product

from services.orchestrator.builtin import months, places
from services.orchestrator.builtin.degrees import (
    ASC_SUPERLATIVES,
    DESC_SUPERLATIVES,
    LESS_COMPARATIVES,
    MORE_COMPARATIVES,
)
from services.orchestrator.builtin.form import Filter, Query
from services.orchestrator.builtin.forms import question_form
from services.orchestrator.builtin.lexicon import GENERIC, STOP_STEMS
from services.orchestrator.builtin.linking import Links, link
from services.orchestrator.builtin.negation import NEGATING_WORDS, negated
from services.orchestrator.builtin.schema import Column, Schema
from services.orchestrator.builtin.text import ORDINALS, Token, word_number
from services.orchestrator.plan import Plan

MAX_ANSWER_COLUMNS = 5
MAX_MEASURES = 3


def _words(text: str) -> frozenset[str]:
    """A word list written as text."""
    return frozenset(text.split())


# words that shape the computation; never values
_OPERATOR_WORDS = (
    _words(
        """
    how many much what which who whom whose when where why is are was were be been did does do has have had
    the a an of in on at to for by from with and or as than that this these those there their its it his her
    they them he she total number count sum average mean median most least highest lowest largest smallest
    biggest greatest top bottom first last latest earliest next previous before after above below more less
    fewer greater higher lower larger smaller longest shortest oldest youngest max maximum min minimum
    only same other different difference between listed list name names tell give show all each every any
    times time amount one ones not no never without except consecutive row rows table chart
    least at long far old many equal equals exactly value values frequent common often usually
    percent percentage share rate ratio per also total overall
    """
    )
    | NEGATING_WORDS
)
_GENERIC_NOUNS = _words(
    """
    team teams player players person people country countries city cities year years game games season seasons
    place title song songs album film films movie movies name event events club clubs school schools station
    stations team's player's part win won lose lost play played score scored record records held hold rank
    ranked position total points point made make get got come came take took
    """
)
_DESC_WORDS = re.compile(
    r"\b(most|highest|largest|biggest|greatest|max|maximum|top|longest|tallest|oldest|latest|best|more|"
    r"higher|larger|bigger|greater|longer|taller|deeper|deepest|heaviest|fastest|richest|widest|"
    rf"{DESC_SUPERLATIVES})\b"
)
_ASC_WORDS = re.compile(
    r"\b(least|lowest|smallest|fewest|min|minimum|bottom|shortest|youngest|earliest|worst|less|lower|"
    rf"smaller|fewer|shorter|slowest|lightest|cheapest|{ASC_SUPERLATIVES})\b"
)
_FIRST_WORDS = re.compile(r"\b(first|earliest|initial|top|opening|begin\w*)\b")
_LAST_WORDS = re.compile(r"\b(last|latest|final|most recent|bottom|end)\b")
_NEXT_WORDS = re.compile(r"\b(next|after|following|below|succeed\w*)\b")
_PREV_WORDS = re.compile(r"\b(previous|before|prior|preceding|above|preced\w*)\b")
_COMPARE = (
    (
        re.compile(
            r"\b(more|greater|higher|larger|over|above|exceed\w*|after|later|bigger|"
            rf"{MORE_COMPARATIVES})( than)?\s*$"
        ),
        ">",
    ),
    (re.compile(r"\bat least\s*$|\bor more\b|\bsince\s*$"), ">="),
    (
        re.compile(
            r"\b(less|fewer|lower|smaller|under|below|before|earlier|prior to|"
            rf"{LESS_COMPARATIVES})( than)?\s*$"
        ),
        "<",
    ),
    (re.compile(r"\bat most\s*$|\bor less\b|\bor fewer\b|\buntil\s*$|\b(in|into|within) the top\s*$"), "<="),
)
_AGG_WORDS = {
    "sum": re.compile(r"\b(total|sum|combined|altogether|in all)\b"),
    "avg": re.compile(r"\b(average|mean)\b"),
    "max": re.compile(r"\b(highest|largest|maximum|max|most|greatest|biggest)\b"),
    "min": re.compile(r"\b(lowest|smallest|minimum|min|least|fewest)\b"),
}


@dataclass
class Candidate:
    """One reading with its features: a `Query`, or the plan of one of the hand-written question shapes."""

    query: Query | None
    features: dict[str, float] = field(default_factory=dict)
    plan: Plan | None = None  # set for a shape's plan (`query` is then None)
    shape: str = ""


@dataclass
class Reading:
    """All readings of one question, with what the reader found in it."""

    text: str
    form: str
    links: Links
    candidates: list[Candidate]
    triggers: list[str] = field(default_factory=list)


def numberish(col: Column) -> bool:
    """Numeric, or text whose shown values mostly start with a number ("1,234", "17 years")."""
    if col.numeric:
        return True
    if col.temporal:
        return False
    shown = [v for v, _ in col.values if v]
    if len(shown) < 2:
        return False
    hits = sum(bool(LEADING_NUMBER.match(v)) for v in shown)
    return hits >= 0.8 * len(shown)


# a number at the start of a text cell, after a currency sign if any ("1,234", "17 years", "£103.3 million")
LEADING_NUMBER = re.compile(r"^\s*[£$€¥₹]?\s*(-?\d[\d,]*(?:\.\d+)?)")


def _content(token_text: str, token_stem: str) -> bool:
    return (
        token_text not in _OPERATOR_WORDS
        and token_stem not in STOP_STEMS
        and token_text not in ORDINALS
        and len(token_text) > 1
    )


_IRREGULAR_PAST = frozenset(
    [
        "won",
        "lost",
        "held",
        "made",
        "played",
        "scored",
        "got",
        "had",
        "did",
        "took",
        "gave",
        "went",
        "came",
        "ran",
        "sang",
        "wrote",
        "drew",
        "beat",
        "led",
        "left",
        "began",
        "became",
        "built",
        "bought",
        "brought",
        "caught",
        "fought",
        "found",
        "kept",
        "met",
        "paid",
        "put",
        "read",
        "said",
        "sold",
        "sent",
        "set",
        "shot",
        "spent",
        "stood",
        "taught",
        "told",
        "thought",
    ]
)


def _verbish(text: str, t: Token) -> bool:
    """A word after a name that reads as its verb ("completed", "won", "died"), not as part of the name."""
    if text[t.start : t.start + 1].isupper():
        return False
    return t.text in _IRREGULAR_PAST or (t.text.endswith("ed") and len(t.text) >= 4)


def _code(text: str, t: Token) -> bool:
    """A code written in capitals in the question ("LAX", "GDP"), not a capitalized word."""
    word = text[t.start : t.end]
    return len(word) >= 2 and word.isupper()


def _entity_spans(text: str, links: Links, skip: set[int]) -> list[tuple[int, int, str, bool]]:
    """(start, end, text, required) runs of words that name nothing in the schema: values not in the profile.

    A run is required (its filter is never dropped) when it looks like a name: several words, quoted,
    capitalized in the question, or holding digits."""
    out: list[tuple[int, int, str, bool]] = []
    tokens = links.tokens
    i = 0
    while i < len(tokens):
        if i in skip or links.covered(i) or not _content(tokens[i].text, tokens[i].stem):
            i += 1
            continue
        j = i
        while j < len(tokens) and j not in skip and not links.covered(j):
            t = tokens[j]
            if t.text in ("of", "the", "de", "and", "&", "la", "le", "von", "van", "del") and j > i:
                nxt = j + 1
                if (
                    nxt < len(tokens)
                    and not links.covered(nxt)
                    and _content(tokens[nxt].text, tokens[nxt].stem)
                ):
                    j += 1
                    continue
                break
            if not _content(t.text, t.stem) and word_number(t.text) is None:
                break
            j += 1
        end = j
        while end - i > 1 and _verbish(text, tokens[end - 1]):
            end -= 1  # "pippa mann completed": the name, without the verb after it
        start = i
        codes = [k for k in range(i, end) if _code(text, tokens[k])]
        if codes and len(codes) < end - i and all(_code(text, t) or t.text.islower() for t in tokens[i:end]):
            start, end = codes[0], codes[-1] + 1  # "code LAX": the code, not the word naming it
        words = [t.text for t in tokens[start:end]]
        if all(w in _GENERIC_NOUNS or w in GENERIC for w in words) or all(
            word_number(w) is not None for w in words
        ):
            i = j
            continue
        raw = text[tokens[start].start : tokens[end - 1].end]
        capital = any(text[t.start : t.start + 1].isupper() for t in tokens[start:end] if t.start > 0)
        required = end - start > 1 or capital or any(ch.isdigit() for ch in raw)
        out.append((start, end, raw, required))
        i = j
    return out


def _number_range(col: Column) -> tuple[float, float] | None:
    """The range of a number-like column: the profile's, or that of the leading numbers of its values."""
    if col.numeric:
        return (col.min, col.max) if col.min is not None and col.max is not None else None
    found = [LEADING_NUMBER.match(v) for v, _ in col.values]
    numbers = [float(m.group(1).replace(",", "")) for m in found if m is not None]
    return (min(numbers), max(numbers)) if numbers else None


def _plausible_columns(columns: list[Column], value: float) -> list[Column]:
    """Number-like columns a bare comparison may be about, those whose range holds the number first (a
    threshold outside every value's range selects all rows or none), in table order."""

    def near_range(col: Column) -> bool:
        span = _number_range(col)
        if span is None:
            return False
        low, high = span
        slack = 0.5 * (high - low) + 1.0
        return low - slack <= value <= high + slack

    return sorted(columns, key=lambda c: (not near_range(c), c.position))


def _numeric_filters(text: str, links: Links, schema: Schema) -> list[tuple[Filter, int]]:
    """Comparisons ("more than 3 goals") and year-like equalities ("in 2004") on number-like columns."""
    low = text.lower()
    out: list[tuple[Filter, int]] = []
    numeric_cols = [c for c in schema.columns if numberish(c)]
    for i, tok in enumerate(links.tokens):
        first = _decade(tok.text)
        if first is not None:  # "in the 1990s": a column of years from 1990 to 1999
            for col in [c for c in numeric_cols if _col_kind(c) == "year"][:2]:
                out.append((Filter(col, "decade", float(first), (i, i + 1), verified=True), i))
    for n in links.numbers:
        tok = links.tokens[n.index]
        if re.match(r"\s*(am|pm|a\.m|p\.m|o'clock|h\b|hrs?\b|:)", low[tok.end : tok.end + 6]):
            continue  # a time of day, not a threshold on a measure (the shapes read clock times)
        before = low[: tok.start]
        op = next((o for pattern, o in _COMPARE if pattern.search(before[-24:])), None)
        after = low[tok.end : tok.end + 12]
        if op is None and re.match(r"\s*or (more|greater|higher)", after):
            op = ">="
        near = [c.column for c in links.columns if abs(c.start - n.index) <= 3 and c.column in numeric_cols]
        if op is not None:
            columns = near[:1] or _plausible_columns(numeric_cols, n.value)[:3]
            for col in columns:
                out.append((Filter(col, op, n.value, (n.index, n.index + 1), verified=bool(near)), n.index))
            if re.search(r"\b(after|before|since)\s*$", before) and columns:
                # "the race after 1987" may also be the row after the one of 1987 (a `next` reading)
                out.append(
                    (Filter(columns[0], "=", n.value, (n.index, n.index + 1), verified=bool(near)), n.index)
                )
            continue
        if near and not (1000 <= n.value <= 2100):  # "4 doors", "rooms: 3": the named column equals it
            col = near[0]
            inside = col.min is None or (col.min <= n.value <= (col.max if col.max is not None else n.value))
            out.append((Filter(col, "=", n.value, (n.index, n.index + 1), verified=inside), n.index))
            continue
        if n.value.is_integer() and 1000 <= n.value <= 2100:  # a year
            in_range = [
                c
                for c in numeric_cols
                if c.min is not None and c.max is not None and c.min <= n.value <= c.max
            ]
            for col in in_range[:1]:
                out.append((Filter(col, "=", n.value, (n.index, n.index + 1), verified=True), n.index))
            if not in_range:
                out.append((Filter(None, "match", tok.text, (n.index, n.index + 1)), n.index))
    return out


# words a rank word qualifies without ranking rows: "the lower quartile", "the upper bound"
_NOT_RANKING = re.compile(
    r"\b(lower|upper|higher|top|bottom)\s+(quartile|percentile|bound|limit|half|case)s?\b"
)


_BOUND = re.compile(r"\bat (least|most)\b")  # "at least 5" bounds a comparison; it ranks nothing


def triggers_of(low: str) -> list[str]:
    low = _BOUND.sub("at-bound", _NOT_RANKING.sub(r"\2", low))
    found = []
    for name, pattern in (
        ("desc", _DESC_WORDS),
        ("asc", _ASC_WORDS),
        ("firstw", _FIRST_WORDS),
        ("lastw", _LAST_WORDS),
        ("nextw", _NEXT_WORDS),
        ("prevw", _PREV_WORDS),
    ):
        if pattern.search(low):
            found.append(name)
    for agg, pattern in _AGG_WORDS.items():
        if pattern.search(low):
            found.append(f"agg_{agg}")
    for word in (
        "how many",
        "how much",
        "number of",
        " or ",
        "difference",
        " than ",
        "total",
        "times",
        "same",
        "different",
        "only",
        "not ",
        "each",
        "both",
        "consecutive",
        "significant",
        "share",
        "rate",
        "percent",
        " per ",
        " by ",
        "missing",
        "correlat",
        "outlier",
        "average",
        "median",
        "distinct",
        "unique",
        "common",
        "frequent",
        "list ",
        "month",
        "week",
        "hour",
        "trend",
        "over time",
    ):
        if word in f" {low} ":
            found.append("w_" + word.strip())
    if re.search(r"\b(is|are|was|were|does|do|did)\b.*\b(more|less|higher|lower|greater|bigger|than)\b", low):
        found.append("yesno_comparison")
    return found


def base_features(form: str, triggers: list[str], links: Links | None = None) -> dict[str, float]:
    """Features every reading of a question shares: its form, trigger words, length, what it names."""
    base: dict[str, float] = {f"form={form}": 1.0}
    for t in triggers:
        base[f"trig={t}"] = 1.0
    if links is not None:
        words = len(links.tokens)
        base["words<=6" if words <= 6 else "words<=10" if words <= 10 else "words>10"] = 1.0
        base[f"named_columns={min(len(links.columns), 3)}"] = 1.0
        base[f"named_values={min(len(links.values), 2)}"] = 1.0
    return base


def shape_candidate(
    text: str, plan: Plan, shape: str, unexplained: int, guesses: int, links: Links | None = None
) -> Candidate:
    """A hand-written shape's plan as one more reading, described by the same kind of features."""
    form = question_form(text)
    triggers = triggers_of(text.lower())
    f = base_features(form, triggers, links)
    f[f"shape_unexplained={min(unexplained, 3)}"] = 1.0
    f["op=shape"] = 1.0
    f[f"shape={shape}"] = 1.0
    f[f"shape={shape}&form={form}"] = 1.0
    for t in triggers:
        f[f"op=shape&trig={t}"] = 1.0
    f["shape_unexplained"] = float(min(unexplained, 4))
    if guesses:
        f["shape_guessed_filter"] = 1.0
    return Candidate(None, f, plan=plan, shape=shape)


def _col_kind(col: Column | None) -> str:
    if col is None:
        return "none"
    if col.temporal:
        return "time"
    if col.numeric:
        if col.min is not None and col.max is not None and col.min >= 1000 and col.max <= 2100:
            return "year"
        return "num"
    return "numtext" if numberish(col) else "text"


def read(text: str, schema: Schema, links: Links | None = None) -> Reading:
    """Every plausible reading of `text` over `schema`, with features."""
    links = links or link(text, schema)
    low = text.lower()
    form = question_form(text)
    triggers = _outside_headers(triggers_of(low), low, links)

    # values the profile knows, then numbers, then names it does not know
    value_filters = [
        Filter(
            v.column,
            ("!=" if negated(links.tokens, v.start) else "=") if not v.element else "match",
            v.value,
            (v.start, v.end),
            verified=not v.element,
        )
        for v in links.values
    ]
    value_filters += months.filters(text, links, schema) + places.filters(links, schema)
    k_index, k = _ranking_size(links)
    numeric = [(f, i) for f, i in _numeric_filters(text, links, schema) if i != k_index]
    skip = {i for f, i in numeric} | ({k_index} if k else set())
    skip |= {i for f, i in numeric} | {i for f in value_filters for i in range(*f.span)}
    skip |= {n.index for n in links.numbers}
    spans = _entity_spans(text, links, skip)
    entity = [(Filter(None, "match", raw, (s, e)), required) for s, e, raw, required in spans]
    required = value_filters + [f for f, r in entity if r]
    optional = [f for f, r in entity if not r][:2]
    numeric_choices = _group_numeric(numeric)

    # columns named in the question, best first; then every column as an unnamed answer
    named: dict[str, float] = {}
    for lk in links.columns:
        for col, score in lk.candidates[:2]:
            named[col.name] = max(named.get(col.name, 0.0), score)
    # where the question's head noun and its ranked measure are: right after the wh-word, after "most"
    tokens = links.tokens
    wh = next(
        (i for i, t in enumerate(tokens) if t.text in ("what", "which", "who", "whom", "whose", "when")), -1
    )
    sup = next(
        (
            i
            for i, t in enumerate(tokens)
            if (_DESC_WORDS.fullmatch(t.text) or _ASC_WORDS.fullmatch(t.text))
            and not (i > 0 and tokens[i - 1].text == "at")
        ),
        -1,
    )
    head: set[str] = set()
    after_sup: set[str] = set()
    for lk in links.columns:
        names = {col.name for col, _ in lk.candidates[:2]}
        if wh >= 0 and wh < lk.start <= wh + 3:
            head |= names
        if sup >= 0 and sup < lk.start <= sup + 3:
            after_sup |= names
    filter_cols = {f.column.name for f in value_filters if f.column is not None}
    answers = sorted(
        schema.columns,
        key=lambda c: (-(named.get(c.name, 0.0)), c.name in filter_cols, c.position),
    )[: MAX_ANSWER_COLUMNS + len(filter_cols)]
    measures = sorted(
        (c for c in schema.columns if numberish(c)),
        key=lambda c: (-(named.get(c.name, 0.0)), c.position),
    )[:MAX_MEASURES]

    base = base_features(form, triggers, links)
    candidates: list[Candidate] = []

    def add(q: Query, dropped: int) -> None:
        f = dict(base)
        f[f"op={q.op}"] = 1.0
        f[f"op={q.op}&form={form}"] = 1.0
        for t in triggers:
            f[f"op={q.op}&trig={t}"] = 1.0
        if dropped:
            f["dropped_words"] = float(dropped)
        used_cols = {c.name for c in (q.answer, q.measure) if c is not None}
        used_cols |= {fl.column.name for fl in q.filters if fl.column is not None}
        for col, role in ((q.answer, "a"), (q.measure, "m")):
            if col is None:
                continue
            score = named.get(col.name, 0.0)
            f[f"{role}_named"] = 1.0 if score > 0 else 0.0
            f[f"{role}_named_score"] = min(score, 4.0) / 4.0
            f[f"{role}_kind={_col_kind(col)}&form={form}"] = 1.0
            f[f"{role}_kind={_col_kind(col)}&op={q.op}"] = 1.0
            if col.position == 0:
                f[f"{role}_first_column"] = 1.0
            if col.name in filter_cols:
                f[f"{role}_is_filter_column"] = 1.0
            if col.name in head:
                f[f"{role}_is_head"] = 1.0
            if col.name in after_sup:
                f[f"{role}_after_superlative"] = 1.0
            if col.distinct and schema.row_count and col.distinct >= 0.9 * schema.row_count:
                f[f"{role}_unique"] = 1.0
            # how a column's role fits depends on the operation ("the row after X" answers in X's column)
            for key in [k for k in f if k.startswith(f"{role}_") and "=" not in k and f[k] == 1.0]:
                f[f"{key}&op={q.op}"] = 1.0
        if q.answer is not None and q.measure is not None and q.answer.name == q.measure.name:
            f["a_is_m"] = 1.0
        unused = [n for n in named if n not in used_cols and named[n] >= 1.5]
        f["named_unused"] = float(len(unused))
        nf = q.filters + (q.pair or ())
        f["filters_verified"] = float(sum(fl.verified for fl in nf))
        f["filters_unverified"] = float(sum(not fl.verified for fl in nf))
        f["filters_numeric"] = float(sum(not isinstance(fl.value, str) for fl in nf))
        if any(fl.op == "!=" for fl in nf):
            f["filters_negated"] = 1.0
        if any(fl.op in ("<", ">", "<=", ">=") for fl in nf):
            f[f"filter_compares&op={q.op}"] = 1.0
        if not nf:
            f["no_filters"] = 1.0
            f[f"no_filters&op={q.op}"] = 1.0
        matched = matched_rows(q.filters)
        if matched is not None:
            # what the profile says the filters select: a lookup wants one row, a count more than one
            size = "1" if matched == 1 else "2-3" if matched <= 3 else "4+"
            f[f"matched_rows={size}&op={q.op}"] = 1.0
            f[f"matched_rows={size}&form={form}"] = 1.0
        if k and q.op in ("argmax", "argmin", "group_argmax", "group_argmin"):
            f[f"ranking_size={'kept' if q.limit else 'ignored'}"] = 1.0
        if q.agg:
            f[f"group_agg={q.agg}"] = 1.0
        candidates.append(Candidate(q, f))

    filter_sets: list[tuple[tuple[Filter, ...], int]] = []
    for keep in product((True, False), repeat=len(optional)):
        chosen = [f for f, k in zip(optional, keep, strict=True) if k]
        dropped = sum(f.span[1] - f.span[0] for f, k in zip(optional, keep, strict=True) if not k)
        for nums in numeric_choices:
            filter_sets.append((_distinct(required + chosen + nums), dropped))

    for filters, dropped in filter_sets:
        fcols = {f.column.name for f in filters if f.column is not None}
        # each operation needs a word that asks for it (a small trigger lexicon, as in grammar-based parsers)
        counting = form == "how_many" or "w_number of" in triggers or "w_how many" in triggers
        aggs = [a for a in ("sum", "avg", "max", "min") if f"agg_{a}" in triggers]
        ranks = (["argmax"] if "desc" in triggers else []) + (["argmin"] if "asc" in triggers else [])
        ends = (["first"] if "firstw" in triggers else []) + (["last"] if "lastw" in triggers else [])
        steps = (["next"] if "nextw" in triggers else []) + (["previous"] if "prevw" in triggers else [])
        if counting:
            add(Query("count", filters=filters), dropped)
        for m in measures:
            for agg in aggs:
                add(Query(agg, measure=m, filters=filters), dropped)
        for a in answers:
            if a.name in fcols and not filters:
                continue
            for op in ["values", *ends]:
                add(Query(op, answer=a, filters=filters), dropped)
            if counting and named.get(a.name, 0.0) > 0:
                add(Query("count_distinct", answer=a, filters=filters), dropped)
            for m in measures:
                if m.name != a.name:
                    for op in ranks:
                        add(Query(op, answer=a, measure=m, filters=filters), dropped)
                        if k:
                            add(Query(op, answer=a, measure=m, filters=filters, limit=k), dropped)
            if ranks and _groups(a, schema) and a.name not in fcols:
                # "which region has the highest total population": the groups ranked by an aggregate
                for op in ranks:
                    group_op = "group_" + op
                    for agg in [g for g in aggs if g in ("sum", "avg")]:
                        for m in measures:
                            add(Query(group_op, a, m, filters, limit=k, agg=agg), dropped)
                    if not aggs:
                        add(Query(group_op, a, None, filters, limit=k, agg="count"), dropped)
            if filters:
                for op in steps:
                    add(Query(op, answer=a, filters=filters), dropped)

    # two named values: which of them, or the difference between them
    pairable = [f for f in value_filters if f.op in ("=", "match") and isinstance(f.value, str)]
    pairable += [f for f, _ in entity]
    if len(pairable) == 2:
        x, y = sorted(pairable, key=lambda fl: fl.span)
        for m in measures:
            for a in answers[:3]:
                if a.name == m.name:
                    continue
                add(Query("pick_max", answer=a, measure=m, pair=(x, y)), 0)
                add(Query("pick_min", answer=a, measure=m, pair=(x, y)), 0)
            add(Query("difference", answer=answers[0], measure=m, pair=(x, y)), 0)
        # "which country had more competitions, Germany or Greece?": the one with more rows
        add(Query("pick_max", pair=(x, y), agg="count"), 0)
        add(Query("pick_min", pair=(x, y), agg="count"), 0)
    return Reading(text, form, links, candidates, triggers)


def _outside_headers(triggers: list[str], low: str, links: Links) -> list[str]:
    """The triggers less an aggregate whose every word is part of a column's name ("the average maximum
    temperature" with `temp_max`: an average, not a maximum)."""
    spans = [
        (links.tokens[c.start].start, links.tokens[c.end - 1].end)
        for c in links.columns
        if c.end - c.start >= 2
    ]
    kept = []
    for trigger in triggers:
        agg = trigger.removeprefix("agg_")
        if trigger.startswith("agg_") and agg in _AGG_WORDS:
            hits = [m.start() for m in _AGG_WORDS[agg].finditer(low)]
            if hits and all(any(a <= h < b for a, b in spans) for h in hits):
                continue
        kept.append(trigger)
    return kept


def _decade(text: str) -> int | None:
    m = re.fullmatch(r"(1[5-9]\d0|20\d0)'?s", text)
    return int(m.group(1)) if m else None


def _ranking_size(links: Links) -> tuple[int, int | None]:
    """(token index, k) of "the 3 largest", "top 5 states", "which 3 countries" (k from 2 to 50), else
    (-1, None)."""
    tokens = links.tokens
    for n in links.numbers:
        if not n.value.is_integer() or not 2 <= n.value <= 50 or n.percent:
            continue
        before = tokens[n.index - 1].text if n.index > 0 else ""
        after_link = links.column_at(n.index + 1)
        names_items = (  # "3 states", "3 years"; not "4 doors" (a number of a numeric column is its value)
            after_link is not None
            and after_link.start == n.index + 1
            and (
                (after_link.column.textual and not numberish(after_link.column))
                or _col_kind(after_link.column) == "year"
            )
        )
        if n.index >= 2 and tokens[n.index - 2].text == "at" and before in ("least", "most"):
            continue  # "at least 5 episodes" bounds a comparison
        if before in ("than", "over", "under", "above", "below"):
            continue  # "more than 3 goals"
        if before in ("top", "bottom", "first", "last", "which", "what", "list") or names_items:
            return n.index, int(n.value)
    return -1, None


def _groups(col: Column, schema: Schema) -> bool:
    """Whether a column's values group rows (a category, or a year, repeated across rows; not a name per
    row)."""
    kind_ok = (col.textual and not col.listlike) or _col_kind(col) == "year"
    return kind_ok and 2 <= col.distinct < 0.5 * max(schema.row_count, 1)


def matched_rows(filters: tuple[Filter, ...]) -> int | None:
    """How many rows the profile says the `=` filters select at most (None when it cannot tell)."""
    counts = []
    for fl in filters:
        if fl.op != "=" or fl.column is None or not fl.verified or not isinstance(fl.value, str):
            continue
        wanted = fl.value.casefold()
        hit = [n for v, n in fl.column.values if v.casefold() == wanted]
        if hit:
            counts.append(sum(hit))
    return min(counts) if counts else None


def _distinct(filters: list[Filter]) -> tuple[Filter, ...]:
    """The filters without repeats (two words may ask for the same condition: "finished in 3rd place")."""
    seen: dict[tuple[str, str, str | float], Filter] = {}
    for f in filters:
        seen.setdefault((f.column.name if f.column else "", f.op, f.value), f)
    return tuple(seen.values())


def _group_numeric(numeric: list[tuple[Filter, int]]) -> list[list[Filter]]:
    """One choice of reading per number: every number's first, then every number's second, … (a number
    with fewer readings keeps its last), at most four choices."""
    by_index: dict[int, list[Filter]] = {}
    for f, i in numeric:
        by_index.setdefault(i, []).append(f)
    if not by_index:
        return [[]]
    choices: list[list[Filter]] = []
    for k in range(min(4, max(len(fs) for fs in by_index.values()))):
        choice = [fs[min(k, len(fs) - 1)] for fs in by_index.values()]
        if choice not in choices:
            choices.append(choice)
    return choices
