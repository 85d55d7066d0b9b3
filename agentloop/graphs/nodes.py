"""The reusable graph nodes: recall, propose, verify, select, vote, refine, revise, remember.

Every node is an async function ``(state, runtime) -> update`` that reaches the
backend, task, budget and memory through ``runtime.context`` (a :class:`LoopContext`).
They are async on purpose: LangGraph runs sync nodes in a thread pool.

One round's candidates are generated inside :func:`propose`, by one batched request
(``n=``) or a bounded ``asyncio.gather`` of n=1 requests, not by a LangGraph ``Send``
per candidate: the fan-out costs far more per candidate than the gather (see
docs/graphs.md). The rounds, verification and refinement stay in the graph.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from langgraph.runtime import Runtime

from agentloop import tracing
from agentloop.graphs._util import maybe_await, prompt_hash
from agentloop.graphs.context import LoopConfig, LoopContext
from agentloop.graphs.result import build_result
from agentloop.graphs.state import LoopState
from agentloop.graphs.stopping import evaluate
from agentloop.graphs.task import Candidate, Feedback, Rollout, RolloutTask, Task, Verdict
from agentloop.types import (
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    Message,
    ScorePrompt,
    ScoreResponse,
    Usage,
)

__all__ = [
    "Sampled",
    "best_of",
    "propose",
    "recall",
    "refine",
    "remember",
    "revise",
    "rollouts",
    "sample",
    "select",
    "should_continue",
    "verify",
    "verify_candidates",
    "vote",
]

T = TypeVar("T")
R = TypeVar("R")
Update = dict[str, Any]


# --- nodes ---------------------------------------------------------------------------------


async def recall(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Fetch lessons from memory for this task (none without a memory)."""
    ctx = runtime.context
    if ctx.memory is None:
        return {}
    with tracing.span("agentloop.memory.retrieve", {"agentloop.task.id": ctx.task.id}) as s:
        lessons = list(await ctx.memory.retrieve(ctx.task))
        tracing.set_attributes(s, {"agentloop.memory.lessons": len(lessons)})
    return {"lessons": lessons}


