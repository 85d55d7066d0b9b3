"""WebShop in the graphs: episodes as candidates, the goal-free and oracle verifiers, IAD feedback."""

from __future__ import annotations

import itertools

import pytest

from agentloop.backends.testing import FunctionBackend, ScriptedBackend
from agentloop.graphs import Budget, LoopConfig, Verdict, run_task
from agentloop.suites.webshop.task import (
    Outcome,
    WebShopTask,
    load_webshop_tasks,
    parse_react,
    task_outcome,
    webshop_metrics,
)
from agentloop.suites.webshop.verifiers import judge_purchase, oracle_verdict
from agentloop.types import ChatRequest
from agentloop.webshop import Purchase, load_catalog
from agentloop.webshop import generate as gen


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def case(catalog):
    """A goal with options, and its over-price twin (same title, above the limit)."""
    _, roles = gen.generate(0)
    twins = {of: asin for asin, (kind, of) in roles.items() if kind == "over_price"}
    goal = next(g for g in catalog.goals if len(g.goal_options) >= 2 and g.asin in twins)
    return goal, twins[goal.asin]


def good_plan(goal) -> list[str]:
    return [
        f"Thought: search for it.\nAction: search[{goal.name}]",
        f"Thought: this is it.\nAction: click[{goal.asin}]",
        *(f"Thought: pick the option.\nAction: click[{v}]" for v in goal.goal_options),
        "Thought: all fits.\nAction: click[Buy Now]",
    ]


def pricey_plan(goal, twin) -> list[str]:
    return [
        f"Thought: search.\nAction: search[{goal.name} deal]",
        f"Thought: open.\nAction: click[{twin}]",
        *(f"Action: click[{v}]" for v in goal.goal_options),
        "Action: click[Buy Now]",
    ]


def plans_backend(first_round: list[list[str]], later: list[str] | None = None) -> FunctionBackend:
    """Plays one plan per rollout; a rollout is told apart by the first action in its history."""
    starts = itertools.count()
    by_first: dict[str, list[str]] = {}

    def fn(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        plans = (
            [later]
            if later is not None and "You have shopped for this instruction before" in prompt
            else first_round
        )
        history = prompt.split("Your actions so far:\n", 1)[1].split("\n\nCurrent page:", 1)[0]
        if history == "(none yet)":
            plan = plans[next(starts) % len(plans)]
            by_first[parse_react(plan[0])] = plan
            return plan[0]
        lines = history.splitlines()
        plan = by_first[lines[0].split(". ", 1)[1].split(" -> ", 1)[0]]
        return plan[len(lines)] if len(lines) < len(plan) else "Action: click[Buy Now]"

    return FunctionBackend(fn)


# --- the step policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "action"),
    [
        ("Thought: go.\nAction: search[red shoes]", "search[red shoes]"),
        ("Action: click[Buy Now]\nObservation: done", "click[Buy Now]"),
        ("I will click[B0ABC] now", "click[B0ABC]"),
        ("action:  click[< Prev] because", "click[< Prev]"),
        ("Action: buy it", "buy it"),
        ("no idea", "no idea"),
    ],
)
def test_parse_react(reply, action):
    assert parse_react(reply) == action


async def test_greedy_runs_one_episode_and_scores_it(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal)
    script = good_plan(goal)
    backend = ScriptedBackend(script)
    result = await run_task(task, backend, "greedy", config=LoopConfig(max_tokens=64))
    outcome = result.answer
    assert isinstance(outcome, Outcome) and outcome.ended == "purchase"
    assert outcome.reward == 1.0 and outcome.success
    assert (
        result.verdict is not None and result.verdict.passed and result.verdict.details["verifier"] == "rules"
    )
    assert result.usage.llm_calls == len(script) and result.usage.candidates == 1
    assert result.best is not None and result.best.completion_tokens == sum(len(s.split()) for s in script)
    assert task_outcome(result) == (1.0, True) == task_outcome(result.to_dict())
    assert webshop_metrics([result]) == {"avg_reward": 1.0, "success_rate": 1.0, "tasks": 1}
    first, second = backend.requests[0].messages, backend.requests[1].messages
    assert first[0].role == "system" and "search[keywords]" in first[0].content
    assert goal.instruction_text in first[-1].content and "(none yet)" in first[-1].content
    assert "[Search]" in first[-1].content
    assert f"1. search[{goal.name}] -> results, page 1" in second[-1].content
    assert "Actions:\n1. search[" in result.best.text and "Outcome: bought" in result.best.text
    assert "reward" not in result.best.text.lower()


