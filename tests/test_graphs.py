"""The inference-time graphs (greedy, best_of_n, self_consistency, self_refine, iad) on scripted backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from agentloop.backends import ChatRequest, FunctionBackend, Message, ScriptedBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import (
    GRAPHS,
    Budget,
    Candidate,
    LoopConfig,
    LoopResult,
    LoopState,
    PromptTask,
    Rollout,
    RolloutTask,
    StepFn,
    Task,
    UnknownGraphError,
    Verdict,
    build_graph,
    loop_graph,
    nodes,
    run_task,
    run_task_sync,
)

PROMPT = "Write the answer."


def scored(scores: dict[str, float], *, passing: float = 1.0) -> PromptTask:
    """A task whose verifier looks each answer up in ``scores`` (0 if absent)."""

    def verify(c: Candidate) -> Verdict:
        s = scores.get(c.answer, 0.0)
        return Verdict(score=s, passed=s >= passing, feedback=f"verifier says {c.answer} is worth {s}")

    return PromptTask(PROMPT, verify, id="t")


def verdict_of(c: Candidate | None) -> Verdict:
    assert c is not None and c.verdict is not None
    return c.verdict


def last_user(request: ChatRequest) -> str:
    return request.messages[-1].content


# --- best_of_n ---------------------------------------------------------------------------


async def test_best_of_n_returns_the_max_score_candidate_and_verifies_all() -> None:
    task = scored({"alpha": 0.2, "bravo": 0.9, "charlie": 0.5, "delta": 0.1})
    backend = ScriptedBackend([["alpha", "bravo", "charlie", "delta"]])
    result = await run_task(task, backend, "best_of_n", config=LoopConfig(n=4, rounds=5))

    assert result.answer == "bravo"
    assert result.score == 0.9
    assert [c.answer for c in result.candidates] == ["alpha", "bravo", "charlie", "delta"]
    assert all(c.verdict is not None for c in result.candidates)
    assert len(backend.requests) == 1 and backend.requests[0].n == 4  # one batched call, one round
    assert result.rounds == 1 and result.stop_reason == "max_rounds"
    assert result.usage.candidates == 4 and result.usage.llm_calls == 1


async def test_best_of_n_keeps_the_earliest_of_equal_scores() -> None:
    task = scored({"x": 0.5, "y": 0.5})
    result = await run_task(task, ScriptedBackend([["x", "y"]]), "best_of_n", config=LoopConfig(n=2))
    assert result.answer == "x"


# --- iad -----------------------------------------------------------------------------------


async def test_iad_round_two_prompt_carries_best_worst_scores_and_feedback() -> None:
    task = scored({"good idea": 0.75, "meh idea": 0.5, "bad idea": 0.0})
    backend = ScriptedBackend([["meh idea", "good idea", "bad idea"], ["meh idea"] * 3])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=3, rounds=2))

    first, second = last_user(backend.requests[0]), last_user(backend.requests[1])
    assert first == PROMPT
    assert second.startswith(PROMPT)  # the task's prompt, then the distilled feedback
    best_at, worst_at = second.index("good idea"), second.index("bad idea")
    assert best_at < worst_at
    assert "score 0.75" in second and "score 0.00" in second
    assert "verifier says good idea is worth 0.75" in second
    assert "verifier says bad idea is worth 0.0" in second
    assert "0.50, 0.75, 0.00" in second  # the last round's scores
    assert "Improve on the best attempt" in second and "weakest attempt fail" in second
    # the distilled signal, not a dump: the middle candidate is not shown
    assert "meh idea" not in second
    assert result.answer == "good idea" and result.rounds == 2


async def test_iad_best_is_kept_across_rounds_and_worst_comes_from_the_last_round() -> None:
    task = scored({"r1 best": 0.8, "r1 worst": 0.1, "r2 a": 0.4, "r2 b": 0.3})
    backend = ScriptedBackend([["r1 best", "r1 worst"], ["r2 a", "r2 b"], ["r2 a", "r2 b"]])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=3))

    third = last_user(backend.requests[2])
    assert "r1 best" in third and "r2 b" in third and "r1 worst" not in third
    assert result.answer == "r1 best"
    assert result.best is result.candidates[0]


async def test_iad_omits_the_worst_when_every_candidate_scored_the_same() -> None:
    task = scored({"same": 0.3})
    backend = ScriptedBackend([["same", "same"], ["same", "same"]])
    await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=2))
    assert "weakest attempt of the last round" not in last_user(backend.requests[1])


async def test_iad_stops_early_once_a_candidate_passes() -> None:
    task = scored({"right": 1.0, "wrong": 0.2})
    backend = ScriptedBackend([["wrong", "right", "wrong"], ["never asked"] * 3])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=3, rounds=4))

    assert len(backend.requests) == 1
    assert result.stop_reason == "threshold"
    assert result.answer == "right" and result.passed
    assert result.rounds == 1 and result.usage.candidates == 3


async def test_iad_numeric_threshold_stops_on_score_without_a_pass() -> None:
    task = scored({"a": 0.3, "b": 0.7, "c": 0.9})
    backend = ScriptedBackend([["a"], ["b"], ["c"]])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=1, rounds=3, threshold=0.6))
    assert result.stop_reason == "threshold" and result.answer == "b" and not result.passed
    assert len(backend.requests) == 2


async def test_iad_stops_after_patience_rounds_without_improvement() -> None:
    task = scored({"first": 0.5, "worse": 0.2})
    backend = ScriptedBackend([["first"], ["worse"], ["worse"], ["worse"]])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=1, rounds=10, patience=2))
    assert result.stop_reason == "no_improvement"
    assert len(backend.requests) == 3
    assert result.answer == "first"


async def test_iad_runs_all_rounds_when_nothing_passes() -> None:
    task = scored({"a": 0.1})
    backend = ScriptedBackend(["a"], cycle=True)
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=3))
    assert result.stop_reason == "max_rounds" and result.rounds == 3
    assert [c.round for c in result.candidates] == [0, 0, 1, 1, 2, 2]
    assert len({c.prompt_hash for c in result.candidates}) == 2  # round 1's prompt, then the feedback one


# --- self_refine, greedy ---------------------------------------------------------------------


async def test_self_refine_is_sequential_one_candidate_per_round() -> None:
    task = scored({"v1": 0.2, "v2": 0.6, "v3": 0.4})
    backend = ScriptedBackend([["v1"], ["v2"], ["v3"]])
    result = await run_task(task, backend, "self_refine", config=LoopConfig(n=8, rounds=3))

    assert [r.n for r in backend.requests] == [1, 1, 1]
    assert [c.round for c in result.candidates] == [0, 1, 2]
    # each round revises its own previous answer, from that answer's verdict
    assert "v1" in last_user(backend.requests[1]) and "worth 0.2" in last_user(backend.requests[1])
    assert "v2" in last_user(backend.requests[2]) and "v1" not in last_user(backend.requests[2])
    assert "previous answer" in last_user(backend.requests[2])
    assert result.answer == "v2"  # the best verified one, not merely the last


async def test_greedy_is_one_candidate_at_temperature_zero() -> None:
    task = scored({"g": 0.3})
    backend = ScriptedBackend(["g"])
    result = await run_task(task, backend, "greedy", config=LoopConfig(n=8, rounds=5, temperature=1.0))
    (request,) = backend.requests
    assert request.n == 1 and request.temperature == 0.0
    assert result.usage.candidates == 1 and result.config.n == 1


# --- self_consistency ------------------------------------------------------------------------


async def test_self_consistency_picks_the_majority_not_the_top_score() -> None:
    # The verifier prefers the minority answer: the vote must not look at scores.
    task = scored({"42": 0.1, "41": 1.0, "40": 0.5})
    backend = ScriptedBackend([["41", "42", "40", "42", " 42 "]])
    result = await run_task(task, backend, "self_consistency", config=LoopConfig(n=5))

    assert result.answer == "42"
    assert result.best is result.candidates[1]  # the first candidate with the winning key
    assert result.votes == {"41": 1, "42": 3, "40": 1}
    # Only the winner is verified: the vote needs no verdicts, and a judge would cost calls.
    assert [c.verdict is not None for c in result.candidates] == [False, True, False, False, False]
    assert result.score == 0.1


async def test_self_consistency_verifies_only_the_winner() -> None:
    calls: list[str] = []

    async def judge(c: Candidate) -> Verdict:
        calls.append(c.text)
        return Verdict(1.0, passed=True)

    task = PromptTask(PROMPT, judge)
    backend = ScriptedBackend([["a", "b", "b", "c"]])
    result = await run_task(task, backend, "self_consistency", config=LoopConfig(n=4))
    assert calls == ["b"] and result.passed and result.answer == "b"


async def test_self_consistency_votes_on_the_tasks_answer_key() -> None:
    class ExecTask(Task):
        """The key is what the answer evaluates to, as SQL's key is the execution result."""

        def build_messages(self, lessons: Sequence[str] = ()) -> list:
            return PromptTask(PROMPT, lambda c: Verdict(0.0)).build_messages(lessons)

        async def verify(self, candidate: Candidate) -> Verdict:
            return Verdict(0.5)

        async def answer_key(self, candidate: Candidate) -> int | None:
            try:
                return int(eval(candidate.answer, {"__builtins__": {}}))  # trusted test input
            except SyntaxError:
                return None

    backend = ScriptedBackend([["1+3", "5", "2+2", "((", "4*1", "5"]])
    result = await run_task(ExecTask(), backend, "self_consistency", config=LoopConfig(n=6))
    assert result.answer == "1+3"
    assert result.votes == {"4": 3, "5": 2}


