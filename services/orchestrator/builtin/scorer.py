"""The ranker: a log-linear model over the reader's features, and its calibration, from one data file.

Why: which reading is meant is learned, not hand-ordered. `tools/train_analyst.py` fits the weights on the
TRAIN split only (weak supervision: a reading whose result equals the gold answer is a positive) and maps
the top reading's probability to the precision measured on tables the weights were not fitted to.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.orchestrator.builtin.reader import Candidate

WEIGHTS = Path(__file__).with_name("parser_weights.json")


def _op_of(features: dict[str, float]) -> str:
    return next((k for k in features if k.startswith("op=") and "&" not in k), "")


def judge_features(
    top: dict[str, float],
    p: float,
    margin: float,
    rows: int,
    second: dict[str, float] | None = None,
    readings: int = 0,
    seen: dict[str, float] | None = None,
) -> dict[str, float]:
    """What the judge sees of the top reading: its own features, how clearly it won, whether the runner-up
    computes the same thing (then only a column is in doubt), how many readings competed and, when the top
    readings were run, what its result says (`denotation.Seen`)."""
    f = {f"top:{k}": v for k, v in top.items()}
    f.update({f"top:{k}": v for k, v in (seen or {}).items()})
    f["bias"] = 1.0
    del rows  # as a feature, the table's size learned which corpus a table came from, not how clear it is
    if second is not None:
        f["second_same_op" if _op_of(second) == _op_of(top) else "second_other_op"] = 1.0
    if readings:
        f["readings<=3" if readings <= 3 else "readings<=12" if readings <= 12 else "readings>12"] = 1.0
    f["p"] = p
    f["margin"] = margin
    op = _op_of(top)
    for edge in (0.3, 0.5, 0.7, 0.9):
        if p >= edge:
            f[f"p>={edge}"] = 1.0
            f[f"{op}&p>={edge}"] = 1.0
        if margin >= edge:
            f[f"margin>={edge}"] = 1.0
    return f


@dataclass(frozen=True)
class Ranker:
    weights: dict[str, float]
    threshold: float  # calibrated confidence under which the analyst asks instead of answering
    calibration: list[tuple[float, float]]  # (judge probability at least, measured precision), ascending
    judge: dict[str, float]  # logistic weights: is the top reading right? (its result seen)
    judge_blind: dict[str, float] | None = None  # the same judge when no reading could be run
    calibration_blind: list[tuple[float, float]] | None = None

    def score(self, c: Candidate) -> float:
        return sum(self.weights.get(k, 0.0) * v for k, v in c.features.items())

    def confidence(
        self,
        top: Candidate,
        p: float,
        margin: float,
        rows: int,
        second: Candidate | None = None,
        readings: int = 0,
        seen: dict[str, float] | None = None,
    ) -> float:
        """The precision measured (out of fold, on train tables) for top readings judged like this one;
        `seen`: the top reading's result features, when the top readings were run."""
        blind = seen is None and self.judge_blind is not None
        judge = self.judge_blind if blind and self.judge_blind is not None else self.judge
        calibration = self.calibration_blind if blind and self.calibration_blind else self.calibration
        feats = judge_features(
            top.features, p, margin, rows, second.features if second else None, readings, seen
        )
        z = sum(judge.get(k, 0.0) * v for k, v in feats.items())
        q = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
        out = 0.0
        for edge, precision in calibration:
            if q >= edge:
                out = precision
        return out


def softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


@lru_cache(maxsize=1)
def ranker() -> Ranker:
    """The shipped ranker (hand-set neutral weights when the data file is absent)."""
    if not WEIGHTS.exists():
        return Ranker({}, 1.01, [], {})
    data: dict[str, Any] = json.loads(WEIGHTS.read_text())
    return Ranker(
        {k: float(v) for k, v in data["weights"].items()},
        float(data["threshold"]),
        [(float(a), float(b)) for a, b in data["calibration"]],
        {k: float(v) for k, v in data.get("judge", {}).items()},
        {k: float(v) for k, v in data["judge_blind"].items()} if "judge_blind" in data else None,
        [(float(a), float(b)) for a, b in data["calibration_blind"]] if "calibration_blind" in data else None,
    )


def ranked(candidates: list[Candidate], model: Ranker | None = None) -> list[tuple[Candidate, float]]:
    """Candidates with their probability, most probable first."""
    m = model or ranker()
    probs = softmax([m.score(c) for c in candidates])
    return sorted(zip(candidates, probs, strict=True), key=lambda cp: -cp[1])
