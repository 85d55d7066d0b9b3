"""The task interface a suite implements: build the prompt, parse a candidate, verify it."""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentloop.graphs._util import jsonable
from agentloop.prompts import render_prompt
from agentloop.types import Constraint, Message, ScorePrompt, ScoreResponse

__all__ = [
    "Candidate",
    "Feedback",
    "PromptTask",
    "Rollout",
    "RolloutTask",
    "StepFn",
    "Task",
    "Verdict",
    "render_lessons",
]

# Verifier messages go into the next prompt; a runaway traceback should not crowd out the answer.
_FEEDBACK_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's judgement of one candidate: a score in [0, 1], pass/fail and a short message."""

    score: float
    passed: bool = False
    feedback: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        score = float(self.score)
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"a verdict's score must be in [0, 1], got {self.score!r}")
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "passed", bool(self.passed))
        object.__setattr__(self, "feedback", str(self.feedback))

    @classmethod
    def failed(cls, feedback: str, **details: Any) -> Verdict:
        return cls(score=0.0, passed=False, feedback=feedback, details=details)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "passed": self.passed,
            "feedback": self.feedback,
            "details": jsonable(dict(self.details)),
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One sampled answer and everything needed to persist or compare it.

    ``prompt_tokens`` and ``latency_s`` belong to the backend call that produced the
    candidate (``call`` numbers those calls within a run), so candidates of one batched
    call share them: sum them per call, not per candidate.
    """

    round: int
    index: int
    text: str
    prompt_hash: str
    answer: Any = None
    verdict: Verdict | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    latency_s: float = 0.0
    call: int = 0
    finish_reason: str | None = None
    parse_error: str | None = None
    verify_s: float = 0.0

    @property
    def score(self) -> float:
        return self.verdict.score if self.verdict is not None else 0.0

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed

    def with_verdict(self, verdict: Verdict, verify_s: float = 0.0) -> Candidate:
        """A copy with ``verdict`` attached (spelled out: ``dataclasses.replace`` is slow per candidate)."""
        return Candidate(
            self.round,
            self.index,
            self.text,
            self.prompt_hash,
            self.answer,
            verdict,
            self.completion_tokens,
            self.prompt_tokens,
            self.latency_s,
            self.call,
            self.finish_reason,
            self.parse_error,
            verify_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "index": self.index,
            "prompt_hash": self.prompt_hash,
            "text": self.text,
            "answer": jsonable(self.answer),
            "verdict": self.verdict.to_dict() if self.verdict is not None else None,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "latency_s": round(self.latency_s, 4),
            "call": self.call,
            "finish_reason": self.finish_reason,
            "parse_error": self.parse_error,
            "verify_s": round(self.verify_s, 4),
        }


@dataclass(frozen=True, slots=True)
class Feedback:
    """The distilled signal a refine prompt shows, not a dump of every candidate.

    ``contrast`` (IAD): the best candidate so far, the weakest of the last round (only
    when it scored lower), and the last round's scores. ``revise`` (self-refine): the
    last round's best candidate (with n=1, the previous one) and its verdict.
    """

    style: Literal["contrast", "revise"]
    round: int
    best: Candidate
    worst: Candidate | None = None
    scores: tuple[float, ...] = ()

    def render(self, family: str = "graphs") -> str:
        """The feedback as prompt text, from the templates ``<family>_iad_feedback`` and
        ``<family>_iad_worst`` (``<family>_self_refine`` for ``revise``), so a suite can
        reword the instruction around the same slots."""
        if self.style == "revise":
            return render_prompt(f"{family}_self_refine", **_slots("", self.best))
        worst = ""
        if self.worst is not None:
            worst = "\n\n" + render_prompt(f"{family}_iad_worst", **_slots("worst_", self.worst))
        return render_prompt(
            f"{family}_iad_feedback",
            **_slots("best_", self.best),
            worst_block=worst,
            scores=", ".join(f"{s:.2f}" for s in self.scores) or "none",
        )


def _slots(prefix: str, c: Candidate) -> dict[str, str]:
    message = c.verdict.feedback.strip() if c.verdict is not None else ""
    if len(message) > _FEEDBACK_CHARS:
        message = message[:_FEEDBACK_CHARS] + " [...]"
    return {
        f"{prefix}text": c.text.strip(),
        f"{prefix}score": f"{c.score:.2f}",
        f"{prefix}status": "passed" if c.passed else "failed",
        f"{prefix}round": str(c.round + 1),
        f"{prefix}feedback": message or "(no message)",
    }


def render_lessons(lessons: Sequence[str]) -> str:
    """Lessons from memory as a prompt section, or ``""`` when there are none."""
    items = [s.strip() for s in lessons if s and s.strip()]
    if not items:
        return ""
    return render_prompt("graphs_lessons", lessons="\n".join(f"- {s}" for s in items))


def append_to_prompt(messages: Sequence[Message], text: str) -> list[Message]:
    """Add ``text`` to the last user message (or as a new one).

    Appending instead of adding a second user turn keeps strict chat templates happy.
    """
    out = list(messages)
    if out and out[-1].role == "user":
        out[-1] = Message("user", f"{out[-1].content.rstrip()}\n\n{text}")
    else:
        out.append(Message("user", text))
    return out


class Task(abc.ABC):
    """What a suite (or a user) supplies to a graph.

    Subclasses implement :meth:`build_messages` and :meth:`verify`; the rest has
    defaults. ``answer_key`` may be sync or async.
    """

    id: str = "task"
    #: Stop strings this task's prompt format needs, added to the run's own.
    stop: tuple[str, ...] = ()

    @abc.abstractmethod
    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        """The first round's prompt; ``lessons`` come from memory and may be empty."""

    def build_refine_messages(self, feedback: Feedback, lessons: Sequence[str] = ()) -> list[Message]:
        """A later round's prompt: the task's prompt followed by the rendered feedback."""
        return append_to_prompt(self.build_messages(lessons), feedback.render())

    def request_constraint(self, messages: Sequence[Message]) -> Constraint | None:
        """The constraint a candidate request built from ``messages`` carries (``None``: none).

        A task that needs well-formed answers (SQL in its database's grammar, an action
        from a list) returns a :class:`~agentloop.backends.Constraint` here; the graphs put
        it on every candidate request of every round, and the backend refuses before
        sending if it cannot honour it. A constrained request sends no stop strings: the
        constraint decides where the answer ends.
        """
        return None

    def completion_prompt(self, messages: Sequence[Message]) -> str | None:
        """A raw completion prompt to send instead of ``messages`` through the chat template.

        ``None`` (the default) sends the chat messages. Tasks with a few-shot completion
        format return the text here; small models often do far better on it.
        """
        return None

    def parse(self, text: str) -> Any:
        """Turn a completion into the answer that ``verify`` and ``answer_key`` see."""
        return text.strip()

    @abc.abstractmethod
    async def verify(self, candidate: Candidate) -> Verdict:
        """Judge one parsed candidate."""

    def answer_key(self, candidate: Candidate) -> Hashable | None | Awaitable[Hashable | None]:
        """What self-consistency votes on; ``None`` abstains. Default: the parsed answer."""
        answer = candidate.answer
        if answer is None or candidate.parse_error is not None:
            return None
        try:
            hash(answer)
        except TypeError:
            return repr(answer)
        return answer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r}>"