async def test_best_of_n_keeps_the_episode_the_verifier_prefers(catalog, case):
    goal, twin = case
    task = WebShopTask(catalog, goal)
    backend = plans_backend([pricey_plan(goal, twin), good_plan(goal)])
    result = await run_task(task, backend, "best_of_n", config=LoopConfig(n=2, max_tokens=64))
    assert len(result.candidates) == 2 and result.usage.candidates == 2
    scores = sorted(c.score for c in result.candidates)
    assert scores[0] < scores[1] == 1.0
    bought = {c.answer.purchase.asin: c for c in result.candidates}
    assert set(bought) == {goal.asin, twin}
    assert "above the limit" in bought[twin].verdict.feedback
    assert bought[twin].answer.reward < 1.0  # the true reward agrees
    assert result.best is bought[goal.asin] and task_outcome(result) == (1.0, True)


async def test_iad_round_two_sees_best_and_worst_with_critique(catalog, case):
    goal, twin = case
    task = WebShopTask(catalog, goal, max_steps=6, max_invalid=None)
    wander = ["Action: click[Search]"] * 6  # invalid every time: no purchase
    backend = plans_backend([pricey_plan(goal, twin), wander], later=good_plan(goal))
    requests: list[ChatRequest] = []
    inner = backend.fn
    backend.fn = lambda r: (requests.append(r), inner(r))[1]
    result = await run_task(task, backend, "iad", config=LoopConfig(n=2, rounds=2, max_tokens=64))
    assert result.rounds == 2 and result.passed and result.answer.reward == 1.0
    round1 = [c for c in result.candidates if c.round == 0]
    best = max(round1, key=lambda c: c.score)
    worst = min(round1, key=lambda c: c.score)
    assert best.answer.purchase.asin == twin and worst.answer.purchase is None
    prompt = next(
        r for r in requests if "You have shopped for this instruction before" in r.messages[-1].content
    )
    text = prompt.messages[-1].content
    assert best.text in text and worst.text in text
    assert best.verdict.feedback in text and "above the limit" in text
    assert worst.verdict.feedback in text and "No purchase" in text
    assert f"{best.score:.2f}" in text and f"{worst.score:.2f}" in text
    # The hidden goal's score never reaches the prompt.
    assert "true reward" not in text.lower()


async def test_an_episode_stops_after_repeated_invalid_actions(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal, max_invalid=2)
    backend = ScriptedBackend(
        ["I am happy to help!", "Action: search[bottles]", "hmm", "still nothing"], cycle=True
    )
    result = await run_task(task, backend, "greedy")
    outcome = result.answer
    assert outcome.ended == "stuck" and len(outcome.actions) == 4 and result.usage.llm_calls == 4
    assert "2 invalid actions in a row" in result.best.text
    assert "invalid actions in a row" in result.verdict.feedback and result.score == 0.0
    with pytest.raises(ValueError):
        WebShopTask(catalog, goal, max_invalid=0)


async def test_oracle_verifier_scores_with_the_true_reward(catalog, case):
    goal, twin = case
    task = WebShopTask(catalog, goal, verifier="oracle")
    result = await run_task(task, ScriptedBackend(pricey_plan(goal, twin)), "greedy")
    assert result.verdict is not None and result.verdict.details["verifier"] == "oracle"
    assert result.score == pytest.approx(result.answer.reward) and result.score < 1.0
    assert "True reward" in result.verdict.feedback and "price over the limit" in result.verdict.feedback


