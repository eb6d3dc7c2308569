"""The everyday corpus is well-formed and its gold answers are what their stored queries give (offline)."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest

from tools import analyst_eval as ev
from tools import everyday_corpus as ec


def test_every_gold_answer_equals_its_query_and_every_question_is_well_formed() -> None:
    assert ec.check() == []


def test_the_corpus_has_the_promised_shape() -> None:
    questions = ec.load_questions()
    tables = {q["dataset"] for q in questions}
    assert tables == {s.name for s in ec.SOURCES}
    assert 10 <= len(tables) <= 12
    assert len(questions) >= 90
    per_table = {t: sum(q["dataset"] == t for q in questions) for t in tables}
    assert min(per_table.values()) >= 8, per_table
    assert {q["type"] for q in questions} <= ec.TYPES
    size = sum(p.stat().st_size for p in ec.CORPUS_DIR.rglob("*") if p.is_file())
    assert size < 3_000_000


def test_the_split_is_by_whole_table_and_about_sixty_percent_train() -> None:
    tables = {s.name for s in ec.SOURCES}
    assert tables == ev.EVERYDAY_TRAIN | ev.EVERYDAY_HELDOUT
    assert not ev.EVERYDAY_TRAIN & ev.EVERYDAY_HELDOUT
    assert 0.5 <= len(ev.EVERYDAY_TRAIN) / len(tables) <= 0.7
    with pytest.raises(ValueError, match="neither part"):
        ev.split_of("everyday", "999_unknown")


def test_analyst_eval_loads_it_from_the_repository_and_scores_it_as_databench() -> None:
    items = ev.load_items("everyday")
    assert len(items) == len(ec.load_questions())
    assert {i.split for i in items} == {"train", "heldout"}
    first = items[0]
    assert ev.is_correct(first, float(first.gold) + 0.001)  # numbers compared truncated to 2 decimals
    loaded = ev.load_table("everyday", first.table)
    assert loaded.dataset.row_count > 0


@pytest.fixture
def corpus_copy(tmp_path: Path) -> Path:
    """A copy of two tables' questions and parquet files, to break on purpose."""
    questions = [q for q in ec.load_questions() if q["dataset"] in ("008_tips", "009_election")]
    for name in ("008_tips", "009_election"):
        (tmp_path / name).mkdir()
        shutil.copy(ec.CORPUS_DIR / name / "all.parquet", tmp_path / name / "all.parquet")
    ec.write_questions(questions, tmp_path)
    return tmp_path


def _edit(root: Path, index: int, **changes: object) -> None:
    questions = ec.load_questions(root)
    questions[index].update(changes)
    ec.write_questions(questions, root)


def test_check_passes_on_an_intact_copy(corpus_copy: Path) -> None:
    assert ec.check(corpus_copy) == []


def test_check_reports_a_gold_answer_its_query_does_not_give(corpus_copy: Path) -> None:
    _edit(corpus_copy, 0, answer="3.3")
    problems = ec.check(corpus_copy)
    assert len(problems) == 1 and "gold_sql gives" in problems[0]


def test_check_reports_a_tie_at_the_limit(corpus_copy: Path) -> None:
    # sizes of 2 are the most common party size by far; ordering by size cuts through 156 equal rows
    sql = "SELECT day, size FROM t WHERE size = 2 ORDER BY size DESC LIMIT 1"
    _edit(corpus_copy, 0, gold_sql=sql, type="category", answer="Sun")
    problems = ec.check(corpus_copy)
    assert any("tie" in p for p in problems), problems


def test_check_reports_unknown_types_missing_tables_and_broken_queries(corpus_copy: Path) -> None:
    _edit(corpus_copy, 0, type="date")
    _edit(corpus_copy, 1, dataset="404_nowhere")
    _edit(corpus_copy, 2, gold_sql="SELECT no_such_column FROM t")
    problems = " | ".join(ec.check(corpus_copy))
    assert "unknown type 'date'" in problems
    assert "no table '404_nowhere'" in problems
    assert "gold_sql fails" in problems


def test_gold_text_follows_databench_conventions() -> None:
    assert ec.format_gold([(True,)], "boolean") == "True"
    assert ec.format_gold([(12.0,)], "number") == "12"
    assert ec.format_gold([(1 / 3,)], "number") == "0.333333"
    assert ec.format_gold([(datetime.date(2014, 8, 11),)], "category") == "2014-08-11"
    assert ec.format_gold([("a", 1), ("b", 2)], "list[category]") == "['a', 'b']"
    assert ec.format_gold([(1979,), (1980,)], "list[number]") == "[1979, 1980]"
    with pytest.raises(ValueError, match="exactly one row"):
        ec.format_gold([(1,), (2,)], "number")


def test_every_line_is_one_json_object_with_the_loader_fields() -> None:
    for line in (ec.CORPUS_DIR / "questions.jsonl").read_text().splitlines():
        q = json.loads(line)
        assert {"id", "question", "dataset", "answer", "type", "gold_sql"} <= q.keys()
