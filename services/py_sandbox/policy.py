"""The AST policy: early, clear errors for code that reaches for what an analysis never needs.

A courtesy, not the boundary: filters like this one were bypassed in every earlier "chat with your data"
tool (PandasAI, Vanna), so the child's operating-system confinement is what actually holds. The policy
exists so that a language model gets a precise, fixable message instead of a PermissionError.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

MAX_CODE_CHARS = 100_000

ALLOWED_MODULES = frozenset(
    {
        "pandas",
        "numpy",
        "scipy",
        "matplotlib",
        "math",
        "statistics",
        "datetime",
        "collections",
        "itertools",
        "functools",
        "re",
        "json",
        "decimal",
        "fractions",
        "random",
        "string",
        "textwrap",
        "calendar",
        "operator",
        "typing",
        "dataclasses",
        "heapq",
        "bisect",
        "time",
        "zoneinfo",
        "warnings",
    }
)

FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "__import__",
        "input",
        "breakpoint",
        "help",
        "exit",
        "quit",
        "memoryview",
    }
)

FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "ctypes",
        "pickle",
        "shutil",
        "socket",
        "read_pickle",
        "to_pickle",
        "system",
        "popen",
        "spawn",
        "load_library",
        "cdll",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "mro",
        "_getframe",
        "func_globals",
    }
)


@dataclass
class Verdict:
    """The outcome: valid, or one message per violation with its line."""

    violations: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.violations


def check(code: str) -> Verdict:
    """Parses and walks the code; never runs it."""
    verdict = Verdict()
    if len(code) > MAX_CODE_CHARS:
        verdict.violations.append(f"The code is over {MAX_CODE_CHARS:,} characters.")
        return verdict
    try:
        tree = ast.parse(code, "<analysis>")  # identifiers are NFKC-normalised here: fullwidth names too
    except SyntaxError as exc:
        verdict.violations.append(f"line {exc.lineno}: syntax error: {exc.msg}")
        return verdict
    for node in ast.walk(tree):
        problem = _problem(node)
        if problem:
            verdict.violations.append(f"line {getattr(node, 'lineno', '?')}: {problem}")
    return verdict


def _problem(node: ast.AST) -> str | None:
    if isinstance(node, ast.Import):
        bad = [a.name for a in node.names if a.name.split(".")[0] not in ALLOWED_MODULES]
        return f"import of {', '.join(bad)} is not allowed (allowed: {_allowed()})" if bad else None
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level or module.split(".")[0] not in ALLOWED_MODULES:
            return f"import from '{module or '.'}' is not allowed (allowed: {_allowed()})"
        bad = [a.name for a in node.names if a.name.startswith("_") or a.name in FORBIDDEN_ATTRIBUTES]
        return f"importing {', '.join(bad)} is not allowed" if bad else None
    if isinstance(node, ast.Name):
        if node.id.startswith("__") and node.id.endswith("__"):
            return f"the name '{node.id}' is not allowed (no dunder access)"
        if node.id in FORBIDDEN_NAMES:
            return f"'{node.id}' is not allowed in analysis code"
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("__") and node.attr.endswith("__"):
            return f"the attribute '.{node.attr}' is not allowed (no dunder access)"
        if node.attr in FORBIDDEN_ATTRIBUTES:
            return f"the attribute '.{node.attr}' is not allowed in analysis code"
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
        return "strings containing '__' are not allowed (format-string attribute access)"
    return None


def _allowed() -> str:
    return ", ".join(sorted(ALLOWED_MODULES))