async def test_self_consistency_ties_go_to_the_answer_seen_first() -> None:
    backend = ScriptedBackend([["b", "a", "a", "b"]])
    result = await run_task(scored({}), backend, "self_consistency", config=LoopConfig(n=4))
    assert result.answer == "b"


# --- candidates, verifiers, parsing ----------------------------------------------------------


async def test_trajectory_records_round_prompt_hash_tokens_latency_and_verdicts() -> None:
    task = scored({"one two three": 0.4})
    backend = ScriptedBackend([["one two three", "four five"], ["six"] * 2], latency_s=0.01)
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=2))

    c0, c1, c2, _ = result.candidates
    assert (c0.round, c0.index, c1.index, c2.round, c2.index) == (0, 0, 1, 1, 0)
    assert c0.prompt_hash == c1.prompt_hash != c2.prompt_hash
    assert (c0.completion_tokens, c1.completion_tokens, c2.completion_tokens) == (3, 2, 1)
    assert c0.prompt_tokens == len(PROMPT.split())
    assert c0.latency_s == pytest.approx(0.01, abs=0.005) and c0.call == c1.call == 0 and c2.call == 1
    assert c0.verdict == Verdict(0.4, False, "verifier says one two three is worth 0.4")
    assert c1.score == 0.0 and c1.finish_reason == "stop"


