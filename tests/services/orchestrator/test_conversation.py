"""A five-turn conversation whose later questions only make sense with the earlier ones.

The scripted SQL writer resolves references the way a model would, from what its prompt shows: devices,
weekends and age groups mentioned anywhere in the conversation so far. So each turn's SQL can only be right
if the history reached the prompt.
"""

from __future__ import annotations

import re

import duckdb
import pytest
from google.protobuf import json_format

from tests.services.orchestrator.conftest import StartChat, kinds, of_kind

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

TURNS = [
    "What is the failure rate for Android users?",
    "Why is that higher than iOS?",
    "Is this pattern consistent on weekends too?",
    "Now break it down by age group.",
    "Which age group should we prioritize fixing first?",
]
RATE = "avg(CASE WHEN \"transaction_status\" = 'FAILED' THEN 1.0 ELSE 0.0 END)"


def section(prompt: str, title: str) -> str:
    match = re.search(rf"## {re.escape(title)}\n(.*?)(?=\n## |\Z)", prompt, re.DOTALL)
    return match.group(1) if match else ""


def sql_writer(prompt: str) -> str:
    """Reads the question in the light of the conversation so far, as a model would."""
    question = section(prompt, "Question")
    context = section(prompt, "Conversation so far") + "\n" + question
    devices = [d for d in ("Android", "iOS", "Web") if d in context]
    where = []
    if devices:
        where.append('"device_type" IN (' + ", ".join(f"'{d}'" for d in devices) + ")")
    if "weekend" in context.lower():
        where.append('"is_weekend" = 1')
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    if "prioritize" in question:
        worst = devices[0] if devices else "Android"
        return (
            f'SELECT "sender_age_group" FROM "upi_transactions" WHERE "device_type" = \'{worst}\''
            + (' AND "is_weekend" = 1' if "weekend" in context.lower() else "")
            + f" GROUP BY 1 ORDER BY {RATE} DESC LIMIT 1"
        )
    groups = []
    if "age group" in context.lower():
        groups.append('"sender_age_group"')
    if len(devices) > 1:
        groups.append('"device_type"')
    if not groups:
        return f'SELECT {RATE} AS failure_rate FROM "upi_transactions"{clause}'
    keys = ", ".join(groups)
    select = f'SELECT {keys}, {RATE} AS failure_rate FROM "upi_transactions"{clause}'
    return f"{select} GROUP BY {keys} ORDER BY {keys}"


def composer(prompt: str) -> str:
    return f"About: {section(prompt, 'Question').strip()}\n" + '{"follow_ups": []}'


async def test_five_turns_resolve_references_to_earlier_turns(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = sql_writer
    chat.model.handlers["composer"] = composer
    history: list[tuple[str, str]] = []
    queries: list[str] = []
    finals = []
    for turn, question in enumerate(TURNS):
        events = await chat.ask(question, chat_id="conversation", history=history)
        assert kinds(events)[-1] == "final_response", events[-1]
        query = of_kind(events, "sql_result")[-1].query
        queries.append(query)
        finals.append(events[-1].final_response)
        for agent in ("classifier", "sql", "composer"):
            prompt = chat.model.prompts(agent)[-1]
            earlier = section(prompt, "Conversation so far")
            assert all(q in earlier for q in TURNS[:turn]), (agent, turn)
            assert section(prompt, "Question").strip() == question
        history += [("user", question), ("assistant", events[-1].final_response.text)]

    assert "'Android'" in queries[0] and "iOS" not in queries[0]
    # "that" is Android's failure rate: compared with iOS
    assert "'Android', 'iOS'" in queries[1] and 'GROUP BY "device_type"' in queries[1]
    # "this pattern" is the Android/iOS comparison, now on weekends
    assert "'Android', 'iOS'" in queries[2] and '"is_weekend" = 1' in queries[2]
    # "it" is still that comparison, broken down by age group
    assert '"sender_age_group"' in queries[3] and "'Android', 'iOS'" in queries[3]
    # "first" means the age group where Android (the worse platform) fails most
    assert "'Android'" in queries[4] and "LIMIT 1" in queries[4]

    con = duckdb.connect()
    con.execute(f"CREATE VIEW upi_transactions AS SELECT * FROM read_csv_auto('{chat.backend.csv}')")
    expected = con.execute(queries[4]).fetchone()[0]  # type: ignore[index]
    assert json_format.MessageToDict(finals[4].answer) == expected
    assert finals[4].answer_type == "category"
    rates = con.execute(queries[1]).fetchall()
    assert [r[0] for r in rates] == ["Android", "iOS"] and rates[0][1] > rates[1][1]
