"""The public types every package shares: messages, requests, responses, usage, constraints, and the
one backend contract (a chat request in, n completions and their usage out)."""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import json
import math
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar, get_args

from agentloop.errors import BackendError

__all__ = [
    "CONSTRAINT_KINDS",
    "Backend",
    "Constraint",
    "ConstraintKind",
    "UnsupportedCapabilityError",
    "FinishReason",
    "LoopUsage",
    "combine_usage",
    "small_local_model",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "ContinuationScore",
    "Message",
    "Role",
    "ScorePrompt",
    "ScoreResponse",
    "Usage",
    "as_score_request",
]

ConstraintKind = Literal["grammar", "regex", "choice"]
CONSTRAINT_KINDS: frozenset[ConstraintKind] = frozenset(get_args(ConstraintKind))


class UnsupportedCapabilityError(BackendError):
    """A backend was asked for something it cannot do (a constraint, ``score``); nothing was sent."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """What the whole completion must match.

    * ``grammar``: a context-free grammar in Lark syntax (llguidance's dialect: the
      ``start`` rule, string literals, ``/regex/`` terminals, ``%ignore``).
    * ``regex``: a regular expression the whole completion must match (anchored at
      both ends). Stick to the common subset: no lookaround, no backreferences.
    * ``choice``: the completion is exactly one of these strings.

    Build one with :meth:`grammar`, :meth:`regex` or :meth:`choice`.
    """

    kind: ConstraintKind
    value: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"constraint kind must be grammar, regex or choice, got {self.kind!r}")
        if self.kind == "choice":
            if isinstance(self.value, str):
                raise TypeError("a choice constraint takes a sequence of strings, not one string")
            options = tuple(self.value)
            if not options:
                raise ValueError("a choice constraint needs at least one option")
            if not all(isinstance(o, str) for o in options):
                raise TypeError("choice options must be strings")
            object.__setattr__(self, "value", options)
        elif not isinstance(self.value, str) or not self.value:
            raise ValueError(f"a {self.kind} constraint needs a non-empty string")

    @classmethod
    def grammar(cls, lark: str) -> Constraint:
        """The completion must be a sentence of this Lark grammar (from its ``start`` rule)."""
        return cls("grammar", lark)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """The whole completion must match ``pattern``."""
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Iterable[str]) -> Constraint:
        """The completion must be exactly one of ``options``."""
        return cls("choice", tuple(options))

    @property
    def options(self) -> tuple[str, ...]:
        """The allowed strings of a ``choice`` constraint."""
        if not isinstance(self.value, tuple):
            raise AttributeError(f"a {self.kind} constraint has no options")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"kind": self.kind, "value": value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Constraint:
        value = d["value"]
        return cls(d["kind"], value if isinstance(value, str) else tuple(value))

    def describe(self) -> str:
        """A few words for error messages: 'a regex constraint', 'a choice of 3 strings'."""
        if isinstance(self.value, tuple):
            return f"a choice of {len(self.value)} strings"
        return f"a {self.kind} constraint"

    def matches(self, text: str) -> bool | None:
        """Whether ``text`` satisfies a choice or regex constraint (Python's ``re``); None for grammars."""
        if self.kind == "choice":
            return text in self.options
        if self.kind == "regex":
            import re

            return re.fullmatch(str(self.value), text) is not None
        return None


_T = TypeVar("_T")

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One sampling request. ``n`` candidates share the same prompt.

    Set ``raw_prompt`` to bypass the chat template and send a plain completion
    prompt; ``messages`` is then ignored by backends that support raw prompts.
    ``extra`` carries server-specific sampling fields (vLLM's ``top_k``, ``min_p``)
    that the OpenAI-compatible adapter passes as ``extra_body``. ``constraint``
    restricts what each completion may say (see :class:`Constraint`); a backend that
    cannot honour it raises :class:`UnsupportedCapabilityError` before sending.
    """

    messages: tuple[Message, ...] = ()
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    raw_prompt: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.messages and self.raw_prompt is None:
            raise ValueError("a request needs messages or a raw_prompt")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise TypeError(f"constraint must be a Constraint, got {type(self.constraint).__name__}")
        # Accept lists and dicts from callers but store hashable tuples.
        object.__setattr__(self, "messages", tuple(_as_message(m) for m in self.messages))
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def from_prompt(cls, prompt: str, *, system: str | None = None, **kwargs: Any) -> ChatRequest:
        """Build a request from a single user prompt (and an optional system prompt)."""
        msgs = [Message("system", system)] if system else []
        msgs.append(Message("user", prompt))
        return cls(messages=tuple(msgs), **kwargs)

    @property
    def system(self) -> str | None:
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        d["stop"] = list(self.stop)
        d["extra"] = dict(self.extra)
        # Left out when unset, so the cache keys of unconstrained requests stay as they were.
        if self.constraint is None:
            del d["constraint"]
        else:
            d["constraint"] = self.constraint.to_dict()
        return d

    def cache_key(self, backend_id: str) -> str:
        """A digest of everything that can change the answer."""
        payload = json.dumps({"backend": backend_id, **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def replace(self, **changes: Any) -> ChatRequest:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d.update(changes)
        return ChatRequest(**d)


def _as_message(m: Message | Mapping[str, str]) -> Message:
    if isinstance(m, Message):
        return m
    if isinstance(m, Mapping) and "role" in m and "content" in m:
        role = m["role"]
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message role must be system, user or assistant, got {role!r}")
        return Message(role, str(m["content"]))  # type: ignore[arg-type]
    raise TypeError(f"expected a Message or a {{'role', 'content'}} mapping, got {m!r}")


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0


@dataclass(slots=True)
class Usage:
    """What one call spent. Cached answers spend nothing: ``cached`` is set and tokens are 0."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    llm_calls: int = 0
    cost_usd: float | None = None
    cached: bool = False
    # Prompt tokens that were served from a reused KV cache instead of recomputed.
    reused_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost_usd is not None or other.cost_usd is not None:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            latency_s=self.latency_s + other.latency_s,
            llm_calls=self.llm_calls + other.llm_calls,
            cost_usd=cost,
            cached=self.cached and other.cached,
            reused_prompt_tokens=self.reused_prompt_tokens + other.reused_prompt_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "latency_s": round(self.latency_s, 4),
            "llm_calls": self.llm_calls,
            "cost_usd": self.cost_usd,
            "cached": self.cached,
            "reused_prompt_tokens": self.reused_prompt_tokens,
        }


@dataclass(slots=True)
class ChatResponse:
    completions: list[Completion]
    usage: Usage
    model: str = ""

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "completions": [
                {"text": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens}
                for c in self.completions
            ],
            "usage": self.usage.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ContinuationScore:
    """How likely the model finds one continuation of a prompt.

    ``logprob`` is the natural-log likelihood of the continuation's tokens given the
    prompt, summed; no end-of-sequence term is added. ``mean_logprob`` divides it by
    ``num_tokens`` (0.0 for an empty continuation).
    """

    text: str
    logprob: float
    num_tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.num_tokens if self.num_tokens else 0.0


@dataclass(slots=True)
class ScoreResponse:
    """The scores of a :meth:`Backend.score` call, in the order asked, and what it cost.

    Iterates and indexes like a list of :class:`ContinuationScore`.
    """

    scores: list[ContinuationScore]
    usage: Usage
    model: str = ""

    def __iter__(self) -> Iterator[ContinuationScore]:
        return iter(self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int) -> ContinuationScore:
        return self.scores[i]

    def probs(self, *, normalize: bool = True, temperature: float = 1.0) -> list[float]:
        """A softmax over the continuations: by mean log-likelihood (``normalize``) or total.

        ``temperature`` divides the log-likelihoods first; 0 puts all mass on the best.
        """
        values = [s.mean_logprob if normalize else s.logprob for s in self.scores]
        if not values:
            return []
        if temperature == 0.0:
            best = max(range(len(values)), key=values.__getitem__)
            return [1.0 if i == best else 0.0 for i in range(len(values))]
        top = max(values)
        weights = [math.exp((v - top) / temperature) for v in values]
        total = sum(weights)
        return [w / total for w in weights]

    def best(self, *, normalize: bool = True) -> int:
        """Index of the most likely continuation (the first on ties)."""
        probs = self.probs(normalize=normalize, temperature=0.0)
        return probs.index(1.0) if probs else -1


# A prompt for score(): a request (its messages or raw_prompt; sampling fields are
# ignored), a raw completion prompt, or chat messages (the chat template is applied
# with the assistant turn opened, as generate() would).
ScorePrompt: TypeAlias = ChatRequest | str | Sequence[Message | Mapping[str, str]]


def as_score_request(prompt: ScorePrompt) -> ChatRequest:
    """Normalise a :data:`ScorePrompt` to a ChatRequest (raw string -> ``raw_prompt``)."""
    if isinstance(prompt, ChatRequest):
        return prompt
    if isinstance(prompt, str):
        return ChatRequest(raw_prompt=prompt)
    return ChatRequest(messages=messages_from(prompt))


class Backend(abc.ABC):
    """Anything that turns a ChatRequest into n completions.

    Implementations override :meth:`generate`. A backend may return fewer than ``n``
    completions (a server that ignores ``n``, a budget cap); callers must check.

    Two optional capabilities, advertised so callers can pick a strategy:

    * ``constraint_kinds``: the :class:`Constraint` kinds ``generate`` honours. A
      request whose constraint is not among them raises
      :class:`UnsupportedCapabilityError` before anything is sent (enforced for every
      subclass, so a backend that knows nothing of constraints refuses them).
    * ``supports_score``: whether :meth:`score` works.
    """

    id: str = "backend"
    constraint_kinds: frozenset[ConstraintKind] = frozenset()
    supports_score: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        gen = cls.__dict__.get("generate")
        if gen is None or getattr(gen, "__isabstractmethod__", False) or hasattr(gen, "_checks_constraint"):
            return

        # Wrapped here rather than trusted to each subclass: a backend written before
        # constraints existed must refuse them, never quietly sample unconstrained text.
        @functools.wraps(gen)
        async def generate(self: Backend, request: ChatRequest) -> ChatResponse:
            if request.constraint is not None:
                self.check_constraint(request.constraint)
            return await gen(self, request)

        generate._checks_constraint = True  # type: ignore[attr-defined]
        cls.generate = generate  # type: ignore[method-assign]

    @abc.abstractmethod
    async def generate(self, request: ChatRequest) -> ChatResponse:
        """Sample ``request.n`` completions for one prompt."""

    @property
    def supports_constraints(self) -> bool:
        """Whether ``generate`` honours at least one kind of constraint."""
        return bool(self.constraint_kinds)

    def check_constraint(self, constraint: Constraint) -> None:
        """Raise :class:`UnsupportedCapabilityError` if ``generate`` cannot honour ``constraint``."""
        if constraint.kind not in self.constraint_kinds:
            raise UnsupportedCapabilityError(
                f"{self.id} cannot honour {constraint.describe()}{self._constraint_hint()}"
            )

    def _constraint_hint(self) -> str:
        """Text appended to the refusal: why, and what to use instead."""
        return (
            "; constrained generation needs the transformers or vllm backend, "
            "or a vllm serve endpoint (openai:MODEL --base-url ...)"
        )

    async def score(
        self,
        prompt: ScorePrompt,
        continuations: Sequence[str],
    ) -> ScoreResponse:
        """Return the log-likelihood of each continuation given ``prompt``, in order.

        ``prompt`` is a request (its messages or raw prompt), a raw completion prompt,
        or chat messages. Backends without the capability raise
        :class:`UnsupportedCapabilityError`.
        """
        raise UnsupportedCapabilityError(
            f"score() is not supported by {self.id}; use the transformers or vllm backend, "
            "or a server whose completions API returns prompt log-probabilities (vllm serve)"
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads or model memory."""

    def _run_sync(self, coro: Coroutine[Any, Any, _T]) -> _T:
        # One event loop per backend, so HTTP clients bound to it survive between calls.
        runner = self.__dict__.get("_sync_runner")
        if runner is None:
            runner = asyncio.Runner()
            self.__dict__["_sync_runner"] = runner
        result: _T = runner.run(coro)
        return result

    def generate_sync(self, request: ChatRequest) -> ChatResponse:
        """Blocking wrapper around :meth:`generate` for scripts and notebooks."""
        return self._run_sync(self.generate(request))

    def score_sync(
        self,
        prompt: ScorePrompt,
        continuations: Sequence[str],
    ) -> ScoreResponse:
        """Blocking wrapper around :meth:`score`."""
        return self._run_sync(self.score(prompt, continuations))

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r}>"


def messages_from(items: Sequence[Message | Mapping[str, str]]) -> tuple[Message, ...]:
    return tuple(_as_message(m) for m in items)


@dataclass(slots=True)
class LoopUsage:
    """What a run spent. ``llm_calls`` counts requests sent, failed and cached ones included."""

    candidates: int = 0
    llm_calls: int = 0
    failed_calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    wall_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: LoopUsage) -> LoopUsage:
        return combine_usage(self, other, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "llm_calls": self.llm_calls,
            "failed_calls": self.failed_calls,
            "cached_calls": self.cached_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "wall_s": round(self.wall_s, 4),
        }


def combine_usage(a: LoopUsage, b: LoopUsage, sign: int) -> LoopUsage:
    """``a + sign * b``, field by field (a cost is None only when both are)."""
    cost = None
    if a.cost_usd is not None or b.cost_usd is not None:
        cost = (a.cost_usd or 0.0) + sign * (b.cost_usd or 0.0)
    return LoopUsage(
        candidates=a.candidates + sign * b.candidates,
        llm_calls=a.llm_calls + sign * b.llm_calls,
        failed_calls=a.failed_calls + sign * b.failed_calls,
        cached_calls=a.cached_calls + sign * b.cached_calls,
        prompt_tokens=a.prompt_tokens + sign * b.prompt_tokens,
        completion_tokens=a.completion_tokens + sign * b.completion_tokens,
        cost_usd=cost,
        wall_s=a.wall_s + sign * b.wall_s,
    )


def small_local_model(backend_id: str) -> bool:
    """Whether ``backend_id`` runs a small base-like model in process: any ``transformers`` model, or
    the embedded model on ``llamacpp``. Such models follow few-shot completion prompts better than
    chat instructions (measured in docs/text2sql.md and docs/webshop.md)."""
    prefix, _, arg = backend_id.partition(":")
    prefix, _, _ = prefix.partition("?")
    arg = arg.partition("?")[0]
    return prefix == "transformers" or (prefix == "llamacpp" and arg in ("", "smollm2-135m"))
