"""Reads what a model replied: JSON with or without fences, SQL or Python in fences or bare.

Models wrap answers in prose, fences, trailing commas and smart quotes; these functions find the payload or
raise `UnparseableReply`, which the pipeline treats as an error to correct (ask again), never a crash.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SQL_START = re.compile(r"(?is)\b(WITH|SELECT|FROM)\b")
_BARE_SQL = re.compile(r"(?is)\b(WITH\s+[\w\"]+\s+AS\s*\(|SELECT\s).*")


class UnparseableReply(ValueError):
    """The reply holds no payload of the expected kind; the message says what was expected."""


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every ``` block as (language, body), in order."""
    return [(lang.lower(), body.strip()) for lang, body in _FENCE.findall(text or "")]


def balanced_objects(text: str) -> list[str]:
    """Substrings of `text` that are brace-balanced `{...}` (strings respected), outermost first."""
    found: list[str] = []
    depth, start, in_string, escaped = 0, -1, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                found.append(text[start : i + 1])
    return found


def loads_lenient(candidate: str) -> Any:
    text = candidate.strip().replace("\u201c", '"').replace("\u201d", '"')
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(_TRAILING_COMMA.sub(r"\1", text))


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a reply: a ```json block, a bare object, or one inside prose."""
    candidates = [body for lang, body in fenced_blocks(text) if lang in ("json", "", "javascript")]
    candidates.append(text or "")
    for candidate in candidates:
        for chunk in [candidate, *balanced_objects(candidate)]:
            try:
                value = loads_lenient(chunk)
            except (json.JSONDecodeError, ValueError):
                continue
            if isinstance(value, dict):
                return value
    raise UnparseableReply("a JSON object")


def parse_sql(text: str) -> str:
    """The SQL of a reply: a ```sql block, a JSON {"sql": ...}, or a bare SELECT/WITH statement."""
    for lang, body in fenced_blocks(text):
        if lang in ("sql", "duckdb", "postgresql", "") and _SQL_START.search(body):
            return _clean_sql(body)
    try:
        obj = parse_json_object(text)
    except UnparseableReply:
        obj = {}
    if isinstance(obj.get("sql"), str) and obj["sql"].strip():
        return _clean_sql(obj["sql"])
    match = _BARE_SQL.search(text or "")
    if match:
        return _clean_sql(re.split(r"\n\s*\n", match.group(0), maxsplit=1)[0])  # prose may follow
    raise UnparseableReply("one SQL SELECT statement in a ```sql block")


def _clean_sql(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise UnparseableReply("one SQL SELECT statement in a ```sql block")
    return sql


def parse_python(text: str) -> str:
    """The code of a reply: a ```python block, a JSON {"code": ...}, or the bare reply if it compiles."""
    for lang, body in fenced_blocks(text):
        if lang in ("python", "py", "python3", "") and body:
            return body
    try:
        obj = parse_json_object(text)
    except UnparseableReply:
        obj = {}
    if isinstance(obj.get("code"), str) and obj["code"].strip():
        return str(obj["code"]).strip()
    body = (text or "").strip()
    if body and "result" in body:
        try:
            compile(body, "<reply>", "exec")
        except SyntaxError:
            pass
        else:
            return body
    raise UnparseableReply("Python code in a ```python block that sets `result`")
