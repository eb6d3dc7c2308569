"""The words the analyst knows: synonyms, abbreviations and the vocabulary of aggregates and comparisons.

Everything here is general language (no dataset's columns): a word in a question links to a column when it is
the column's word, a form of it, a synonym, or an expansion of an abbreviation in the header.
"""

from __future__ import annotations

from services.orchestrator.builtin.text import split_name, stem

# Groups of words that name the same thing; a question word in a group links to a header word in it.
_SYNONYM_GROUPS: list[list[str]] = [
    ["age", "old", "young", "aged", "elderly", "teenager", "lived"],
    ["price", "cost", "charge", "expensive", "cheap", "costly", "paid", "pay", "spend", "spent", "money", "fee"],
    ["income", "salary", "wage", "earning", "earn", "pay", "compensation"],
    ["amount", "money", "spend", "spent", "paid"],
    ["gender", "sex"],
    ["region", "location", "area", "place", "zone"],
    ["country", "nation"],
    ["city", "town"],
    ["distance", "mile", "km", "kilometer", "far", "commute"],
    ["satisfaction", "satisfied", "happy", "happiness"],
    ["child", "kid", "childless", "children"],
    ["smoker", "smoke", "smoking", "tobacco"],
    ["department", "dept", "division"],
    ["employee", "staff", "worker", "personnel"],
    ["customer", "client", "buyer"],
    ["product", "item"],
    ["quantity", "qty", "unit", "volume"],
    ["revenue", "sale", "turnover"],
    ["profit", "margin", "earnings"],
    ["chance", "likely", "probability", "likelihood", "shot"],
    ["recommendation", "endorsement", "reference"],
    ["purpose", "motivation", "statement"],
    ["research", "researcher"],
    ["rank", "ranked", "ranking", "position", "place"],
    ["fraud", "fraudulent", "scam"],
    ["status", "outcome", "result"],
    ["device", "platform"],
    ["network", "connection"],
    ["bank", "lender"],
    ["merchant", "store", "shop", "vendor", "seller"],
    ["label", "labeled", "labelled", "tag"],
    ["creator", "author", "uploader", "contributor"],
    ["brand", "make"],
    ["category", "categories"],
        ["tier", "level"],
    ["university", "college", "school"],
    ["overtime", "extra"],
    ["weight", "heavy", "light"],
    ["height", "tall", "short"],
    ["duration", "long", "length"],
    ["rating", "rate", "rated", "grade", "score"],
    ["travel", "trip"],
    ["restaurant", "eat", "dining", "meal"],
    ["grocery", "groceries", "food"],
    ["rent", "renting", "tenant"],
]

# Abbreviations in headers and their spelled-out words (both directions link).
ABBREVIATIONS: dict[str, list[str]] = {
    "gre": ["graduate", "record", "exam"],
    "toefl": ["english", "test"],
    "ielts": ["english", "test"],
    "sop": ["stated", "purpose"],
    "lor": ["letter", "recommendation"],
    "cgpa": ["grade", "point", "average"],
    "gpa": ["grade", "point", "average"],
    "bmi": ["body", "mass", "index"],
    "dept": ["department"],
    "hr": ["human", "resources"],
    "qty": ["quantity"],
    "amt": ["amount"],
    "num": ["number"],
    "pct": ["percent"],
    "yr": ["year"],
    "yrs": ["year"],
    "dob": ["date", "birth"],
    "avg": ["average"],
    "inr": ["rupee"],
    "usd": ["dollar"],
    "eur": ["euro"],
    "txn": ["transaction"],
    "qtr": ["quarter"],
    "emp": ["employee"],
    "desc": ["description"],
    "addr": ["address"],
    "tel": ["phone"],
    "cat": ["category"],
    "en": ["english"],
}

# Header words that say little alone: a column is not linked by one of these words without another.
GENERIC = {
    stem(w)
    for w in (
        "index", "score", "rate", "rating", "level", "number", "count", "value", "total", "name", "id", "type",
        "code", "year", "time", "date", "amount", "percent", "status", "no", "of", "the", "and", "in", "per",
        "plus", "unnamed", "flag", "is", "group", "day", "hour", "month", "week", "en", "tag", "tags", "last", "grade", "point", "average",
        "mean", "score", "unique", "first", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    )
}

STOPWORDS = {
    "a", "an", "the", "of", "in", "on", "for", "to", "by", "with", "and", "or", "at", "from", "is", "are",
    "be", "was", "were", "what", "which", "who", "whom", "whose", "how", "many", "much", "do", "does", "did",
    "there", "that", "this", "these", "those", "it", "its", "our", "my", "we", "i", "you", "your", "their",
    "they", "have", "has", "had", "any", "all", "each", "every", "some", "than", "as", "into", "s", "per",
    "list", "show", "give", "tell", "me", "get", "find", "value", "values", "dataset", "data", "table",
    "database", "entries", "entry", "rows", "row", "record", "records", "one", "someone", "anyone", "else",
    "associated", "given", "considered", "can", "could", "would", "should", "will", "be", "been", "being",
    "answer", "single", "if", "them", "he", "she", "his", "her", "where", "when", "not", "no", "yes",
}
STOP_STEMS = {stem(w) for w in STOPWORDS}

_SYN_INDEX: dict[str, set[str]] = {}
for _group in _SYNONYM_GROUPS:
    _stems = {stem(w) for w in _group}
    for _s in _stems:
        _SYN_INDEX.setdefault(_s, set()).update(_stems)


def synonyms(word_stem: str) -> set[str]:
    """Stems that may stand for `word_stem` (itself included)."""
    return _SYN_INDEX.get(word_stem, set()) | {word_stem}


def expansions(header_word: str) -> list[str]:
    """The spelled-out stems of an abbreviation, or []."""
    return [stem(w) for w in ABBREVIATIONS.get(header_word.lower(), [])]


def siblings(header_word: str) -> list[str]:
    """Other abbreviations spelled out the same way ("cgpa" → "gpa")."""
    spelled = ABBREVIATIONS.get(header_word.lower())
    return [k for k, v in ABBREVIATIONS.items() if spelled and v == spelled and k != header_word.lower()]


def abbreviation_of(words: list[str]) -> str:
    """Initials of a phrase ("Human Resources" → "hr")."""
    return "".join(w[0] for w in words if w and w.isalpha() and w not in ("and", "of", "the", "&"))


__all__ = ["ABBREVIATIONS", "GENERIC", "STOPWORDS", "STOP_STEMS", "abbreviation_of", "expansions", "split_name",
           "synonyms"]
