"""Budgets: the tracker's arithmetic, and runs that never exceed their candidate, token or time caps."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentloop.backends import ChatRequest, ChatResponse, Completion, FunctionBackend, ScriptedBackend, Usage
from agentloop.backends.testing import count_words
from agentloop.graphs import (
    Budget,
    BudgetTracker,
    Candidate,
    LoopConfig,
    PromptTask,
    Reservation,
    Verdict,
    run_task,
)

PROMPT = "Write the answer."


def task(score: float = 0.3) -> PromptTask:
    return PromptTask(PROMPT, lambda c: Verdict(score, feedback="meh"), id="b")


def response(texts: list[str], *, completion_tokens: int | None = None, cached: bool = False) -> ChatResponse:
    completions = [Completion(t, "stop", count_words(t)) for t in texts]
    tokens = sum(c.completion_tokens for c in completions) if completion_tokens is None else completion_tokens
    return ChatResponse(
        completions, Usage(prompt_tokens=3, completion_tokens=tokens, llm_calls=1, cached=cached)
    )


def hold(t: BudgetTracker, n: int, max_tokens: int, *, counts_candidates: bool = True) -> Reservation:
    r = t.reserve(n, max_tokens, counts_candidates=counts_candidates)
    assert r is not None
    return r


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- the tracker ---------------------------------------------------------------------------


def test_reserve_caps_n_to_the_candidates_left() -> None:
    t = BudgetTracker(Budget(max_candidates=5))
    r = hold(t, 4, 100)
    assert (r.n, r.max_tokens) == (4, 100)
    assert t.candidates_left == 1  # held while in flight
    assert hold(t, 4, 100).n == 1
    assert t.reserve(4, 100) is None
    assert t.exhausted() == "candidates"


def test_reserve_keeps_full_max_tokens_and_sends_fewer_candidates() -> None:
    t = BudgetTracker(Budget(max_tokens=50))
    r = hold(t, 4, 20)
    assert (r.n, r.max_tokens) == (2, 20)
    # 10 left (held): less than min_tokens (16), so nothing more fits
    assert t.reserve(1, 20) is None
    assert t.exhausted(20) == "tokens"


def test_a_lone_last_candidate_gets_the_remaining_tokens() -> None:
    t = BudgetTracker(Budget(max_tokens=50, min_tokens=5))
    first = hold(t, 4, 20)
    last = hold(t, 4, 20)
    assert (first.n, first.max_tokens) == (2, 20)
    assert (last.n, last.max_tokens) == (1, 10)
    assert t.tokens_left == 0 and t.reserve(1, 20) is None


def test_min_tokens_never_exceeds_the_requested_max_tokens() -> None:
    t = BudgetTracker(Budget(max_tokens=8, min_tokens=16))
    r = hold(t, 2, 4)
    assert (r.n, r.max_tokens) == (2, 4)


def test_settle_records_actual_usage_and_releases_the_hold() -> None:
    t = BudgetTracker(Budget(max_candidates=10, max_tokens=1000))
    r = hold(t, 4, 100)
    kept = t.settle(r, response(["a b", "c"]))  # fewer than asked
    assert [c.text for c in kept] == ["a b", "c"]
    u = t.usage
    assert (u.candidates, u.completion_tokens, u.prompt_tokens, u.llm_calls) == (2, 3, 3, 1)
    assert t.candidates_left == 8 and t.tokens_left == 997


def test_settle_drops_completions_beyond_n_and_does_not_count_them() -> None:
    t = BudgetTracker(Budget(max_candidates=2))
    r = hold(t, 2, 10)
    kept = t.settle(r, response(["a", "b c", "d e f"]))
    assert [c.text for c in kept] == ["a", "b c"]
    assert t.usage.candidates == 2 and t.usage.completion_tokens == 3


def test_settle_falls_back_to_per_completion_tokens_but_keeps_cached_zeros() -> None:
    t = BudgetTracker()
    t.settle(hold(t, 2, 10), response(["a b", "c"], completion_tokens=0))
    assert t.usage.completion_tokens == 3
    t.settle(hold(t, 2, 10), response(["a b", "c"], completion_tokens=0, cached=True))
    assert t.usage.completion_tokens == 3 and t.usage.cached_calls == 1 and t.usage.candidates == 4


def test_fail_releases_the_hold_and_counts_the_call() -> None:
    t = BudgetTracker(Budget(max_candidates=3, max_tokens=30))
    t.fail(hold(t, 3, 10))
    assert t.candidates_left == 3 and t.tokens_left == 30
    assert (t.usage.llm_calls, t.usage.failed_calls, t.usage.candidates) == (1, 1, 0)


def test_auxiliary_reservations_spend_tokens_but_not_candidates() -> None:
    t = BudgetTracker(Budget(max_candidates=1, max_tokens=100))
    t.settle(hold(t, 1, 10), response(["x"]))
    assert t.exhausted() == "candidates"
    aux = hold(t, 1, 50, counts_candidates=False)
    assert aux.n == 1
    t.settle(aux, response(["a b c"]))
    assert t.usage.candidates == 1 and t.usage.completion_tokens == 4


def test_wall_time_refuses_new_reservations() -> None:
    clock = FakeClock()
    t = BudgetTracker(Budget(max_wall_s=2.0), clock=clock)
    assert t.reserve(1, 10) is not None
    clock.now = 2.0
    assert t.reserve(1, 10) is None and t.exhausted() == "wall_time"
    assert t.snapshot().wall_s == 2.0


def test_budget_validates() -> None:
    with pytest.raises(ValueError):
        Budget(max_candidates=-1)
    with pytest.raises(ValueError):
        Budget(min_tokens=0)
    with pytest.raises(ValueError):
        BudgetTracker().reserve(0, 10)


# --- runs under a budget -------------------------------------------------------------------


async def test_candidate_budget_shrinks_the_last_request() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    result = await run_task(
        task(), backend, "iad", config=LoopConfig(n=4, rounds=3), budget=Budget(max_candidates=5)
    )
    assert [r.n for r in backend.requests] == [4, 1]
    assert result.usage.candidates == 5 == len(result.candidates)
    assert result.stop_reason == "budget" and "candidates" in result.stop_detail


async def test_a_schedule_runs_until_the_candidate_budget_is_spent() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    config = LoopConfig(rounds=3, n_schedule=(4, 1))
    result = await run_task(task(), backend, "iad", config=config, budget=Budget(max_candidates=5))
    assert [r.n for r in backend.requests] == [4, 1]  # the third round has no candidate left
    assert result.usage.candidates == 5 == len(result.candidates)
    assert result.stop_reason == "budget" and "candidates" in result.stop_detail


async def test_a_schedule_stops_after_the_round_that_spends_the_budget() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    config = LoopConfig(rounds=3, n_schedule=(4, 1))
    result = await run_task(task(), backend, "iad", config=config, budget=Budget(max_candidates=4))
    assert [r.n for r in backend.requests] == [4]
    assert result.rounds == 1 and result.usage.candidates == 4
    assert result.stop_reason == "budget" and result.stop_detail == "candidates budget spent after round 1"


async def test_a_schedule_is_cut_to_the_candidates_left() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    config = LoopConfig(rounds=3, n_schedule=(2, 4))
    result = await run_task(task(), backend, "iad", config=config, budget=Budget(max_candidates=5))
    assert [r.n for r in backend.requests] == [2, 3]
    assert result.usage.candidates == 5 and result.stop_reason == "budget"


async def test_token_budget_caps_each_request_and_the_total() -> None:
    backend = ScriptedBackend([" ".join(["w"] * 30)], cycle=True)  # always longer than max_tokens
    config = LoopConfig(n=4, rounds=3, max_tokens=20)
    result = await run_task(task(), backend, "iad", config=config, budget=Budget(max_tokens=50, min_tokens=5))
    assert [(r.n, r.max_tokens) for r in backend.requests] == [(2, 20), (1, 10)]
    assert result.usage.completion_tokens == 50
    assert result.stop_reason == "budget" and "tokens" in result.stop_detail


async def test_top_ups_for_a_short_batch_stay_within_the_budget() -> None:
    backend = ScriptedBackend([["a"], "b", "c", "d", "e"])
    config = LoopConfig(n=4, rounds=3)
    result = await run_task(task(), backend, "iad", config=config, budget=Budget(max_candidates=3))
    assert [r.n for r in backend.requests] == [3, 1, 1]
    assert result.usage.candidates == 3 and result.stop_reason == "budget"


async def test_wall_time_budget_starts_no_new_work() -> None:
    clock = FakeClock()

    def fn(request: ChatRequest) -> str:
        clock.now += 1.0  # each request takes one (fake) second
        return "x"

    backend = FunctionBackend(fn)
    tracker = BudgetTracker(Budget(max_wall_s=2.0), clock=clock)
    result = await run_task(task(), backend, "iad", config=LoopConfig(n=1, rounds=10), budget=tracker)
    assert backend.calls == 2
    assert result.stop_reason == "budget" and "wall_time" in result.stop_detail
    assert result.usage.wall_s == 2.0


async def test_wall_time_budget_with_real_time_leaves_queued_requests_unsent() -> None:
    backend = ScriptedBackend(["x"], cycle=True, latency_s=0.2)
    config = LoopConfig(n=6, batched=False, concurrency=2)
    result = await run_task(task(), backend, "best_of_n", config=config, budget=Budget(max_wall_s=0.3))
    # Pairs start at 0 s and 0.2 s; the pair due at 0.4 s is never sent. (Only the upper
    # bound is exact: a stalled machine may start the second pair late.)
    assert 2 <= len(backend.requests) <= 4
    assert result.usage.candidates == len(backend.requests) < 6


async def test_a_shared_tracker_caps_several_tasks_and_reports_each_ones_spend() -> None:
    tracker = BudgetTracker(Budget(max_candidates=5))
    first = await run_task(
        task(), ScriptedBackend(["x"], cycle=True), "best_of_n", config=LoopConfig(n=3), budget=tracker
    )
    second = await run_task(
        task(), ScriptedBackend(["x"], cycle=True), "best_of_n", config=LoopConfig(n=3), budget=tracker
    )
    assert (first.usage.candidates, second.usage.candidates) == (3, 2)
    assert tracker.usage.candidates == 5
    assert (first.usage + second.usage).candidates == 5


async def test_a_budget_of_zero_candidates_sends_nothing() -> None:
    backend = ScriptedBackend([])
    result = await run_task(task(), backend, "iad", budget=Budget(max_candidates=0))
    assert backend.requests == [] and result.best is None and result.stop_reason == "budget"


@pytest.mark.parametrize("seed", range(40))
async def test_no_run_ever_exceeds_its_budget_and_usage_is_exact(seed: int) -> None:
    """Random backends (short batches, extra completions, long texts, errors) under random budgets."""
    rng = random.Random(seed)
    graph = rng.choice(["iad", "best_of_n", "self_refine", "self_consistency", "greedy"])
    config = LoopConfig(
        n=rng.randint(1, 6),
        rounds=rng.randint(1, 4),
        max_tokens=rng.randint(4, 30),
        batched=rng.random() < 0.6,
        concurrency=rng.randint(1, 4),
        threshold=1.0,
    )
    budget = Budget(
        max_candidates=rng.choice([None, rng.randint(0, 12)]),
        max_tokens=rng.choice([None, rng.randint(0, 150)]),
        min_tokens=rng.randint(1, 8),
    )
    calls: list[ChatRequest] = []
    prompt_tokens = 0

    async def fn(request: ChatRequest) -> list[str]:
        nonlocal prompt_tokens
        calls.append(request)
        await asyncio.sleep(rng.random() / 1000)
        if rng.random() < 0.1:
            raise ConnectionError("flaky")
        prompt_tokens += sum(count_words(m.content) for m in request.messages)
        k = rng.randint(0, request.n + 1)  # sometimes short, sometimes one too many
        return [" ".join(["w"] * rng.randint(1, 40)) for _ in range(k)]

    result = await run_task(
        PromptTask(PROMPT, lambda c: Verdict(rng.random())),
        FunctionBackend(fn),
        graph,
        config=config,
        budget=budget,
    )
    u = result.usage
    if budget.max_candidates is not None:
        assert u.candidates <= budget.max_candidates
    if budget.max_tokens is not None:
        assert u.completion_tokens <= budget.max_tokens
    for request in calls:
        assert request.n <= result.config.n and request.max_tokens <= config.max_tokens
    assert u.candidates == len(result.candidates)
    assert u.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert u.prompt_tokens == prompt_tokens
    assert u.llm_calls == len(calls) and u.failed_calls <= u.llm_calls
    if u.failed_calls:
        assert result.error is not None
    if result.candidates:
        assert result.best is not None
    assert len({c.call for c in result.candidates}) <= u.llm_calls - u.failed_calls


async def test_candidate_verdicts_do_not_count_against_the_budget() -> None:
    calls = 0

    async def verify(c: Candidate) -> Verdict:
        nonlocal calls
        calls += 1
        return Verdict(0.1)

    result = await run_task(
        PromptTask(PROMPT, verify),
        ScriptedBackend(["x"], cycle=True),
        "iad",
        config=LoopConfig(n=2, rounds=2),
        budget=Budget(max_candidates=4),
    )
    assert calls == 4 and result.usage.candidates == 4 and result.stop_reason == "max_rounds"