async def test_a_verifier_that_raises_fails_only_its_candidate() -> None:
    def verify(c: Candidate) -> Verdict:
        if c.answer == "boom":
            raise RuntimeError("database is locked")
        return Verdict(0.5, feedback="fine")

    task = PromptTask(PROMPT, verify)
    result = await run_task(task, ScriptedBackend([["boom", "ok"]]), "best_of_n", config=LoopConfig(n=2))
    boom, ok = result.candidates
    assert boom.score == 0.0 and "database is locked" in verdict_of(boom).feedback
    assert verdict_of(boom).details["error"] == "RuntimeError: database is locked"
    assert result.answer == "ok"


async def test_unparseable_candidates_fail_without_calling_the_verifier() -> None:
    seen: list[str] = []

    def verify(c: Candidate) -> Verdict:
        seen.append(c.answer)
        return Verdict(0.5)

    task = PromptTask(PROMPT, verify, parse=lambda t: int(t))
    result = await run_task(task, ScriptedBackend([["7", "seven"]]), "best_of_n", config=LoopConfig(n=2))
    bad = result.candidates[1]
    assert seen == [7]
    assert bad.answer is None and bad.parse_error and "could not parse" in verdict_of(bad).feedback
    assert result.answer == 7


async def test_async_verifier_calls_run_concurrently_within_the_bound() -> None:
    running = peak = 0

    async def verify(c: Candidate) -> Verdict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return Verdict(0.5)

    task = PromptTask(PROMPT, verify)
    config = LoopConfig(n=10, concurrency=3)
    result = await run_task(task, ScriptedBackend(["x"]), "best_of_n", config=config)
    assert result.usage.candidates == 10 and peak == 3


def test_verdict_validates_its_score() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Verdict(1.5)
    with pytest.raises(ValueError):
        Verdict(float("nan"))
    assert Verdict(1, passed=1).passed is True  # type: ignore[arg-type]


# --- backends that return fewer candidates, or fail ------------------------------------------


