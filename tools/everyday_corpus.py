"""The "everyday" development corpus: public tables shipped inside PyPI packages, with plain questions.

Why: the built-in analyst is judged on everyday questions over public datasets it has never seen; DataBench
and WikiTableQuestions do not look like them. This corpus is a third one, in DataBench's on-disk format
(`bench/everyday/<NNN_name>/all.parquet`, `bench/everyday/questions.jsonl`), so `tools.analyst_eval` loads
and scores it unchanged. Every gold answer comes from the DuckDB query stored next to it (`gold_sql`, run
on a view named `t` over the question's table); `--check` recomputes them all.

    .venv/bin/python -m tools.everyday_corpus --build    # pip download the wheels, write the parquet files
    .venv/bin/python -m tools.everyday_corpus --check    # every question well-formed, every gold = its SQL

`--build` needs PyPI (pip download, pinned versions, no dependencies installed); `--check` is offline.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO / "bench" / "everyday"
MAX_ROWS = 5000
TYPES = frozenset({"boolean", "number", "category", "list[category]", "list[number]"})

# Pinned so a rebuild reads the same files.
WHEELS = {
    "vega_datasets": "0.9.0",
    "plotly": "7.1.0",
    "statsmodels": "0.15.0",
}


@dataclass(frozen=True)
class Source:
    """One table: the file inside a wheel and the DuckDB expression that reads it (`{path}` is the file)."""

    name: str  # the folder: NNN_name
    package: str
    member: str  # path inside the wheel
    select: str  # DuckDB SELECT over {path}; column renames/casts only, never a change of values


_VEGA = "vega_datasets/_data/"
_PLOTLY = "plotly/package_data/datasets/"
_SM = "statsmodels/datasets/"
_CSV = "SELECT * FROM read_csv_auto('{path}')"

SOURCES: tuple[Source, ...] = (
    Source("001_cars", "vega_datasets", _VEGA + "cars.json", "SELECT * FROM read_json_auto('{path}')"),
    Source(
        "002_seattle_weather",
        "vega_datasets",
        _VEGA + "seattle-weather.csv",
        "SELECT * FROM read_csv_auto('{path}')",
    ),
    # The file writes dates as 'Jan 1 2000'; stored as DATE so every reader sees a date column.
    Source(
        "003_stocks",
        "vega_datasets",
        _VEGA + "stocks.csv",
        "SELECT symbol, CAST(strptime(date, '%b %d %Y') AS DATE) AS date, price "
        "FROM read_csv_auto('{path}', all_varchar = true, columns = "
        "{{'symbol': 'VARCHAR', 'date': 'VARCHAR', 'price': 'DOUBLE'}}, header = true)",
    ),
    Source("004_airports", "vega_datasets", _VEGA + "airports.csv", "SELECT * FROM read_csv_auto('{path}')"),
    Source(
        "005_iowa_electricity",
        "vega_datasets",
        _VEGA + "iowa-electricity.csv",
        "SELECT * FROM read_csv_auto('{path}')",
    ),
    Source("006_la_riots", "vega_datasets", _VEGA + "la-riots.csv", "SELECT * FROM read_csv_auto('{path}')"),
    Source("007_gapminder", "plotly", _PLOTLY + "gapminder.csv.gz", "SELECT * FROM read_csv_auto('{path}')"),
    # plotly's tips.csv has 'Yes'/'No' in `smoker`; kept as text, as a user's upload would show it.
    Source(
        "008_tips",
        "plotly",
        _PLOTLY + "tips.csv.gz",
        "SELECT * FROM read_csv_auto('{path}', types = {{'smoker': 'VARCHAR'}})",
    ),
    Source("009_election", "plotly", _PLOTLY + "election.csv.gz", "SELECT * FROM read_csv_auto('{path}')"),
    Source("010_statecrime", "statsmodels", _SM + "statecrime/statecrime.csv", _CSV),
    Source("011_grunfeld", "statsmodels", _SM + "grunfeld/grunfeld.csv", _CSV),
    Source("012_macrodata", "statsmodels", _SM + "macrodata/macrodata.csv", _CSV),
)


# ---- building the tables ----------------------------------------


def download_wheels(into: Path) -> dict[str, Path]:
    """`pip download` each pinned wheel (no dependencies) into `into`; returns package → wheel path."""
    wheels: dict[str, Path] = {}
    for package, version in WHEELS.items():
        pip = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps"]
        subprocess.run([*pip, "--only-binary=:all:", "-d", str(into), "-q"], check=True)
        prefix = package.replace("-", "_") + "-" + version
        found = [p for p in into.glob("*.whl") if p.name.startswith(prefix)]
        if not found:
            raise SystemExit(f"pip download left no wheel for {package}=={version} in {into}")
        wheels[package] = found[0]
    return wheels


def build(out_dir: Path = CORPUS_DIR, wheels: dict[str, Path] | None = None) -> None:
    """Writes `<out_dir>/<name>/all.parquet` for every source: the file as DuckDB reads it, first
    `MAX_ROWS` rows in file order (deterministic), ZSTD-compressed."""
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheels = wheels or download_wheels(work)
        con = duckdb.connect()
        for src in SOURCES:
            with zipfile.ZipFile(wheels[src.package]) as zf:
                target = work / "extract" / src.member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(src.member))
            folder = out_dir / src.name
            folder.mkdir(parents=True, exist_ok=True)
            query = src.select.format(path=str(target).replace("'", "''"))
            out = str(folder / "all.parquet").replace("'", "''")
            con.execute(
                f"COPY (SELECT * EXCLUDE (rn__) FROM (SELECT *, row_number() OVER () AS rn__ FROM ({query})) "
                f"WHERE rn__ <= {MAX_ROWS} ORDER BY rn__) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
            )
            rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
            print(f"{src.name}: {rows[0] if rows else 0} rows from {src.package} {src.member}")
        con.close()


# ---- gold answers ----------------------------------------


def format_value(value: Any) -> str:
    """One cell as DataBench writes it: True/False, integers without '.0', floats to 6 decimals at most
    (DataBench compares numbers truncated to 2), dates ISO."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(round(value, 6))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "as_integer_ratio") and not isinstance(value, int):  # Decimal
        return format_value(float(value))
    return str(value)


