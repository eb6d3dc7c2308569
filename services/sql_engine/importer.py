"""Turns an uploaded file into the session's Parquet, using DuckDB's own readers (openpyxl for .xlsx).

The pipeline: sniff the format and encoding from the head; read the upload once with DuckDB; turn text
columns holding mixed-format dates into DATE/TIMESTAMP; write the Parquet and hash it. Any failure raises
InvalidInput with a message a person can act on and deletes what was written.

A CSV up to `in_memory_limit` bytes is read once into an in-memory DuckDB table (the cost of `read_csv`
alone); the Parquet is then written from that table on one thread while the profile is computed from the
same table on another, so neither re-reads anything. Larger files, and the other formats, stream straight
into the Parquet (which DuckDB can spill), and the profile reads the Parquet afterwards.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from common.errors import InvalidInput
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.connection import quote_ident, quote_literal
from services.sql_engine.dates import date_conversions, parse_expression
from services.sql_engine.formats import READABLE, Sniffed, likely_delimiter, ragged_row, read_head, sniff
from services.sql_engine.profiler import profile_parquet, profile_relation
from services.sql_engine.xlsx import read_sheet

_HASH_CHUNK = 1 << 22
# Bloom filters cost about 15% of the write and help only equality filters on high-cardinality columns.
_PARQUET = "(FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 122880, WRITE_BLOOM_FILTER false)"
_TABLE = "_import"
IN_MEMORY_MAX_BYTES = 256 << 20  # CSVs up to this size (and 1/8 of the memory limit) are read into memory


@dataclass(frozen=True)
class ImportedTable:
    """The Parquet written for an upload, with what was learned on the way."""

    parquet: Path
    table: str
    row_count: int
    columns: list[tuple[str, str]]
    source_format: str
    sha256: str
    profile: pb.DatasetProfile | None = None  # set when import_file was asked to profile


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
    raw: Path,
    filename: str,
    out_dir: Path,
    *,
    sheet: str = "",
    memory_limit: str = "4GB",
    threads: int = 2,
    profile: bool = False,
    in_memory_bytes: int | None = None,
) -> ImportedTable:
    """Converts `raw` to `out_dir/raw.parquet` (profiling it too when asked); raises InvalidInput on a bad
    file, or PROFILE_FAILED when the data was read but could not be profiled. A CSV up to `in_memory_bytes`
    (default: in_memory_limit(memory_limit)) is read into memory, a larger one streamed."""
    sniffed = sniff(raw, filename)
    out = out_dir / "raw.parquet"
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        con.execute(f"SET memory_limit={quote_literal(memory_limit)}")
        con.execute(f"SET threads={int(threads)}")
        con.execute(f"SET temp_directory={quote_literal(str(out_dir / 'spill'))}")
        con.execute("SET preserve_insertion_order=true")
        threshold = in_memory_limit(memory_limit) if in_memory_bytes is None else in_memory_bytes
        if sniffed.format == "csv" and raw.stat().st_size <= threshold:
            return _import_in_memory(con, raw, filename, sniffed, out, profile)
        _write_parquet(con, raw, filename, sniffed, sheet, out)
        relation = f"read_parquet({quote_literal(str(out))})"
        columns = _describe(con, relation)
        rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
        if not columns or rows == 0:
            raise InvalidInput("EMPTY_TABLE", f"'{filename}' holds no rows of data, only a header at most.")
        conversions = date_conversions(con, relation, columns)
        if conversions:
            _convert_dates(con, out, conversions)
            columns = _describe(con, relation)
        profiled = _profile(filename, lambda: profile_parquet(out, columns, int(rows))) if profile else None
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return ImportedTable(
        out, table_name_for(filename), int(rows), columns, sniffed.format, _sha256(out), profiled
    )


def in_memory_limit(memory_limit: str) -> int:
    """The largest CSV read into memory: IN_MEMORY_MAX_BYTES, or 1/8 of a smaller DuckDB memory limit."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(I?)B?\s*", memory_limit.upper().replace("IB", "I"))
    if not match:
        return IN_MEMORY_MAX_BYTES
    number, unit, binary = match.groups()
    scale = (1024 if binary else 1000) ** "_KMGT".index(unit or "_")
    return min(IN_MEMORY_MAX_BYTES, int(float(number) * scale) // 8)


def _import_in_memory(
    con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, out: Path, profile: bool
) -> ImportedTable:
    """Reads the CSV once into a table; then writes the Parquet and hashes it while profiling the table."""
    _read_csv(con, raw, filename, sniffed, f"CREATE OR REPLACE TABLE {_TABLE} AS {{select}}")
    columns = _describe(con, _TABLE)
    rows = int(con.execute(f"SELECT count(*) FROM {_TABLE}").fetchall()[0][0])
    if not columns or rows == 0:
        raise InvalidInput("EMPTY_TABLE", f"'{filename}' holds no rows of data, only a header at most.")
    conversions = date_conversions(con, _TABLE, columns)
    if conversions:
        con.execute(
            f"CREATE OR REPLACE TABLE {_TABLE} AS SELECT * {_replace_dates(conversions)} FROM {_TABLE}"
        )
        columns = _describe(con, _TABLE)
    written: dict[str, object] = {}

    def write() -> None:
        cursor = con.cursor()
        try:
            cursor.execute(f"COPY {_TABLE} TO {quote_literal(str(out))} {_PARQUET}")
            written["sha256"] = _sha256(out)
        except BaseException as exc:  # re-raised on the caller's thread
            written["error"] = exc
        finally:
            cursor.close()

    writer = threading.Thread(target=write, name="import-parquet", daemon=True)
    writer.start()
    try:
        profiled = None
        if profile:
            cursor = con.cursor()
            try:
                profiled = _profile(filename, lambda: profile_relation(cursor, _TABLE, columns, rows))
            finally:
                cursor.close()
    finally:
        writer.join()
    if "error" in written:
        raise written["error"]  # type: ignore[misc]
    return ImportedTable(
        out, table_name_for(filename), rows, columns, sniffed.format, str(written["sha256"]), profiled
    )


def _profile(filename: str, compute):  # type: ignore[no-untyped-def]
    try:
        return compute()
    except duckdb.Error as exc:
        raise InvalidInput(
            "PROFILE_FAILED", f"'{filename}' was read but could not be profiled: {exc}"
        ) from exc


def _write_parquet(
    con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, sheet: str, out: Path
) -> None:
    sink = f"COPY ({{select}}) TO {quote_literal(str(out))} {_PARQUET}"
    if sniffed.format == "csv":
        _read_csv(con, raw, filename, sniffed, sink)
        return
    try:
        if sniffed.format == "xlsx":
            sheet_table = read_sheet(raw, filename, sheet)
            con.register("_sheet", sheet_table)
            con.execute(sink.format(select="SELECT * FROM _sheet"))
            con.unregister("_sheet")
        elif sniffed.format == "parquet":
            con.execute(sink.format(select=f"SELECT * FROM read_parquet({quote_literal(str(raw))})"))
        else:
            _copy_with_retry(con, f"read_json_auto({quote_literal(str(raw))}, format='auto'{{extra}})", sink)
    except InvalidInput:
        raise
    except duckdb.Error as exc:
        raise _unreadable(filename, sniffed, exc) from exc


def _read_csv(con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, sink: str) -> None:
    """Runs `sink` (SQL with a `{select}` slot) over the CSV; bad files raise InvalidInput."""
    try:
        _copy_csv(con, raw, filename, sniffed, sink)
    except InvalidInput:
        raise
    except duckdb.Error as exc:
        raise _unreadable(filename, sniffed, exc) from exc


def _unreadable(filename: str, sniffed: Sniffed, exc: Exception) -> InvalidInput:
    return InvalidInput(
        "UNREADABLE_FILE", f"'{filename}' could not be read as {sniffed.format.upper()}: {_short(exc)}"
    )


def _copy_csv(con: duckdb.DuckDBPyConnection, raw: Path, filename: str, sniffed: Sniffed, sink: str) -> None:
    head_text = read_head(raw).decode(
        "utf-16" if sniffed.encoding == "utf-16" else sniffed.encoding, "replace"
    )
    head_text = head_text.removeprefix("\ufeff")
    first_line = head_text.split("\n", 1)[0]
    delimiter = likely_delimiter(first_line)
    # DuckDB's sniffer would quietly skip leading rows or pick another delimiter when rows are ragged:
    # check the head ourselves (DuckDB's strict mode catches ragged rows further down). The check runs
    # while DuckDB reads (which releases the GIL), and its verdict wins over whatever DuckDB made of it.
    head_check: list[str | None] = []
    checker = threading.Thread(
        target=lambda: head_check.append(ragged_row(head_text, delimiter)), name="import-ragged", daemon=True
    )
    checker.start()
    # UTF-8 is DuckDB's native path; naming an encoding sends every byte through a transcoder.
    options = "" if sniffed.encoding == "utf-8" else f", encoding={quote_literal(sniffed.encoding)}"
    reader = f"read_csv({quote_literal(str(raw))}{options}{{extra}})"
    try:
        try:
            _copy_with_retry(con, reader, sink)
        finally:
            checker.join()
            if problem := (head_check or [None])[0]:
                raise InvalidInput("RAGGED_ROWS", f"'{filename}' has rows of different lengths. {problem}")
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


def _copy_with_retry(con: duckdb.DuckDBPyConnection, reader: str, sink: str) -> None:
    """Sniffs types on a sample first; if a later value does not fit, reads again sniffing every row.

    `sink` is SQL with a `{select}` slot: a COPY to Parquet or a CREATE TABLE.
    """

    def run(extra: str, source: str = reader) -> None:
        con.execute(sink.format(select=f"SELECT * FROM {source.replace('{extra}', extra)}"))

    try:
        run("")
    except duckdb.ConversionException:
        run(", sample_size=-1")
    except duckdb.InvalidInputException as exc:
        if "Invalid unicode" in str(exc) and "encoding=" not in reader:
            run("", reader.replace("{extra}", ", encoding='latin-1'{extra}"))
        elif "sample_size" in str(exc) or "Could not convert" in str(exc):
            run(", sample_size=-1")
        else:
            raise


def _replace_dates(conversions: dict[str, str]) -> str:
    replaced = ", ".join(
        f"{parse_expression(quote_ident(name))}::{kind} AS {quote_ident(name)}"
        for name, kind in conversions.items()
    )
    return f"REPLACE ({replaced})"


def _convert_dates(con: duckdb.DuckDBPyConnection, out: Path, conversions: dict[str, str]) -> None:
    """Rewrites the Parquet with the date columns typed (only ever called when there are some)."""
    staged = out.with_name("dates.parquet")
    con.execute(
        f"COPY (SELECT * {_replace_dates(conversions)} FROM read_parquet({quote_literal(str(out))}))"
        f" TO {quote_literal(str(staged))} {_PARQUET}"
    )
    staged.replace(out)


def _describe(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
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
