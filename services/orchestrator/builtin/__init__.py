"""The built-in, deterministic analyst: answers common questions with no language model."""

from services.orchestrator.builtin.analyst import plan_question

__all__ = ["plan_question"]
