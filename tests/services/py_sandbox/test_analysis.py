"""Real analysis through a real PySandboxService, with the policy on as in production."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from common.arrow import ipc_to_table, to_table_result
from insightx.v1 import py_sandbox_pb2 as pb
from tests.services.py_sandbox.conftest import SESSION, Sandbox, sample_frame

pytestmark = pytest.mark.integration
in_module_loop = pytest.mark.asyncio(loop_scope="module")


def ok(reply: pb.RunCodeResponse) -> pb.RunCodeResponse:
    assert not reply.HasField("error"), reply.error.message
    return reply


@in_module_loop
async def test_group_by_returns_a_table(sandbox: Sandbox) -> None:
    reply = ok(await sandbox.run("result = df.groupby('region')['amount'].agg(['mean', 'count'])"))
    table = ipc_to_table(reply.result_table.arrow_ipc).to_pandas().set_index("region")
    expected = sample_frame().groupby("region")["amount"].agg(["mean", "count"])
    assert reply.result_table.row_count == 4
    assert [c.name for c in reply.result_table.columns] == ["region", "mean", "count"]
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


@in_module_loop
async def test_scipy_tests_and_regression(sandbox: Sandbox) -> None:
    code = """
from scipy import stats
web = df.loc[df['channel'] == 'web', 'amount']
store = df.loc[df['channel'] == 'store', 'amount']
t = stats.ttest_ind(web, store, equal_var=False)
r = stats.pearsonr(df['amount'], df['price'])
line = stats.linregress(df['amount'], df['price'])
chi2, p, dof, _ = stats.chi2_contingency(pd.crosstab(df['region'], df['channel']))
result = {'t_p': float(t.pvalue), 'r': float(r.statistic), 'slope': line.slope}
result.update({'chi2': chi2, 'chi2_p': p, 'dof': dof})
"""
    got = json.loads(ok(await sandbox.run(code)).result_json)
    frame = sample_frame()
    web = frame.loc[frame["channel"] == "web", "amount"]
    store = frame.loc[frame["channel"] == "store", "amount"]
    assert got["t_p"] == pytest.approx(stats.ttest_ind(web, store, equal_var=False).pvalue)
    assert got["r"] == pytest.approx(stats.pearsonr(frame["amount"], frame["price"]).statistic)
    assert got["slope"] == pytest.approx(stats.linregress(frame["amount"], frame["price"]).slope)
    chi2, p, dof, _ = stats.chi2_contingency(pd.crosstab(frame["region"], frame["channel"]))
    assert (got["chi2"], got["chi2_p"], got["dof"]) == (pytest.approx(chi2), pytest.approx(p), dof)
    assert got["r"] > 0.9  # price follows amount in the sample


@in_module_loop
async def test_z_score_outliers(sandbox: Sandbox) -> None:
    code = """
z = (df['amount'] - df['amount'].mean()) / df['amount'].std()
result = sorted(df.loc[z.abs() > 3, 'amount'].round(1).tolist())
"""
    assert json.loads(ok(await sandbox.run(code)).result_json) == [-150.0, 380.0, 400.0, 420.0, 500.0]


@in_module_loop
async def test_rolling_mean_over_time(sandbox: Sandbox) -> None:
    code = """
daily = df.assign(day=pd.to_datetime(df['day'])).set_index('day')['amount']
result = daily.rolling(7).mean().dropna().head(3)
"""
    reply = ok(await sandbox.run(code))
    table = ipc_to_table(reply.result_table.arrow_ipc).to_pandas()
    expected = sample_frame()["amount"].rolling(7).mean().dropna().head(3).to_numpy()
    np.testing.assert_allclose(table["amount"].to_numpy(), expected)
    assert "day" in table.columns


@in_module_loop
async def test_a_matplotlib_figure_comes_back_as_png(sandbox: Sandbox) -> None:
    code = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
df.groupby('region')['amount'].mean().plot.bar(ax=ax)
ax.set_title('Mean amount by region')
print('plotted')
result = 'ok'
"""
    reply = ok(await sandbox.run(code))
    assert len(reply.figures) == 1
    figure = reply.figures[0]
    assert figure.mime_type == "image/png"
    assert figure.data.startswith(b"\x89PNG\r\n\x1a\n") and len(figure.data) > 2000
    assert reply.stdout == "plotted\n"


@in_module_loop
async def test_figures_beyond_the_cap_are_dropped_with_a_note(sandbox: Sandbox) -> None:
    code = "import matplotlib.pyplot as plt\nfor i in range(12):\n    plt.figure()\nresult = 1"
    reply = ok(await sandbox.run(code))
    assert len(reply.figures) == sandbox.settings.sandbox_max_figures
    assert "only the first" in reply.stderr


@in_module_loop
async def test_a_given_table_replaces_the_dataset(sandbox: Sandbox) -> None:
    import pyarrow as pa

    given = to_table_result(pa.table({"k": ["a", "b", "a"], "v": [1.0, 2.0, 4.0]}))
    request = pb.RunCodeRequest(code="result = df.groupby('k')['v'].sum().to_dict()", input_table=given)
    reply = ok(await sandbox.stub.RunCode(request, timeout=30))
    assert json.loads(reply.result_json) == {"a": 5.0, "b": 2.0}


@in_module_loop
async def test_large_frames_are_truncated_at_the_row_cap(sandbox: Sandbox) -> None:
    reply = ok(await sandbox.run("result = pd.concat([df] * 6)"))
    assert reply.result_table.row_count == sandbox.settings.sandbox_max_result_rows
    assert reply.result_table.truncated


@in_module_loop
async def test_numpy_and_nan_results_become_json(sandbox: Sandbox) -> None:
    code = "result = {'n': np.int64(3), 'x': np.float64('nan'), 'a': np.arange(3), 'b': np.bool_(True)}"
    assert json.loads(ok(await sandbox.run(code)).result_json) == {
        "n": 3,
        "x": None,
        "a": [0, 1, 2],
        "b": True,
    }


@in_module_loop
async def test_exceptions_name_the_line(sandbox: Sandbox) -> None:
    reply = await sandbox.run("x = 1\nresult = df['no such column']")
    assert reply.error.category == pb.RUN_ERROR_CATEGORY_EXCEPTION
    assert reply.error.message.startswith("KeyError") and "(line 2)" in reply.error.message


@in_module_loop
async def test_the_policy_answers_before_any_child_runs(sandbox: Sandbox) -> None:
    reply = await sandbox.run("import os\nresult = os.listdir('/')")
    assert reply.error.category == pb.RUN_ERROR_CATEGORY_POLICY
    assert "import of os is not allowed" in reply.error.message
    verdict = await sandbox.stub.ValidateCode(pb.ValidateCodeRequest(code="x = ().__class__"), timeout=5)
    assert not verdict.valid and "line 1" in verdict.violations[0]


@in_module_loop
async def test_the_session_dataset_is_the_one_loaded(sandbox: Sandbox) -> None:
    reply = ok(await sandbox.run("result = [len(df), list(df.columns)]", session_id=SESSION))
    assert json.loads(reply.result_json) == [2000, ["region", "channel", "amount", "units", "day", "price"]]
