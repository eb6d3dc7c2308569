"""Finds text columns that hold dates written in several formats and says how to turn them into dates.

DuckDB's CSV sniffer recognizes one date format per column; people's files mix `2012/01/01`,
`Jan 1 2000` and ISO timestamps in one column. A text column becomes DATE (or TIMESTAMP when any value has
a time of day) only when every non-empty value parses, checked on the first rows, then on a sample, then on
all rows.
"""

from __future__ import annotations

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
    candidates = text
    for limit in (FIRST_ROWS, SAMPLE_ROWS):
        candidates = _fully_parsed(con, f"(SELECT * FROM {relation} LIMIT {limit})", candidates)
        if not candidates:
            return {}
    confirmed = _fully_parsed(con, relation, candidates)
    if not confirmed:
        return {}
    parsed = [parse_expression(quote_ident(n)) for n in confirmed]
    checks = ", ".join(f"bool_and({p} = date_trunc('day', {p}))" for p in parsed)
    midnight = con.execute(f"SELECT {checks} FROM {relation}").fetchall()[0]
    return {
        name: ("DATE" if whole_days else "TIMESTAMP")
        for name, whole_days in zip(confirmed, midnight, strict=True)
    }


def _fully_parsed(con: duckdb.DuckDBPyConnection, relation: str, names: list[str]) -> list[str]:
    """The columns among `names` that have values and whose values all parse as dates."""
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