async def propose(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Sample one round of ``config.n_for(round)`` candidates, from the feedback prompt once there is feedback."""
    ctx = runtime.context
    rnd = state.get("round", -1) + 1
    n = ctx.config.n_for(rnd)
    lessons = state.get("lessons") or []
    feedback = state.get("feedback")
    if feedback is None:
        messages = ctx.task.build_messages(lessons)
    else:
        messages = ctx.task.build_refine_messages(feedback, lessons)
    with tracing.round_scope(ctx, rnd):  # the round's span begins here; select ends it
        temperature = ctx.config.temperature_for(rnd)
        if isinstance(ctx.task, RolloutTask):
            sampled = await rollouts(ctx, messages, n=n, round=rnd, temperature=temperature)
        else:
            sampled = await sample(ctx, messages, n=n, round=rnd, temperature=temperature)
    update: Update = {"round": rnd, "pending": sampled.candidates}
    if sampled.error is not None:
        update["error"] = sampled.error
    return update


async def verify(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Verify this round's candidates concurrently (bounded by ``config.concurrency``)."""
    pending = state.get("pending") or []
    if not pending:
        return {}
    with tracing.round_scope(runtime.context):
        return {"pending": await verify_candidates(runtime.context, pending)}


async def select(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Keep the best verified candidate across rounds, log the round, and decide whether to stop."""
    pending = state.get("pending") or []
    previous = state.get("best")
    best = best_of([previous, *pending])
    improved = best is not None and (previous is None or best.score > previous.score)
    stale = 0 if improved else state.get("stale_rounds", 0) + 1
    update: Update = {"candidates": pending, "best": best, "stale_rounds": stale}
    return _end_round(runtime.context, update | _decide(state, runtime.context, best, stale))


async def vote(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Self-consistency: the most common answer key among this round's candidates wins.

    Scores play no part; ties go to the key seen first. Candidates whose key is ``None``
    abstain. If none votes, the first candidate is kept. Only the winner is verified.
    """
    ctx = runtime.context
    pending = state.get("pending") or []
    keys = await _map_bounded(lambda c: _answer_key(ctx.task, c), pending, ctx.config.concurrency)
    groups: dict[Hashable, list[Candidate]] = {}
    for cand, key in zip(pending, keys, strict=True):
        if key is not None:
            groups.setdefault(key, []).append(cand)
    if groups:
        # max() keeps the first of equal counts, and dicts keep first-seen order.
        best: Candidate | None = max(groups.values(), key=len)[0]
    else:
        best = pending[0] if pending else state.get("best")
    if best is not None and best.verdict is None and any(c is best for c in pending):
        # Scores play no part in the vote, so only the winner is verified: its verdict is the
        # run's pass/score, and with an LLM judge the others would cost calls for nothing.
        (checked,) = await verify_candidates(ctx, [best])
        pending = [checked if c is best else c for c in pending]
        best = checked
    votes = {_key_label(k): len(v) for k, v in groups.items()}
    update: Update = {"candidates": pending, "best": best, "votes": votes}
    return _end_round(ctx, update | _decide(state, ctx, best, state.get("stale_rounds", 0)))


async def refine(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """IAD feedback for the next round: best so far, the last round's weakest, their scores and messages."""
    best = state.get("best")
    if best is None:
        return {"feedback": None}
    pending = state.get("pending") or []
    worst = min(pending, key=lambda c: c.score) if pending else None
    if worst is not None and worst.score >= best.score:
        worst = None  # nothing to contrast: every candidate scored the same
    feedback = Feedback(
        style="contrast",
        round=state.get("round", 0) + 1,
        best=best,
        worst=worst,
        scores=tuple(c.score for c in pending),
    )
    return {"feedback": feedback}


async def revise(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Self-refine feedback: the last round's best candidate (with n=1, the previous one) and its own verdict.

    The round's best, not its last, so that a round of several candidates followed by
    one revision (``n_schedule=(4, 1)``) revises the one worth revising.
    """
    pending = state.get("pending") or []
    latest = best_of(pending) or (pending[-1] if pending else state.get("best"))
    if latest is None:
        return {"feedback": None}
    feedback = Feedback(style="revise", round=state.get("round", 0) + 1, best=latest, scores=(latest.score,))
    return {"feedback": feedback}


async def remember(state: LoopState, runtime: Runtime[LoopContext]) -> Update:
    """Hand the finished run to memory, if there is one."""
    ctx = runtime.context
    if ctx.memory is not None:
        await ctx.memory.remember(ctx.task, build_result(state, ctx))
    return {}


async def should_continue(state: LoopState) -> Literal["continue", "stop"]:
    """Route after ``select``/``vote``: go on unless the evaluator set ``stop_reason``."""
    return "stop" if state.get("stop_reason") else "continue"


# --- building blocks for custom nodes ------------------------------------------------------


def best_of(candidates: Sequence[Candidate | None]) -> Candidate | None:
    """The highest-scoring verified candidate; ties go to the earliest (passed beats failed)."""
    best: Candidate | None = None
    for c in candidates:
        if c is None or c.verdict is None:
            continue
        if best is None or (c.score, c.passed) > (best.score, best.passed):
            best = c
    return best


@dataclass(slots=True)
class Sampled:
    """One round's candidates, and the backend error that cut it short, if any."""

    candidates: list[Candidate]
    error: str | None = None


@dataclass(slots=True)
class _Call:
    completions: list[Completion]
    usage: Usage
    call: int
    asked: int


async def sample(
    ctx: LoopContext,
    messages: Sequence[Message],
    *,
    n: int,
    round: int,
    temperature: float | None = None,
) -> Sampled:
    """Sample up to ``n`` parsed candidates for one prompt, within the budget.

    One request with ``n=``; if the backend returns fewer, the rest are topped up with
    a bounded gather of n=1 requests. With ``config.batched=False`` it is n=1 requests
    from the start. A backend error stops new requests; what already came back is kept.
    """
    cfg = ctx.config
    temp = cfg.temperature if temperature is None else temperature
    msgs = tuple(messages)
    calls: list[_Call] = []
    error: str | None = None
    if n == 1 or (cfg.batched and not ctx.n_unsupported):
        try:
            first = await _request(ctx, msgs, n, temp)
        except Exception as exc:
            first, error = None, _describe(exc)
        if first is not None:
            calls.append(first)
            missing = first.asked - len(first.completions)
            if missing > 0:
                if first.asked > 1:
                    ctx.n_unsupported = True
                more, error = await _gather_requests(ctx, msgs, missing, temp)
                calls.extend(more)
    else:
        calls, error = await _gather_requests(ctx, msgs, n, temp)

    phash = prompt_hash(msgs)
    ctx.prompts.setdefault(phash, msgs)
    candidates: list[Candidate] = []
    for call in calls:
        for completion in call.completions:
            candidates.append(_candidate(ctx.task, round, len(candidates), phash, completion, call))
    return Sampled(candidates, error)


async def rollouts(
    ctx: LoopContext, messages: Sequence[Message], *, n: int, round: int, temperature: float | None = None
) -> Sampled:
    """Run ``n`` rollouts of a :class:`RolloutTask` concurrently, each one candidate, within the budget.

    A rollout whose first call finds no room in the budget produces no candidate. A
    backend error ends the rollout it happened in and stops new ones from starting;
    the rollouts that finished are kept.
    """
    task = ctx.task
    assert isinstance(task, RolloutTask)
    cfg = ctx.config
    msgs = tuple(messages)
    phash = prompt_hash(msgs)
    ctx.prompts.setdefault(phash, msgs)
    errors: list[str] = []

    async def one(i: int) -> tuple[Rollout, list[_Call]] | None:
        if errors:
            return None
        step = _RolloutStep(ctx, round, i, temperature)
        try:
            result = await task.rollout(step, msgs)
        except Exception as exc:
            errors.append(_describe(exc))
            return None
        if not step.calls and (step.refused or not ctx.budget.claim_candidate()):
            return None  # no room in the budget for this rollout
        return result, step.calls

    done = await _map_bounded(one, range(n), cfg.concurrency)
    candidates: list[Candidate] = []
    for item in done:
        if item is None:
            continue
        result, calls = item
        last = calls[-1].completions[0] if calls else None
        candidates.append(
            Candidate(
                round=round,
                index=len(candidates),
                text=result.text,
                prompt_hash=phash,
                answer=result.answer,
                completion_tokens=sum(c.completions[0].completion_tokens for c in calls if c.completions),
                prompt_tokens=sum(c.usage.prompt_tokens for c in calls),
                latency_s=sum(c.usage.latency_s for c in calls),
                call=calls[0].call if calls else -1,
                finish_reason=result.finish_reason or (last.finish_reason if last else None),
                parse_error=result.parse_error,
            )
        )
    return Sampled(candidates, errors[0] if errors else None)


async def verify_candidates(ctx: LoopContext, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Attach a verdict to each candidate that lacks one. A verifier that raises fails its candidate."""
    task = ctx.task

    async def one(c: Candidate) -> Candidate:
        if c.verdict is not None:
            return c
        if c.parse_error is not None:
            verdict = Verdict.failed(
                f"could not parse the answer: {c.parse_error}", parse_error=c.parse_error
            )
            return c.with_verdict(verdict)
        start = time.perf_counter()
        try:
            verdict = await (tracing.verify(task, c) if tracing.enabled() else task.verify(c))
            if not isinstance(verdict, Verdict):
                raise TypeError(
                    f"{type(task).__name__}.verify returned {type(verdict).__name__}, not a Verdict"
                )
        except Exception as exc:
            # ``raised`` tells a verifier that crashed from a verdict that reports an error it found
            # (a SQL error is a wrong answer; an exception in the verifier is no verdict at all).
            verdict = Verdict.failed(
                f"the verifier raised {_describe(exc)}", error=_describe(exc), raised=True
            )
        return c.with_verdict(verdict, time.perf_counter() - start)

    return await _map_bounded(one, candidates, ctx.config.concurrency)


# --- internals -----------------------------------------------------------------------------


def _end_round(ctx: LoopContext, update: Update) -> Update:
    """End the round's span with what the round decided (nothing when tracing is off)."""
    if tracing.enabled():
        best = update.get("best")
        tracing.end_round(
            ctx,
            {
                "agentloop.round.candidates": len(update.get("candidates") or []),
                "agentloop.round.best_score": best.score if best is not None else None,
                "agentloop.stop_reason": update.get("stop_reason"),
            },
        )
    return update


def _decide(state: LoopState, ctx: LoopContext, best: Candidate | None, stale: int) -> Update:
    reason, detail = evaluate(
        best=best,
        round=state.get("round", 0),
        proposed=len(state.get("pending") or []),
        stale_rounds=stale,
        error=state.get("error"),
        config=ctx.config,
        budget=ctx.budget,
    )
    return {"stop_reason": reason, "stop_detail": detail}


class _RolloutStep:
    """The :class:`~agentloop.graphs.task.StepFn` one rollout gets: budgeted requests and scores."""

    def __init__(self, ctx: LoopContext, round: int, index: int, temperature: float | None = None):
        self.ctx = ctx
        self.temperature = ctx.config.temperature if temperature is None else temperature
        seed = ctx.config.seed
        # Distinct per round and rollout, and the same on a rerun.
        self.seed = None if seed is None else (seed * 1_000_003 + round * 1_009 + index) % 2**31
        self.calls: list[_Call] = []
        self.refused = False

    async def __call__(
        self,
        prompt: Sequence[Message],
        *,
        constraint: Constraint | None = None,
        max_tokens: int | None = None,
    ) -> str | None:
        # The first call holds the rollout's candidate slot; the rest are its steps.
        call = await _request(
            self.ctx,
            tuple(prompt),
            1,
            self.temperature,
            counts_candidates=not self.calls,
            constraint=constraint,
            max_tokens=max_tokens,
        )
        if call is None or not call.completions:
            self.refused = self.refused or not self.calls
            return None
        self.calls.append(call)
        return call.completions[0].text

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse | None:
        """One budgeted ``score`` call; ``None`` without room. It spends prompt tokens only: the
        prompt and every continuation are prefilled, so all of them count as prompt tokens."""
        budget = self.ctx.budget
        r = budget.reserve(1, 1, counts_candidates=not self.calls)
        if r is None:
            self.refused = self.refused or not self.calls
            return None
        try:
            response = await self.ctx.backend.score(prompt, continuations)
        except Exception:
            budget.fail(r)
            raise
        u = response.usage
        spent = Usage(
            prompt_tokens=u.prompt_tokens + u.completion_tokens,
            latency_s=u.latency_s,
            llm_calls=1,
            cost_usd=u.cost_usd,
        )
        # Settled as one answer-less completion, so the call counts (and holds the candidate
        # slot when it is the rollout's first) like a generation would.
        budget.settle(r, ChatResponse([Completion("", "stop", 0)], spent, model=response.model))
        self.calls.append(_Call(completions=[Completion("", "stop", 0)], usage=spent, call=r.call, asked=1))
        return response


async def _request(
    ctx: LoopContext,
    messages: tuple[Message, ...],
    n: int,
    temperature: float,
    *,
    counts_candidates: bool = True,
    constraint: Constraint | None = None,
    max_tokens: int | None = None,
) -> _Call | None:
    """One budgeted request; ``None`` when the budget has no room. Backend errors propagate.

    ``constraint`` defaults to the task's :meth:`~Task.request_constraint`; a constrained
    request sends no stop strings (the constraint ends the answer).
    """
    cfg = ctx.config
    if constraint is None:
        constraint = ctx.task.request_constraint(messages)
    limit = cfg.max_tokens if max_tokens is None else min(max_tokens, cfg.max_tokens)
    r = ctx.budget.reserve(n, limit, counts_candidates=counts_candidates)
    if r is None:
        return None
    request = ChatRequest(
        messages=messages,
        n=r.n,
        temperature=temperature,
        top_p=cfg.top_p,
        max_tokens=r.max_tokens,
        stop=() if constraint is not None else tuple(dict.fromkeys(cfg.stop + ctx.task.stop)),
        seed=_seed(cfg, r.call),
        raw_prompt=ctx.task.completion_prompt(messages),
        constraint=constraint,
    )
    try:
        response = await ctx.backend.generate(request)
    except Exception:
        ctx.budget.fail(r)
        raise
    kept = ctx.budget.settle(r, response)
    return _Call(completions=kept, usage=response.usage, call=r.call, asked=r.n)


async def _gather_requests(
    ctx: LoopContext, messages: tuple[Message, ...], count: int, temperature: float
) -> tuple[list[_Call], str | None]:
    """``count`` n=1 requests, at most ``config.concurrency`` in flight; stops starting new ones on error."""
    errors: list[str] = []

    async def one(_: int) -> _Call | None:
        if errors:
            return None
        try:
            return await _request(ctx, messages, 1, temperature)
        except Exception as exc:
            errors.append(_describe(exc))
            return None

    results = await _map_bounded(one, range(count), ctx.config.concurrency)
    return [c for c in results if c is not None], (errors[0] if errors else None)


async def _map_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``asyncio.gather`` over ``items`` with at most ``limit`` running at once, in order."""
    if len(items) == 1:
        return [await fn(items[0])]
    if len(items) <= limit:
        return list(await asyncio.gather(*(fn(x) for x in items)))
    gate = asyncio.Semaphore(limit)

    async def gated(x: T) -> R:
        async with gate:
            return await fn(x)

    return list(await asyncio.gather(*(gated(x) for x in items)))


def _candidate(task: Task, rnd: int, index: int, phash: str, c: Completion, call: _Call) -> Candidate:
    try:
        answer, parse_error = task.parse(c.text), None
    except Exception as exc:
        answer, parse_error = None, _describe(exc)
    return Candidate(
        round=rnd,
        index=index,
        text=c.text,
        prompt_hash=phash,
        answer=answer,
        completion_tokens=c.completion_tokens,
        prompt_tokens=call.usage.prompt_tokens,
        latency_s=call.usage.latency_s,
        call=call.call,
        finish_reason=c.finish_reason,
        parse_error=parse_error,
    )


async def _answer_key(task: Task, c: Candidate) -> Hashable | None:
    try:
        key = await maybe_await(task.answer_key(c))
        hash(key)
    except Exception:
        return None  # an unhashable or failing key abstains rather than sinking the vote
    return key


def _key_label(key: Hashable) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 200 else text[:197] + "..."


def _seed(cfg: LoopConfig, call: int) -> int | None:
    # Distinct per request, so n=1 requests of one round do not repeat each other.
    return None if cfg.seed is None else cfg.seed + call


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
