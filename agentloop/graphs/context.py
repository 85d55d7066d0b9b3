"""What graph nodes reach through LangGraph's runtime context: backend, task, budget, memory, config."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

from agentloop.graphs.budget import BudgetTracker, LoopUsage, usage_since
from agentloop.graphs.task import Task
from agentloop.types import Backend, ChatRequest, Message

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult

__all__ = ["LessonSource", "LoopConfig", "LoopContext"]


class LessonSource(Protocol):
    """What the graphs need from a memory: lessons in before a task, the result out after it."""

    async def retrieve(self, task: Task) -> list[str]: ...

    async def remember(self, task: Task, result: LoopResult) -> None: ...


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Sampling and stopping settings. Each named graph adjusts what it must (greedy: n=1, T=0).

    ``threshold=None`` stops as soon as a candidate passes; a number stops once the
    best score reaches it. ``patience`` stops after that many rounds without a better
    best score. ``give_up_after`` stops (``no_progress``) after that many rounds in which no
    candidate earned any credit (no pass, best score 0). ``concurrency`` bounds concurrent backend requests and verifier calls.
    ``batched=False`` sends n requests with n=1 (for backends without native ``n``;
    the graphs also switch to this on their own once a backend returns short).
    ``n_schedule`` sets the candidates per round where they differ (``(4, 1)``: sample
    four, then one per round after); :meth:`n_for` reads it, and ``n`` applies when it is
    empty. ``first_temperature`` replaces ``temperature`` in the first round (:meth:`temperature_for`).
    """

    n: int = 4
    rounds: int = 3
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    threshold: float | None = None
    patience: int | None = None
    give_up_after: int | None = None
    concurrency: int = 8
    seed: int | None = None
    batched: bool = True
    stop: tuple[str, ...] = ()
    n_schedule: tuple[int, ...] = ()
    # The first round's temperature, where it differs (None: ``temperature``): the adaptive
    # graphs decode a first wave of one candidate greedily.
    first_temperature: float | None = None

    def __post_init__(self) -> None:
        for name in ("n", "rounds", "max_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.first_temperature is not None and not 0.0 <= self.first_temperature <= 2.0:
            raise ValueError(f"first_temperature must be in [0, 2] or None, got {self.first_temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] or None, got {self.threshold}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.give_up_after is not None and self.give_up_after < 1:
            raise ValueError(f"give_up_after must be >= 1 or None, got {self.give_up_after}")
        object.__setattr__(self, "stop", tuple(self.stop))
        given = tuple(self.n_schedule)
        try:
            schedule = tuple(operator.index(k) for k in given)
        except TypeError:
            schedule = ()
        if len(schedule) != len(given) or any(k < 1 for k in schedule):
            raise ValueError(f"n_schedule must hold whole numbers >= 1, got {list(given)}")
        object.__setattr__(self, "n_schedule", schedule)

    def temperature_for(self, round: int) -> float:
        """The sampling temperature of round ``round`` (0-based)."""
        if round == 0 and self.first_temperature is not None:
            return self.first_temperature
        return self.temperature

    def n_for(self, round: int) -> int:
        """Candidates to sample in ``round`` (0-based): the schedule's entry, its last one past its end, else ``n``."""
        schedule = self.n_schedule
        if not schedule:
            return self.n
        return schedule[min(max(round, 0), len(schedule) - 1)]

    def replace(self, **changes: Any) -> LoopConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stop"] = list(self.stop)
        d["n_schedule"] = list(self.n_schedule)
        return d


@dataclass(slots=True)
class LoopContext:
    """The run-scoped context every node gets as ``runtime.context``."""

    backend: Backend
    task: Task
    config: LoopConfig = field(default_factory=LoopConfig)
    budget: BudgetTracker = field(default_factory=BudgetTracker)
    memory: LessonSource | None = None
    graph: str = "custom"
    # Set once a batched request comes back short: the backend ignores or caps n, so
    # later rounds go straight to n=1 requests instead of paying a second round trip.
    n_unsupported: bool = False
    # The tracker's spend when this run began; a tracker may be shared by many runs.
    started: LoopUsage = field(default_factory=LoopUsage)
    # Every distinct prompt a round was sampled from, by prompt hash: the run store keeps
    # them, so a viewer can show each round's prompt and what changed since the last.
    prompts: dict[str, tuple[Message, ...]] = field(default_factory=dict)
    # The open round's span while tracing is on (agentloop.tracing): a round spans several nodes.
    trace_round: Any = None

    def spent(self) -> LoopUsage:
        """What this run has spent so far."""
        return usage_since(self.started, self.budget.snapshot())

    async def ask(
        self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str | None:
        """One auxiliary completion (a critique, a summary) inside the token and time budget.

        It is not a candidate and does not count against ``max_candidates``. Returns
        ``None`` when the budget has no room; a backend error propagates.
        """
        r = self.budget.reserve(1, max_tokens, counts_candidates=False)
        if r is None:
            return None
        request = ChatRequest(messages=tuple(messages), n=1, temperature=temperature, max_tokens=r.max_tokens)
        try:
            response = await self.backend.generate(request)
        except Exception:
            self.budget.fail(r)
            raise
        kept = self.budget.settle(r, response)
        return kept[0].text if kept else None
