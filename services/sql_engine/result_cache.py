"""A bounded cache of query results keyed by (dataset hash, normalized SQL, row cap).

Datasets are immutable and identified by their hash, so a result never goes stale; the cache is bounded by
entry count and by bytes, and results larger than a share of the budget are not kept at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

import duckdb

V = TypeVar("V")


def normalize_sql(sql: str) -> str:
    """The SQL as DuckDB's tokenizer sees it: comments dropped, whitespace collapsed, keywords upper-cased.

    String literals and quoted identifiers keep their exact text, so `'a  b'` and `'a b'` stay different.
    """
    text = sql.strip().rstrip(";").strip()
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error:
        return text
    parts: list[str] = []
    for index, (start, kind) in enumerate(tokens):
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(text)
        piece = text[start:end].strip()
        if kind == duckdb.token_type.comment or not piece:
            continue
        if kind == duckdb.token_type.keyword:
            piece = piece.upper()
        parts.append(piece)
    return " ".join(parts)


class ResultCache(Generic[V]):
    """Least-recently-used results, at most `max_entries` and `max_bytes` in total."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str, int], tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[str, str, int]) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: tuple[str, str, int], value: V, size: int) -> bool:
        """Keeps `value` unless it is too big to be worth it; returns whether it was kept."""
        if self.max_entries <= 0 or size > self.max_bytes // 4:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return True
