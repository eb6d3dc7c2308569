"""An awkward little HR table (spaces, parentheses, camelCase, mixed dates, nulls), imported and profiled by
the SQL engine's own functions, and a helper that plans a question and runs its SQL on DuckDB."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from services.orchestrator.builtin import plan_question
from services.orchestrator.plan import Answer, DatasetContext, Plan, StepResults
from services.sql_engine.importer import import_file
from services.sql_engine.profiler import profile_parquet
from tools.analyst_eval import sql_runner

DEPARTMENTS = ["Research & Development", "Sales", "Human Resources"]
DEVICES = ["Android", "iOS", "Web"]
DATES = ["2024-01-05", "2024/02/11", "2024-03-17", "2024/04/23", "2024-05-29", "2024/06-04"]


def _rows() -> list[list[str]]:
    rows = []
    for i in range(60):
        dept = DEPARTMENTS[0] if i % 5 in (0, 1, 2) else DEPARTMENTS[1] if i % 5 == 3 else DEPARTMENTS[2]
        age = "" if i % 17 == 0 else str(22 + (i * 7) % 40)
        income = str(2000 + (i * 379) % 9000)
        status = "FAILED" if i % 6 == 0 else "SUCCESS"
        day = 1 + i % 28
        month = 1 + i % 6
        joined = f"2024-{month:02d}-{day:02d}" if i % 2 else f"2024/{month:02d}/{day:02d}"
        rows.append(
            [f"E{i:03d}", dept, age, income, "Yes" if i % 4 == 0 else "No", status, DEVICES[i % 3], joined]
        )
    return rows


HEADER = [
    "Employee ID",
    "Department",
    "Age",
    "Monthly Income (USD)",
    "Attrition",
    "transaction_status",
    "deviceType",
    "Joined On",
]


@dataclass
class Asked:
    plan: Plan
    answer: Answer
    rows: list[tuple]


@pytest.fixture(scope="session")
def hr_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetContext, Path]:
    work = tmp_path_factory.mktemp("hr")
    csv = work / "hr data.csv"
    lines = [",".join(HEADER)] + [",".join(f'"{v}"' if "," in v else v for v in row) for row in _rows()]
    csv.write_text("\n".join(lines) + "\n")
    return load_table(csv, "s1")


def load_table(csv: Path, session_id: str) -> tuple[DatasetContext, Path]:
    """Imports and profiles `csv` as the engine would; the context the analyst plans on, and its Parquet."""
    out = csv.parent / "session"
    out.mkdir()
    imported = import_file(csv, csv.name, out)
    profile = profile_parquet(imported.parquet, imported.columns, imported.row_count)
    dataset = DatasetContext(
        session_id, imported.table, imported.row_count, imported.columns, profile, imported.sha256
    )
    return dataset, imported.parquet


@pytest.fixture(scope="session")
def con(hr_table: tuple[DatasetContext, Path]) -> duckdb.DuckDBPyConnection:
    dataset, parquet = hr_table
    connection = duckdb.connect()
    connection.execute(
        f"CREATE VIEW \"{dataset.table}\" AS SELECT * FROM read_parquet('{parquet}')"
    ).fetchall()
    return connection


@pytest.fixture(scope="session")
def ask(hr_table: tuple[DatasetContext, Path], con: duckdb.DuckDBPyConnection) -> Callable[[str], Asked]:
    dataset, _ = hr_table

    def run(question: str) -> Asked:
        plan = plan_question(question, dataset, run=sql_runner(con))
        results = StepResults()
        rows: list[tuple] = []
        if plan.sql:
            table = con.sql(plan.sql).to_arrow_table()
            results.sql_table = table
            rows = [tuple(r.values()) for r in table.to_pylist()]
        if plan.python_code:
            import pandas as pd

            assert results.sql_table is not None and plan.python_on_sql_result
            scope = {"df": results.sql_table.to_pandas(), "pd": pd}
            exec(
                plan.python_code, scope
            )  # the sandbox's job in production; here the code itself is under test
            results.python_result = scope["result"]
        return Asked(plan, plan.compose(results), rows)

    return run


@pytest.fixture(scope="session")
def truth(con: duckdb.DuckDBPyConnection, hr_table: tuple[DatasetContext, Path]) -> Callable[[str], Any]:
    """The first cell of an independent query over the same table (`T` stands for the table)."""
    dataset, _ = hr_table

    def one(sql: str) -> Any:
        return con.execute(sql.replace("FROM T", f'FROM "{dataset.table}"', 1)).fetchall()[0][0]

    return one


@contextlib.contextmanager
def every_reading_answered() -> Iterator[None]:
    """The shipped ranker with no refusal threshold: what the analyst would answer if it had to.

    Why: a test of a question's reading should not depend on where the fitted judge puts its confidence.
    A test asks normally first (a refusal is allowed, a wrong answer is not), then, when refused, checks
    that the best reading is still the right one."""
    from services.orchestrator.builtin import scorer

    shipped = scorer.ranker()
    patched = dataclasses.replace(shipped, threshold=0.0)
    original = scorer.ranker
    scorer.ranker = lambda: patched  # type: ignore[assignment]
    try:
        yield
    finally:
        scorer.ranker = original  # type: ignore[assignment]


def answer_or_best_reading(ask: Callable[[], Answer]) -> Any:
    """The answer; when the analyst asks back instead, the answer of its best reading (never a wrong
    answer stated with confidence: that fails wherever it is compared)."""
    first = ask()
    if first.answer is not None:
        return first.answer
    assert first.answer_type == "none"
    with every_reading_answered():
        return ask().answer
