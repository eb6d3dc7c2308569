"""The built-in analyst's evaluation loop: DataBench and WikiTableQuestions, in-process, with a fixed split.

Why: the analyst is judged on tables it has never seen, so every figure is printed twice, for the tables
it may be tuned on (`train`) and for whole tables held back (`heldout`), whose failures are never read one
by one.
No servers: each table is imported and profiled by the SQL engine's own functions (the profile the analyst
sees in production), the plan's SQL runs on DuckDB, and its Python step runs in this process (the sandbox's
job in production; the code is the same).

    .venv/bin/python -m tools.analyst_eval                        # every corpus, both splits
    .venv/bin/python -m tools.analyst_eval --corpus databench
    .venv/bin/python -m tools.analyst_eval --corpus everyday     # bench/everyday, in this repository
    .venv/bin/python -m tools.analyst_eval --corpus wtq --wtq-sample 1500   # fixed-seed sample of questions

The shared folder is `<repo>/../shared/benchmarks` unless `INSIGHTX_BENCHMARKS_DIR` says otherwise; loaded
tables and profiles are cached under `<repo>/.cache/analyst_eval/` (gitignored; delete it after changing the
importer or the profiler).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import statistics
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPORA = ("databench", "wtq", "everyday")
# Corpora in DataBench's format: a folder per table (all.parquet), typed gold answers, DataBench's scoring.
DATABENCH_FORMAT = frozenset({"databench", "everyday"})

# The tables the old rules were written on are the DataBench training part; three whole tables are held back.
DATABENCH_TRAIN = frozenset(
    {"066_IBM_HR", "069_Taxonomy", "070_OpenFoodFacts", "071_COL", "072_Admissions", "073_Med_Cost"}
)
DATABENCH_HELDOUT = frozenset({"001_Forbes", "002_Titanic", "003_Love"})

# The everyday corpus (`bench/everyday`, public tables from PyPI packages): 7 of 12 whole tables to train on.
EVERYDAY_TRAIN = frozenset(
    {
        "001_cars",
        "002_seattle_weather",
        "004_airports",
        "006_la_riots",
        "007_gapminder",
        "010_statecrime",
        "012_macrodata",
    }
)
EVERYDAY_HELDOUT = frozenset(
    {"003_stocks", "005_iowa_electricity", "008_tips", "009_election", "011_grunfeld"}
)


def benchmarks_dir() -> Path:
    """The shared benchmarks folder: `INSIGHTX_BENCHMARKS_DIR`, else `<repo>/../shared/benchmarks`."""
    override = os.environ.get("INSIGHTX_BENCHMARKS_DIR")
    return Path(override) if override else REPO.parent / "shared" / "benchmarks"


def corpus_dir(corpus: str, root: Path | None = None) -> Path:
    """A corpus's folder: `<root>/<corpus>`; without `root`, the shared benchmarks folder, except the
    everyday corpus, which lives in this repository (`bench/everyday`)."""
    if root is None and corpus == "everyday":
        return REPO / "bench" / "everyday"
    return (root or benchmarks_dir()) / corpus


def cache_dir() -> Path:
    return Path(os.environ.get("INSIGHTX_ANALYST_EVAL_CACHE", REPO / ".cache" / "analyst_eval"))


def split_of(corpus: str, table: str) -> str:
    """`"train"` or `"heldout"` for a whole table; every tool uses this one function, so the split never
    drifts. DataBench and everyday: by dataset folder (fixed lists). WTQ: the sha1 of the table path
    (`tables/t204-590.csv`) as an integer, mod 5 == 0 is held back (about a fifth)."""
    if corpus == "databench":
        if table in DATABENCH_TRAIN:
            return "train"
        if table in DATABENCH_HELDOUT:
            return "heldout"
        raise ValueError(f"DataBench table {table!r} is in neither part of the split")
    if corpus == "everyday":
        if table in EVERYDAY_TRAIN:
            return "train"
        if table in EVERYDAY_HELDOUT:
            return "heldout"
        raise ValueError(f"everyday table {table!r} is in neither part of the split")
    if corpus == "wtq":
        return "heldout" if int(hashlib.sha1(table.encode()).hexdigest(), 16) % 5 == 0 else "train"
    raise ValueError(f"unknown corpus {corpus!r}; expected one of {', '.join(CORPORA)}")


@dataclass(frozen=True)
class Item:
    """One benchmark question with its gold answer."""

    corpus: str
    id: str
    question: str
    table: str  # DataBench: the dataset folder; WTQ: the table's path relative to the corpus folder
    gold: Any  # DataBench: the answer text; WTQ: a list of strings
    kind: str  # DataBench: its type; WTQ: inferred from the gold (boolean, number, category, list)

    @property
    def split(self) -> str:
        return split_of(self.corpus, self.table)


def load_items(corpus: str, root: Path | None = None) -> list[Item]:
    """Every question of `corpus`, in file order."""
    base = corpus_dir(corpus, root)
    lines = (base / "questions.jsonl").read_text().splitlines()
    items = []
    for line in lines:
        if not line.strip():
            continue
        q = json.loads(line)
        if corpus in DATABENCH_FORMAT:
            items.append(Item(corpus, str(q["id"]), q["question"], q["dataset"], q["answer"], q["type"]))
        else:
            items.append(Item(corpus, q["id"], q["question"], q["table"], q["answer"], wtq_kind(q["answer"])))
    return items


# ---- scoring: DataBench ----------------------------------------


def _trunc(x: float) -> float:
    return math.trunc(round(x * 100, 6)) / 100


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def _parse_list(text: str) -> list[Any]:
    try:
        value = ast.literal_eval(text)
        if isinstance(value, list | tuple):
            return list(value)
    except (ValueError, SyntaxError):
        pass
    inner = text.strip().strip("[]")
    return [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]


def _same(a: Any, b: Any) -> bool:
    fa, fb = _to_float(a), _to_float(b)
    if fa is not None and fb is not None:
        return _trunc(fa) == _trunc(fb)
    return str(a).strip().lower() == str(b).strip().lower()


def score(got: Any, gold: str, kind: str) -> bool:
    """Whether `got` (the analyst's typed answer) matches DataBench's gold answer text, by its README:
    booleans True/False; numbers truncated to 2 decimals; lists as sets of the same length; categories
    case-insensitive."""
    if got is None:
        return False
    if kind == "boolean":
        want = gold.strip().lower() in ("true", "yes", "1")
        if isinstance(got, str):
            return got.strip().lower() in ("true", "yes") if want else got.strip().lower() in ("false", "no")
        return isinstance(got, bool) and got == want
    if kind == "number":
        if isinstance(got, list) and len(got) == 1:
            got = got[0]
        g, w = _to_float(got), _to_float(gold)
        return g is not None and w is not None and _trunc(g) == _trunc(w)
    if kind.startswith("list"):
        if not isinstance(got, list):
            return False
        gold_items = _parse_list(gold)
        if len(gold_items) != len(got):
            return False
        remaining = list(gold_items)
        for item in got:
            match = next((i for i, w in enumerate(remaining) if _same(item, w)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    if isinstance(got, list) and len(got) == 1:
        got = got[0]
    return _same(got, gold)


# ---- scoring: WikiTableQuestions ----------------------------------------

_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")


def _wtq_number(text: str) -> float | None:
    """The number a gold or answer string starts with ("1,000" → 1000, "17 years" → 17), else None."""
    m = _NUMBER.match(text.strip())
    if m is None:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def _fold(text: str) -> str:
    """Case, accents and punctuation folded; spaces collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def wtq_kind(gold: list[str]) -> str:
    """The answer type a WTQ gold list implies."""
    if len(gold) > 1:
        return "list"
    g = gold[0].strip().lower() if gold else ""
    if g in ("yes", "no"):
        return "boolean"
    if _wtq_number(g) is not None and re.fullmatch(r"[-+]?[\d,]+(\.\d+)?", g):
        return "number"
    return "category"


def _as_strings(got: Any) -> list[str]:
    if isinstance(got, bool):
        return ["yes" if got else "no"]
    if isinstance(got, list | tuple):
        out: list[str] = []
        for item in got:
            if isinstance(item, dict):
                item = next(iter(item.values()), None)
            elif isinstance(item, list | tuple):
                item = item[0] if item else None
            out.extend(_as_strings(item))
        return out
    if got is None:
        return []
    if isinstance(got, float) and got.is_integer():
        return [str(int(got))]
    return [str(got)]


def _wtq_same(got: str, gold: str) -> bool:
    if _fold(got) == _fold(gold):
        return True
    g, w = _wtq_number(got), _wtq_number(gold)
    if g is None or w is None:
        return False
    # a gold "17 years" accepts 17; a number answer must be the whole of its string
    if not re.fullmatch(r"[-+]?[\d,]+(\.\d+)?", got.strip()):
        return False
    return abs(g - w) <= 1e-6 * max(1.0, abs(w))


def score_wtq(got: Any, gold: list[str]) -> bool:
    """WTQ's rule: the answer's values equal the gold list as a multiset (order ignored), numbers compared
    numerically, strings after folding case, accents and punctuation; yes/no as "yes"/"no"."""
    if got is None:
        return False
    values = _as_strings(got)
    if len(values) != len(gold):
        return False
    remaining = list(gold)
    for value in values:
        match = next((i for i, w in enumerate(remaining) if _wtq_same(value, w)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def is_correct(item: Item, got: Any) -> bool:
    return score(got, item.gold, item.kind) if item.corpus in DATABENCH_FORMAT else score_wtq(got, item.gold)


# ---- loading tables as the engine does ----------------------------------------


@dataclass
class LoadedTable:
    """A benchmark table as the analyst sees it in production: its Parquet and its DatasetContext."""

    dataset: Any  # services.orchestrator.plan.DatasetContext
    parquet: Path
    via: str  # "importer" or "read_csv fallback"


def _wtq_csv_fallback(raw: Path, out: Path) -> None:
    """WTQ CSVs escape quotes as `\\"` inside quoted fields; read them with Python's csv and let DuckDB write
    the Parquet with every column as text, then typed by DuckDB's own casts where all values cast."""
    import duckdb
    import pyarrow as pa

    text = raw.read_text(encoding="utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text), escapechar="\\"))
    header = rows[0] if rows else ["column"]
    names: list[str] = []
    for i, name in enumerate(header):
        name = " ".join(name.split()) or f"column{i + 1}"
        while name in names:
            name += "_"
        names.append(name)
    width = len(names)
    body = [(r + [""] * width)[:width] for r in rows[1:]]
    cols = {n: [r[i] if r[i] != "" else None for r in body] for i, n in enumerate(names)}
    table = pa.table({n: pa.array(v, type=pa.string()) for n, v in cols.items()})
    con = duckdb.connect()
    con.register("raw_rows", table)
    exprs = []
    for n in names:
        q = '"' + n.replace('"', '""') + '"'
        ok = con.execute(
            f"SELECT count(*) = count(try_cast(replace({q}, ',', '') AS BIGINT)) AND count({q}) > 0 "
            "FROM raw_rows"
        ).fetchone()
        okd = con.execute(
            f"SELECT count(*) = count(try_cast(replace({q}, ',', '') AS DOUBLE)) AND count({q}) > 0 "
            "FROM raw_rows"
        ).fetchone()
        if ok and ok[0]:
            exprs.append(f"try_cast(replace({q}, ',', '') AS BIGINT) AS {q}")
        elif okd and okd[0]:
            exprs.append(f"try_cast(replace({q}, ',', '') AS DOUBLE) AS {q}")
        else:
            exprs.append(q)
    con.execute(f"COPY (SELECT {', '.join(exprs)} FROM raw_rows) TO '{out}' (FORMAT parquet)")
    con.close()


def load_table(corpus: str, table: str, root: Path | None = None) -> LoadedTable:
    """Imports and profiles one benchmark table with the engine's functions, cached on disk."""
    from insightx.v1 import sql_engine_pb2
    from services.orchestrator.plan import DatasetContext
    from services.sql_engine.importer import import_file, table_name_for
    from services.sql_engine.profiler import profile_parquet

    base = corpus_dir(corpus, root)
    raw = base / table / "all.parquet" if corpus in DATABENCH_FORMAT else base / table
    filename = f"{table}.parquet" if corpus in DATABENCH_FORMAT else Path(table).name
    key = hashlib.sha1(f"{raw.resolve()}".encode()).hexdigest()[:16]
    folder = cache_dir() / corpus / key
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        profile = sql_engine_pb2.DatasetProfile.FromString((folder / "profile.pb").read_bytes())
        dataset = DatasetContext(
            f"eval-{key}",
            meta["table"],
            meta["rows"],
            [tuple(c) for c in meta["columns"]],
            profile,
            meta["sha"],
        )
        return LoadedTable(dataset, folder / "raw.parquet", meta["via"])
    folder.mkdir(parents=True, exist_ok=True)
    via = "importer"
    try:
        imported = import_file(raw, filename, folder, threads=1)
        parquet, name, rows, columns, sha = (
            imported.parquet,
            imported.table,
            imported.row_count,
            imported.columns,
            imported.sha256,
        )
    except Exception:
        import duckdb

        via = "read_csv fallback"
        parquet = folder / "raw.parquet"
        _wtq_csv_fallback(raw, parquet)
        con = duckdb.connect()
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{parquet}')").fetchall()
        rows = int(con.execute(f"SELECT count(*) FROM read_parquet('{parquet}')").fetchone()[0])  # type: ignore[index]
        con.close()
        columns = [(str(r[0]), str(r[1])) for r in described]
        name = table_name_for(filename)
        sha = hashlib.sha256(parquet.read_bytes()).hexdigest()
    profile = profile_parquet(parquet, columns, rows, threads=1)
    (folder / "profile.pb").write_bytes(profile.SerializeToString())
    meta = {"table": name, "rows": rows, "columns": [list(c) for c in columns], "sha": sha, "via": via}
    meta_path.write_text(json.dumps(meta))
    dataset = DatasetContext(f"eval-{key}", name, rows, columns, profile, sha)
    return LoadedTable(dataset, parquet, via)


# ---- running the analyst in-process ----------------------------------------


@dataclass
class Outcome:
    """What the analyst said about one question, and whether it was right."""

    item: Item
    answer: Any = None
    answer_type: str = "none"
    confidence: float = 0.0
    refused: bool = True
    clarifications: list[str] = field(default_factory=list)
    correct: bool = False
    error: str = ""
    ms: float = 0.0


def _run_python(code: str, frame: Any) -> tuple[Any, Any]:
    """The sandbox's harness, in-process: `df` in, `result` out (a DataFrame comes back as records)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    scope: dict[str, Any] = {"df": frame, "pd": pd, "np": np}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, scope)
    result = scope.get("result")
    if isinstance(result, pd.Series):
        result = result.to_frame()
    if isinstance(result, pd.DataFrame):
        table = pa.Table.from_pandas(result, preserve_index=False)
        return table.to_pylist(), table
    return json.loads(json.dumps(result, default=_json_default)), None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def run_plan(plan: Any, loaded: LoadedTable, con: Any) -> Any:
    """Runs a plan as the pipeline would (SQL on `con`, Python in-process) and returns its composed Answer."""
    from services.orchestrator.plan import StepResults

    results = StepResults()
    if plan.sql:
        results.sql_table = con.sql(plan.sql).to_arrow_table()
    if plan.python_code:
        frame = (
            results.sql_table.to_pandas()
            if plan.python_on_sql_result and results.sql_table is not None
            else con.sql(f'SELECT * FROM "{loaded.dataset.table}"').to_df()
        )
        results.python_result, results.python_table = _run_python(plan.python_code, frame)
    return plan.compose(results)


def sql_runner(con: Any) -> Callable[[str], Any]:
    """Runs one SQL statement on `con` for the analyst's look at its top readings (None when it fails)."""

    def run(sql: str) -> Any:
        try:  # on a cursor of its own: a result left unfinished on `con` does not fail it
            return con.cursor().sql(sql).to_arrow_table()
        except Exception:
            return None

    return run


def ask(
    item: Item,
    loaded: LoadedTable,
    con: Any,
    history: list[tuple[str, str]] | None = None,
    planner: Callable[..., Any] | None = None,
) -> Outcome:
    """Plans `item.question` over `loaded`, runs the SQL on `con` (a view named as the table already exists)
    and the Python step in-process, composes the answer and scores it."""
    from services.orchestrator.builtin import plan_question

    out = Outcome(item)
    started = time.perf_counter()
    try:
        if planner is not None:
            plan = planner(item.question, loaded.dataset, history or [])
        else:  # the top readings are run before the decision, as the orchestrator runs them
            plan = plan_question(item.question, loaded.dataset, history or [], run=sql_runner(con))
        answer = run_plan(plan, loaded, con)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
        out.ms = (time.perf_counter() - started) * 1000
        return out
    out.ms = (time.perf_counter() - started) * 1000
    out.answer = answer.answer
    out.answer_type = answer.answer_type
    out.confidence = float(answer.confidence or 0.0)
    out.clarifications = list(answer.clarifications)
    out.refused = answer.answer is None or answer.answer_type == "none"
    out.correct = (not out.refused) and is_correct(item, answer.answer)
    return out


def evaluate(
    items: Iterable[Item], root: Path | None = None, planner: Callable[..., Any] | None = None
) -> list[Outcome]:
    """Asks every item, table by table (each table loaded once, as a view on one DuckDB connection)."""
    import duckdb

    by_table: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        by_table.setdefault((item.corpus, item.table), []).append(item)
    outcomes: list[Outcome] = []
    con = duckdb.connect()
    for (corpus, table), group in by_table.items():
        try:
            loaded = load_table(corpus, table, root)
        except Exception as exc:
            outcomes.extend(Outcome(i, error=f"load: {type(exc).__name__}: {exc}"[:200]) for i in group)
            continue
        name = loaded.dataset.table
        qname = '"' + name.replace('"', '""') + '"'
        con.execute(f"CREATE OR REPLACE VIEW {qname} AS SELECT * FROM read_parquet('{loaded.parquet}')")
        for item in group:
            outcomes.append(ask(item, loaded, con, planner=planner))
        con.execute(f"DROP VIEW IF EXISTS {qname}")
    con.close()
    return outcomes


# ---- figures ----------------------------------------


@dataclass
class Figures:
    """Accuracy, precision and coverage of a set of outcomes."""

    n: int
    answered: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.answered if self.answered else 0.0

    @property
    def coverage(self) -> float:
        return self.answered / self.n if self.n else 0.0


def figures(outcomes: list[Outcome]) -> Figures:
    return Figures(len(outcomes), sum(not o.refused for o in outcomes), sum(o.correct for o in outcomes))


CONFIDENCE_BINS = ((0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))


def calibration(outcomes: list[Outcome]) -> list[tuple[str, int, float, float]]:
    """(bin, answers, mean stated confidence, measured precision) for each non-empty confidence bin."""
    rows = []
    for lo, hi in CONFIDENCE_BINS:
        inside = [o for o in outcomes if not o.refused and lo <= o.confidence < hi]
        if inside:
            rows.append(
                (
                    f"{lo:.1f}-{min(hi, 1.0):.1f}",
                    len(inside),
                    statistics.fmean(o.confidence for o in inside),
                    sum(o.correct for o in inside) / len(inside),
                )
            )
    return rows


def report(outcomes: list[Outcome], title: str, out: Any = sys.stdout) -> None:
    """Prints the figures for train and held-back separately: overall, per answer type, calibration."""
    for split in ("train", "heldout"):
        part = [o for o in outcomes if o.item.split == split]
        if not part:
            continue
        f = figures(part)
        print(
            f"{title} [{split}]: {f.n} questions, accuracy {f.accuracy:.1%}, precision {f.precision:.1%} "
            f"({f.correct}/{f.answered}), coverage {f.coverage:.1%}, "
            f"errors {sum(bool(o.error) for o in part)}",
            file=out,
        )
        kinds = sorted({o.item.kind for o in part})
        for kind in kinds:
            k = figures([o for o in part if o.item.kind == kind])
            print(
                f"    {kind:<16} n={k.n:<5} acc {k.accuracy:6.1%}  prec {k.precision:6.1%}  "
                f"cov {k.coverage:6.1%}",
                file=out,
            )
        cal = calibration(part)
        if cal:
            print(
                "    calibration: stated confidence bin | answers | mean stated | measured precision",
                file=out,
            )
            for name, n, stated, measured in cal:
                print(f"      {name:<9} {n:>6}   {stated:6.2f}   {measured:6.1%}", file=out)
        ms = [o.ms for o in part if o.ms]
        if ms:
            print(
                f"    median time per question (plan+run+compose): {statistics.median(ms):.1f} ms", file=out
            )


def sweep(outcomes: list[Outcome], out: Any = sys.stdout) -> None:
    """For outcomes asked with threshold 0 (every reading answered): what each threshold would give."""
    for split in ("train", "heldout"):
        part = [o for o in outcomes if o.item.split == split]
        if not part:
            continue
        print(f"    [{split}] threshold | coverage | precision | accuracy", file=out)
        for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            kept = [o for o in part if not o.refused and o.confidence >= t]
            right = sum(o.correct for o in kept)
            print(
                f"      >= {t:.1f}   {len(kept) / len(part):7.1%}   {right / max(len(kept), 1):7.1%}   "
                f"{right / len(part):7.1%}",
                file=out,
            )


def select(
    corpus: str, split: str | None = None, wtq_sample: int = 0, seed: int = 12, root: Path | None = None
) -> list[Item]:
    """The items of `corpus` (one split or both); WTQ optionally sampled per split with a fixed seed."""
    items = load_items(corpus, root)
    if split:
        items = [i for i in items if i.split == split]
    if corpus == "wtq" and wtq_sample:
        rng = random.Random(seed)
        chosen: list[Item] = []
        for part in ("train", "heldout"):
            pool = [i for i in items if i.split == part]
            chosen.extend(rng.sample(pool, min(wtq_sample, len(pool))))
        items = chosen
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=(*CORPORA, "all"), default="all")
    parser.add_argument("--split", choices=("train", "heldout"), default=None)
    parser.add_argument("--wtq-sample", type=int, default=0, help="questions per split, fixed seed (0: all)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--verbose-train", action="store_true", help="list the TRAIN part's failures")
    parser.add_argument("--json", type=Path, default=None, help="write every outcome (train only) here")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="answer at this calibrated confidence (default: shipped)",
    )
    parser.add_argument("--sweep", action="store_true", help="answer all; print each threshold's figures")
    args = parser.parse_args(argv)
    if args.sweep:
        args.threshold = 0.0
    if args.threshold is not None:
        import dataclasses

        from services.orchestrator.builtin import scorer

        shipped = scorer.ranker()
        scorer.ranker.cache_clear()
        patched = dataclasses.replace(shipped, threshold=args.threshold)
        scorer.ranker = lambda: patched  # type: ignore[assignment]
    corpora = CORPORA if args.corpus == "all" else (args.corpus,)
    for corpus in corpora:
        items = select(corpus, args.split, args.wtq_sample, args.seed)
        started = time.perf_counter()
        outcomes = evaluate(items)
        print(f"== {corpus}: {len(items)} questions in {time.perf_counter() - started:.1f} s")
        report(outcomes, corpus)
        if args.sweep:
            sweep(outcomes)
        train = [o for o in outcomes if o.item.split == "train"]
        if args.verbose_train:
            for o in train:
                if not o.correct:
                    status = "refused" if o.refused else "WRONG"
                    print(
                        f"  {status} {o.item.id} [{o.item.kind}] {o.item.question!r} "
                        f"gold={o.item.gold!r:.60} "
                        f"got={o.answer!r:.60} conf={o.confidence:.2f} {o.error}"
                    )
        if args.json:
            rows = [
                {
                    "id": o.item.id,
                    "question": o.item.question,
                    "table": o.item.table,
                    "kind": o.item.kind,
                    "gold": o.item.gold,
                    "answer": _json_default(o.answer)
                    if o.answer is not None and not isinstance(o.answer, (list, str, int, float, bool))
                    else o.answer,
                    "refused": o.refused,
                    "correct": o.correct,
                    "confidence": o.confidence,
                    "error": o.error,
                }
                for o in train
            ]
            path = args.json.with_suffix(f".{corpus}.json") if len(corpora) > 1 else args.json
            path.write_text(json.dumps(rows, default=str, indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
