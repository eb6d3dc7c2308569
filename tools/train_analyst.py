"""Fits the built-in analyst's ranker on the TRAIN split only and writes its small data file.

Why: which reading a question means is learned from data, not hand-ordered, and the confidence the analyst
states must be a measured rate. For every train question of DataBench, of the everyday corpus
(`bench/everyday`) and of WikiTableQuestions (a fixed-seed sample) this lists the readings
(`planner.readings`), runs each one in-process, and marks as positive those whose result equals the
gold answer (weak supervision). A log-linear model (L2, L-BFGS) is fitted to put the positives first;
the top reading's out-of-fold probability (folds by whole table, so it is measured on tables the weights
were not fitted to) is mapped to measured precision by isotonic regression. Held-back tables are never read.

    make train-analyst        # = .venv/bin/python -m tools.train_analyst
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, sparse

from services.orchestrator.builtin import planner
from tools import analyst_eval as ev

THRESHOLD = 0.6  # answer when answers judged like this one were right at least this often (out of fold)


@dataclass
class Example:
    """One train question: its readings' features and which readings give the gold answer."""

    item: ev.Item
    features: list[dict[str, float]]
    positive: list[bool]
    rows: int = 0
    answers: list[tuple[object, str] | None] | None = None  # each reading's (value, type); None: not run


RESULTS_CACHE: dict[tuple[str, str], object] = {}


def collect(items: list[ev.Item]) -> list[Example]:
    import duckdb

    from services.orchestrator.builtin.parsed import answer_of
    from services.orchestrator.builtin.planner import readings
    from services.orchestrator.builtin.schema import schema_of
    from services.orchestrator.builtin.sqlgen import render
    from services.orchestrator.plan import StepResults

    examples: list[Example] = []
    by_table: dict[tuple[str, str], list[ev.Item]] = {}
    for item in items:
        by_table.setdefault((item.corpus, item.table), []).append(item)
    con = duckdb.connect()
    con.execute("SET threads=1")
    for (corpus, table), group in by_table.items():
        try:
            loaded = ev.load_table(corpus, table)
        except Exception:
            continue
        name = '"' + loaded.dataset.table.replace('"', '""') + '"'
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{loaded.parquet}')")
        schema = schema_of(loaded.dataset)
        results_by_sql = RESULTS_CACHE
        for item in group:
            try:
                cands, _ = readings(item.question, schema)
            except Exception:
                continue
            feats, labels, answers = [], [], []
            for cand in cands:
                ok = False
                got: tuple[object, str] | None = (None, "none")
                try:
                    if cand.plan is not None:
                        composed = ev.run_plan(cand.plan, loaded, con)
                        # the analyst runs no sandbox before deciding, so it never sees such a result
                        kind = composed.answer_type or "none"
                        got = None if cand.plan.python_code else (composed.answer, kind)
                        ok = ev.is_correct(item, composed.answer)
                    elif cand.query is not None:
                        sql = render(cand.query, schema)
                        key = (table, sql)
                        if key not in results_by_sql:
                            try:
                                results_by_sql[key] = con.sql(sql).to_arrow_table()
                            except Exception:
                                results_by_sql[key] = None
                        table_result = results_by_sql[key]
                        value, kind = answer_of(cand.query, StepResults(sql_table=table_result))  # type: ignore[arg-type]
                        got = (value, kind)
                        ok = value is not None and ev.is_correct(item, value)
                except Exception:
                    ok = False
                feats.append(cand.features)
                labels.append(ok)
                answers.append(got)
            examples.append(Example(item, feats, labels, loaded.dataset.row_count, answers))
        con.execute(f"DROP VIEW IF EXISTS {name}")
    con.close()
    return examples


class Design:
    """All readings of all examples as one sparse matrix, with each example's row range."""

    def __init__(self, examples: list[Example], names: list[str]) -> None:
        index = {n: i for i, n in enumerate(names)}
        rows, cols, vals = [], [], []
        self.starts = []
        self.y = []
        r = 0
        for ex in examples:
            self.starts.append(r)
            for feats, ok in zip(ex.features, ex.positive, strict=True):
                for k, v in feats.items():
                    if k in index:
                        rows.append(r)
                        cols.append(index[k])
                        vals.append(v)
                self.y.append(ok)
                r += 1
        self.x = sparse.csr_matrix((vals, (rows, cols)), shape=(r, len(names)))
        self.y_arr = np.array(self.y, dtype=bool)
        self.starts_arr = np.array(self.starts, dtype=np.int64)
        self.seg = np.repeat(np.arange(len(examples)), np.diff(np.append(self.starts_arr, r)))

    def probabilities(self, w: np.ndarray) -> list[np.ndarray]:
        """Each example's readings' probabilities under weights `w`."""
        s = self.x @ w
        out = []
        for a, b in itertools.pairwise(np.append(self.starts_arr, len(s))):
            seg = s[a:b]
            e = np.exp(seg - seg.max()) if b > a else seg
            out.append(e / e.sum() if b > a else e)
        return out


