"""What the analyst knows about each column: kind, words, known values and ranges, from the profile."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from common.duckdb_types import is_integral, is_numeric, is_temporal
from insightx.v1 import sql_engine_pb2 as pb
from services.orchestrator.builtin.lexicon import GENERIC, STOP_STEMS, expansions, siblings
from services.orchestrator.builtin.text import split_name, stem
from services.orchestrator.plan import DatasetContext

_DATE_WORDS = {"date", "time", "timestamp", "datetime", "dt", "created", "updated", "day", "when", "at", "on"}
_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?")
_KEY_WORDS = {"id", "no", "num", "number", "code", "key", "serial", "zip", "pin", "phone", "uuid"}
_POSITIVE = {"yes", "y", "true", "1", "t", "positive"}
_NEGATIVE = {"no", "n", "false", "0", "f", "negative"}


def quote(name: str) -> str:
    """A SQL identifier in double quotes, exactly as uploaded."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Column:
    """One column as the analyst sees it."""

    name: str
    type: str
    position: int
    role: int = pb.SEMANTIC_ROLE_UNSPECIFIED
    words: list[str] = field(default_factory=list)
    phrases: list[list[str]] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)
    distinct: int = 0
    nulls: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    listlike: bool = False

    @property
    def numeric(self) -> bool:
        return is_numeric(self.type)

    @property
    def integral(self) -> bool:
        return is_integral(self.type)

    @property
    def temporal(self) -> bool:
        return is_temporal(self.type)

    @property
    def textual(self) -> bool:
        return not self.numeric and not self.temporal

    @property
    def timelike(self) -> bool:
        """A date column, or text that holds dates under a date-like name (kept as text at import)."""
        if self.temporal:
            return True
        shown = [v for v, _ in self.values]
        return (
            self.textual
            and any(w in _DATE_WORDS for w in split_name(self.name))
            and bool(shown)
            and all(_DATE_TEXT.match(v) for v in shown)
        )

    @property
    def time_sql(self) -> str:
        """The column as a timestamp in SQL."""
        return self.sql if self.temporal else f"TRY_CAST({self.sql} AS TIMESTAMP)"

    @property
    def sql(self) -> str:
        return quote(self.name)

    @property
    def flag_values(self) -> tuple[str, str] | None:
        """(positive, negative) literals when the column is two-valued like yes/no or 0/1."""
        if self.type.upper() == "BOOLEAN":
            return ("true", "false")
        names = {v.lower(): v for v, _ in self.values}
        if self.numeric and self.min == 0 and self.max == 1 and self.distinct <= 2:
            return ("1", "0")
        pos = [names[k] for k in names if k in _POSITIVE]
        neg = [names[k] for k in names if k in _NEGATIVE]
        if pos and neg and len(names) <= 3:
            return (literal(pos[0]), literal(neg[0]))
        return None

    @property
    def measure(self) -> bool:
        """Numeric and worth aggregating (not an identifier)."""
        if not self.numeric:
            return False
        key_like = any(w in _KEY_WORDS for w in split_name(self.name)) or self.name.lower().endswith("id")
        return not (key_like and self.role == pb.SEMANTIC_ROLE_IDENTIFIER) and not (
            key_like and self.integral
        )

    @property
    def content_words(self) -> list[str]:
        return [w for w in self.words if w not in STOP_STEMS]

    @property
    def specific_words(self) -> list[str]:
        return [w for w in self.content_words if w not in GENERIC]


@dataclass
class Schema:
    """The dataset's columns plus the table to query."""

    table: str
    row_count: int
    columns: list[Column]

    @property
    def from_sql(self) -> str:
        return quote(self.table)

    def by_name(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def _phrases(words: list[str]) -> list[list[str]]:
    """The header's stems, plus its abbreviations spelled out."""
    base = [stem(w) for w in words]
    phrases = [base]
    for i, word in enumerate(words):
        spelled = expansions(word)
        if spelled:
            phrases.append(base[:i] + spelled + base[i + 1 :])
        for other in siblings(word):
            phrases.append([*base[:i], other, *base[i + 1 :]])
    alpha = [w for w in words if w.isalpha()]
    if 1 < len(alpha) <= 3:
        phrases.append(["=" + "".join(alpha)])  # "OverTime" asked as "overtime" (exact word only)
    return phrases


def _listlike(values: list[tuple[str, int]]) -> bool:
    shown = [v for v, _ in values if v]
    return bool(shown) and sum(v.startswith("[") and v.endswith("]") for v in shown) >= max(1, len(shown) - 1)


@lru_cache(maxsize=64)
def _cached(key: tuple[str, str, int], blob: bytes, columns: tuple[tuple[str, str], ...]) -> Schema:
    profile = pb.DatasetProfile.FromString(blob)
    by_name = {c.name: c for c in profile.columns}
    cols: list[Column] = []
    for position, (name, type_name) in enumerate(columns):
        words = split_name(name)
        col = Column(name=name, type=type_name, position=position, words=[stem(w) for w in words])
        col.phrases = _phrases(words)
        prof = by_name.get(name)
        if prof is not None:
            col.role = prof.role
            col.values = [(v.value, int(v.count)) for v in prof.top_values]
            col.distinct, col.nulls = int(prof.distinct_count), int(prof.null_count)
            if prof.HasField("min"):
                col.min, col.max, col.mean = prof.min, prof.max, prof.mean
            col.listlike = col.textual and _listlike(col.values)
        cols.append(col)
    return Schema(table=key[0], row_count=key[2], columns=cols)


def schema_of(dataset: DatasetContext) -> Schema:
    """The analyst's view of a dataset (cached per dataset version)."""
    key = (dataset.table, dataset.dataset_hash or dataset.session_id, dataset.row_count)
    return _cached(key, dataset.profile.SerializeToString(deterministic=True), tuple(dataset.columns))
