"""Statistics that SQL does not do well, as sandbox code: outliers and significance tests.

The code runs in the py_sandbox on the SQL result (`df`) and leaves a JSON-friendly dict in `result`.
"""

from __future__ import annotations

from typing import Any

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.schema import Column
from services.orchestrator.plan import Answer, StepResults

OUTLIERS_CODE = """\
s = df["value"].astype(float)
q1, q3 = s.quantile(0.25), s.quantile(0.75)
iqr = q3 - q1
low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
mask = (s < low) | (s > high)
result = {"count": int(mask.sum()), "total": int(s.size), "low": float(low), "high": float(high),
          "examples": [float(v) for v in s[mask].sort_values(ascending=False).head(10)]}
"""

ANOVA_CODE = """\
from scipy import stats
groups = [g["value"].astype(float).to_numpy() for _, g in df.groupby("grp") if len(g) > 1]
names = [str(k) for k, g in df.groupby("grp") if len(g) > 1]
if len(groups) == 2:
    stat, p = stats.ttest_ind(groups[0], groups[1], equal_var=False)
    test = "Welch t-test"
elif len(groups) > 2:
    stat, p = stats.f_oneway(*groups)
    test = "one-way ANOVA"
else:
    stat, p, test = float("nan"), float("nan"), "none"
result = {"test": test, "statistic": float(stat), "p_value": float(p), "groups": names,
          "means": {n: float(g.mean()) for n, g in zip(names, groups)}}
"""

CHI2_CODE = """\
import pandas as pd
from scipy import stats
table = pd.crosstab(df["grp"], df["value"])
chi2, p, dof, _ = stats.chi2_contingency(table)
result = {"test": "chi-square test of independence", "statistic": float(chi2), "p_value": float(p),
          "dof": int(dof)}
"""


def _result(results: StepResults) -> dict[str, Any] | None:
    value = results.python_result
    return value if isinstance(value, dict) else None


def outliers_composer(column: Column, follow_ups: list[str]) -> c.Composer:
    def compose(results: StepResults) -> Answer:
        res = _result(results)
        if res is None:
            return Answer(
                text="The outlier check did not run (the Python sandbox gave no result).",
                answer=None,
                answer_type="none",
                follow_ups=follow_ups,
            )
        text = (
            f"**{res['count']:,}** of {res['total']:,} values of `{column.name}` are outliers by the 1.5×IQR "
            f"rule (outside {c.fmt(res['low'])} … {c.fmt(res['high'])})."
        )
        if res.get("examples"):
            text += " Largest: " + ", ".join(c.fmt(v) for v in res["examples"][:5]) + "."
        return Answer(
            text=text, answer=int(res["count"]), answer_type="number", follow_ups=follow_ups, confidence=0.8
        )

    return compose


def test_composer(what: str, follow_ups: list[str]) -> c.Composer:
    def compose(results: StepResults) -> Answer:
        res = _result(results)
        if res is None or res.get("p_value") is None:
            return Answer(
                text="The significance test did not run (the Python sandbox gave no result).",
                answer=None,
                answer_type="none",
                follow_ups=follow_ups,
            )
        p = float(res["p_value"])
        significant = p < 0.05
        text = (
            f"{what} {res['test']}: statistic {c.fmt(res['statistic'])}, p = {p:.4g} → the difference is "
            f"**{'statistically significant' if significant else 'not statistically significant'}** at 5%."
        )
        return Answer(
            text=text, answer=significant, answer_type="boolean", follow_ups=follow_ups, confidence=0.8
        )

    return compose