def fit(d: Design, mask: np.ndarray, l2: float, weight: np.ndarray | None = None) -> np.ndarray:
    """Weights maximizing the probability of the positive readings of the examples in `mask`."""
    keep_seg = mask[d.seg]
    has_pos = np.zeros(len(mask), dtype=bool)
    np.logical_or.at(has_pos, d.seg, d.y_arr)
    rows = keep_seg & has_pos[d.seg]
    x = d.x[rows]
    y = d.y_arr[rows]
    seg = d.seg[rows]
    ex_weight = (weight if weight is not None else np.ones(len(mask)))[seg]
    _, seg = np.unique(seg, return_inverse=True)
    n_seg = int(seg.max()) + 1 if len(seg) else 0
    seg_weight = np.zeros(n_seg)
    seg_weight[seg] = ex_weight

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = x @ w
        m = np.full(n_seg, -np.inf)
        np.maximum.at(m, seg, s)
        e = np.exp(s - m[seg])
        z_all = np.bincount(seg, weights=e, minlength=n_seg)
        z_pos = np.bincount(seg, weights=e * y, minlength=n_seg)
        loss = float(np.sum(seg_weight * (np.log(z_all) - np.log(z_pos)))) + 0.5 * l2 * float(w @ w)
        g = (e / z_all[seg] - (e * y) / z_pos[seg]) * seg_weight[seg]
        grad = x.T @ g + l2 * w
        return loss, grad

    w0 = np.zeros(x.shape[1])
    res = optimize.minimize(objective, w0, jac=True, method="L-BFGS-B", options={"maxiter": 400})
    return res.x