async def test_budget_counts_an_episode_as_one_candidate_and_can_cut_it_short(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal)
    backend = ScriptedBackend(good_plan(goal), cycle=True)
    result = await run_task(
        task, backend, "best_of_n", config=LoopConfig(n=3), budget=Budget(max_candidates=1)
    )
    assert len(result.candidates) == 1 and result.usage.candidates == 1 and result.answer.reward == 1.0

    backend = ScriptedBackend(good_plan(goal))
    result = await run_task(task, backend, "greedy", budget=Budget(max_tokens=12, min_tokens=1))
    outcome = result.answer
    assert outcome.ended == "budget" and outcome.purchase is None and result.score == 0.0
    assert "compute budget ran out" in result.verdict.feedback
    assert result.usage.completion_tokens <= 12


async def test_a_backend_error_ends_the_run_cleanly(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal)
    result = await run_task(task, ScriptedBackend([good_plan(goal)[0], RuntimeError("boom")]), "greedy")
    assert result.stop_reason == "backend_error" and "boom" in (result.error or "")
    assert result.best is None and task_outcome(result) == (0.0, False)


async def test_self_consistency_votes_on_the_purchase(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal)
    backend = ScriptedBackend(good_plan(goal), cycle=True)
    result = await run_task(task, backend, "self_consistency", config=LoopConfig(n=2))
    assert result.votes is not None and sum(result.votes.values()) == 2 and len(result.votes) == 1


# --- the rule verifier ------------------------------------------------------------------------


def _outcome(instruction: str, **kw) -> Outcome:
    base = dict(
        asin="B0TEST0001",
        name="Velora Leak Proof Travel Bottles Set, 4 Pack",
        price_tag="$12.99",
        price=12.99,
        options={"color": "pink", "size": "3 oz"},
        available_options={"color": ("clear", "pink"), "size": ("1 oz", "3 oz")},
        bullet_points=("BPA FREE - safe for lotion.",),
        description="Travel bottles for the road.",
        attributes=None,
    )
    base.update(kw)
    return Outcome(instruction, ended="purchase", purchase=Purchase(**base))


INSTRUCTION = "i need leak proof bpa free travel bottles in pink color, in size 3 oz, and price lower than 20.00 dollars"


def test_rules_pass_a_fitting_purchase():
    v = judge_purchase(_outcome(INSTRUCTION))
    assert v.passed and v.score == 1.0 and "fits the instruction" in v.feedback


def test_rules_flag_a_wrong_or_missing_option():
    v = judge_purchase(_outcome(INSTRUCTION, options={"color": "clear", "size": "3 oz"}))
    assert not v.passed and "color clear was selected; the instruction asks for pink" in v.feedback
    v = judge_purchase(_outcome(INSTRUCTION, options={"color": "pink"}))
    assert not v.passed and "no size was selected" in v.feedback
    v = judge_purchase(
        _outcome(
            INSTRUCTION, available_options={"color": ("pink",), "size": ("1 oz",)}, options={"color": "pink"}
        )
    )
    assert not v.passed and "size that this product does not offer" in v.feedback


def test_rules_flag_the_price_and_missing_features():
    v = judge_purchase(_outcome(INSTRUCTION, price_tag="$24.99"))
    assert not v.passed and "above the limit of $20.00" in v.feedback
    assert v.score == pytest.approx(2 / 3)
    v = judge_purchase(_outcome(INSTRUCTION, bullet_points=(), name="Velora Travel Bottles Set"))
    assert not v.passed and "'leak', 'proof', 'bpa', 'free'" in v.feedback
    assert v.details["coverage"] < 1


def test_rules_read_attributes_only_when_shown():
    text = "i need travel bottles that are eco friendly, and price lower than 20.00 dollars"
    assert not judge_purchase(_outcome(text)).passed
    assert judge_purchase(_outcome(text, attributes=("eco friendly",))).passed


