"""Values the profile did not show, place and sex words, negative numbers, fused headers, bounds, months
written as text, currency signs: table-driven, each case a question on a table made here and its answer
checked against a separate DuckDB query on the same data.

A refusal is allowed (the analyst asks back when unsure), but then its best reading must compute the right
answer (`answer_or_best_reading`); a wrong answer stated with confidence fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pytest

from services.orchestrator.builtin import plan_question
from services.orchestrator.builtin.reader import read
from services.orchestrator.builtin.schema import schema_of
from services.orchestrator.builtin.sqlgen import render
from services.orchestrator.plan import Answer, DatasetContext, StepResults
from tests.services.orchestrator.builtin.conftest import answer_or_best_reading, load_table
from tools.analyst_eval import sql_runner

Served = tuple[DatasetContext, duckdb.DuckDBPyConnection]


def _countries() -> list[str]:
    """60 countries over three years: "China" is one of many (not among the profile's top values), and
    "Hong Kong, China" contains it."""
    names = [f"Country {chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(58)]
    names += ["China", "Hong Kong, China"]
    lines = ["country,continent,year,pop"]
    for i, name in enumerate(names):
        for j, year in enumerate((1997, 2002, 2007)):
            continent = "Asia" if "China" in name else ("Europe", "Africa", "Americas")[i % 3]
            lines.append(f'"{name}",{continent},{year},{1000 * (i + 1) + 10 * j}')
    return lines


def _cars() -> list[str]:
    lines = ["Name,Miles_per_Gallon,Cylinders,Weight_in_lbs,Year,Origin"]
    origins = ("USA", "Japan", "Europe", "USA")
    for i in range(80):
        weight = 1600 + (i * 97) % 3000  # 1975 lies inside this range, and is also a year of `Year`
        origin = origins[i % 4]
        lines.append(f"car {i},{15 + (i * 7) % 25},{(4, 6, 8)[i % 3]},{weight},{1970 + i % 8}-01-01,{origin}")
    return lines


def _airports() -> list[str]:
    states = ["CA", "TX", "NY", "AK", "FL", "OH"]
    return ["iata,city,state"] + [f"A{i:02d},City {i % 40},{states[i % 6]}" for i in range(90)]


def _weather() -> list[str]:
    lines = ["date,temp_max,temp_min,wind"]
    for i in range(120):
        hi = -3 + (i * 13) % 30
        lines.append(f"2014-{1 + i // 28:02d}-{1 + i % 28:02d},{hi},{hi - 4 - i % 5},{(i * 3) % 9}")
    return lines


def _people() -> list[str]:
    return ["name,age,gender"] + [
        f"person {i},{20 + i % 40},{'Female' if i % 3 == 0 else 'Male'}" for i in range(50)
    ]


def _macro() -> list[str]:
    lines = ["year,quarter,realgdp,unemp,tbilrate,infl"]
    for year in range(1995, 2005):
        for quarter in range(1, 5):
            gdp, rate, infl = (
                1500 + 40 * (year - 1995) + quarter * 3,
                (year * 7 + quarter) % 5,
                (year * 13) % 11,
            )
            lines.append(f"{year},{quarter},{gdp}.5,{4 + quarter / 10},{rate}.25,{infl + quarter / 4}")
    return lines


def _crime() -> list[str]:
    states = ["California", "New York", "Texas", "Ohio", "Iowa", "Utah"]
    return ["state,murder,poverty"] + [f"{s},{(i * 3.7) % 9 + 1:.1f},{10 + i}" for i, s in enumerate(states)]


def _medals() -> list[str]:
    nations = ["Austria", "Germany", "Iran", "Israel", "Japan", "Kenya", "Chile", "Peru", "Cuba", "Fiji"]
    ranks = [1, 2, 2, 4, 4, 4, 7, 8, 8, 10]
    return ["Rank,Nation,Gold,Total"] + [
        f"{r},{n},{(i * 3) % 5},{10 - i}" for i, (r, n) in enumerate(zip(ranks, nations, strict=True))
    ]


def _deaths() -> list[str]:
    return ["first_name,age,neighborhood"] + [f"Name {i},{18 + i % 50},Area {i % 7}" for i in range(40)]


def _shows() -> list[str]:
    """Episodes kept as text ("7 (+1 specials)"): a number of a text column is still its value."""
    return ["Year,Name of show,Episodes"] + [
        f'{1990 + i},Show {i},"{1 + (i * 7) % 12} (+{i % 3} specials)"' for i in range(30)
    ]


def _tournaments() -> list[str]:
    """Dates as text ("8 Apr")."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"]
    return ["Date,Tournament,Winner"] + [
        f"{1 + (i * 3) % 27} {months[(i * 7) % 10]},Open {i},Player {i % 9}" for i in range(25)
    ]


