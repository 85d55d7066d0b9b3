"""The Suite API: what a suite gives ``agentloop run`` (items, a score, how to run them).

Re-exported by :mod:`agentloop.suites`; built-in suites in their own sub-packages import it
from here, so the registry can import them in turn. It loads no graph, backend or engine.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from agentloop.errors import AgentloopError, DatasetError

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.graphs.task import Task
    from agentloop.types import Backend

__all__ = ["PROMPT_FORMATS", "Score", "Suite", "SuiteItem", "SuiteOptions", "content_hash"]
T = TypeVar("T")


class SuiteOptions(Protocol):
    """What a suite reads of a run's options; :class:`agentloop.runs.RunSpec` is one."""

    backend: str
    data: str | None
    offset: int
    limit: int | None
    verifier: str | None
    prompt: str
    constrain: str
    policy: str
    max_steps: int | None


#: Prompt formats every suite offers: chat messages, or a few-shot completion prompt.
PROMPT_FORMATS: tuple[str, ...] = ("chat", "fewshot")


@dataclass(frozen=True, slots=True)
class SuiteItem:
    """One task of a suite, with what the store and the report keep about it.

    ``difficulty`` is optional: a suite with difficulty buckets names them in
    :attr:`Suite.difficulties`, and the report breaks accuracy down by them. ``extra`` is the
    suite's own: short JSON-able fields the store keeps with the task and the viewer shows
    (Text2SQL puts its database there as ``db_id``).
    """

    task: Task
    index: int
    question: str
    difficulty: str | None = None
    # Where the task came from (a data path, or "packaged:NAME") and a hash of what defines it
    # (see :func:`content_hash`): reports pair two runs' tasks only when the hashes match.
    source: str | None = None
    content_hash: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.task.id


def content_hash(content: Any) -> str:
    """A stable hash of a task's defining content (anything JSON can write), for pairing runs."""
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Score:
    correct: bool
    error: str | None = None  # why the answer could not be scored, or the error it raised
    reward: float | None = None  # in [0, 1], for suites scored by reward (WebShop); None otherwise


class Suite(abc.ABC):
    """A set of tasks and how to score a run's final answer: subclass it for ``agentloop run``.

    Implement :meth:`items` (one :class:`SuiteItem` per task, each holding a graph
    :class:`~agentloop.graphs.Task` with its prompt, parse and verifier) and :meth:`score`.
    The class attributes below tune the run; docs/custom.md walks through an example.
    """

    #: The suite's name: the default memory namespace and what error messages call it.
    name: ClassVar[str]
    #: Tasks ``agentloop run`` takes when neither ``--limit`` nor ``--all`` is given: a slice
    #: that finishes in minutes on the embedded model (``None``: every task).
    default_limit: ClassVar[int | None] = None
    #: Stop strings for every candidate request (cut the chatter after the answer).
    stop: ClassVar[tuple[str, ...]] = ()
    #: The verifier a run gets when none is named.
    default_verifier: ClassVar[str] = "exec"
    #: The difficulty buckets of :attr:`SuiteItem.difficulty`, easiest first; empty: the suite has
    #: none, and the report shows no breakdown.
    difficulties: ClassVar[tuple[str, ...]] = ()
    #: Whether :attr:`Score.reward` is the headline number (avg_reward, success_rate)
    #: rather than correctness (accuracy).
    scores_reward: ClassVar[bool] = False

    @abc.abstractmethod
    def items(self, spec: SuiteOptions, backend: Backend | None = None) -> list[SuiteItem]:
        """The tasks ``spec`` selects (``--data``, ``--offset``, ``--limit``), in order."""

    @abc.abstractmethod
    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        """Score the run's final answer against the reference (independent of the verifier)."""

    def upper_bound(self, verifier: str) -> bool:
        """Whether runs with ``verifier`` read the reference while they run (an oracle)."""
        return False

    @staticmethod
    def select(spec: SuiteOptions, rows: Sequence[T]) -> list[T]:
        """The rows ``--offset`` and ``--limit`` select, in order; an empty selection is an error."""
        end = None if spec.limit is None else spec.offset + spec.limit
        chosen = list(rows[spec.offset : end])
        if not chosen:
            raise DatasetError(
                f"--offset {spec.offset} --limit {spec.limit} selects no tasks from a suite of {len(rows)}"
            )
        return chosen

    @classmethod
    def prompt_format(cls, spec: SuiteOptions) -> str:
        """``--prompt``; ``auto`` picks ``fewshot`` for in-process transformers models, ``chat`` otherwise.

        Small local models follow a few-shot completion prompt far better than chat
        instructions (measured in docs/text2sql.md and docs/webshop.md); hosted and served
        models are instruction-tuned, and many have no completion endpoint.
        """
        if spec.prompt == "auto":
            return "fewshot" if spec.backend.split(":", 1)[0] == "transformers" else "chat"
        if spec.prompt not in PROMPT_FORMATS:
            raise AgentloopError(
                f"unknown --prompt {spec.prompt!r} for {cls.name}; use auto, {', '.join(PROMPT_FORMATS)}"
            )
        return spec.prompt
