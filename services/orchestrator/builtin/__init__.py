"""The built-in, deterministic analyst: answers common questions with no language model.

Modules, one job each: `text` (words and stems), `lexicon` (synonyms, abbreviations), `schema` (columns as
the analyst sees them, from the profile), `linking` (question words → columns, values, numbers), `question`
(answer type, aggregates, superlatives, filters), `planner` and `booleans` (shapes → SQL), `stats` (sandbox
code), `compose` (answers, charts, follow-ups).
"""

from services.orchestrator.builtin.planner import plan_question

__all__ = ["plan_question"]
