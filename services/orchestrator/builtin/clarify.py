"""Answer only when sure: a chosen plan states its calibrated confidence, or the analyst asks back.

Why: a confident wrong number is worse than an honest "did you mean …?". When no reading wins clearly the
analyst answers nothing and offers the top readings as clarifying questions (the page shows them as chips);
a composed answer whose type contradicts the question's form is turned into the same kind of refusal.
"""

from __future__ import annotations

from services.orchestrator.builtin import compose as c
from services.orchestrator.builtin.forms import (
    count_disagrees,
    many_for_one,
    question_form,
    type_disagrees,
)
from services.orchestrator.builtin.schema import Schema
from services.orchestrator.plan import Answer, Plan, StepResults


def refusal_text(confidence: float, clarifications: list[str]) -> str:
    text = (
        "I am not sure enough of what is asked to answer without a language model "
        f"(my best reading would be right about {confidence:.0%} of the time)."
    )
    if clarifications:
        text += " Did you mean: " + " or ".join(f"“{q}”" for q in clarifications)
    return text


def asking(schema: Schema, clarifications: list[str], confidence: float, reason: str = "") -> Plan:
    """A plan that runs nothing and answers with clarifying questions (and, when a question shape found
    something missing from the data, says what)."""

    def compose(_: StepResults) -> Answer:
        if reason:
            answer = c.nothing_matched(schema, reason)
            if clarifications:
                answer.text += " Did you mean: " + " or ".join(f"“{q}”" for q in clarifications)
            answer.clarifications = list(clarifications)
            answer.confidence = confidence
            return answer
        return Answer(
            text=refusal_text(confidence, clarifications),
            answer=None,
            answer_type="none",
            follow_ups=c.follow_ups_for(schema, set()),
            confidence=confidence,
            clarifications=list(clarifications),
        )

    return Plan(
        classification="EXPLAIN_ONLY",
        reasoning=f"No reading wins clearly (best at {confidence:.0%}); asking instead of guessing.",
        compose=compose,
    )


def gated(plan: Plan, question: str, confidence: float) -> Plan:
    """`plan` whose answer carries `confidence`, unless its type contradicts the question's form."""
    inner = plan.compose
    form = question_form(question)

    def compose(results: StepResults) -> Answer:
        answer = inner(results)
        if answer.answer is None:
            return answer
        if (
            type_disagrees(form, answer)
            or count_disagrees(question, answer)
            or many_for_one(question, answer)
        ):
            return Answer(
                text=refusal_text(confidence, [])
                + " The result I found does not have the kind of value asked for.",
                answer=None,
                answer_type="none",
                follow_ups=answer.follow_ups,
                confidence=0.0,
            )
        answer.confidence = confidence
        return answer

    plan.compose = compose
    plan.reasoning = f"{plan.reasoning} (confidence {confidence:.0%})"
    return plan
