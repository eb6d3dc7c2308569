"""CSVs as people have them: RFC 4180 quoting with newlines, backslash-escaped quotes (the public
Wikipedia-table CSVs), European exports, dates a sniffer cannot type, prose, and huge lines in errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from common.errors import InvalidInput
from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.formats import csv_dialect
from services.sql_engine.importer import ImportedTable, import_file
from services.sql_engine.profiler import profile_parquet

ALWAYS = 1 << 62  # profile_rows that profiles every table while importing


def _import(tmp_path: Path, text: str, filename: str = "table.csv") -> ImportedTable:
    raw = tmp_path / "upload.bin"
    raw.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return import_file(raw, filename, out, profile_rows=ALWAYS)


def _rows(imported: ImportedTable) -> list[tuple]:
    return duckdb.execute(f"SELECT * FROM read_parquet('{imported.parquet}')").fetchall()


# The shapes of the Wikipedia tables: a header cell with a newline, cells of several lines, \" inside
# quotes (also at the start of a continuation line), "" as an empty field.
WIKIPEDIA = (
    '"Rank","Cyclist","Team","UCI ProTour\nPoints","Height"\n'
    '"1","Alejandro Valverde (ESP)","Caisse d\'Epargne","40","5\'10\\""\n'
    '"2","Davide Rebellin (ITA)","\\"Gerolsteiner\\"\nformerly \\"Team Telekom\\"","30",""\n'
    '"3","Cadel Evans (AUS)","\\"Silence–Lotto\\" / \\"Predictor\\"\n\\"Davitamon\\" (2005)","25","6\'0\\""\n'
)


def test_wikipedia_table_shapes_import_cell_for_cell(tmp_path: Path) -> None:
    imported = _import(tmp_path, WIKIPEDIA)
    assert [name for name, _ in imported.columns] == [
        "Rank",
        "Cyclist",
        "Team",
        "UCI ProTour\nPoints",
        "Height",
    ]
    rows = _rows(imported)
    assert len(rows) == 3
    assert rows[0] == (1, "Alejandro Valverde (ESP)", "Caisse d'Epargne", 40, "5'10\"")
    assert rows[1][2] == '"Gerolsteiner"\nformerly "Team Telekom"' and rows[1][4] is None
    assert rows[2][2] == '"Silence–Lotto" / "Predictor"\n"Davitamon" (2005)'
    assert any("backslash" in note for note in imported.profile.source_notes)


def test_rfc_4180_quotes_with_newlines_and_doubled_quotes(tmp_path: Path) -> None:
    text = 'id,note\n1,"first paragraph\n\nsecond paragraph"\n2,"say ""hi"", then go"\n3,plain\n'
    imported = _import(tmp_path, text)
    assert _rows(imported) == [
        (1, "first paragraph\n\nsecond paragraph"),
        (2, 'say "hi", then go'),
        (3, "plain"),
    ]
    assert list(imported.profile.source_notes) == []  # a plain CSV: nothing to say


def test_a_european_export_imports_its_numbers_as_numbers_and_says_so(tmp_path: Path) -> None:
    lines = ["Datum;Kunde;Betrag;Menge;Rabatt"]
    for day in range(1, 29):
        amount = f"{day * 1000 + 234},{day:02d}"
        grouped = f"{amount[:-6]}.{amount[-6:]}" if len(amount) > 6 else amount
        lines.append(f"{day:02d}.02.2024;Kunde {day % 5};{grouped};{day};{day % 3},5")
    imported = _import(tmp_path, "\n".join(lines) + "\n", "export.csv")
    types = dict(imported.columns)
    assert types["Datum"] == "DATE" and types["Betrag"] == "DOUBLE" and types["Rabatt"] == "DOUBLE"
    first = _rows(imported)[0]
    assert first[2] == 1234.01 and first[4] == 1.5
    profile = imported.profile
    roles = {c.name: c.role for c in profile.columns}
    assert roles["Betrag"] == pb.SEMANTIC_ROLE_MEASURE
    notes = " ".join(profile.source_notes)
    assert "semicolons" in notes and "decimal comma" in notes and "1.234,56" in notes
    # A profile computed later from the stored Parquet (a large table's) says the same.
    later = profile_parquet(imported.parquet, imported.columns, imported.row_count)
    assert list(later.source_notes) == list(profile.source_notes)


def test_decimal_commas_without_thousands_marks(tmp_path: Path) -> None:
    imported = _import(tmp_path, "Ort\tWert\nBerlin\t3,5\nWien\t-12,25\nZürich\t7\n", "werte.tsv")
    assert dict(imported.columns)["Wert"] == "DOUBLE"
    assert [row[1] for row in _rows(imported)] == [3.5, -12.25, 7.0]


def test_semicolons_with_decimal_points_are_not_taken_for_european(tmp_path: Path) -> None:
    imported = _import(tmp_path, "a;b\n1.234;12.5\n2.5;3,5\n", "points.csv")
    assert _rows(imported)[0][0] == 1.234  # a 12.5 in the file: the points are decimal points
    assert not csv_dialect("a;b\n1.234;12.5\n2.5;3,5\n").decimal_comma


def test_a_column_of_dates_in_two_orders_is_read_as_text(tmp_path: Path) -> None:
    # DuckDB sniffs %m/%d/%Y from the first value, then meets 27/10/2013: the column is kept as text.
    text = (
        'Record,Date,Result\n"12-1","10/20/2013","Win"\n"12-0","27/10/2013","Win"\n"11-0","9/5/2013","Loss"\n'
    )
    imported = _import(tmp_path, text, "fights.csv")
    assert dict(imported.columns)["Date"] == "VARCHAR"
    assert [row[1] for row in _rows(imported)] == ["10/20/2013", "27/10/2013", "9/5/2013"]


def test_prose_is_refused_as_not_a_table(tmp_path: Path) -> None:
    story = (
        "Once upon a time, there was a princess who lived in a castle by the sea.\n"
        "She had a dog and two cats and they all played in the garden all day long.\n"
        "One day a dragon came, and everybody ran away from the castle in great fear.\n"
        "The end came soon after that, as the dragon was hungry and very tired.\n"
    )
    with pytest.raises(InvalidInput) as caught:
        _import(tmp_path, story, "story.txt")
    assert caught.value.reason == "NOT_A_TABLE"
    assert "does not look like a table" in str(caught.value) and "fields but the header" not in str(
        caught.value
    )
    with pytest.raises(InvalidInput) as caught:
        _import(tmp_path, story.replace(",", ""), "story.txt")  # one field a line
    assert caught.value.reason == "NOT_A_TABLE"


def test_a_one_column_table_of_sentences_with_a_header_imports(tmp_path: Path) -> None:
    reviews = "review\n" + "".join(
        f"This product is great and I would buy it again, number {i}\n" for i in range(5)
    )
    assert _import(tmp_path, reviews.replace(",", ""), "reviews.csv").row_count == 5


def test_an_error_on_a_huge_line_quotes_a_short_excerpt(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        _import(tmp_path, 'a,b\n1,x\n2,y\n3,"' + "z" * 5_000_000 + "\n", "huge.csv")
    message = str(caught.value)
    assert len(message) < 600 and "z" * 200 not in message


def test_a_file_escaping_quotes_both_ways_is_read_through_an_rfc_4180_copy(tmp_path: Path) -> None:
    # DuckDB reads one escape per file: this one has both "" and \" inside quotes.
    text = 'a,b\n"say ""hi""",1\n"6\' 5\\"",2\n"plain",3\n'
    imported = _import(tmp_path, text, "both.csv")
    assert _rows(imported) == [('say "hi"', 1), ("6' 5\"", 2), ("plain", 3)]
    assert not list(tmp_path.glob("*.rfc4180.csv"))  # the copy is gone


def test_the_notes_survive_the_rewrite_of_mixed_dates(tmp_path: Path) -> None:
    imported = _import(tmp_path, "Tag;Wert\n2024/01/02;1,5\nJan 5 2024;2,5\n03.02.2024;3,25\n", "mix.csv")
    assert imported.columns == [("Tag", "DATE"), ("Wert", "DOUBLE")]
    later = profile_parquet(imported.parquet, imported.columns, imported.row_count)
    assert any("decimal comma" in note for note in later.source_notes)