def format_gold(rows: list[tuple[Any, ...]], kind: str) -> str:
    """The gold answer text of a query's result: the first column; one cell unless `kind` is a list."""
    if kind.startswith("list"):
        cells = [format_value(r[0]) for r in rows]
        if kind == "list[number]":
            return "[" + ", ".join(cells) + "]"
        return "[" + ", ".join(repr(c) for c in cells) + "]"
    if len(rows) != 1:
        raise ValueError(f"a {kind} answer needs exactly one row, the query gave {len(rows)}")
    return format_value(rows[0][0])


_LIMIT = re.compile(r"\bLIMIT\s+(\d+)\s*;?\s*$", re.IGNORECASE)


def tie_at_limit(con: Any, sql: str) -> bool:
    """Whether an `ORDER BY ... LIMIT k` query cuts through a tie: by this corpus's convention such a
    query selects its ordering key(s) after the answer column, so row k+1 with the same key(s) as row k
    means the answer is not unique."""
    m = _LIMIT.search(sql)
    if m is None:
        return False
    k = int(m.group(1))
    rows = con.execute(sql[: m.start()] + f"LIMIT {k + 1}").fetchall()
    if len(rows) <= k or len(rows[0]) < 2:
        return False
    return rows[k][1:] == rows[k - 1][1:]


def load_questions(root: Path = CORPUS_DIR) -> list[dict[str, Any]]:
    lines = (root / "questions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check(root: Path = CORPUS_DIR) -> list[str]:
    """Every problem of the corpus, one line each (empty: all well): fields, known type and dataset,
    unique ids, gold answer = its SQL's result, no tie at a LIMIT."""
    import duckdb

    problems: list[str] = []
    questions = load_questions(root)
    seen: set[Any] = set()
    con = duckdb.connect()
    current = None
    for q in questions:
        qid = q.get("id")
        where = f"question {qid}"
        missing = {"id", "question", "dataset", "answer", "type", "gold_sql"} - q.keys()
        if missing:
            problems.append(f"{where}: missing {sorted(missing)}")
            continue
        if qid in seen:
            problems.append(f"{where}: id used twice")
        seen.add(qid)
        if q["type"] not in TYPES:
            problems.append(f"{where}: unknown type {q['type']!r}")
            continue
        parquet = root / q["dataset"] / "all.parquet"
        if not parquet.exists():
            problems.append(f"{where}: no table {q['dataset']!r} ({parquet} missing)")
            continue
        if current != parquet:
            path = str(parquet).replace("'", "''")
            con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM read_parquet('{path}')")
            current = parquet
        try:
            rows = con.execute(q["gold_sql"]).fetchall()
            got = format_gold(rows, q["type"])
        except Exception as exc:  # a broken query is a problem to report, not a crash
            problems.append(f"{where}: gold_sql fails: {type(exc).__name__}: {exc}")
            continue
        if got != q["answer"]:
            problems.append(f"{where}: answer {q['answer']!r} but gold_sql gives {got!r}")
        if tie_at_limit(con, q["gold_sql"]):
            problems.append(f"{where}: a tie at the LIMIT: the answer is not unique")
        if q["type"].startswith("list"):
            try:
                ast.literal_eval(q["answer"])
            except (ValueError, SyntaxError):
                problems.append(f"{where}: list answer {q['answer']!r} does not parse")
    con.close()
    return problems


def fill(root: Path = CORPUS_DIR) -> None:
    """Writes each question's `answer` from its `gold_sql` (used once when writing new questions; the
    answers are then reviewed and `--check` guards them)."""
    import duckdb

    questions = load_questions(root)
    con = duckdb.connect()
    for q in questions:
        path = str(root / q["dataset"] / "all.parquet").replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM read_parquet('{path}')")
        q["answer"] = format_gold(con.execute(q["gold_sql"]).fetchall(), q["type"])
    con.close()
    write_questions(questions, root)


def write_questions(questions: Iterable[dict[str, Any]], root: Path = CORPUS_DIR) -> None:
    keys = ("id", "dataset", "question", "answer", "type", "gold_sql")
    lines = [json.dumps({k: q[k] for k in keys if k in q}, ensure_ascii=False) for q in questions]
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="pip download; write the parquet files")
    parser.add_argument("--fill", action="store_true", help="write every answer from its gold_sql")
    parser.add_argument("--check", action="store_true", help="recompute every gold; fail on a mismatch")
    parser.add_argument("--root", type=Path, default=CORPUS_DIR)
    args = parser.parse_args(argv)
    if not (args.build or args.fill or args.check):
        parser.error("say --build, --fill or --check")
    if args.build:
        build(args.root)
    if args.fill:
        fill(args.root)
    if args.check:
        problems = check(args.root)
        for line in problems:
            print(line, file=sys.stderr)
        n = len(load_questions(args.root))
        if problems:
            print(f"{len(problems)} problem(s) in {n} questions", file=sys.stderr)
            return 1
        print(f"{n} questions: every gold answer equals its query's result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
