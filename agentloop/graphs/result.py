"""What a graph run returns: the best candidate, the whole trajectory, and what it spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentloop.graphs.budget import Budget, LoopUsage
from agentloop.graphs.context import LoopConfig, LoopContext
from agentloop.graphs.state import LoopState
from agentloop.graphs.stopping import StopReason
from agentloop.graphs.task import Candidate, Verdict
from agentloop.types import Message

__all__ = ["LoopResult", "build_result"]


@dataclass(slots=True)
class LoopResult:
    """One task's run. ``best`` is ``None`` only when no candidate was produced at all."""

    task_id: str
    graph: str
    best: Candidate | None
    candidates: list[Candidate]
    rounds: int
    stop_reason: StopReason
    usage: LoopUsage
    config: LoopConfig = field(default_factory=LoopConfig)
    budget: Budget = field(default_factory=Budget)
    stop_detail: str = ""
    error: str | None = None
    votes: dict[str, int] | None = None
    # The lessons memory showed this task, and each round's prompt by prompt hash
    # (``Candidate.prompt_hash``): what a viewer needs to show how the prompt changed.
    lessons: list[str] = field(default_factory=list)
    prompts: dict[str, tuple[Message, ...]] = field(default_factory=dict)

    @property
    def answer(self) -> Any:
        return self.best.answer if self.best is not None else None

    @property
    def verdict(self) -> Verdict | None:
        return self.best.verdict if self.best is not None else None

    @property
    def score(self) -> float:
        return self.best.score if self.best is not None else 0.0

    @property
    def passed(self) -> bool:
        return self.best is not None and self.best.passed

    def to_dict(self, *, trajectory: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; ``trajectory=False`` leaves out the candidates list."""
        best_index = None
        if self.best is not None:
            best_index = next((i for i, c in enumerate(self.candidates) if c is self.best), None)
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "graph": self.graph,
            "answer": self.best.to_dict()["answer"] if self.best is not None else None,
            "score": self.score,
            "passed": self.passed,
            "best": self.best.to_dict() if self.best is not None else None,
            "best_index": best_index,
            "rounds": self.rounds,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "config": self.config.to_dict(),
            "budget": self.budget.to_dict(),
            "votes": self.votes,
            "lessons": list(self.lessons),
        }
        if trajectory:
            d["candidates"] = [c.to_dict() for c in self.candidates]
        return d


def build_result(state: LoopState, ctx: LoopContext, usage: LoopUsage | None = None) -> LoopResult:
    """A :class:`LoopResult` from a graph's (final or current) state."""
    candidates = list(state.get("candidates") or [])
    stop = state.get("stop_reason") or "max_rounds"
    return LoopResult(
        task_id=ctx.task.id,
        graph=ctx.graph,
        best=state.get("best"),
        candidates=candidates,
        rounds=len({c.round for c in candidates}),
        stop_reason=stop,
        usage=usage if usage is not None else ctx.spent(),
        config=ctx.config,
        budget=ctx.budget.budget,
        stop_detail=state.get("stop_detail", ""),
        error=state.get("error"),
        votes=state.get("votes"),
        lessons=list(state.get("lessons") or []),
        prompts=dict(ctx.prompts),
    )
