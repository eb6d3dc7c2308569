"""DuckDB's CSV sniffing done while the upload is still arriving, so the conversion need not start with it.

Why: read_csv first sniffs the dialect and the column types from the first rows (25-60 ms for the bench's
CSVs), and only then reads. The first PRESNIFF_BYTES of an upload arrive long before its end: sniffed
then (on a copy of those complete lines), the conversion reads the whole file with the result
(`auto_detect=false`), and writes the same Parquet, byte for byte, as read_csv sniffing it itself.

The reader is built from sniff_csv's structured columns, each value quoted here; never from its
`Prompt` text, which would put the upload's column names into SQL unescaped by us. It is used only when
the head holds at least twice the sniffer's sample of rows (so the sniffer never reads the cut end),
and only for a file read with DuckDB's own dialect detection (no options of ours). Any error reading
with it sends the importer back to its own read_csv (`_copy_with_retry`), which sniffs as always.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from services.sql_engine import spool
from services.sql_engine.connection import quote_literal
from services.sql_engine.spool import Upload

PRESNIFF_BYTES = 8 << 20
_SAMPLE_ROWS = 20_480  # read_csv's default sample_size
_EMPTY = "(empty)"
log = logging.getLogger(__name__)


def presniffed_reader(con: duckdb.DuckDBPyConnection, raw: Path, upload: Upload) -> str | None:
    """A `read_csv(raw, auto_detect=false, …)` call with what DuckDB sniffs from the upload's head, or
    None when the head is too short to stand for the file (a small upload: sniffing it costs little).
    Waits for PRESNIFF_BYTES of the upload, at most until it shows whether it is slow (STREAM_AFTER_S:
    a slow one is read as it arrives, sniffed by DuckDB on the way); raises UploadIncomplete when it
    fails."""
    upload.wait_for(PRESNIFF_BYTES, spool.STREAM_AFTER_S)
    if upload.size < PRESNIFF_BYTES:
        return None
    with raw.open("rb") as handle:
        head = handle.read(PRESNIFF_BYTES)
    cut = head.rfind(b"\n") + 1
    if head.count(b"\n", 0, cut) < 2 * _SAMPLE_ROWS:
        return None
    copy = raw.with_name(raw.name + ".head.csv")
    try:
        copy.write_bytes(head[:cut])
        row = con.execute("SELECT * FROM sniff_csv(?)", [str(copy)]).fetchone()
    except duckdb.Error:
        return None
    finally:
        copy.unlink(missing_ok=True)
    reader = _reader(raw, row) if row else None
    log.info("sniffed the upload's head while it arrives", extra={"presniffed": reader is not None})
    return reader


def _reader(raw: Path, row: tuple[object, ...]) -> str | None:
    """read_csv's call from sniff_csv's row (Delimiter, Quote, Escape, NewLineDelimiter, Comment,
    SkipRows, HasHeader, Columns, DateFormat, TimestampFormat, …), as its Prompt writes it."""
    delimiter, quote, escape, new_line, comment, skip, header, columns, date_format, stamp_format = row[:10]
    if not isinstance(columns, list) or not columns:
        return None

    def text(value: object) -> str:
        return quote_literal("" if value in (None, _EMPTY) else str(value))

    typed = ", ".join(f"{quote_literal(str(c['name']))}: {quote_literal(str(c['type']))}" for c in columns)
    options = (
        f"auto_detect=false, delim={text(delimiter)}, quote={text(quote)}, escape={text(escape)},"
        f" new_line={text(new_line)}, skip={int(str(skip))}, comment={text(comment)},"
        f" header={'true' if header else 'false'}, columns={{{typed}}}"
    )
    if date_format:
        options += f", dateformat={text(date_format)}"
    if stamp_format:
        options += f", timestampformat={text(stamp_format)}"
    return f"read_csv({quote_literal(str(raw))}, {options})"
