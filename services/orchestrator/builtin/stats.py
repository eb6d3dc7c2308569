"""Statistics shapes: correlation (in SQL), outliers and significance tests (sandbox code).

The sandbox code runs in the py_sandbox on the SQL result (`df`) and leaves a JSON-friendly dict in `result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.context import _first, _free, _pick, _plan
from services.orchestrator.builtin.schema import Column
from services.orchestrator.plan import Answer, StepResults

if TYPE_CHECKING:
    from services.orchestrator.builtin.context import _Ctx
    from services.orchestrator.plan import Plan

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


def _correlation(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\bcorrelat|\brelationship between\b|\brelated to each other\b|\bassociation between\b"):
        return None
    cols = [col for lk in _free(ctx) + q.links.columns for col in [_pick(lk, lambda x: x.measure)] if col]
    cols = [col for i, col in enumerate(cols) if all(col is not other for other in cols[:i])]
    if len(cols) < 2:
        return None
    a, b = cols[0], cols[1]
    sql = (
        f"SELECT corr({a.sql}, {b.sql}) AS correlation, count(*) AS n FROM {ctx.table}"
        f"{ctx.where([f'{a.sql} IS NOT NULL', f'{b.sql} IS NOT NULL'])}"
    )
    label = f"Pearson correlation between `{a.name}` and `{b.name}`{ctx.basis()}"

    def compose(results: StepResults) -> Answer:
        answer = c.number(label, ctx.follow_ups(a, b))(results)
        if isinstance(answer.answer, float):
            r = answer.answer
            strength = (
                "strong"
                if abs(r) >= 0.7
                else "moderate"
                if abs(r) >= 0.4
                else "weak"
                if abs(r) >= 0.1
                else "no meaningful"
            )
            direction = "positive" if r > 0 else "negative"
            answer.text += (
                " There is no meaningful linear relationship."
                if strength == "no meaningful"
                else f" That is a {strength} {direction} linear relationship."
            )
        return answer

    return _plan(ctx, sql, compose, f"Correlation of two measures: corr(`{a.name}`, `{b.name}`).")


def _outliers(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\boutlier|\banomal|\bunusual(ly)?\b|\bextreme values?\b"):
        return None
    col = _first(ctx, lambda x: x.measure)
    if col is None:
        return None
    sql = f"SELECT {col.sql} AS value FROM {ctx.table}{ctx.where([f'{col.sql} IS NOT NULL'])}"
    return _plan(
        ctx,
        sql,
        outliers_composer(col, ctx.follow_ups(col)),
        f"Outliers of `{col.name}` by the 1.5×IQR rule, computed in the sandbox.",
        "SQL_THEN_PY",
        OUTLIERS_CODE,
        True,
    )


def _significance(ctx: _Ctx) -> Plan | None:
    q = ctx.q
    if not q.has(r"\bsignifican|\bstatistically\b|\bt-test\b|\bp-value\b|\bchi[- ]?squared?\b|\bchi2\b"):
        return None
    measure = _first(ctx, lambda x: x.measure)
    group = _first(ctx, lambda x: x.textual and not x.listlike and 1 < x.distinct <= 50, exclude=(measure,))
    if group is None:
        fcol = next((f.column for f in q.filters if f.column is not None and f.column.textual), None)
        group = fcol
    if group is None:
        return None
    if measure is not None:
        sql = (
            f"SELECT {group.sql}::VARCHAR AS grp, {measure.sql} AS value FROM {ctx.table} "
            f"WHERE {measure.sql} IS NOT NULL AND {group.sql} IS NOT NULL"
        )
        code = ANOVA_CODE
        reasoning = (
            f"Does `{measure.name}` differ across `{group.name}`? Welch t-test / ANOVA in the sandbox."
        )
    else:
        other = _first(ctx, lambda x: x.textual and 1 < x.distinct <= 50, exclude=(group,))
        if other is None:
            return None
        sql = (
            f"SELECT {group.sql}::VARCHAR AS grp, {other.sql}::VARCHAR AS value FROM {ctx.table} WHERE "
            f"{group.sql} IS NOT NULL AND {other.sql} IS NOT NULL"
        )
        code = CHI2_CODE
        reasoning = f"Are `{group.name}` and `{other.name}` independent? Chi-square test in the sandbox."
    return _plan(
        ctx,
        sql,
        test_composer(reasoning, ctx.follow_ups(group, measure)),
        reasoning,
        "SQL_THEN_PY",
        code,
        True,
    )
