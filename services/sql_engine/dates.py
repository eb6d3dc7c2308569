"""Finds text columns that hold dates written in several formats and says how to turn them into dates.

DuckDB's CSV sniffer recognizes one date format per column; people's files mix `2012/01/01`,
`Jan 1 2000` and ISO timestamps in one column. A text column becomes DATE (or TIMESTAMP when any value has
a time of day) only when every non-empty value parses, checked on the first rows, then on a sample, then on
all rows.
"""

from __future__ import annotations

import re

import duckdb

from services.sql_engine.connection import quote_ident

FORMATS = (
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y.%m.%d",
    "%b %d %Y",
    "%b %d, %Y",
    "%B %d %Y",
    "%B %d, %Y",
    "%d %b %Y",
    "%d %B %Y",
    "%d-%b-%Y",
    "%d-%b-%y",
    "%a %b %d %Y",
    "%b %d %Y %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y",
    "%Y%m%d",
)
FIRST_ROWS = 50  # most text columns are refused here: parsing with every format is slow (~20 us a value)
SAMPLE_ROWS = 2_000
BATCH_COLUMNS = 100  # columns checked per statement
_DATE_LIKE = re.compile(r".{6,40}", re.S)


def parse_expression(ref: str) -> str:
    """SQL that turns text `ref` into a TIMESTAMP (NULL when no format fits)."""
    formats = ", ".join("'" + f + "'" for f in FORMATS)
    text = f"trim({ref})"
    return f"coalesce(try_cast({text} AS TIMESTAMP), try_strptime({text}, [{formats}]))"


def date_conversions(
    con: duckdb.DuckDBPyConnection, relation: str, columns: list[tuple[str, str]]
) -> dict[str, str]:
    """{column: 'DATE' | 'TIMESTAMP'} for the text columns whose every value is a date."""
    text = [name for name, type_name in columns if type_name == "VARCHAR"]
    if not text:
        return {}
    candidates = _plausible(con, relation, text)
    for limit in (FIRST_ROWS, SAMPLE_ROWS):
        if not candidates:
            return {}
        candidates = _fully_parsed(con, f"(SELECT * FROM {relation} LIMIT {limit})", candidates)
    confirmed = _fully_parsed(con, relation, candidates)
    conversions: dict[str, str] = {}
    for batch in _batches(confirmed):
        parsed = [parse_expression(quote_ident(n)) for n in batch]
        checks = ", ".join(f"bool_and({p} = date_trunc('day', {p}))" for p in parsed)
        midnight = con.execute(f"SELECT {checks} FROM {relation}").fetchall()[0]
        for name, whole_days in zip(batch, midnight, strict=True):
            conversions[name] = "DATE" if whole_days else "TIMESTAMP"
    return conversions


def _batches(names: list[str]) -> list[list[str]]:
    return [names[i : i + BATCH_COLUMNS] for i in range(0, len(names), BATCH_COLUMNS)]


def _plausible(con: duckdb.DuckDBPyConnection, relation: str, names: list[str]) -> list[str]:
    """The columns whose first non-empty values could be dates at all (6 to 40 characters, 3 digits or
    more), judged in Python on the first rows: parsing with every format costs ~20 us a value in DuckDB,
    and a statement of thousands of such expressions takes minutes to bind (10,000 text columns)."""
    if not names:
        return []
    rendered = ", ".join(f"{quote_ident(n)} AS c{k}" for k, n in enumerate(names))
    table = con.sql(f"SELECT {rendered} FROM {relation} LIMIT {FIRST_ROWS}").to_arrow_table()
    kept = []
    for name, column in zip(names, table.columns, strict=True):
        values = [v.strip() for v in column.to_pylist() if v is not None and v.strip()]
        if values and all(_DATE_LIKE.fullmatch(v) and sum(ch.isdigit() for ch in v) >= 3 for v in values):
            kept.append(name)
    return kept


def _fully_parsed(con: duckdb.DuckDBPyConnection, relation: str, names: list[str]) -> list[str]:
    """The columns among `names` that have values and whose values all parse as dates."""
    return [name for batch in _batches(names) for name in _fully_parsed_batch(con, relation, batch)]


def _fully_parsed_batch(con: duckdb.DuckDBPyConnection, relation: str, names: list[str]) -> list[str]:
    exprs = []
    for name in names:
        ref = quote_ident(name)
        present = f"count(nullif(trim({ref}), ''))"
        exprs.append(
            f"{present} > 0 AND {present} = count({parse_expression(ref)})"
            # A column of bare numbers (years, ids) parses as %Y%m%d only by accident.
            f" AND NOT bool_and(regexp_full_match(trim({ref}), '[0-9]+'))"
        )
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {relation}").fetchall()[0]
    return [name for name, ok in zip(names, row, strict=True) if ok]
