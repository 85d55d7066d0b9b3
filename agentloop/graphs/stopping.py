"""The evaluator that decides when a run stops: threshold, rounds, patience, budget, errors."""

from __future__ import annotations

from typing import Literal

from agentloop.graphs.budget import BudgetTracker
from agentloop.graphs.context import LoopConfig
from agentloop.graphs.task import Candidate

__all__ = ["StopReason", "evaluate", "reached_threshold"]

StopReason = Literal["threshold", "max_rounds", "no_improvement", "no_progress", "budget", "backend_error"]


def reached_threshold(candidate: Candidate | None, threshold: float | None) -> bool:
    """``threshold=None`` means "the verifier passed it"; a number compares the score."""
    if candidate is None or candidate.verdict is None:
        return False
    if threshold is None:
        return candidate.passed
    return candidate.score >= threshold


def _credit(best: Candidate | None) -> bool:
    """Whether the best candidate earned anything: it passed, or scored above 0."""
    if best is None or best.verdict is None:
        return False
    return best.passed or best.score > 0.0


def evaluate(
    *,
    best: Candidate | None,
    round: int,
    proposed: int,
    stale_rounds: int,
    error: str | None,
    config: LoopConfig,
    budget: BudgetTracker,
) -> tuple[StopReason | None, str]:
    """Whether to stop after ``round`` (0-based), and a one-line reason for humans."""
    if reached_threshold(best, config.threshold):
        goal = "passed" if config.threshold is None else f"score >= {config.threshold:g}"
        return "threshold", f"best candidate {goal} in round {best.round + 1}"  # type: ignore[union-attr]
    if error is not None:
        return "backend_error", error
    spent = budget.exhausted(config.max_tokens)
    if proposed == 0 and spent is not None:
        return "budget", f"{spent} budget spent before round {round + 1}"
    if round + 1 >= config.rounds:
        return "max_rounds", f"ran {config.rounds} round(s)"
    if config.patience is not None and stale_rounds >= config.patience:
        return "no_improvement", f"no better candidate for {stale_rounds} round(s)"
    if config.give_up_after is not None and round + 1 >= config.give_up_after and not _credit(best):
        return "no_progress", f"no candidate earned any credit in {round + 1} round(s)"
    if spent is not None:
        return "budget", f"{spent} budget spent after round {round + 1}"
    return None, ""
