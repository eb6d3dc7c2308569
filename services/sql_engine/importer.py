"""Turns an uploaded file into the session's Parquet, using DuckDB's own readers (openpyxl for .xlsx).

The pipeline: sniff the format and encoding from the head; read with DuckDB straight into a Parquet file
(one pass over the upload); turn text columns holding mixed-format dates into DATE/TIMESTAMP (a rewrite
of the Parquet only when there is such a column); hash the result. Any failure raises InvalidInput with
a message a person can act on and deletes what was written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from common.errors import InvalidInput
from services.sql_engine.connection import quote_ident, quote_literal
from services.sql_engine.dates import date_conversions, parse_expression
from services.sql_engine.formats import READABLE, Sniffed, likely_delimiter, ragged_row, read_head, sniff
from services.sql_engine.xlsx import read_sheet

_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class ImportedTable:
    """The Parquet written for an upload, with what was learned on the way."""

    parquet: Path
    table: str
    row_count: int
    columns: list[tuple[str, str]]
    source_format: str
    sha256: str


def table_name_for(filename: str) -> str:
    """The SQL table name: the file stem, lower-cased, runs of other characters turned into '_'."""
    stem = Path(filename or "data").stem
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", stem).strip("_").lower() or "data"
    if name[0].isdigit():
        name = f"t_{name}"
    return name[:63]


def sniff_format(raw: Path, filename: str) -> str:
    """The format name of an upload (kept for callers of the first version)."""
    return sniff(raw, filename).format


def import_file(
    raw: Path, filename: str, out_dir: Path, *, sheet: str = "", memory_limit: str = "4GB", threads: int = 2
) -> ImportedTable:
    """Converts `raw` to `out_dir/raw.parquet`; raises InvalidInput with a reason on a bad file."""
    sniffed = sniff(raw, filename)
    out = out_dir / "raw.parquet"
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        con.execute(f"SET memory_limit={quote_literal(memory_limit)}")
        con.execute(f"SET threads={int(threads)}")
        con.execute(f"SET temp_directory={quote_literal(str(out_dir / 'spill'))}")
        con.execute("SET preserve_insertion_order=true")
        _write_parquet(con, raw, filename, sniffed, sheet, out)
        columns = _describe(con, out)
        rows = con.execute(f"SELECT count(*) FROM read_parquet({quote_literal(str(out))})").fetchall()[0][0]
        if not columns or rows == 0:
            raise InvalidInput("EMPTY_TABLE", f"'{filename}' holds no rows of data, only a header at most.")
        conversions = date_conversions(con, f"read_parquet({quote_literal(str(out))})", columns)
        if conversions:
            _convert_dates(con, out, conversions)
            columns = _describe(con, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return ImportedTable(out, table_name_for(filename), int(rows), columns, sniffed.format, _sha256(out))


def _write_parquet(
    con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, sheet: str, out: Path
) -> None:
    target = quote_literal(str(out))
    copy = f"TO {target} (FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 122880)"
    try:
        if sniffed.format == "xlsx":
            sheet_table = read_sheet(raw, filename, sheet)
            con.register("_sheet", sheet_table)
            con.execute(f"COPY (SELECT * FROM _sheet) {copy}")
            con.unregister("_sheet")
        elif sniffed.format == "parquet":
            con.execute(f"COPY (SELECT * FROM read_parquet({quote_literal(str(raw))})) {copy}")
        elif sniffed.format == "json":
            _copy_with_retry(con, f"read_json_auto({quote_literal(str(raw))}, format='auto'{{extra}})", copy)
        else:
            _copy_csv(con, raw, filename, sniffed, copy)
    except InvalidInput:
        raise
    except duckdb.Error as exc:
        raise InvalidInput(
            "UNREADABLE_FILE",
            f"'{filename}' could not be read as {sniffed.format.upper()}: {_short(exc)}",
        ) from exc


def _copy_csv(con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, copy: str) -> None:
    head_text = read_head(raw).decode(
        "utf-16" if sniffed.encoding == "utf-16" else sniffed.encoding, "replace"
    )
    head_text = head_text.removeprefix("\ufeff")
    first_line = head_text.split("\n", 1)[0]
    delimiter = likely_delimiter(first_line)
    # DuckDB's sniffer would quietly skip leading rows or pick another delimiter when rows are ragged:
    # check the head ourselves first (DuckDB's strict mode catches ragged rows further down).
    problem = ragged_row(head_text, delimiter)
    if problem:
        raise InvalidInput("RAGGED_ROWS", f"'{filename}' has rows of different lengths. {problem}")
    # UTF-8 is DuckDB's native path; naming an encoding sends every byte through a transcoder.
    options = "" if sniffed.encoding == "utf-8" else f", encoding={quote_literal(sniffed.encoding)}"
    reader = f"read_csv({quote_literal(str(raw))}{options}{{extra}})"
    try:
        _copy_with_retry(con, reader, copy)
    except duckdb.Error as exc:
        text = str(exc)
        match = re.search(
            r"CSV Error on Line: (\d+).*?Expected Number of Columns: (\d+) Found: (\d+)", text, re.S
        )
        if match:
            line, expected, got = match.groups()
            raise InvalidInput(
                "RAGGED_ROWS",
                f"'{filename}' has rows of different lengths. Row {line} has {got} fields but the header has "
                f"{expected}. Fix or remove that row and upload the file again.",
            ) from exc
        problem = ragged_row(head_text, delimiter)
        if problem:
            raise InvalidInput(
                "RAGGED_ROWS", f"'{filename}' has rows of different lengths. {problem}"
            ) from exc
        raise


def _copy_with_retry(con: duckdb.DuckDBPyConnection, reader: str, copy: str) -> None:
    """Sniffs types on a sample first; if a later value does not fit, reads again sniffing every row."""
    try:
        con.execute(f"COPY (SELECT * FROM {reader.replace('{extra}', '')}) {copy}")
    except duckdb.ConversionException:
        con.execute(f"COPY (SELECT * FROM {reader.replace('{extra}', ', sample_size=-1')}) {copy}")
    except duckdb.InvalidInputException as exc:
        if "Invalid unicode" in str(exc) and "encoding=" not in reader:
            latin = reader.replace("{extra}", ", encoding='latin-1'{extra}")
            con.execute(f"COPY (SELECT * FROM {latin.replace('{extra}', '')}) {copy}")
        elif "sample_size" in str(exc) or "Could not convert" in str(exc):
            con.execute(f"COPY (SELECT * FROM {reader.replace('{extra}', ', sample_size=-1')}) {copy}")
        else:
            raise


def _convert_dates(con: duckdb.DuckDBPyConnection, out: Path, conversions: dict[str, str]) -> None:
    """Rewrites the Parquet with the date columns typed (only ever called when there are some)."""
    staged = out.with_name("dates.parquet")
    replaced = ", ".join(
        f"{parse_expression(quote_ident(name))}::{kind} AS {quote_ident(name)}"
        for name, kind in conversions.items()
    )
    con.execute(
        f"COPY (SELECT * REPLACE ({replaced}) FROM read_parquet({quote_literal(str(out))}))"
        f" TO {quote_literal(str(staged))} (FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 122880)"
    )
    staged.replace(out)


def _describe(con: duckdb.DuckDBPyConnection, parquet: Path) -> list[tuple[str, str]]:
    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(str(parquet))})").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _short(exc: Exception) -> str:
    """DuckDB's message without its long list of possible fixes."""
    text = str(exc).split("Possible fixes:")[0].strip()
    lines = [
        line.strip() for line in text.splitlines() if line.strip().strip("^") and not line.startswith("LINE ")
    ]
    return " ".join(lines[:3])[:400] + f" Upload a valid {READABLE} file."
