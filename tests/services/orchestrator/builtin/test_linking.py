"""Columns and values are linked by name, forms, synonyms, abbreviations and cell values."""

from pathlib import Path

from services.orchestrator.builtin.linking import link
from services.orchestrator.builtin.schema import schema_of
from services.orchestrator.plan import DatasetContext


def _columns(question: str, hr_table: tuple[DatasetContext, Path]) -> list[str]:
    return [lk.column.name for lk in link(question, schema_of(hr_table[0])).columns]


def _values(question: str, hr_table: tuple[DatasetContext, Path]) -> list[tuple[str, str]]:
    return [(v.column.name, v.value) for v in link(question, schema_of(hr_table[0])).values]


def test_header_with_units_links_by_its_words(hr_table: tuple[DatasetContext, Path]) -> None:
    assert _columns("What is the total monthly income?", hr_table) == ["Monthly Income (USD)"]
    assert _columns("average income in USD", hr_table) == ["Monthly Income (USD)"]


def test_camel_case_header_links_from_spaced_words(hr_table: tuple[DatasetContext, Path]) -> None:
    assert "deviceType" in _columns("breakdown by device type", hr_table)


def test_word_forms_and_synonyms_link(hr_table: tuple[DatasetContext, Path]) -> None:
    assert _columns("Who is the oldest?", hr_table) == ["Age"]
    assert _columns("which dept is largest", hr_table) == ["Department"]


def test_values_link_from_the_profile(hr_table: tuple[DatasetContext, Path]) -> None:
    assert ("Department", "Research & Development") in _values(
        "Is our research dept bigger than sales?", hr_table
    )
    assert ("Department", "Sales") in _values("Is our research dept bigger than sales?", hr_table)
    assert _values("How many people work in HR?", hr_table) == [("Department", "Human Resources")]
    assert _values("what share of payments failed", hr_table) == [("transaction_status", "FAILED")]
    assert _values("How many on Android?", hr_table) == [("deviceType", "Android")]


def test_nothing_links_in_unrelated_text(hr_table: tuple[DatasetContext, Path]) -> None:
    links = link("What is blockchain?", schema_of(hr_table[0]))
    assert links.columns == [] and links.values == []


def test_typos_still_link(hr_table: tuple[DatasetContext, Path]) -> None:
    assert _columns("What is the avrage monthly incme?", hr_table) == ["Monthly Income (USD)"]
    assert "Department" in _columns("which departmnet is largest", hr_table)


def test_a_value_goes_to_the_column_named_next_to_it(hr_table: tuple[DatasetContext, Path]) -> None:
    # "Android" is a value of `deviceType`; named next to `Department` it is read as that column's value
    assert _values("How many rows have Department equal to Android?", hr_table) == [("Department", "Android")]


def test_abbreviations_in_headers_link_from_spelled_out_words(tmp_path: Path) -> None:
    import duckdb

    from services.sql_engine.profiler import profile_parquet

    parquet = tmp_path / "admissions.parquet"
    con = duckdb.connect()
    con.execute(
        'COPY (SELECT 300 + i AS "GRE Score", 7 + i / 10 AS CGPA, 1 + i % 5 AS LOR, i * 10 AS "Price (EUR)" '
        f"FROM range(30) r(i)) TO '{parquet}' (FORMAT parquet)"
    ).fetchall()
    columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM '{parquet}'").fetchall()]
    dataset = DatasetContext("a", "admissions", 30, columns, profile_parquet(parquet, columns, 30))
    schema = schema_of(dataset)

    def names(question: str) -> list[str]:
        return [lk.column.name for lk in link(question, schema).columns]

    assert names("highest graduate record score") == ["GRE Score"]
    assert names("the lowest grade point average") == ["CGPA"]
    assert names("best gpa") == ["CGPA"]
    assert names("letters of recommendation") == ["LOR"]
    assert names("the most expensive item") == ["Price (EUR)"]
