"""What the runner hands the run store for one task: its outcome and the candidates it tried."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentloop.types import LoopUsage, Message

__all__ = ["CandidateRecord", "CandidateScore", "TaskOutcome"]


class CandidateRecord(Protocol):
    """What the store keeps of one candidate (a graph's :class:`~agentloop.graphs.Candidate` is one)."""

    @property
    def round(self) -> int: ...

    @property
    def index(self) -> int: ...

    @property
    def call(self) -> int: ...

    @property
    def prompt_hash(self) -> str | None: ...

    @property
    def text(self) -> str: ...

    @property
    def answer(self) -> Any: ...

    @property
    def parse_error(self) -> str | None: ...

    @property
    def score(self) -> float: ...

    @property
    def passed(self) -> bool: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def latency_s(self) -> float: ...

    @property
    def verify_s(self) -> float: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def verdict(self) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """The suite's score of one candidate as if it were the final answer, and its vote key.

    Stored with the candidate, so accuracy-vs-k curves over a run need no rescoring.
    """

    correct: bool
    reward: float | None = None
    key: str | None = None

    @property
    def value(self) -> float:
        """The candidate's number: its reward, else 1.0 when correct (as :attr:`StoredTask.value`)."""
        return self.reward if self.reward is not None else float(self.correct)

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "reward": self.reward, "key": self.key}


@dataclass(slots=True)
class TaskOutcome:
    """What the runner hands the store for one finished (or failed) task."""

    task_id: str
    index: int
    question: str
    correct: bool
    started: float
    finished: float
    wall_s: float
    difficulty: str | None = None
    # The suite's own fields of the task (``SuiteItem.extra``: Spider's ``db_id``), stored as JSON.
    extra: Mapping[str, Any] = field(default_factory=dict)
    answer: str | None = None
    reward: float | None = None
    passed: bool = False
    score: float = 0.0
    usage: LoopUsage = field(default_factory=LoopUsage)
    rounds: int = 0
    stop_reason: str | None = None
    error: str | None = None
    error_detail: str | None = None
    eval_error: str | None = None
    candidates: Sequence[CandidateRecord] = ()
    best_position: int | None = None
    source: str | None = None
    content_hash: str | None = None
    # What concept memory spent for this task; stored on its own and added to the totals.
    memory_usage: LoopUsage | None = None
    stop_detail: str | None = None
    # The lessons memory showed the task and those written from it, and every prompt its
    # candidates came from by prompt hash: what a viewer shows of each round.
    lessons: Sequence[str] | None = None
    lessons_written: Sequence[str] | None = None
    prompts: Mapping[str, Sequence[Message]] = field(default_factory=dict)
    # Each candidate's official score, by position in ``candidates`` (see :class:`CandidateScore`);
    # empty when the runner did not score them.
    candidate_scores: Sequence[CandidateScore | None] = ()
    # Before SuiteItem.extra, Text2SQL's database had a field of its own: still taken, into extra.
    db_id: str | None = None

    def __post_init__(self) -> None:
        if self.db_id is not None and "db_id" not in self.extra:
            self.extra = {**self.extra, "db_id": self.db_id}