def logistic(x: np.ndarray, y: np.ndarray, l2: float, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted L2 logistic regression by Newton's method (the judge has a few hundred features)."""
    w = np.ones(len(y)) if w is None else w
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (w * (p - y)) + l2 * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta


def isotonic(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> list[tuple[float, float]]:
    """Pool-adjacent-violators: (lowest probability of a block, the block's measured precision)."""
    order = np.argsort(p, kind="stable")
    blocks: list[list[float]] = []  # [start p, weighted right, weight]
    for i in order:
        blocks.append([float(p[i]), float(w[i] * y[i]), float(w[i])])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1][1] += last[1]
            blocks[-1][2] += last[2]
    return [(round(b[0], 4), round(b[1] / b[2], 4)) for b in blocks]


View = tuple[dict[str, float], bool]  # the judge's features of the reading answered, and whether it is right


def top_views(ex: Example, p: np.ndarray) -> tuple[View, View]:
    """(judge features, right?) of the reading the analyst would answer with, when the top readings are run
    (`denotation.Seen` may pass over an empty result) and when none is (blind)."""
    from services.orchestrator.builtin import scorer
    from services.orchestrator.builtin.denotation import Seen

    if not len(p):
        empty = scorer.judge_features({}, 0.0, 0.0, ex.rows)
        return (empty, False), (empty, False)
    order = [int(j) for j in np.argsort(-p, kind="stable")]
    top = order[: planner.PROBED_READINGS]
    answers = ex.answers or [None] * len(ex.features)
    seen = Seen(ex.item.question, [], [answers[j] for j in top], ex.rows)
    views = []
    for k in (seen.chosen(), None):
        first = order[k or 0]
        rest = [j for j in order if j != first]
        second = rest[0] if rest else None
        margin = float(p[first] - (p[second] if second is not None else 0.0))
        feats = scorer.judge_features(
            ex.features[first],
            float(p[first]),
            margin,
            ex.rows,
            ex.features[second] if second is not None else None,
            len(ex.features),
            seen.features_at(k) if k is not None else None,
        )
        views.append((feats, bool(ex.positive[first])))
    return views[0], views[1]


def fit_judge(
    tops: list[dict[str, float]], ok: np.ndarray, examples: list[Example], ew: np.ndarray, l2: float
) -> tuple[dict[str, float], list[tuple[float, float]], np.ndarray]:
    """(judge weights fitted on all, isotonic calibration of its out-of-fold probability, the out-of-fold
    calibrated confidence of each example)."""
    names = sorted({k for f in tops for k in f})
    index = {n: i for i, n in enumerate(names)}
    x = np.zeros((len(tops), len(names)))
    for i, f in enumerate(tops):
        for k, v in f.items():
            x[i, index[k]] = v
    y = ok.astype(float)
    folds = np.array([zlib.crc32(("j" + ex.item.table).encode()) % 3 for ex in examples])
    oof = np.zeros(len(examples))
    for fold in range(3):
        beta = logistic(x[folds != fold], y[folds != fold], l2, ew[folds != fold])
        oof[folds == fold] = 1 / (1 + np.exp(-np.clip(x[folds == fold] @ beta, -30, 30)))
    calibration = isotonic(oof, y, ew)
    beta = logistic(x, y, l2, ew)
    conf = np.array([max([c for e, c in calibration if q >= e] or [0.0]) for q in oof])
    weights = {n: round(float(b), 4) for n, b in zip(names, beta, strict=True) if abs(b) > 1e-4}
    return weights, calibration, conf


def report(examples: list[Example], ok: np.ndarray, conf: np.ndarray, label: str) -> None:
    """Out-of-fold coverage, precision and accuracy per corpus at a few thresholds."""
    print(f"== judged with {label}")
    for corpus in ev.CORPORA:
        sel = np.array([ex.item.corpus == corpus for ex in examples])
        if not sel.any():
            continue
        oracle = np.mean([any(ex.positive) for ex in examples if ex.item.corpus == corpus])
        print(
            f"{corpus}: {sel.sum()} train questions; a right reading exists for {oracle:.1%}; out of fold "
            f"the reading answered is right for {ok[sel].mean():.1%}"
        )
        for edge in (0.5, 0.6, 0.7, 0.8):
            a = (conf >= edge) & sel
            mark = "  <- threshold" if edge == THRESHOLD else ""
            print(
                f"    at >= {edge}: coverage {a.sum() / sel.sum():.1%}, precision "
                f"{ok[a].mean() if a.any() else 0:.1%}, accuracy {(ok & a).sum() / sel.sum():.1%}{mark}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wtq-sample", type=int, default=6000, help="WTQ train questions (fixed seed)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--l2-judge", type=float, default=3.0)
    parser.add_argument("--databench-weight", type=float, default=4.0, help="weight of a DataBench question")
    parser.add_argument(
        "--min-count", type=int, default=3, help="features seen in fewer readings are dropped"
    )
    parser.add_argument("--cache", type=Path, default=None, help="reuse/collect examples in this pickle")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--examples", type=Path, default=None, help="reuse/collect the collected readings in this pickle"
    )
    args = parser.parse_args(argv)
    from services.orchestrator.builtin import scorer

    started = time.perf_counter()
    items = (
        ev.select("databench", "train")
        + ev.select("everyday", "train")
        + ev.select("wtq", "train", wtq_sample=args.wtq_sample)
    )
    if any(i.split != "train" for i in items):
        raise SystemExit("refusing to train on held-back tables")
    if args.cache and args.cache.exists():
        import pickle

        RESULTS_CACHE.update(pickle.loads(args.cache.read_bytes()))
    if args.examples and args.examples.exists():
        import pickle

        examples = pickle.loads(args.examples.read_bytes())  # refit only: the readings are unchanged
    else:
        examples = collect(items)
    if args.examples and not args.examples.exists():
        import pickle

        args.examples.write_bytes(pickle.dumps(examples))
    if args.cache:
        import pickle

        args.cache.write_bytes(pickle.dumps(RESULTS_CACHE))
    collected = time.perf_counter() - started
    counts: dict[str, int] = {}
    for ex in examples:
        for feats in ex.features:
            for k in feats:
                counts[k] = counts.get(k, 0) + 1
    names = sorted(k for k, n in counts.items() if n >= args.min_count)
    d = Design(examples, names)
    folds = np.array([zlib.crc32(ex.item.table.encode()) % 3 for ex in examples])
    # the small corpora of data exports weigh more, so that WTQ's many wiki tables do not drown them
    ew = np.array([1.0 if ex.item.corpus == "wtq" else args.databench_weight for ex in examples])
    probs: list[np.ndarray] = [np.zeros(0)] * len(examples)
    for fold in range(3):
        for i, p in enumerate(d.probabilities(fit(d, folds != fold, args.l2, ew))):
            if folds[i] == fold:
                probs[i] = p
    # stage 2: is the top reading right? judged with the top readings' results, and blind (none run)
    seen_tops, blind_tops, seen_ok, blind_ok = [], [], [], []
    for ex, p in zip(examples, probs, strict=True):
        seen, blind = top_views(ex, p)
        seen_tops.append(seen[0])
        seen_ok.append(seen[1])
        blind_tops.append(blind[0])
        blind_ok.append(blind[1])
    judge, calibration, conf = fit_judge(seen_tops, np.array(seen_ok), examples, ew, args.l2_judge)
    judge_blind, calibration_blind, conf_blind = fit_judge(
        blind_tops, np.array(blind_ok), examples, ew, args.l2_judge
    )
    w = fit(d, np.ones(len(examples), dtype=bool), args.l2, ew)
    weights = {n: round(float(b), 4) for n, b in zip(names, w, strict=True) if abs(b) > 1e-4}
    data = {
        "about": "tools/train_analyst.py (make train-analyst): fitted on the train split only; do not edit",
        "questions": len(examples),
        "threshold": THRESHOLD,
        "calibration": calibration,
        "weights": weights,
        "judge": judge,
        "calibration_blind": calibration_blind,
        "judge_blind": judge_blind,
    }
    out = args.out or scorer.WEIGHTS
    out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    for label, ok, cf in (("top readings run", seen_ok, conf), ("blind", blind_ok, conf_blind)):
        report(examples, np.array(ok), cf, label)
    print(f"{len(d.y)} readings, {len(names)} features, collected in {collected:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