async def test_short_batches_are_topped_up_and_later_rounds_use_single_requests() -> None:
    task = scored({})
    backend = ScriptedBackend([["a", "b"], "c", "d", "e", "f", "g", "h"])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=4, rounds=2))

    # round 1: a short batch of 2, topped up by 2 single requests; round 2: 4 single requests
    assert [r.n for r in backend.requests] == [4, 1, 1, 1, 1, 1, 1]
    assert [c.text for c in result.candidates] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert [c.round for c in result.candidates] == [0] * 4 + [1] * 4
    assert result.usage.candidates == 8 and result.usage.llm_calls == 7
    assert result.stop_reason == "max_rounds"


async def test_batched_false_sends_n_single_requests_with_distinct_seeds() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    config = LoopConfig(n=3, batched=False, seed=7)
    await run_task(scored({}), backend, "best_of_n", config=config)
    assert [r.n for r in backend.requests] == [1, 1, 1]
    assert sorted(r.seed or 0 for r in backend.requests) == [7, 8, 9]


async def test_gather_path_keeps_concurrent_requests_within_the_bound() -> None:
    running = peak = 0

    async def fn(request: ChatRequest) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "x"

    config = LoopConfig(n=9, batched=False, concurrency=4)
    result = await run_task(scored({}), FunctionBackend(fn), "best_of_n", config=config)
    assert result.usage.candidates == 9 and peak == 4


async def test_backend_error_midway_returns_best_so_far_with_reason_and_exact_usage() -> None:
    task = scored({"good": 0.7, "bad": 0.1})
    backend = ScriptedBackend([["bad", "good"], ConnectionError("server went away")])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=3))

    assert result.stop_reason == "backend_error"
    assert "ConnectionError: server went away" in (result.error or "")
    assert result.answer == "good"
    assert result.usage.candidates == 2
    assert result.usage.llm_calls == 2 and result.usage.failed_calls == 1
    assert result.usage.completion_tokens == 2
    assert result.usage.prompt_tokens == len(PROMPT.split())  # the failed call reports nothing


async def test_backend_error_on_the_first_call_returns_an_empty_result() -> None:
    backend = ScriptedBackend([TimeoutError("slow")])
    result = await run_task(scored({}), backend, "iad", config=LoopConfig(n=2))
    assert result.best is None and result.answer is None and result.score == 0.0
    assert result.stop_reason == "backend_error" and result.candidates == []
    assert result.usage.llm_calls == 1 and result.usage.failed_calls == 1
    json.dumps(result.to_dict())


async def test_an_error_in_a_top_up_keeps_what_came_back() -> None:
    backend = ScriptedBackend([["a"], "b", RuntimeError("boom"), "never"])
    config = LoopConfig(n=4, concurrency=1)
    result = await run_task(scored({"b": 0.5}), backend, "iad", config=config)
    assert [c.text for c in result.candidates] == ["a", "b"]
    assert result.stop_reason == "backend_error" and result.answer == "b"
    assert len(backend.requests) == 3  # no new request after the error


async def test_a_threshold_reached_in_the_same_round_as_an_error_wins() -> None:
    backend = ScriptedBackend([["win"], RuntimeError("boom")])
    result = await run_task(scored({"win": 1.0}), backend, "iad", config=LoopConfig(n=3, concurrency=1))
    assert result.stop_reason == "threshold" and result.error is not None


# --- registry, memory, results ---------------------------------------------------------------


def test_every_named_graph_compiles() -> None:
    assert set(GRAPHS) == {
        "greedy",
        "best_of_n",
        "self_consistency",
        "self_refine",
        "iad",
        "adaptive",
        "adaptive_sample",
        "adaptive_flat",
    }
    for name in GRAPHS:
        assert build_graph(name) is build_graph(name)  # compiled once


def test_unknown_graph_names_get_a_did_you_mean() -> None:
    with pytest.raises(UnknownGraphError, match=r"Did you mean 'best_of_n'\?") as info:
        build_graph("best-of-n")
    assert isinstance(info.value, AgentloopError) and isinstance(info.value, ValueError)
    assert "Known graphs: greedy, best_of_n" in str(info.value)
    with pytest.raises(UnknownGraphError, match="unknown graph 'zzz'"):
        run_task_sync(scored({}), ScriptedBackend(["x"]), "zzz")


class FakeMemory:
    def __init__(self, lessons: list[str]):
        self.lessons = lessons
        self.retrieved: list[str] = []
        self.remembered: list[tuple[str, LoopResult]] = []

    async def retrieve(self, task: Task) -> list[str]:
        self.retrieved.append(task.id)
        return self.lessons

    async def remember(self, task: Task, result: LoopResult) -> None:
        self.remembered.append((task.id, result))