def test_rules_and_oracle_without_a_purchase():
    out = Outcome(INSTRUCTION, ended="step_limit")
    assert judge_purchase(out) == Verdict(0.0, False, judge_purchase(out).feedback)
    assert "action limit" in judge_purchase(out).feedback
    assert oracle_verdict(out).score == 0.0


# --- loading ----------------------------------------------------------------------------------


def test_load_webshop_tasks(catalog):
    tasks = load_webshop_tasks(limit=3, offset=2, catalog=catalog, verifier="oracle", max_steps=9)
    assert [t.id for t in tasks] == ["webshop-2", "webshop-3", "webshop-4"]
    assert all(t.catalog is catalog and t.max_steps == 9 and t.verifier == "oracle" for t in tasks)
    assert len(load_webshop_tasks(catalog=catalog)) == len(catalog.goals)
    assert load_webshop_tasks(catalog=catalog, offset=len(catalog.goals)) == []
    with pytest.raises(ValueError, match="unknown WebShop verifier"):
        WebShopTask(catalog, 0, verifier="llm")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_webshop_tasks(catalog=catalog, offset=-1)
    assert webshop_metrics([]) == {"avg_reward": 0.0, "success_rate": 0.0, "tasks": 0}


# --- the few-shot completion format (small local models) ------------------------------------


async def test_fewshot_format_starts_each_action_from_the_page_and_buys(catalog, case):
    goal, _ = case
    task = WebShopTask(catalog, goal, prompt_format="fewshot")
    # The model only fills in the brackets: the prompt already holds "search[" or "click[".
    fills = [goal.name, goal.asin, *goal.goal_options, "Buy Now"]
    backend = ScriptedBackend([f" {f}]\nPage:" for f in fills])
    result = await run_task(task, backend, "greedy", config=LoopConfig(max_tokens=32))
    outcome = result.answer
    assert isinstance(outcome, Outcome) and outcome.ended == "purchase" and outcome.reward == 1.0
    assert outcome.actions == [f"search[{goal.name}]", f"click[{goal.asin}]"] + [
        f"click[{v}]" for v in goal.goal_options
    ] + ["click[Buy Now]"]
    prompts = [r.raw_prompt for r in backend.requests]
    assert all(p is not None for p in prompts)
    assert prompts[0].endswith(f"Instruction: {goal.instruction_text}\nPage:\n[Search]\nAction: search[")
    assert all(p.endswith("\nAction: click[") for p in prompts[1:])
    assert set(backend.requests[0].stop) >= {"]", "\n"}
    # The latest page is shown whole (the product code to click is on it); older ones shrink.
    assert f"[{goal.asin}]" in prompts[1].rsplit("Instruction:", 1)[1]
    assert "(search page)" in prompts[2]


async def test_fewshot_iad_round_two_carries_the_critique_before_the_episode(catalog, case):
    goal, twin = case
    task = WebShopTask(catalog, goal, prompt_format="fewshot")
    first = [f" {goal.name} deal]", f" {twin}]", *(f" {v}]" for v in goal.goal_options), " Buy Now]"]
    backend = ScriptedBackend(first + [" nothing]"] * 6)
    result = await run_task(task, backend, "iad", config=LoopConfig(n=1, rounds=2, max_tokens=32))
    later = [r.raw_prompt for r in backend.requests[len(first) :]]
    assert result.rounds == 2 and later
    head = later[0].rsplit("Instruction:", 1)[1]
    assert head.index("Note: the best try so far") < head.index("Page:")
    notes = head.split("Page:")[0]
    assert "price" in notes.lower()  # the rules verifier's critique: over the limit
    assert f"click[{twin}]" in notes  # the episode itself, on one line
    # One candidate per round: nothing weaker to contrast with.
    assert "weakest" not in notes


def test_unknown_webshop_prompt_format_is_a_clear_error(catalog, case):
    goal, _ = case
    with pytest.raises(ValueError, match="chat, fewshot"):
        WebShopTask(catalog, goal, prompt_format="xml")  # type: ignore[arg-type]
