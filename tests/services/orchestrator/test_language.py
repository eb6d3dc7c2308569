"""A question in another language is told the built-in analyst reads English; English ones never are."""

from __future__ import annotations

import pytest

from services.orchestrator.language import NOT_ENGLISH_MESSAGE, reads_as_english, words_of
from tests.services.orchestrator.conftest import StartChat, kinds, of_kind

ENGLISH = [
    "How many rows are there?",
    "total amount",
    "What is the average price by region?",
    "Which state has the most transactions in Los Angeles?",
    "How many customers live in São Paulo?",
    "What cities are served by the Nîmes-Alès-Camargue-Cévennes airport?",
    "Is the median salary higher in Zürich than in Genève?",
    "List the top 5 products by revenue in 2023",
    "and for price?",
    "avg amount per day of week",
    "",
    "42",
]

OTHER_LANGUAGES = [
    "Quel est le montant moyen des transactions par état ?",
    "¿Cuál es el importe medio de las transacciones por estado?",
    "Cuántas filas hay?",
    "Wie viele Zeilen gibt es?",
    "Wie hoch ist der durchschnittliche Betrag pro Bundesland?",
    "Qual é o valor médio das transações por estado?",
    "Qual è l'importo medio delle transazioni per stato?",
    "Wat is het gemiddelde bedrag per staat?",
    "Hur många rader finns det?",
    "Ile jest wierszy?",
    "Kaç satır var?",
    "Сколько строк в таблице?",
    "平均金额是多少？",
    "ما هو متوسط المبلغ؟",
    "औसत राशि क्या है?",
    "Ποιο είναι το μέσο ποσό;",
]


@pytest.mark.parametrize("question", ENGLISH)
def test_english_questions_read_as_english(question: str) -> None:
    assert reads_as_english(question)


@pytest.mark.parametrize("question", OTHER_LANGUAGES)
def test_questions_in_other_languages_do_not(question: str) -> None:
    assert not reads_as_english(question)


def test_the_tables_own_words_are_not_evidence() -> None:
    # a Spanish table questioned in English: its column names and values are quoted as they are
    table = words_of(["estado", "precio", "Las Palmas de Gran Canaria", "Málaga"])
    question = "Count of rows where estado es Las Palmas de Gran Canaria"
    assert not reads_as_english(question)  # without the table, its words look Spanish
    assert reads_as_english(question, table)
    # and a question in Russian about a table with Latin names still reads as Russian
    assert not reads_as_english("Какой средний amount по state?", words_of(["amount", "state"]))


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_the_builtin_analyst_says_it_reads_english(start_chat: StartChat) -> None:
    chat = await start_chat(keys=None)
    events = await chat.ask("Quel est le montant moyen des transactions par état ?", chat_id="fr")
    assert kinds(events)[-1] == "final_response"
    final = events[-1].final_response
    assert "English" in final.text and "language model" in final.text
    assert final.confidence == 0.0 and final.answer.WhichOneof("kind") == "null_value"
    assert "sql_result" not in kinds(events) and final.sql == ""
    assert of_kind(events, "orchestrator_result")[0].source == "builtin"
    english = await chat.ask("What is the average amount?", chat_id="en")
    assert kinds(english)[-1] == "final_response"
    assert english[-1].final_response.text != NOT_ENGLISH_MESSAGE  # read by the parser, whatever it says


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(120)
async def test_a_model_is_asked_questions_in_any_language(start_chat: StartChat) -> None:
    chat = await start_chat()
    chat.model.handlers["sql"] = lambda _: 'SELECT avg(amount_inr) AS a FROM "upi_transactions"'
    events = await chat.ask("Quel est le montant moyen ?", chat_id="fr-model")
    assert of_kind(events, "orchestrator_result")[0].source == "llm"
    assert "reads questions in English" not in events[-1].final_response.text