@pytest.mark.parametrize("graph", ["iad", "best_of_n", "self_consistency"])
async def test_memory_lessons_reach_the_prompt_and_the_result_reaches_memory(graph: str) -> None:
    memory = FakeMemory(["Quote identifiers.", "  "])
    backend = ScriptedBackend(["yes"], cycle=True)
    result = await run_task(
        scored({"yes": 1.0}), backend, graph, config=LoopConfig(n=2, rounds=2), memory=memory
    )
    assert memory.retrieved == ["t"]
    prompt = last_user(backend.requests[0])
    assert "- Quote identifiers." in prompt and prompt.endswith(PROMPT)
    ((task_id, remembered),) = memory.remembered
    assert task_id == "t" and remembered.answer == "yes" and remembered.stop_reason == "threshold"
    assert remembered.usage.candidates == result.usage.candidates == 2


async def test_result_to_dict_is_json_ready() -> None:
    task = PromptTask(PROMPT, lambda c: Verdict(0.5, details={"rows": ((1, "a"),)}), parse=lambda t: {t})
    backend = ScriptedBackend([["x", "y"], ["z", "z"]])
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=2))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["graph"] == "iad" and d["task_id"] == "task" and d["rounds"] == 2
    assert d["usage"]["candidates"] == 4 and len(d["candidates"]) == 4
    assert d["answer"] == ["x"] and d["best_index"] == 0
    assert d["candidates"][0]["verdict"]["details"] == {"rows": [[1, "a"]]}
    assert d["config"]["n"] == 2 and d["budget"]["max_candidates"] is None
    assert "candidates" not in result.to_dict(trajectory=False)


def test_run_task_sync_runs_outside_an_event_loop() -> None:
    result = run_task_sync(scored({"s": 1.0}), ScriptedBackend(["s"]), "greedy")
    assert result.passed and result.graph == "greedy"


async def test_named_graphs_share_one_compiled_graph_across_concurrent_runs() -> None:
    tasks = [scored({f"a{i}": 1.0}) for i in range(5)]
    backends = [ScriptedBackend([["z", f"a{i}"]], latency_s=0.01) for i in range(5)]
    results = await asyncio.gather(
        *(run_task(t, b, "iad", config=LoopConfig(n=2)) for t, b in zip(tasks, backends, strict=True))
    )
    assert [r.answer for r in results] == [f"a{i}" for i in range(5)]


async def test_a_budget_argument_is_reported_on_the_result() -> None:
    result = await run_task(scored({}), ScriptedBackend(["x"] * 3), "iad", budget=Budget(max_candidates=3))
    assert result.budget.max_candidates == 3 and result.usage.candidates == 3
    assert result.stop_reason == "budget" and "candidates" in result.stop_detail


def test_loop_config_rejects_impossible_settings() -> None:
    for bad in ({"n": 0}, {"rounds": 0}, {"temperature": 3.0}, {"threshold": 1.5}, {"patience": 0}):
        with pytest.raises(ValueError):
            LoopConfig(**bad)  # type: ignore[arg-type]


async def test_graphs_leave_out_memory_nodes_only_when_there_is_no_memory() -> None:
    assert {"recall", "remember"} <= set(build_graph("iad").get_graph().nodes)
    assert not {"recall", "remember"} & set(build_graph("iad", memory=False).get_graph().nodes)
    assert {"propose", "verify", "select", "refine"} <= set(
        build_graph("iad", memory=False).get_graph().nodes
    )
    # the memory variant runs fine without a memory: recall and remember do nothing
    result = await run_task(scored({"a": 1.0}), ScriptedBackend(["a"]), build_graph("best_of_n"))
    assert result.answer == "a" and result.graph == "best_of_n"


# --- n_schedule ----------------------------------------------------------------------------


def test_n_schedule_sets_each_rounds_count_and_repeats_its_last_entry() -> None:
    config = LoopConfig(n=8, n_schedule=[4, 2, 1])  # type: ignore[arg-type]
    assert config.n_schedule == (4, 2, 1)
    assert [config.n_for(r) for r in range(5)] == [4, 2, 1, 1, 1]
    assert [LoopConfig(n=3).n_for(r) for r in range(3)] == [3, 3, 3]
    assert config.to_dict()["n_schedule"] == [4, 2, 1]
    assert json.loads(json.dumps(LoopConfig().to_dict()))["n_schedule"] == []
    for bad in ((0,), (2, -1), (1.5,), ("2",)):
        with pytest.raises(ValueError, match="n_schedule"):
            LoopConfig(n_schedule=bad)  # type: ignore[arg-type]


