"""Turns an uploaded file into the session's Parquet, using DuckDB's own readers (calamine for .xlsx).

The pipeline: sniff the format and encoding from the head; read with DuckDB straight into a Parquet file
(one pass over the upload, while the head is checked for ragged rows); turn text columns holding
mixed-format dates into DATE/TIMESTAMP (a rewrite of the Parquet only when there is such a column);
then hash the Parquet on another thread, profiling it meanwhile when the table is small (a large one is
profiled after the upload is answered: profiles.py). Any failure raises InvalidInput with a message a
person can act on and deletes what was written.

Measured and rejected: reading a CSV into an in-memory table first and profiling that table while the
Parquet is written. On 2 cores both halves are CPU-bound, so it was no faster (508 vs 484 ms for 1M rows),
and DuckDB evaluates an expression once per dictionary entry of a dictionary-encoded Parquet column but
once per row of a table, so the mixed-date check got 18x slower (1.4 s vs 74 ms; on a Parquet written
without dictionaries the same parse takes 530 ms instead of 17 ms).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from common.errors import InvalidInput
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.connection import quote_ident, quote_literal
from services.sql_engine.dates import date_conversions, parse_expression
from services.sql_engine.formats import (
    HEAD_BYTES,
    READABLE,
    Dialect,
    Sniffed,
    csv_dialect,
    excerpt,
    not_a_table,
    ragged_row,
    read_head,
    rewrite_as_rfc4180,
    sniff,
)
from services.sql_engine.profiler import notes_option, profile_relation
from services.sql_engine.spool import Upload
from services.sql_engine.xlsx import read_sheet

_HASH_CHUNK = 1 << 22
_PARQUET = "FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 122880"
_RETYPED_MAX = 8  # columns read again as text when a late value does not fit the type sniffed for them
_TABLE = "_import"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedTable:
    """The Parquet written for an upload, with what was learned on the way."""

    parquet: Path
    table: str
    row_count: int
    columns: list[tuple[str, str]]
    source_format: str
    sha256: str
    profile: pb.DatasetProfile | None = None  # set when the table was small enough to profile here


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


def open_import_database(memory_limit: str, threads: int, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """The in-memory DuckDB that imports (and profiles) run on, each on a cursor of its own.

    One per process: opening a database costs about 12 ms and closing one after a large COPY about 18 ms,
    a tenth of a small import; a cursor costs nothing. Cursors keep their temporary views apart.
    """
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    con.execute(f"SET memory_limit={quote_literal(memory_limit)}")
    con.execute(f"SET threads={int(threads)}")
    con.execute(f"SET temp_directory={quote_literal(str(spill_dir))}")
    con.execute("SET preserve_insertion_order=true")
    return con


def import_file(
    raw: Path,
    filename: str,
    out_dir: Path,
    *,
    sheet: str = "",
    memory_limit: str = "4GB",
    threads: int = 2,
    profile_rows: int = 0,
    database: duckdb.DuckDBPyConnection | None = None,
    cancelled: threading.Event | None = None,
    upload: Upload | None = None,
) -> ImportedTable:
    """Converts `raw` to `out_dir/raw.parquet`, profiling it too when it has at most `profile_rows` rows
    (0: never); raises InvalidInput on a bad file, or PROFILE_FAILED when the data was read but could not
    be profiled. Runs on a cursor of `database` (open_import_database), or on a database of its own
    with `memory_limit` and `threads`. Setting `cancelled` (the client left) stops the import soon after:
    DuckDB's statement is interrupted, the workbook reader stops (IMPORT_CANCELLED).

    `upload`, when `raw` is still being received: the import starts once the head has arrived, and a
    UTF-8 CSV that arrives slowly is read as it arrives (spool.py); anything else waits for the whole
    file."""
    if upload is not None:
        upload.wait_for(HEAD_BYTES)  # the head decides the format and the dialect
        if upload.complete:
            upload = None  # all here already: read the file itself
    sniffed = sniff(raw, filename)
    if upload is not None and (sniffed.format != "csv" or sniffed.encoding != "utf-8"):
        upload.wait_complete()
        upload = None
    out = out_dir / "raw.parquet"
    if database is None:
        con = open_import_database(memory_limit, threads, out_dir / "spill")
    else:
        con = database.cursor()
    hasher: _Hasher | None = None
    watcher = _CancelWatcher(con, cancelled) if cancelled is not None else None
    try:
        rows, notes = _write_parquet(con, raw, filename, sniffed, sheet, out, cancelled, upload)
        relation = f"read_parquet({quote_literal(str(out))})"
        columns = _describe(con, relation)
        if not columns or rows == 0:
            raise InvalidInput("EMPTY_TABLE", f"'{filename}' holds no rows of data, only a header at most.")
        hasher = _Hasher(out)  # while the dates are checked; hashed again in the rare case they change
        conversions = date_conversions(con, relation, columns)
        if conversions:
            hasher.join()
            _convert_dates(con, out, conversions, notes)
            columns = _describe(con, relation)
            hasher = _Hasher(out)
        profiled = None
        if rows <= profile_rows:  # small: profile now, while the hash is computed
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_TABLE} AS SELECT * FROM {relation}")
            profiled = _profile(filename, lambda: profile_relation(con, _TABLE, columns, rows, notes=notes))
        digest = hasher.result()
    except BaseException as exc:
        if hasher is not None:
            hasher.join()
        out.unlink(missing_ok=True)
        if isinstance(exc, duckdb.InterruptException) and cancelled is not None and cancelled.is_set():
            raise InvalidInput("IMPORT_CANCELLED", f"The import of '{filename}' was cancelled.") from exc
        raise
    finally:
        if watcher is not None:
            watcher.stop()
        con.close()
    return ImportedTable(out, table_name_for(filename), rows, columns, sniffed.format, digest, profiled)


class _CancelWatcher(threading.Thread):
    """Interrupts the import's DuckDB statement once `cancelled` is set (looks 10 times a second).

    `stop` does not wait for the thread (which would add up to 0.1 s to every import): under the lock, the
    thread interrupts only while the import has not stopped it, and never touches the cursor after.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, cancelled: threading.Event) -> None:
        super().__init__(name="import-cancel", daemon=True)
        self.con = con
        self.cancelled = cancelled
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self.start()

    def run(self) -> None:
        while not self.finished.is_set():
            if self.cancelled.wait(0.1):
                with self._lock:
                    if not self.finished.is_set():
                        self.con.interrupt()
                return

    def stop(self) -> None:
        with self._lock:
            self.finished.set()


