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

from agentloop.errors import AgentloopError, DatasetError, did_you_mean
from agentloop.types import small_local_model

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.graphs.task import Candidate, Task
    from agentloop.types import Backend

__all__ = [
    "PROMPT_FORMATS",
    "CannotRescoreError",
    "Score",
    "Suite",
    "SuiteError",
    "SuiteItem",
    "SuiteOptions",
    "UnknownVerifierError",
    "content_hash",
]
T = TypeVar("T")


class SuiteOptions(Protocol):
    """What a suite reads of a run's options; :class:`agentloop.runs.RunSpec` is one."""

    @property
    def backend(self) -> str: ...

    @property
    def data(self) -> str | None: ...

    @property
    def offset(self) -> int: ...

    @property
    def limit(self) -> int | None: ...

    @property
    def verifier(self) -> str | None: ...

    @property
    def prompt(self) -> str: ...

    @property
    def constrain(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def max_steps(self) -> int | None: ...


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


class SuiteError(AgentloopError, ValueError):
    """Bad input to a suite (a data file, an option it does not take): the CLI prints it as one line.

    A plain ``ValueError`` a suite raises while building its tasks is shown the same way.
    """


class CannotRescoreError(SuiteError):
    """A suite cannot score a stored candidate offline (see :meth:`Suite.stored_answer`): one line, saying why."""


class UnknownVerifierError(SuiteError):
    def __init__(self, suite: str, name: str, known: Sequence[str]):
        super().__init__(did_you_mean("verifier", name, known, note=f" (for {suite})"))


@dataclass(frozen=True, slots=True)
class Score:
    correct: bool
    error: str | None = None  # why the answer could not be scored, or the error it raised
    reward: float | None = None  # in [0, 1], for suites scored by reward (WebShop); None otherwise

    @classmethod
    def from_verdict(cls, result: LoopResult) -> Score:
        """The run's final verdict as the score: for suites whose verifier is their scorer."""
        if result.best is None or result.verdict is None:
            return cls(False, "no answer")
        return cls(result.passed)


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
    #: The verifiers ``--verifier`` takes: name -> one line on what it checks. ``--verifier`` is
    #: checked against it before any model loads; empty: the suite checks names itself.
    verifiers: ClassVar[Mapping[str, str]] = {}
    #: Those verifiers that read the reference while the run goes (oracles): their runs are
    #: upper bounds, and reports say so.
    upper_bounds: ClassVar[tuple[str, ...]] = ()
    #: The headline of a suite scored by correctness: its name in ``--json`` metrics and its label
    #: in tables, plots and the viewer (Text2SQL: execution_accuracy, "execution accuracy").
    metric: ClassVar[str] = "accuracy"
    metric_label: ClassVar[str] = "accuracy"
    #: Whether the verifier is the scorer (the final verdict decides correctness): :meth:`score`
    #: then reuses it (:meth:`Score.from_verdict`) instead of checking the answer again.
    verifier_is_scorer: ClassVar[bool] = False
    #: The difficulty buckets of :attr:`SuiteItem.difficulty`, easiest first; empty: the suite has
    #: none, and the report shows no breakdown.
    difficulties: ClassVar[tuple[str, ...]] = ()
    #: Whether :attr:`Score.reward` is the headline number (avg_reward, success_rate)
    #: rather than correctness (accuracy).
    scores_reward: ClassVar[bool] = False

    @abc.abstractmethod
    def items(self, spec: SuiteOptions, backend: Backend | None = None) -> list[SuiteItem]:
        """The tasks ``spec`` selects (``--data``, ``--offset``, ``--limit``), in order."""

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        """Score the run's final answer against the reference (independent of the verifier).

        Required, unless :attr:`verifier_is_scorer` says the final verdict is the score.
        """
        if self.verifier_is_scorer:
            return Score.from_verdict(result)
        raise NotImplementedError(
            f"suite {self.name!r} implements no score(); or set verifier_is_scorer = True"
        )

    async def score_candidate(self, item: SuiteItem, result: LoopResult, candidate: Candidate) -> Score:
        """Score one candidate as if the run had chosen it: what accuracy-vs-k curves are built from.

        The default scores a copy of ``result`` whose best and only candidate is ``candidate``;
        override it where one candidate can be scored more cheaply.
        """
        import dataclasses

        alone = dataclasses.replace(result, best=candidate, candidates=[candidate], votes=None)
        return await self.score(item, alone)

    def stored_answer(self, item: SuiteItem, text: str, answer: str | None) -> Any:
        """A stored candidate's answer, rebuilt offline: what rescoring a run stored before its
        candidates kept their official scores (store revision 0004) hands :meth:`score_candidate`.

        ``text`` is the candidate's completion and ``answer`` its answer as the store kept it
        (a string, or JSON of anything else). The default parses ``text`` again with the task's
        own ``parse`` (a parse that raises raises here, and the candidate is not rescored). A task
        whose candidates are episodes (a rollout) cannot be parsed again: such a suite overrides
        this (WebShop replays the stored actions) or raises :class:`CannotRescoreError`.
        """
        if hasattr(item.task, "rollout"):
            raise CannotRescoreError(
                f"suite {self.name!r} keeps whole episodes as candidates and says no way to score a "
                "stored one offline (Suite.stored_answer)"
            )
        return item.task.parse(text)

    def upper_bound(self, verifier: str) -> bool:
        """Whether runs with ``verifier`` read the reference while they run (an oracle)."""
        return verifier in self.upper_bounds

    def check_verifier(self, verifier: str) -> str:
        """``verifier`` if the suite declares it (or declares none), else one line with the choices."""
        if self.verifiers and verifier not in self.verifiers:
            raise UnknownVerifierError(self.name, verifier, list(self.verifiers))
        return verifier

    @classmethod
    def metric_info(cls) -> dict[str, Any]:
        """What the run store records of the suite's metrics, so reports need not import it."""
        return {"metric": cls.metric, "metric_label": cls.metric_label}

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
        """``--prompt``; ``auto`` picks ``fewshot`` for small in-process models (any transformers model, the embedded model on llamacpp), ``chat`` otherwise.

        Small local models follow a few-shot completion prompt far better than chat
        instructions (measured in docs/text2sql.md and docs/webshop.md); hosted and served
        models are instruction-tuned, and many have no completion endpoint.
        """
        if spec.prompt == "auto":
            return "fewshot" if small_local_model(spec.backend) else "chat"
        if spec.prompt not in PROMPT_FORMATS:
            raise AgentloopError(
                f"unknown --prompt {spec.prompt!r} for {cls.name}; use auto, {', '.join(PROMPT_FORMATS)}"
            )
        return spec.prompt