async def test_iad_samples_each_round_as_the_schedule_says() -> None:
    backend = ScriptedBackend(["x"], cycle=True)
    config = LoopConfig(n=5, rounds=3, n_schedule=(3, 1))
    result = await run_task(scored({"x": 0.2}), backend, "iad", config=config)
    assert [r.n for r in backend.requests] == [3, 1, 1]
    assert [c.round for c in result.candidates] == [0, 0, 0, 1, 2]
    assert result.config.n_schedule == (3, 1)


def test_named_graphs_clear_or_collapse_the_schedule() -> None:
    config = LoopConfig(n=8, rounds=3, n_schedule=(4, 1))
    greedy, refine = GRAPHS["greedy"].adjust(config), GRAPHS["self_refine"].adjust(config)
    assert (greedy.n, greedy.n_schedule) == (1, ()) and (refine.n, refine.n_schedule) == (1, ())
    for one_round in ("best_of_n", "self_consistency"):
        adjusted = GRAPHS[one_round].adjust(config)
        assert (adjusted.n, adjusted.rounds, adjusted.n_schedule) == (4, 1, ())  # what ran: n=4
    assert GRAPHS["iad"].adjust(config) == config


async def test_best_of_n_samples_the_schedules_first_entry() -> None:
    backend = ScriptedBackend([["a", "b", "c"]])
    config = LoopConfig(n=8, n_schedule=(3, 1))
    result = await run_task(scored({"b": 0.5}), backend, "best_of_n", config=config)
    assert [r.n for r in backend.requests] == [3] and result.answer == "b"
    assert result.config.n == 3 and result.config.n_schedule == ()


class Walk(RolloutTask):
    """A rollout task whose episode is one model call."""

    id = "walk"

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        return [Message("user", PROMPT)]

    async def rollout(self, step: StepFn, messages: Sequence[Message]) -> Rollout:
        text = await step(messages)
        return Rollout(text=text or "", answer=text)

    async def verify(self, candidate: Candidate) -> Verdict:
        return Verdict(0.1, feedback="not yet")


async def test_rollout_tasks_run_as_many_rollouts_as_the_schedule_says() -> None:
    backend = ScriptedBackend(["step"], cycle=True)
    result = await run_task(Walk(), backend, "iad", config=LoopConfig(rounds=3, n_schedule=(3, 1, 2)))
    assert [sum(c.round == r for c in result.candidates) for r in range(3)] == [3, 1, 2]
    assert all(r.n == 1 for r in backend.requests) and len(backend.requests) == 6


# --- loop_graph(review=...) ----------------------------------------------------------------


def test_review_nodes_run_in_order_between_verify_and_the_chooser() -> None:
    async def first(state: LoopState) -> dict:
        return {}

    async def second(state: LoopState) -> dict:
        return {}

    def edges(**kwargs: Any) -> set[tuple[str, str]]:
        drawn = loop_graph(memory=False, **kwargs).compile().get_graph()
        return {(e.source, e.target) for e in drawn.edges}

    with_verify = edges(review=[first, second])
    assert {
        ("propose", "verify"),
        ("verify", "first"),
        ("first", "second"),
        ("second", "select"),
    } <= with_verify
    assert ("verify", "select") not in with_verify
    without = edges(choose=nodes.vote, feedback=None, verify=False, review=[first])
    assert {("propose", "first"), ("first", "vote")} <= without and ("propose", "vote") not in without


async def test_a_review_node_that_amends_verdicts_steers_the_choice() -> None:
    async def demote_first(state: LoopState) -> dict:
        pending = list(state.get("pending") or [])
        pending[0] = pending[0].with_verdict(Verdict(0.0, feedback="demoted"))
        return {"pending": pending}

    task = scored({"a": 0.9, "b": 0.5})
    graph = loop_graph(feedback=None, memory=False, review=[demote_first])
    result = await run_task(task, ScriptedBackend([["a", "b"]]), graph, config=LoopConfig(n=2))
    assert result.answer == "b" and verdict_of(result.candidates[0]).feedback == "demoted"
