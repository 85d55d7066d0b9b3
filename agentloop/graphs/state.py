"""The typed state that flows through a graph run."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from agentloop.graphs.stopping import StopReason
from agentloop.graphs.task import Candidate, Feedback

__all__ = ["LoopState", "initial_state"]


class LoopState(TypedDict, total=False):
    """``pending`` is the current round's candidates; ``candidates`` the whole trajectory.

    Nodes between ``verify`` and ``select`` may rewrite ``pending`` (an LLM critic
    amending verdicts, say); ``select`` appends it to ``candidates``.
    """

    round: int  # index of the latest proposed round; -1 before the first
    lessons: list[str]
    pending: list[Candidate]
    candidates: Annotated[list[Candidate], operator.add]
    best: Candidate | None
    feedback: Feedback | None
    stale_rounds: int
    stop_reason: StopReason | None
    stop_detail: str
    error: str | None
    votes: dict[str, int] | None


def initial_state() -> LoopState:
    return LoopState(
        round=-1,
        lessons=[],
        pending=[],
        candidates=[],
        best=None,
        feedback=None,
        stale_rounds=0,
        stop_reason=None,
        stop_detail="",
        error=None,
        votes=None,
    )
