"""Turns an uploaded file into the session's Parquet, using DuckDB's own readers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from common.errors import InvalidInput
from services.sql_engine.connection import quote_literal

_PARQUET_MAGIC = b"PAR1"


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
    """Guesses the format from the first bytes, then the extension."""
    head = raw.read_bytes()[:4096] if raw.stat().st_size else b""
    if not head:
        raise InvalidInput("EMPTY_FILE", "The file is empty: upload a CSV, Parquet, JSON or Excel file.")
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"[", b"{"):
        return "json"
    if b"\x00" in head:
        raise InvalidInput(
            "UNSUPPORTED_FORMAT",
            f"'{filename}' is binary and not a format InsightX reads (CSV, TSV, Parquet, JSON, XLSX).",
        )
    return "csv"


def _reader_sql(raw: Path, fmt: str) -> str:
    path = quote_literal(str(raw))
    if fmt == "parquet":
        return f"SELECT * FROM read_parquet({path})"
    if fmt == "json":
        return f"SELECT * FROM read_json_auto({path})"
    return f"SELECT * FROM read_csv({path}, auto_detect=true, sample_size=-1)"


def import_file(raw: Path, filename: str, out_dir: Path) -> ImportedTable:
    """Converts `raw` to `out_dir/raw.parquet`; raises InvalidInput with a reason on a bad file."""
    fmt = sniff_format(raw, filename)
    if fmt == "xlsx":
        raise InvalidInput("UNSUPPORTED_FORMAT", "Excel import is not available yet; export the sheet as CSV.")
    out = out_dir / "raw.parquet"
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    try:
        con.execute(
            f"COPY ({_reader_sql(raw, fmt)}) TO {quote_literal(str(out))} (FORMAT parquet, COMPRESSION zstd)"
        )
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(str(out))})").fetchall()
        row = con.execute(f"SELECT count(*) FROM read_parquet({quote_literal(str(out))})").fetchone()
    except duckdb.Error as exc:
        out.unlink(missing_ok=True)
        raise InvalidInput(
            "UNREADABLE_FILE", f"'{filename}' could not be read as {fmt.upper()}: {str(exc)[:300]}"
        ) from exc
    finally:
        con.close()
    rows = int(row[0]) if row else 0
    columns = [(str(r[0]), str(r[1])) for r in described]
    if not columns or rows == 0:
        out.unlink(missing_ok=True)
        raise InvalidInput("EMPTY_TABLE", f"'{filename}' holds no rows of data.")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return ImportedTable(out, table_name_for(filename), rows, columns, fmt, digest)
