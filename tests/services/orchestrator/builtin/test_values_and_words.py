"""Values the profile did not show, place and sex words, negative numbers, fused headers and qualifiers:
each on a table made here, each answer checked against a separate DuckDB query on the same data.

A refusal is allowed (the analyst asks back when unsure), but then its best reading must compute the right
answer (`answer_or_best_reading`); a wrong answer stated with confidence fails.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from services.orchestrator.builtin import plan_question
from services.orchestrator.plan import Answer, DatasetContext, StepResults
from tests.services.orchestrator.builtin.conftest import answer_or_best_reading, load_table
from tools.analyst_eval import sql_runner

Served = tuple[DatasetContext, duckdb.DuckDBPyConnection]


def _served(tmp: pytest.TempPathFactory, name: str, lines: list[str]) -> Served:
    work = tmp.mktemp(name)
    csv = work / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    dataset, parquet = load_table(csv, name)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW \"{dataset.table}\" AS SELECT * FROM read_parquet('{parquet}')")
    con.execute(f"CREATE VIEW T AS SELECT * FROM read_parquet('{parquet}')")
    return dataset, con


def _answer(served: Served, question: str) -> Any:
    dataset, con = served

    def ask() -> Answer:
        plan = plan_question(question, dataset, [], run=sql_runner(con))
        table = con.cursor().sql(plan.sql).to_arrow_table() if plan.sql else None
        return plan.compose(StepResults(sql_table=table))

    return answer_or_best_reading(ask)


def _truth(served: Served, sql: str) -> Any:
    return served[1].execute(sql).fetchall()[0][0]


@pytest.fixture(scope="module")
def countries(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """60 countries over three years: "China" is one of many (not among the profile's top values), and
    "Hong Kong, China" contains it."""
    names = [f"Country {chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(58)] + [
        "China",
        "Hong Kong, China",
    ]
    lines = ["country,continent,year,pop"]
    for i, name in enumerate(names):
        for j, year in enumerate((1997, 2002, 2007)):
            continent = "Asia" if "China" in name else ("Europe", "Africa", "Americas")[i % 3]
            lines.append(f'"{name}",{continent},{year},{1000 * (i + 1) + 10 * j}')
    return _served(tmp_path_factory, "countries", lines)


def test_a_value_the_profile_did_not_show_is_matched_whole_before_in_part(countries: Served) -> None:
    got = _answer(countries, "What was the pop of China in 2007?")
    assert got == _truth(countries, "SELECT pop FROM T WHERE country = 'China' AND year = 2007")


@pytest.fixture(scope="module")
def cars(tmp_path_factory: pytest.TempPathFactory) -> Served:
    lines = ["Name,Miles_per_Gallon,Cylinders,Weight_in_lbs,Year,Origin"]
    origins = ("USA", "Japan", "Europe", "USA")
    for i in range(80):
        year = 1970 + i % 8
        weight = 1600 + (i * 97) % 3000
        lines.append(f"car {i},{15 + (i * 7) % 25},{(4, 6, 8)[i % 3]},{weight},{year}-01-01,{origins[i % 4]}")
    return _served(tmp_path_factory, "cars", lines)


def test_a_place_adjective_names_the_place_value(cars: Served) -> None:
    got = _answer(cars, "What is the average miles per gallon of Japanese cars?")
    want = _truth(cars, "SELECT avg(Miles_per_Gallon) FROM T WHERE Origin = 'Japan'")
    assert got == pytest.approx(want)


def test_not_made_in_a_place_excludes_it(cars: Served) -> None:
    got = _answer(cars, "How many cars not made in the USA have 6 cylinders?")
    assert got == _truth(cars, "SELECT count(*) FROM T WHERE Origin <> 'USA' AND Cylinders = 6")


def test_a_year_on_a_date_column_even_when_a_measure_could_hold_the_number(cars: Served) -> None:
    # 1975 is also inside the range of Weight_in_lbs; "from 1975" is the year of the date column
    got = _answer(cars, "What was the average miles per gallon of cars from 1975?")
    want = _truth(cars, "SELECT avg(Miles_per_Gallon) FROM T WHERE year(Year) = 1975")
    assert got == pytest.approx(want)


@pytest.fixture(scope="module")
def airports(tmp_path_factory: pytest.TempPathFactory) -> Served:
    states = ["CA", "TX", "NY", "AK", "FL", "OH"]
    lines = ["iata,city,state"]
    for i in range(90):
        lines.append(f"A{i:02d},City {i % 40},{states[i % 6]}")
    return _served(tmp_path_factory, "airports", lines)


def test_a_place_after_a_noun_locates_it_in_its_own_column(airports: Served) -> None:
    # "cities in California": the state is California (`CA`), not a city called CA
    got = _answer(airports, "How many different cities in California have an airport?")
    assert got == _truth(airports, "SELECT count(DISTINCT city) FROM T WHERE state = 'CA'")


@pytest.fixture(scope="module")
def weather(tmp_path_factory: pytest.TempPathFactory) -> Served:
    lines = ["date,temp_max,temp_min,wind"]
    for i in range(120):
        hi = -3 + (i * 13) % 30
        lines.append(f"2014-{1 + i // 28:02d}-{1 + i % 28:02d},{hi},{hi - 4 - i % 5},{(i * 3) % 9}")
    return _served(tmp_path_factory, "weather", lines)


def test_a_negative_threshold_keeps_its_sign_and_minimum_names_the_min_column(weather: Served) -> None:
    got = _answer(weather, "How many days had a minimum temperature below -5?")
    assert got == _truth(weather, "SELECT count(*) FROM T WHERE temp_min < -5")
    assert got != _truth(weather, "SELECT count(*) FROM T WHERE temp_min < 5")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Served:
    lines = ["name,age,gender"]
    for i in range(50):
        lines.append(f"person {i},{20 + i % 40},{'Female' if i % 3 == 0 else 'Male'}")
    return _served(tmp_path_factory, "people", lines)


@pytest.mark.parametrize(("word", "value"), [("women", "Female"), ("men", "Male")])
def test_women_and_men_where_the_data_holds_female_and_male(people: Served, word: str, value: str) -> None:
    got = _answer(people, f"How many {word} are in the data?")
    assert got == _truth(people, f"SELECT count(*) FROM T WHERE gender = '{value}'")


@pytest.fixture(scope="module")
def macro(tmp_path_factory: pytest.TempPathFactory) -> Served:
    lines = ["year,quarter,realgdp,unemp"]
    for year in range(1995, 2005):
        for quarter in range(1, 5):
            lines.append(f"{year},{quarter},{1500 + 40 * (year - 1995) + quarter * 3}.5,{4 + quarter / 10}")
    return _served(tmp_path_factory, "macro", lines)


def test_a_header_written_as_one_word_and_a_year_used_once(macro: Served) -> None:
    # "real GDP" is `realgdp`; 2000 is the year, not also a value of `realgdp` (whose range holds it)
    got = _answer(macro, "What was the real GDP in the second quarter of 2000?")
    assert got == pytest.approx(_truth(macro, "SELECT realgdp FROM T WHERE year = 2000 AND quarter = 2"))


@pytest.fixture(scope="module")
def shows(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Episodes kept as text ("7 (+1 special)"): a number of a text column is still its value."""
    lines = ["Year,Name of show,Episodes"]
    for i in range(30):
        lines.append(f'{1990 + i},Show {i},"{1 + (i * 7) % 12} (+{i % 3} specials)"')
    return _served(tmp_path_factory, "shows", lines)


def test_at_least_a_number_is_a_bound_not_a_ranking(shows: Served) -> None:
    got = _answer(shows, "How many shows had at least 5 episodes?")
    want = _truth(
        shows, "SELECT count(*) FROM T WHERE CAST(regexp_extract(Episodes, '^[0-9]+') AS INTEGER) >= 5"
    )
    assert got == want


@pytest.fixture(scope="module")
def tournaments(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Dates as text ("8 Apr"): a month named in the question is still a condition on them."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"]
    lines = ["Date,Tournament,Winner"]
    for i in range(25):
        lines.append(f"{1 + (i * 3) % 27} {months[(i * 7) % 10]},Open {i},Player {i % 9}")
    return _served(tmp_path_factory, "tournaments", lines)


def test_a_month_on_dates_written_as_text(tournaments: Served) -> None:
    got = _answer(tournaments, "How many tournaments were held in April?")
    assert got == _truth(tournaments, "SELECT count(*) FROM T WHERE Date LIKE '% Apr'")


def test_a_name_not_in_the_profile_is_read_without_the_verb_after_it(countries: Served) -> None:
    from services.orchestrator.builtin.reader import read
    from services.orchestrator.builtin.schema import schema_of

    reading = read("What is the pop that john smith reported?", schema_of(countries[0]))
    values = {f.value for c in reading.candidates if c.query for f in c.query.filters if f.column is None}
    assert "john smith" in values and "john smith reported" not in values


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Served:
    venues = ["Berlin, Germany", "Athens, Greece", "Munich, Germany", "Rome, Italy", "Hamburg, Germany"]
    lines = ["Year,Competition,Venue,Net profit"]
    for i in range(15):
        lines.append(f'{1990 + i},Games {i},"{venues[i % 5]}","£{100 + (i * 37) % 90}.5 million"')
    return _served(tmp_path_factory, "results", lines)


def test_which_of_two_named_values_has_more_rows(results: Served) -> None:
    dataset, con = results
    question = "Which country had more competitions, Germany or Greece?"
    germany = _truth(results, "SELECT count(*) FROM T WHERE Venue LIKE '%Germany'")
    greece = _truth(results, "SELECT count(*) FROM T WHERE Venue LIKE '%Greece'")
    assert germany > greece
    from services.orchestrator.builtin.reader import read
    from services.orchestrator.builtin.schema import schema_of
    from services.orchestrator.builtin.sqlgen import render

    schema = schema_of(dataset)
    picks = [
        c.query
        for c in read(question, schema).candidates
        if c.query and c.query.agg == "count" and c.query.pair
    ]
    assert {q.op for q in picks} == {"pick_max", "pick_min"}
    pick_max = next(q for q in picks if q.op == "pick_max")
    assert pick_max.describe() == "Which of 'Germany' and 'Greece' has more rows?"
    assert con.execute(render(pick_max, schema)).fetchall()[0][0].lower() == "germany"


def test_a_measure_written_with_a_currency_sign_is_ranked_as_a_number(results: Served) -> None:
    got = _answer(results, "What year had the least net profit?")
    want = _truth(
        results,
        "SELECT Year FROM T ORDER BY CAST(regexp_extract(\"Net profit\", '[0-9.]+') AS DOUBLE) LIMIT 1",
    )
    assert got == want