VerifyFn = Callable[[Candidate], "Verdict | Awaitable[Verdict]"]


# One budgeted completion for a prompt; ``None`` when the budget has no room left.
class StepFn(Protocol):
    """How a rollout asks the model: one budgeted n=1 request per call, and budgeted ``score``.

    ``await step(messages)`` returns the completion text, or ``None`` when the budget has
    no room (end the episode then). ``constraint`` and ``max_tokens`` shape that one
    request (a constrained request sends no stop strings). ``await step.score(prompt,
    continuations)`` returns each continuation's log-likelihood
    (:class:`~agentloop.backends.ScoreResponse`), or ``None`` without room; it spends
    prompt tokens only. ``temperature`` and ``seed`` are the run's sampling settings, the
    seed already distinct per rollout, for policies that sample choices themselves.
    """

    temperature: float
    seed: int | None

    async def __call__(
        self,
        prompt: Sequence[Message],
        *,
        constraint: Constraint | None = None,
        max_tokens: int | None = None,
    ) -> str | None: ...

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse | None: ...


@dataclass(frozen=True, slots=True)
class Rollout:
    """One candidate produced by many model calls (an agent episode): its transcript and parsed answer."""

    text: str
    answer: Any = None
    parse_error: str | None = None
    finish_reason: str | None = None


class RolloutTask(Task):
    """A task whose candidate is a multi-step rollout (an agent episode) rather than one completion.

    ``propose`` runs ``config.n_for(round)`` rollouts concurrently (at most ``config.concurrency`` at
    once) instead of sampling n completions. Each rollout calls ``step`` once per model
    turn (or ``step.score``); every call is charged to the run's budget, and a rollout
    counts as one candidate (its first call holds the candidate slot; a rollout that
    calls no model claims one when it ends). ``messages`` is the round's prompt from
    :meth:`build_messages` or :meth:`build_refine_messages`.
    """

    @abc.abstractmethod
    async def rollout(self, step: StepFn, messages: Sequence[Message]) -> Rollout:
        """Run one episode, asking the model through ``step``; stop early when it returns ``None``."""


class PromptTask(Task):
    """A task from a prompt string and a verifier function (sync or async).

    Handy for scripts, tests and examples; suites usually subclass :class:`Task`.
    """

    def __init__(
        self,
        prompt: str,
        verify: VerifyFn,
        *,
        id: str = "task",
        system: str | None = None,
        parse: Callable[[str], Any] | None = None,
        answer_key: Callable[[Candidate], Hashable | None] | None = None,
    ):
        self.id = id
        self.prompt = prompt
        self.system = system
        self._verify = verify
        self._parse = parse
        self._answer_key = answer_key

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        msgs = [Message("system", self.system)] if self.system else []
        section = render_lessons(lessons)
        prompt = f"{section}\n\n{self.prompt}" if section else self.prompt
        msgs.append(Message("user", prompt))
        return msgs

    def parse(self, text: str) -> Any:
        return self._parse(text) if self._parse is not None else super().parse(text)

    async def verify(self, candidate: Candidate) -> Verdict:
        verdict = self._verify(candidate)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict

    def answer_key(self, candidate: Candidate) -> Hashable | None | Awaitable[Hashable | None]:
        if self._answer_key is not None:
            return self._answer_key(candidate)
        return super().answer_key(candidate)
