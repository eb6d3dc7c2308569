"""The built-in, deterministic analyst: a semantic parser that answers questions with no language model.

How a question is answered (`planner.plan_question`):
- `followups` rewrites a one-slot follow-up ("and for price?") from the history;
- `reader` lists the readings of the question as typed queries (`form`: operation, answer column, measure,
  filters as (column, op, value, span)), over the schema, the profile's values and the column types; the
  first hand-written question shape that fits (`stats`, `rows`, `ranking`, `breakdowns`, `aggregates`,
  `booleans`, `weekparts`, reading the question through `question`, `filters`, `linking`, `text`, `lexicon`,
  `schema`) is one more reading;
- `scorer` ranks the readings (weights fitted on the train split only: `parser_weights.json`, written by
  `make train-analyst`);
- the SQL of the top three readings is run (`planner.prepare`, then the caller runs `Shortlist.to_run()`,
  then `planner.settle`), and `denotation` describes what each computed: an empty result gives way to the
  next reading with one, and the judge decides from the words and the results together: its calibrated
  confidence is the precision measured for such answers on tables the weights were not fitted to;
- at 0.6 or more (the threshold in `parser_weights.json`) the winner's plan runs (`sqlgen` renders a
  typed reading to SQL, quoting in one place; `parsed` composes and checks its answer; a shape composes
  its own, through `compose` and `guards`);
  below, the analyst asks back with the top readings as `Answer.clarifications` (`clarify`);
- `forms` says what kind of answer a question's form asks for, and checks answers against it.
"""

from services.orchestrator.builtin.planner import plan_question

__all__ = ["plan_question"]