def _results() -> list[str]:
    venues = ["Berlin, Germany", "Athens, Greece", "Munich, Germany", "Rome, Italy", "Hamburg, Germany"]
    return ["Year,Competition,Venue,Net profit"] + [
        f'{1990 + i},Games {i},"{venues[i % 5]}","£{100 + (i * 37) % 90}.5 million"' for i in range(15)
    ]


TABLES: dict[str, Callable[[], list[str]]] = {
    "countries": _countries,
    "cars": _cars,
    "airports": _airports,
    "weather": _weather,
    "people": _people,
    "macro": _macro,
    "shows": _shows,
    "tournaments": _tournaments,
    "results": _results,
    "crime": _crime,
    "deaths": _deaths,
    "medals": _medals,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Served]:
    """Every table imported and profiled as the engine would, and a connection where T reads it."""
    out: dict[str, Served] = {}
    for name, rows in TABLES.items():
        csv = tmp_path_factory.mktemp(name) / f"{name}.csv"
        csv.write_text("\n".join(rows()) + "\n")
        dataset, parquet = load_table(csv, name)
        con = duckdb.connect()
        con.execute(f"CREATE VIEW \"{dataset.table}\" AS SELECT * FROM read_parquet('{parquet}')")
        con.execute(f"CREATE VIEW T AS SELECT * FROM read_parquet('{parquet}')")
        out[name] = (dataset, con)
    return out


# (table, question, the answer by a separate query); why each case is here is in its question
CASES = [
    # a value the profile did not show is matched whole before in part; "chi" in China is no chi-square
    (
        "countries",
        "What was the pop of China in 2007?",
        "SELECT pop FROM T WHERE country = 'China' AND year = 2007",
    ),
    (
        "cars",
        "What is the average miles per gallon of Japanese cars?",
        "SELECT avg(Miles_per_Gallon) FROM T WHERE Origin = 'Japan'",
    ),
    (
        "cars",
        "How many cars not made in the USA have 6 cylinders?",
        "SELECT count(*) FROM T WHERE Origin <> 'USA' AND Cylinders = 6",
    ),
    # "from 1975" is the year of the date column, not a weight of 1975 lbs
    (
        "cars",
        "What was the average miles per gallon of cars from 1975?",
        "SELECT avg(Miles_per_Gallon) FROM T WHERE year(Year) = 1975",
    ),
    # "cities in California": California (`CA`) is a state, not a city called CA
    (
        "airports",
        "How many different cities in California have an airport?",
        "SELECT count(DISTINCT city) FROM T WHERE state = 'CA'",
    ),
    (
        "weather",
        "How many days had a minimum temperature below -5?",
        "SELECT count(*) FROM T WHERE temp_min < -5",
    ),
    ("people", "How many women are in the data?", "SELECT count(*) FROM T WHERE gender = 'Female'"),
    ("people", "How many men are in the data?", "SELECT count(*) FROM T WHERE gender = 'Male'"),
    # "real GDP" is `realgdp`; 2000 is the year, not also a value of `realgdp` (whose range holds it)
    (
        "macro",
        "What was the real GDP in the second quarter of 2000?",
        "SELECT realgdp FROM T WHERE year = 2000 AND quarter = 2",
    ),
    (
        "shows",
        "How many shows had at least 5 episodes?",
        "SELECT count(*) FROM T WHERE CAST(regexp_extract(Episodes, '^[0-9]+') AS INTEGER) >= 5",
    ),
    (
        "tournaments",
        "How many tournaments were held in April?",
        "SELECT count(*) FROM T WHERE Date LIKE '% Apr'",
    ),
    # "T-bill rate" is `tbilrate` (one slip inside a header written as one word)
    (
        "macro",
        "What was the average T-bill rate in 2001?",
        "SELECT avg(tbilrate) FROM T WHERE year = 2001",
    ),
    # the measure named before the comparative is compared, not the rows
    (
        "crime",
        "Is the murder rate in New York higher than in California?",
        "SELECT (SELECT murder FROM T WHERE state = 'New York') > "
        "(SELECT murder FROM T WHERE state = 'California')",
    ),
    # "died" is what the rows are about, not a value to look for
    ("deaths", "How many people died?", "SELECT count(*) FROM T"),
    (
        "results",
        "What year had the least net profit?",
        "SELECT Year FROM T ORDER BY CAST(regexp_extract(\"Net profit\", '[0-9.]+') AS DOUBLE) LIMIT 1",
    ),
]


