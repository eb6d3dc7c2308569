"""Reading model replies: JSON with or without fences, SQL and Python in fences or bare."""

from __future__ import annotations

import pytest

from services.orchestrator.replies import UnparseableReply, parse_json_object, parse_python, parse_sql


@pytest.mark.parametrize(
    "reply",
    [
        '{"classification": "SQL_ONLY", "reasoning": "a count"}',
        '```json\n{"classification": "SQL_ONLY", "reasoning": "a count"}\n```',
        'Sure! Here it is:\n{"classification": "SQL_ONLY", "reasoning": "a count",}\nHope that helps.',
        "```\n{\u201cclassification\u201d: \u201cSQL_ONLY\u201d,"
        " \u201creasoning\u201d: \u201ca count\u201d}\n```",
    ],
)
def test_json_is_found_with_or_without_fences_and_prose(reply: str) -> None:
    assert parse_json_object(reply) == {"classification": "SQL_ONLY", "reasoning": "a count"}


def test_json_with_braces_inside_strings() -> None:
    assert parse_json_object('x {"a": "}{", "b": {"c": 1}} y') == {"a": "}{", "b": {"c": 1}}


@pytest.mark.parametrize("reply", ["", "no json here", "[1, 2]", "{broken"])
def test_no_json_object_is_unparseable(reply: str) -> None:
    with pytest.raises(UnparseableReply):
        parse_json_object(reply)


@pytest.mark.parametrize(
    "reply",
    [
        'SELECT count(*) FROM "t";',
        '```sql\nSELECT count(*) FROM "t";\n```',
        'Here is the query:\n```SQL\nSELECT count(*) FROM "t"\n```\nIt counts rows.',
        '{"sql": "SELECT count(*) FROM \\"t\\""}',
        'The answer needs: SELECT count(*) FROM "t"',
    ],
)
def test_sql_is_found(reply: str) -> None:
    assert parse_sql(reply) == 'SELECT count(*) FROM "t"'


def test_sql_with_cte_is_kept_whole() -> None:
    reply = "```sql\nWITH x AS (SELECT 1 AS a)\nSELECT a FROM x\n```"
    assert parse_sql(reply) == "WITH x AS (SELECT 1 AS a)\nSELECT a FROM x"


@pytest.mark.parametrize("reply", ["", "I cannot help with that.", "```\nnothing\n```"])
def test_no_sql_is_unparseable(reply: str) -> None:
    with pytest.raises(UnparseableReply):
        parse_sql(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "```python\nresult = df['a'].mean()\n```",
        "Code:\n```py\nresult = df['a'].mean()\n```",
        "result = df['a'].mean()",
        '{"code": "result = df[\'a\'].mean()"}',
    ],
)
def test_python_is_found(reply: str) -> None:
    assert parse_python(reply) == "result = df['a'].mean()"


@pytest.mark.parametrize("reply", ["", "The mean is high.", "result = = 3"])
def test_no_python_is_unparseable(reply: str) -> None:
    with pytest.raises(UnparseableReply):
        parse_python(reply)


def test_bare_sql_stops_at_the_prose_after_it() -> None:
    reply = 'SELECT count(*)\nFROM "t"\n\nThis counts every row.'
    assert parse_sql(reply) == 'SELECT count(*)\nFROM "t"'
