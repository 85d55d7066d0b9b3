"""Test doubles that ship with the package: a scripted backend and a function backend.

Both count tokens as whitespace-separated words and honour ``max_tokens`` by
truncating, so budget logic can be tested without a model.

Both accept every constraint kind and check what they return against it: an answer
outside a ``choice`` or not matching a ``regex`` (Python's ``re``) raises
:class:`ScriptConstraintError`, so a test catches a script that the real backend could
never produce; grammars are not checked. Both support :meth:`~Backend.score` when given
a ``scorer``: ``scorer(request, continuations)`` returns each continuation's total
log-likelihood (floats), and each word counts as a token.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from agentloop.types import (
    CONSTRAINT_KINDS,
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    ConstraintKind,
    ContinuationScore,
    ScorePrompt,
    ScoreResponse,
    Usage,
    as_score_request,
)

__all__ = [
    "FunctionBackend",
    "ScriptConstraintError",
    "ScriptExhaustedError",
    "ScriptedBackend",
    "Scorer",
    "count_words",
]

Turn = str | Sequence[str] | BaseException
FunctionResult = str | Sequence[str] | ChatResponse
GenerateFn = Callable[[ChatRequest], FunctionResult | Awaitable[FunctionResult]]
Scorer = Callable[[ChatRequest, Sequence[str]], Sequence[float] | Awaitable[Sequence[float]]]


class ScriptExhaustedError(AssertionError):
    """The scripted backend was called more often than its script allows."""


class ScriptConstraintError(AssertionError):
    """A test double returned text that the request's constraint forbids."""


def _check_constraint(request: ChatRequest, texts: list[str], name: str) -> None:
    c = request.constraint
    if c is None:
        return
    for text in texts:
        if c.matches(text) is False:
            raise ScriptConstraintError(f"{name} answered {text!r}, which {c.describe()} does not allow")


class _Doubles(Backend):
    """What both doubles share: every constraint kind, and scoring through a ``scorer``."""

    constraint_kinds: frozenset[ConstraintKind] = CONSTRAINT_KINDS
    scorer: Scorer | None = None

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        if self.scorer is None:
            return await super().score(prompt, continuations)
        request = as_score_request(prompt)
        conts = list(continuations)
        result = self.scorer(request, conts)
        if inspect.isawaitable(result):
            result = await result
        values = list(result)
        if len(values) != len(conts):
            raise ValueError(f"the scorer returned {len(values)} scores for {len(conts)} continuations")
        scores = [
            ContinuationScore(text=c, logprob=float(v), num_tokens=count_words(c))
            for c, v in zip(conts, values, strict=True)
        ]
        usage = Usage(
            prompt_tokens=_prompt_words(request),
            completion_tokens=sum(s.num_tokens for s in scores),
            llm_calls=1,
        )
        return ScoreResponse(scores=scores, usage=usage, model=self.id)


def count_words(text: str) -> int:
    return len(text.split())


def _prompt_words(request: ChatRequest) -> int:
    if request.raw_prompt is not None:
        return count_words(request.raw_prompt)
    return sum(count_words(m.content) for m in request.messages)


def _truncate(text: str, max_tokens: int) -> tuple[str, int, str]:
    words = text.split()
    if len(words) <= max_tokens:
        return text, len(words), "stop"
    return " ".join(words[:max_tokens]), max_tokens, "length"


def _respond(request: ChatRequest, texts: Iterable[str], latency_s: float, model: str) -> ChatResponse:
    completions = []
    for text in texts:
        for s in request.stop:
            if s and s in text:
                text = text[: text.index(s)]
        text, ntok, reason = _truncate(text, request.max_tokens)
        completions.append(Completion(text=text, finish_reason=reason, completion_tokens=ntok))  # type: ignore[arg-type]
    usage = Usage(
        prompt_tokens=_prompt_words(request),
        completion_tokens=sum(c.completion_tokens for c in completions),
        latency_s=latency_s,
        llm_calls=1,
    )
    return ChatResponse(completions=completions, usage=usage, model=model)


class ScriptedBackend(_Doubles):
    """Plays back a script, one turn per ``generate`` call, and records every request.

    A turn is a string (repeated ``n`` times), a list of strings (returned as-is, so a
    turn can hold fewer candidates than asked), or an exception (raised). With
    ``cycle=True`` the script starts over when it runs out.
    """

    def __init__(
        self,
        script: Sequence[Turn],
        *,
        cycle: bool = False,
        latency_s: float = 0.0,
        scorer: Scorer | None = None,
    ):
        self.id = "scripted"
        self.scorer = scorer
        self.supports_score = scorer is not None
        self.script = list(script)
        self.cycle = cycle
        self.latency_s = latency_s
        self.requests: list[ChatRequest] = []
        self._pos = 0

    async def generate(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self._pos >= len(self.script):
            if not self.cycle or not self.script:
                raise ScriptExhaustedError(
                    f"scripted backend has {len(self.script)} turns but was called {len(self.requests)} times"
                )
            self._pos = 0
        turn = self.script[self._pos]
        self._pos += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(turn, BaseException):
            raise turn
        texts = [turn] * request.n if isinstance(turn, str) else list(turn)
        _check_constraint(request, texts, self.id)
        return _respond(request, texts, self.latency_s, self.id)


class FunctionBackend(_Doubles):
    """Calls ``fn(request)`` (sync or async) for each request.

    ``fn`` returns one string (used for all ``n`` candidates), a list of strings, or a
    full :class:`ChatResponse`. ``latency_s`` adds a fixed simulated latency per call,
    which is what the overhead benchmarks use.
    """

    def __init__(
        self,
        fn: GenerateFn,
        *,
        latency_s: float = 0.0,
        name: str = "function",
        scorer: Scorer | None = None,
    ):
        self.id = name
        self.scorer = scorer
        self.supports_score = scorer is not None
        self.fn = fn
        self.latency_s = latency_s
        self.calls = 0

    async def generate(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        start = time.perf_counter()
        result = self.fn(request)
        if inspect.isawaitable(result):
            result = await result
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(result, ChatResponse):
            _check_constraint(request, result.texts, self.id)
            return result
        texts = [result] * request.n if isinstance(result, str) else list(result)
        _check_constraint(request, texts, self.id)
        return _respond(request, texts, time.perf_counter() - start, self.id)
