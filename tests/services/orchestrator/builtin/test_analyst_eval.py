"""The loop that judges the built-in analyst: the split, the two scorers, and one in-process run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tools import analyst_eval as ev


def test_databench_split_is_fixed_by_whole_tables() -> None:
    assert ev.split_of("databench", "066_IBM_HR") == "train"
    assert ev.split_of("databench", "002_Titanic") == "heldout"
    with pytest.raises(ValueError, match="neither part"):
        ev.split_of("databench", "999_Unknown")


def test_wtq_split_is_the_sha1_of_the_table_path_mod_5() -> None:
    paths = [f"tables/t{i}.csv" for i in range(200)]
    held = [p for p in paths if ev.split_of("wtq", p) == "heldout"]
    assert held == [p for p in paths if int(hashlib.sha1(p.encode()).hexdigest(), 16) % 5 == 0]
    assert 20 <= len(held) <= 60  # about a fifth


@pytest.mark.parametrize(
    ("got", "gold", "kind", "ok"),
    [
        (True, "True", "boolean", True),
        ("no", "False", "boolean", True),
        (3.14159, "3.14", "number", True),
        (3.149, "3.15", "number", False),
        (["b", "a"], "['a', 'b']", "list[category]", True),
        (["a"], "['a', 'b']", "list[category]", False),
        ("Sales", "sales", "category", True),
        (None, "1", "number", False),
    ],
)
def test_databench_scoring(got: object, gold: str, kind: str, ok: bool) -> None:
    assert ev.score(got, gold, kind) is ok


@pytest.mark.parametrize(
    ("got", "gold", "ok"),
    [
        (17, ["17 years"], True),
        ("1,000", ["1000"], True),
        (12467.0, ["12,467"], True),
        ("Bangkok, Thailand", ["bangkok thailand"], True),
        ("Zürich", ["Zurich"], True),
        (["b", "a"], ["a", "b"], True),
        (["a", "a"], ["a", "b"], False),
        (True, ["yes"], True),
        ("17 years", ["17"], False),  # an answer with a unit is not the number 17
        (None, ["x"], False),
    ],
)
def test_wtq_scoring(got: object, gold: list[str], ok: bool) -> None:
    assert ev.score_wtq(got, gold) is ok


def test_an_in_process_run_scores_and_reports_both_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A made-up corpus in the DataBench layout, on a held-back table name, through the real analyst."""
    monkeypatch.setenv("INSIGHTX_ANALYST_EVAL_CACHE", str(tmp_path / "cache"))
    import duckdb

    root = tmp_path / "bench"
    folder = root / "databench" / "002_Titanic"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT range AS id, range % 3 AS class, 10.0 * range AS fare FROM range(30)) "
        f"TO '{folder / 'all.parquet'}' (FORMAT parquet)"
    )
    total_fare = con.execute("SELECT sum(10.0 * range) FROM range(30)").fetchone()[0]  # type: ignore[index]
    con.close()
    lines = [
        {
            "id": 1,
            "dataset": "002_Titanic",
            "question": "How many rows are there?",
            "answer": "30",
            "type": "number",
        },
        {
            "id": 2,
            "dataset": "002_Titanic",
            "question": "What is the total fare?",
            "answer": str(total_fare),
            "type": "number",
        },
    ]
    (root / "databench" / "questions.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    items = ev.load_items("databench", root)
    outcomes = ev.evaluate(items, root)
    assert [o.item.split for o in outcomes] == ["heldout", "heldout"]
    assert all(o.correct and not o.refused for o in outcomes), [(o.answer, o.error) for o in outcomes]
    f = ev.figures(outcomes)
    assert (f.n, f.answered, f.correct) == (2, 2, 2)