@pytest.mark.parametrize(("table", "question", "truth"), CASES)
def test_the_answer_is_the_separate_querys(
    served: dict[str, Served], table: str, question: str, truth: str
) -> None:
    dataset, con = served[table]

    def ask() -> Answer:
        plan = plan_question(question, dataset, [], run=sql_runner(con))
        result = con.cursor().sql(plan.sql).to_arrow_table() if plan.sql else None
        return plan.compose(StepResults(sql_table=result))

    got: Any = answer_or_best_reading(ask)
    want = con.execute(truth).fetchall()[0][0]
    assert got == (pytest.approx(want) if isinstance(want, float) else want)


def test_a_negative_threshold_is_not_its_absolute_value(served: dict[str, Served]) -> None:
    con = served["weather"][1]
    assert (
        con.execute("SELECT count(*) FROM T WHERE temp_min < -5").fetchall()
        != con.execute("SELECT count(*) FROM T WHERE temp_min < 5").fetchall()
    )  # so the case above tells the two apart


def test_a_name_not_in_the_profile_is_read_without_the_verb_after_it(served: dict[str, Served]) -> None:
    reading = read("What is the pop that john smith reported?", schema_of(served["countries"][0]))
    values = {f.value for c in reading.candidates if c.query for f in c.query.filters if f.column is None}
    assert "john smith" in values and "john smith reported" not in values


def test_which_of_two_named_values_has_more_rows(served: dict[str, Served]) -> None:
    dataset, con = served["results"]
    germany, greece = con.execute(
        "SELECT count(*) FILTER (WHERE Venue LIKE '%Germany'), "
        "count(*) FILTER (WHERE Venue LIKE '%Greece') FROM T"
    ).fetchall()[0]
    assert germany > greece
    schema = schema_of(dataset)
    question = "Which country had more competitions, Germany or Greece?"
    picks = [
        c.query
        for c in read(question, schema).candidates
        if c.query and c.query.agg == "count" and c.query.pair
    ]
    assert {q.op for q in picks} == {"pick_max", "pick_min"}
    pick_max = next(q for q in picks if q.op == "pick_max")
    assert pick_max.describe() == "Which of 'Germany' and 'Greece' has more rows?"
    assert con.execute(render(pick_max, schema)).fetchall()[0][0].lower() == "germany"


def test_a_year_groups_rows_for_a_ranking_of_groups(served: dict[str, Served]) -> None:
    """ "the 3 years with the highest average inflation": a reading ranks the years by their average."""
    dataset, con = served["macro"]
    schema = schema_of(dataset)
    question = "List the 3 years with the highest average inflation."
    readings = [c.query for c in read(question, schema).candidates if c.query is not None]
    group = next(
        q
        for q in readings
        if q.op == "group_argmax"
        and q.answer
        and q.answer.name == "year"
        and q.measure
        and q.measure.name == "infl"
    )
    assert group.limit == 3 and group.agg == "avg"
    want = con.execute("SELECT year FROM T GROUP BY 1 ORDER BY avg(infl) DESC, 1 LIMIT 3").fetchall()
    assert con.execute(render(group, schema)).fetchall() == want


@pytest.mark.parametrize(
    "question", ["How many countries were ranked fourth?", "How many finished in 4th place?"]
)
def test_a_place_named_with_a_ranking_word_filters_the_rank_column(
    served: dict[str, Served], question: str
) -> None:
    dataset, con = served["medals"]
    schema = schema_of(dataset)
    counts = [q for c in read(question, schema).candidates if (q := c.query) is not None and q.op == "count"]
    assert counts and all(any(f.column and f.column.name == "Rank" for f in q.filters) for q in counts)
    want = con.execute("SELECT count(*) FROM T WHERE Rank = 4").fetchall()
    assert con.execute(render(counts[0], schema)).fetchall() == want