class _Hasher(threading.Thread):
    """sha256 of a file on its own thread (hashlib releases the GIL on large updates)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="import-sha256", daemon=True)
        self.path = path
        self.digest = ""
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.digest = _sha256(self.path)
        except BaseException as exc:  # re-raised by result() on the caller's thread
            self.error = exc

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise self.error
        return self.digest


def _profile(filename: str, compute):  # type: ignore[no-untyped-def]
    try:
        return compute()
    except duckdb.Error as exc:
        raise InvalidInput(
            "PROFILE_FAILED", f"'{filename}' was read but could not be profiled: {exc}"
        ) from exc


def _write_parquet(
    con: duckdb.DuckDBPyConnection,
    raw: Path,
    filename: str,
    sniffed: Sniffed,
    sheet: str,
    out: Path,
    cancelled: threading.Event | None = None,
    upload: Upload | None = None,
) -> tuple[int, list[str]]:
    """Writes the upload to `out`; returns the rows written (COPY's own count: no second scan) and the
    notes on how it was read (also stored in the Parquet's metadata, where a later profile finds them)."""
    if sniffed.format == "csv":
        head_text = read_head(raw).decode(
            "utf-16" if sniffed.encoding == "utf-16" else sniffed.encoding, "replace"
        )
        head_text = head_text.removeprefix("\ufeff")
        dialect = csv_dialect(head_text)
        notes = dialect.notes()
        sink = _sink(out, notes)
        rows = _read_csv(con, raw, filename, sniffed, sink, head_text, dialect, cancelled, upload)
        return rows, notes
    sink = _sink(out, [])
    notes = []
    try:
        if sniffed.format == "xlsx":
            sheet_table = read_sheet(raw, filename, sheet, cancelled=cancelled, notes=notes)
            sink = _sink(out, notes)
            con.register("_sheet", sheet_table)
            rows = _run(con, sink.format(select="SELECT * FROM _sheet"))
            con.unregister("_sheet")
            return rows, notes
        if sniffed.format == "parquet":
            select = f"SELECT * FROM read_parquet({quote_literal(str(raw))})"
            return _run(con, sink.format(select=select)), []
        reader = f"read_json_auto({quote_literal(str(raw))}, format='auto'{{extra}})"
        return _copy_with_retry(con, reader, sink), []
    except (InvalidInput, duckdb.InterruptException):
        raise
    except duckdb.Error as exc:
        raise _unreadable(filename, sniffed, exc) from exc


def _sink(out: Path, notes: list[str]) -> str:
    """The COPY to `out` with a `{select}` slot (a format string), storing `notes` in its metadata."""
    stored = notes_option(notes).replace("{", "{{").replace("}", "}}")
    return f"COPY ({{select}}) TO {quote_literal(str(out))} ({_PARQUET}{stored})"


def _run(con: duckdb.DuckDBPyConnection, copy: str) -> int:
    """Runs a COPY and returns the number of rows it wrote."""
    row = con.execute(copy).fetchone()
    return int(row[0]) if row else 0


def _read_csv(
    con: duckdb.DuckDBPyConnection,
    raw: Path,
    filename: str,
    sniffed: Sniffed,
    sink: str,
    head_text: str,
    dialect: Dialect,
    cancelled: threading.Event | None = None,
    upload: Upload | None = None,
) -> int:
    """Runs `sink` (a COPY with a `{select}` slot) over the CSV; bad files raise InvalidInput."""
    try:
        return _copy_csv(con, raw, filename, sniffed, sink, head_text, dialect, cancelled, upload)
    except (InvalidInput, duckdb.InterruptException):
        raise
    except duckdb.Error as exc:
        raise _unreadable(filename, sniffed, exc) from exc


def _unreadable(filename: str, sniffed: Sniffed, exc: Exception) -> InvalidInput:
    return InvalidInput(
        "UNREADABLE_FILE", f"'{filename}' could not be read as {sniffed.format.upper()}: {_short(exc)}"
    )


def _copy_csv(
    con: duckdb.DuckDBPyConnection,
    raw: Path,
    filename: str,
    sniffed: Sniffed,
    sink: str,
    head_text: str,
    dialect: Dialect,
    cancelled: threading.Event | None = None,
    upload: Upload | None = None,
) -> int:
    # DuckDB's sniffer would quietly skip leading rows or pick another delimiter when rows are ragged, and
    # reads prose as a table of one column: check the head ourselves (DuckDB's strict mode catches ragged
    # rows further down). The check runs while DuckDB reads (which releases the GIL), and its verdict wins
    # over whatever DuckDB made of it.
    head_check: list[InvalidInput | None] = []
    checker = threading.Thread(
        target=lambda: head_check.append(_head_problem(head_text, dialect, filename)),
        name="import-head-check",
        daemon=True,
    )
    checker.start()
    # UTF-8 is DuckDB's native path; naming an encoding sends every byte through a transcoder.
    options = "" if sniffed.encoding == "utf-8" else f", encoding={quote_literal(sniffed.encoding)}"
    options += dialect.duckdb_options()
    reader = f"read_csv({quote_literal(str(raw))}{options}{{extra}})"
    if upload is not None and dialect.backslash_escapes:  # read twice at worst (_copy_rewritten): the file
        upload.wait_complete()
        upload = None
    try:
        try:
            try:
                rows = None if upload is None else _copy_arriving(con, upload, options, sink)
                if rows is None:
                    rows = _copy_with_retry(con, reader, sink)
            except duckdb.Error as exc:
                if not dialect.backslash_escapes or isinstance(exc, duckdb.InterruptException):
                    raise
                rows = _copy_rewritten(con, raw, sniffed, sink, dialect, cancelled)
        finally:
            checker.join()
            if problem := (head_check or [None])[0]:
                raise problem
        return rows
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
        raise


def _copy_arriving(con: duckdb.DuckDBPyConnection, upload: Upload, options: str, sink: str) -> int | None:
    """The COPY of a CSV that is still arriving: read as it arrives when it arrives slowly (one DuckDB
    thread keeps up with it), else None once it is complete, for the caller to read the whole file on
    every thread. Measured and dropped: sniffing the head with sniff_csv while the rest arrives, then
    reading with auto_detect=false (the same Parquet, but 25 ms more CPU for the 43 MB CSV and no faster)."""
    if upload.slow():
        return _copy_streamed(con, upload, options, sink)
    upload.wait_complete()
    return None


def _copy_streamed(con: duckdb.DuckDBPyConnection, upload: Upload, options: str, sink: str) -> int | None:
    """The COPY of a CSV still being received, read through a pipe as it arrives (spool.py); None when
    that read cannot be kept (a DuckDB error, which the file's own read retries or explains; a stalled
    client; a short read), once the upload is complete. Raises UploadIncomplete when it never is."""
    error = ""
    log.info("reading the upload as it arrives", extra={"received_bytes": upload.size})
    with upload.stream() as stream:
        reader = f"read_csv({quote_literal(str(stream.path))}{options})"
        try:
            rows: int | None = _run(con, sink.format(select=f"SELECT * FROM {reader}"))
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            rows, error = None, type(exc).__name__
    upload.wait_complete()
    if rows is not None and stream.whole:
        return rows
    why = "the client stalled" if stream.abandoned else error or "the stream was cut short"
    log.info("streamed read not kept: reading the received file", extra={"why": why})
    return None


def _copy_rewritten(
    con: duckdb.DuckDBPyConnection,
    raw: Path,
    sniffed: Sniffed,
    sink: str,
    dialect: Dialect,
    cancelled: threading.Event | None,
) -> int:
    """Reads a file that escapes quotes both ways (\\" and "") from an RFC 4180 copy of it."""
    copy = raw.with_name(raw.name + ".rfc4180.csv")
    try:
        plain = rewrite_as_rfc4180(raw, sniffed.encoding, dialect, copy, cancelled)
        return _copy_with_retry(
            con, f"read_csv({quote_literal(str(copy))}{plain.duckdb_options()}{{extra}})", sink
        )
    finally:
        copy.unlink(missing_ok=True)


def _head_problem(head_text: str, dialect: Dialect, filename: str) -> InvalidInput | None:
    """What is wrong with the head of a text upload: not a table at all, or ragged rows (or None)."""
    why = not_a_table(head_text, dialect)
    if why:
        return InvalidInput(
            "NOT_A_TABLE",
            f"'{filename}' does not look like a table: {why}. InsightX reads {READABLE} files whose rows"
            " each hold the same fields, one row a line, with a header line first.",
        )
    problem = ragged_row(head_text, dialect)
    if problem:
        return InvalidInput("RAGGED_ROWS", f"'{filename}' has rows of different lengths. {problem}")
    return None


def _copy_with_retry(con: duckdb.DuckDBPyConnection, reader: str, sink: str) -> int:
    """Sniffs types on a sample first; if a later value does not fit, reads again sniffing every row.

    `sink` is a COPY to Parquet with a `{select}` slot; returns the rows written.
    """

    def run(extra: str, source: str = reader) -> int:
        return _run(con, sink.format(select=f"SELECT * FROM {source.replace('{extra}', extra)}"))

    try:
        return run("")
    except duckdb.ConversionException:
        return _retyped(run, reader)
    except duckdb.InvalidInputException as exc:
        if "Invalid unicode" in str(exc) and "encoding=" not in reader:
            return run("", reader.replace("{extra}", ", encoding='latin-1'{extra}"))
        if "sample_size" in str(exc) or "Could not convert" in str(exc):
            return _retyped(run, reader)
        raise


def _retyped(run: Callable[[str], int], reader: str) -> int:
    """Reads again sniffing every row; when a column still holds a value its sniffed type refuses (dates
    written 10/27/2013 and 27/10/2013 in one column), reads that column as text, up to _RETYPED_MAX."""
    text_columns: list[str] = []
    while True:
        types = ""
        if text_columns:
            types = ", types={" + ", ".join(f"{quote_literal(n)}: 'VARCHAR'" for n in text_columns) + "}"
        try:
            return run(f", sample_size=-1{types}")
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
            match = re.search(r'Error when converting column "((?:[^"]|"")*)"', str(exc))
            if not reader.startswith("read_csv(") or not match or len(text_columns) >= _RETYPED_MAX:
                raise
            name = match.group(1)
            if name in text_columns:
                raise
            text_columns.append(name)


def _replace_dates(conversions: dict[str, str]) -> str:
    replaced = ", ".join(
        f"{parse_expression(quote_ident(name))}::{kind} AS {quote_ident(name)}"
        for name, kind in conversions.items()
    )
    return f"REPLACE ({replaced})"


def _convert_dates(
    con: duckdb.DuckDBPyConnection, out: Path, conversions: dict[str, str], notes: list[str]
) -> None:
    """Rewrites the Parquet with the date columns typed (only ever called when there are some)."""
    staged = out.with_name("dates.parquet")
    con.execute(
        f"COPY (SELECT * {_replace_dates(conversions)} FROM read_parquet({quote_literal(str(out))}))"
        f" TO {quote_literal(str(staged))} ({_PARQUET}{notes_option(notes)})"
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
    """DuckDB's message without its long list of possible fixes, quoting at most a short excerpt of the
    upload (DuckDB repeats the offending line, which may be megabytes long)."""
    text = re.split(r"Possible (?:fixes|solutions):", str(exc))[0].strip()
    lines = [
        excerpt(line, 120)
        for line in text.splitlines()
        if line.strip().strip("^") and not line.startswith("LINE ")
    ]
    return excerpt(" ".join(lines[:3]), 300) + f" Upload a valid {READABLE} file."
