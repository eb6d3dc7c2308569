"""The AST policy: analysis code passes; the usual escapes get a precise message with their line."""

from __future__ import annotations

import pytest

from services.py_sandbox import policy

ANALYSIS = """
import numpy as np
import pandas as pd
from scipy import stats
import matplotlib.pyplot as plt
z = (df['amount'] - df['amount'].mean()) / df['amount'].std()
result = {'outliers': int((z.abs() > 3).sum()), 't': stats.ttest_ind(df['a'], df['b']).pvalue}
print(f"{len(df)} rows")
"""


def test_ordinary_analysis_passes() -> None:
    verdict = policy.check(ANALYSIS)
    assert verdict.valid, verdict.violations


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("import os", "import of os"),
        ("import importlib", "import of importlib"),
        ("from subprocess import run", "import from 'subprocess'"),
        ("from . import x", "import from"),
        ("import ctypes", "import of ctypes"),
        ("import pickle", "import of pickle"),
        ("__import__('os')", "'__import__'"),
        ("x = pd.io.common.os", "'.os'"),
        ("import sys\nsys.modules['os']", "import of sys"),
        ("x = ().__class__.__mro__[1].__subclasses__()", "'.__class__'"),
        ("g = (i for i in [1])\nf = g.gi_frame.f_back", "'.gi_frame'"),
        ("try:\n    1/0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame", "'.__traceback__'"),
        ("@exec\n@lambda _: 'print(1)'\nclass A: pass", "'exec'"),
        ("x = '{0.__class__}'.format(1)", "strings containing '__'"),
        ("ｅｖａｌ('1')", "'eval'"),  # fullwidth: the parser folds it to `eval`
        ("f = getattr", "'getattr'"),
        ("open('/etc/passwd')", "'open'"),
        ("df.to_pickle('x')", "'.to_pickle'"),
        ("pd.read_pickle('x')", "'.read_pickle'"),
        ("def f(:\n  pass", "syntax error"),
    ],
)
def test_escapes_are_named(code: str, fragment: str) -> None:
    verdict = policy.check(code)
    assert not verdict.valid
    assert any(fragment in v for v in verdict.violations), verdict.violations
    assert all(v.startswith("line ") or "characters" in v for v in verdict.violations)


def test_the_line_of_the_violation_is_given() -> None:
    verdict = policy.check("x = 1\ny = 2\nimport os\n")
    assert verdict.violations == [verdict.violations[0]] and verdict.violations[0].startswith("line 3:")


def test_oversized_code_is_refused() -> None:
    assert not policy.check("x = 1\n" * 30_000).valid
