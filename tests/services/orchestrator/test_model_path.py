"""The model path end to end over real servers: self-correction, Python on the whole table, the validator."""

from __future__ import annotations

import json

import duckdb
import pytest
from google.protobuf import json_format

from common.arrow import ipc_to_table
from insightx.v1 import orchestrator_pb2 as opb
from tests.services.orchestrator.conftest import DEMO_ROWS, StartChat, kinds, of_kind

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ANDROID_RATE = (
    "SELECT avg(CASE WHEN \"transaction_status\" = 'FAILED' THEN 1.0 ELSE 0.0 END) AS failure_rate "
    'FROM "upi_transactions" WHERE "device_type" = \'Android\''
)


def truth(csv: str, sql: str) -> object:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW upi_transactions AS SELECT * FROM read_csv_auto('{csv}')")
    return con.execute(sql).fetchone()[0]  # type: ignore[index]


async def test_failing_sql_is_corrected_on_the_second_try(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue(
        "sql",
        '```sql\nSELECT avg(failed) FROM "upi_transactions" WHERE "device" = \'Android\'\n```',
        f"```sql\n{ANDROID_RATE};\n```",
    )
    chat.model.queue(
        "composer",
        'Android transactions fail about **5%** of the time.\n{"answer": 0.05, "follow_ups": ["And iOS?"]}',
    )
    events = await chat.ask("What is the failure rate for Android users?")

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    attempts = of_kind(events, "sql_result")
    assert [a.attempt for a in attempts] == [1, 2]
    # each attempt says it is running before the engine works on it (the page shows it during a long query)
    messages = [e.status.message if e.HasField("status") else "" for e in events]
    results_at = [i for i, e in enumerate(events) if e.HasField("sql_result")]
    starts = [i for i, m in enumerate(messages) if m == "Running SQL on DuckDB"]
    assert len(starts) == 2 and starts[0] < results_at[0] < starts[1] < results_at[1]
    assert attempts[0].error_reason == "SQL_BINDER" and "device" in attempts[0].error
    assert not attempts[0].result.arrow_ipc
    assert attempts[1].error == "" and attempts[1].query == ANDROID_RATE
    rate = ipc_to_table(attempts[1].result.arrow_ipc).column(0)[0].as_py()
    assert rate == pytest.approx(truth(str(chat.backend.csv), ANDROID_RATE))
    # the second prompt carried the engine's reason and message, and the schema to fix it with
    second = chat.model.prompts("sql")[1]
    assert "SQL_BINDER" in second and attempts[0].error in second
    assert '"device_type" VARCHAR' in second
    final = events[-1].final_response
    assert kinds(events)[-1] == "final_response"
    assert final.sql == ANDROID_RATE and final.follow_ups == ["And iOS?"]
    assert final.answer_type == "number" and not final.cached
    assert final.confidence < 0.9  # one correction costs confidence
    assert of_kind(events, "orchestrator_result")[0].source == "llm"


async def test_py_only_runs_on_the_whole_table(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue("classifier", '```json\n{"classification": "PY_ONLY", "reasoning": "a statistic"}\n```')
    chat.model.queue(
        "python",
        "```python\nresult = {'rows': int(len(df)), "
        "'corr': float(df['amount (INR)'].corr(df['hour_of_day']))}\n```",
    )
    events = await chat.ask("How does amount correlate with hour of day, over every transaction?")

    assert "sql_result" not in kinds(events)
    assert of_kind(events, "orchestrator_result")[0].classification == opb.CLASSIFICATION_PY_ONLY
    runs = of_kind(events, "python_result")
    assert len(runs) == 1 and runs[0].error == ""
    result = json.loads(runs[0].results_json)
    assert result["rows"] == DEMO_ROWS
    expected = truth(str(chat.backend.csv), 'SELECT corr("amount (INR)", hour_of_day) FROM upi_transactions')
    assert result["corr"] == pytest.approx(expected, abs=1e-9)
    python_prompt = chat.model.prompts("python")[0]
    assert "whole table" in python_prompt and '"amount (INR)" DOUBLE' in python_prompt
    assert kinds(events)[-1] == "final_response"
    # the composer was shown the Python result
    assert str(DEMO_ROWS) in chat.model.prompts("composer")[0]


async def test_sql_then_py_gives_python_the_sql_result(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue("classifier", '{"classification": "SQL_THEN_PY", "reasoning": "select then test"}')
    chat.model.queue(
        "sql",
        'SELECT "device_type", "amount (INR)" FROM "upi_transactions" WHERE "device_type" = \'iOS\'',
    )
    chat.model.queue(
        "python", "result = {'rows': len(df), 'devices': sorted(df['device_type'].unique().tolist())}"
    )
    events = await chat.ask("Test whether iOS amounts are normally distributed")

    ios = truth(str(chat.backend.csv), "SELECT count(*) FROM upi_transactions WHERE device_type = 'iOS'")
    result = json.loads(of_kind(events, "python_result")[0].results_json)
    assert result == {"rows": ios, "devices": ["iOS"]}
    assert "`df` is the result of this SQL" in chat.model.prompts("python")[0]


async def test_a_validator_objection_sends_the_work_back_once(start_chat: StartChat) -> None:
    chat = await start_chat()
    count_sql = 'SELECT count(*) AS failures FROM "upi_transactions" WHERE "transaction_status" = \'FAILED\''
    chat.model.queue("sql", count_sql, ANDROID_RATE)
    chat.model.queue(
        "validator",
        '{"valid": false, "issues": ["This counts failures; the question asks for a rate of Android users"]}',
        '{"valid": true, "issues": [], "confidence": 0.85}',
    )
    events = await chat.ask("What is the failure rate for Android users?")

    queries = [s.query for s in of_kind(events, "sql_result")]
    assert queries == [count_sql, ANDROID_RATE]
    assert chat.model.count("validator") == 2 and chat.model.count("sql") == 2
    assert "asks for a rate of Android users" in chat.model.prompts("sql")[1]
    stages = [s.message for s in of_kind(events, "status") if s.stage == "validate"]
    assert any("sent the work back" in m for m in stages)
    final = events[-1].final_response
    assert final.sql == ANDROID_RATE and final.confidence == pytest.approx(0.85)


async def test_the_validator_sends_back_at_most_once(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: ANDROID_RATE
    chat.model.handlers["validator"] = lambda _: '{"valid": false, "issues": ["I never like it"]}'
    events = await chat.ask("What is the failure rate for Android users?")

    assert chat.model.count("validator") == 2 and len(of_kind(events, "sql_result")) == 2
    final = events[-1].final_response
    assert kinds(events)[-1] == "final_response" and final.confidence <= 0.4
    assert "I never like it" in chat.model.prompts("composer")[-1]


async def test_breakdowns_get_a_chart_and_a_typed_answer(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue(
        "sql",
        'SELECT "device_type", count(*) AS transactions FROM "upi_transactions" GROUP BY 1 ORDER BY 2 DESC',
    )
    chat.model.queue(
        "composer",
        "Android leads.\n```json\n"
        '{"answer": "Android", "follow_ups": ["Why?", "By state?"], "confidence": 0.95}\n```',
    )
    events = await chat.ask("Which device has the most transactions?")
    final = events[-1].final_response
    assert final.text == "Android leads."
    assert json_format.MessageToDict(final.answer) == "Android" and final.answer_type == "category"
    chart = json_format.MessageToDict(final.chart)
    assert chart["mark"] == {"type": "bar"} and chart["encoding"]["x"]["field"] == "device_type"
    assert {r["device_type"] for r in chart["data"]["values"]} == {"Android", "iOS", "Web"}
    assert list(final.follow_ups) == ["Why?", "By state?"] and final.confidence == pytest.approx(0.95)


async def test_explain_only_needs_no_data(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue("classifier", '{"classification": "EXPLAIN_ONLY", "reasoning": "about the columns"}')
    chat.model.queue("composer", 'The table has 17 columns, e.g. `device_type`.\n{"answer": 17}')
    events = await chat.ask("What columns does this dataset have?")
    assert "sql_result" not in kinds(events) and "python_result" not in kinds(events)
    assert chat.model.count("validator") == 0
    assert json_format.MessageToDict(events[-1].final_response.answer) == 17


async def test_failing_python_is_corrected_with_its_error(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.queue("classifier", '{"classification": "PY_ONLY", "reasoning": "a statistic"}')
    chat.model.queue("python", "result = df['amount'].mean()", "result = float(df['amount (INR)'].mean())")
    events = await chat.ask("What is the mean amount, computed in Python?")
    runs = of_kind(events, "python_result")
    assert len(runs) == 2 and "amount" in runs[0].error and runs[1].error == ""
    expected = truth(str(chat.backend.csv), 'SELECT avg("amount (INR)") FROM upi_transactions')
    assert json.loads(runs[1].results_json) == pytest.approx(expected)
    assert runs[0].error in chat.model.prompts("python")[1]
    assert json_format.MessageToDict(events[-1].final_response.answer) == pytest.approx(expected)
