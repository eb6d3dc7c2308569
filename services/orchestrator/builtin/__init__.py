"""The built-in, deterministic analyst: answers common questions with no language model.

Modules, one job each:
- `text` (words, stems, numbers), `lexicon` (synonyms, abbreviations), `schema` (columns as the analyst sees
  them, from the profile), `linking` (question words → columns, values, numbers);
- `question` (answer type, aggregate, superlative, k, filters), `followups` (short follow-ups + history);
- `context` (what shapes share), shapes: `stats`, `rows`, `ranking`, `breakdowns`, `aggregates`, `booleans`;
- `guards` (guessed names, refusals), `compose` (typed answers, texts, charts, follow-up questions);
- `planner` (tries the shapes in order; `plan_question` is the entry point).
"""

from services.orchestrator.builtin.planner import plan_question

__all__ = ["plan_question"]
