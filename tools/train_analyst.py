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

from tools import analyst_eval as ev

THRESHOLD = 0.5  # answer when answers judged like this one were right at least this often (out of fold)


@dataclass
class Example:
    """One train question: its readings' features and which readings give the gold answer."""

    item: ev.Item
    features: list[dict[str, float]]
    positive: list[bool]
    rows: int = 0


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
            feats, labels = [], []
            for cand in cands:
                ok = False
                try:
                    if cand.plan is not None:
                        ok = ev.is_correct(item, ev.run_plan(cand.plan, loaded, con).answer)
                    elif cand.query is not None:
                        sql = render(cand.query, schema)
                        key = (table, sql)
                        if key not in results_by_sql:
                            try:
                                results_by_sql[key] = con.sql(sql).to_arrow_table()
                            except Exception:
                                results_by_sql[key] = None
                        table_result = results_by_sql[key]
                        value, _ = answer_of(cand.query, StepResults(sql_table=table_result))  # type: ignore[arg-type]
                        ok = value is not None and ev.is_correct(item, value)
                except Exception:
                    ok = False
                feats.append(cand.features)
                labels.append(ok)
            examples.append(Example(item, feats, labels, loaded.dataset.row_count))
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

    def top_probability(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(probability of the top reading, its margin over the second, whether it is positive, its row);
        the runner-up's row of each example is left in `self.seconds`."""
        s = self.x @ w
        probs, margins, correct, rows = [], [], [], []
        self.seconds: list[int] = []
        bounds = np.append(self.starts_arr, len(s))
        for a, b in itertools.pairwise(bounds):
            if a == b:
                probs.append(0.0)
                margins.append(0.0)
                correct.append(False)
                rows.append(-1)
                self.seconds.append(-1)
                continue
            seg = s[a:b]
            e = np.exp(seg - seg.max())
            p = e / e.sum()
            order = np.argsort(-p)
            k = int(order[0])
            probs.append(float(p[k]))
            margins.append(float(p[k] - (p[order[1]] if len(order) > 1 else 0.0)))
            correct.append(bool(self.y_arr[a + k]))
            rows.append(a + k)
            self.seconds.append(a + int(order[1]) if len(order) > 1 else -1)
        return np.array(probs), np.array(margins), np.array(correct), np.array(rows)


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
    oof_p, oof_m = np.zeros(len(examples)), np.zeros(len(examples))
    oof_ok = np.zeros(len(examples), dtype=bool)
    oof_row = np.zeros(len(examples), dtype=np.int64)
    # the small corpora of data exports weigh more, so that WTQ's many wiki tables do not drown them
    ew = np.array([1.0 if ex.item.corpus == "wtq" else args.databench_weight for ex in examples])
    oof_second = np.full(len(examples), -1, dtype=np.int64)
    for fold in range(3):
        w = fit(d, folds != fold, args.l2, ew)
        p, m, ok, rows = d.top_probability(w)
        sel = folds == fold
        oof_p[sel], oof_m[sel], oof_ok[sel], oof_row[sel] = p[sel], m[sel], ok[sel], rows[sel]
        oof_second[sel] = np.array(d.seconds)[sel]
    # stage 2: is the top reading right? features of the top reading plus how clearly it won
    flat = [f for ex in examples for f in ex.features]
    tops = [
        scorer.judge_features(
            flat[r] if r >= 0 else {},
            float(p),
            float(m),
            ex.rows,
            flat[r2] if r2 >= 0 else None,
            len(ex.features),
        )
        for r, r2, p, m, ex in zip(oof_row, oof_second, oof_p, oof_m, examples, strict=True)
    ]
    judge_names = sorted({k for f in tops for k in f})
    jx = np.zeros((len(tops), len(judge_names)))
    jindex = {n: i for i, n in enumerate(judge_names)}
    for i, f in enumerate(tops):
        for k, v in f.items():
            jx[i, jindex[k]] = v
    jy = oof_ok.astype(float)
    folds2 = np.array([zlib.crc32(("j" + ex.item.table).encode()) % 3 for ex in examples])
    oof_q = np.zeros(len(examples))
    for fold in range(3):
        beta = logistic(jx[folds2 != fold], jy[folds2 != fold], args.l2_judge, ew[folds2 != fold])
        oof_q[folds2 == fold] = 1 / (1 + np.exp(-np.clip(jx[folds2 == fold] @ beta, -30, 30)))
    calibration = isotonic(oof_q, jy, ew)
    judge = logistic(jx, jy, args.l2_judge, ew)
    w = fit(d, np.ones(len(examples), dtype=bool), args.l2, ew)
    weights = {n: round(float(b), 4) for n, b in zip(names, w, strict=True) if abs(b) > 1e-4}
    data = {
        "about": "tools/train_analyst.py (make train-analyst): fitted on the train split only; do not edit",
        "questions": len(examples),
        "threshold": THRESHOLD,
        "calibration": calibration,
        "weights": weights,
        "judge": {n: round(float(b), 4) for n, b in zip(judge_names, judge, strict=True) if abs(b) > 1e-4},
    }
    out = args.out or scorer.WEIGHTS
    out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    conf = np.array([max([c for e, c in calibration if q >= e] or [0.0]) for q in oof_q])
    answered = conf >= THRESHOLD
    for corpus in ev.CORPORA:
        sel = np.array([ex.item.corpus == corpus for ex in examples])
        if not sel.any():
            continue
        a = answered & sel
        oracle = np.mean([any(ex.positive) for ex in examples if ex.item.corpus == corpus])
        print(
            f"{corpus}: {sel.sum()} train questions; a right reading exists for {oracle:.1%}; out of fold "
            f"the top reading is right for {oof_ok[sel].mean():.1%}; answering at confidence >= {THRESHOLD}: "
            f"coverage {a.sum() / sel.sum():.1%}, precision {oof_ok[a].mean() if a.any() else 0:.1%}"
        )
        for edge in (0.5, 0.6, 0.7, 0.8):
            a = (conf >= edge) & sel
            print(
                f"    out of fold at >= {edge}: coverage {a.sum() / sel.sum():.1%}, precision "
                f"{oof_ok[a].mean() if a.any() else 0:.1%}, accuracy {(oof_ok & a).sum() / sel.sum():.1%}"
            )
    print(f"{len(d.y)} readings, {len(names)} features, collected in {collected:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
