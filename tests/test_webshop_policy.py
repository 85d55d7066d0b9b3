"""WebShop policies: likelihood choice (valid actions, argmax, seeded sampling, feedback), the floor, auto."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from agentloop.backends import ChatRequest, FunctionBackend, ScriptedBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import LoopConfig, LoopResult, Verdict, run_task
from agentloop.runs.runner import RunSpec
from agentloop.suites.webshop.policies import QUERY_PATTERN, resolve_policy
from agentloop.suites.webshop.suite import WebShopSuite
from agentloop.suites.webshop.task import Outcome, WebShopTask, load_webshop_tasks, webshop_metrics
from agentloop.webshop import WebShopEnv, load_catalog

CATALOG = load_catalog()


def query_fn(request: ChatRequest) -> str:
    """The search query a model would write: the instruction's first words, as the regex allows."""
    assert request.constraint is not None and request.constraint.value == QUERY_PATTERN
    prompt = request.raw_prompt or ""
    instruction = prompt.rsplit("Instruction: ", 1)[1].split("\n", 1)[0]
    words = re.findall(r"[a-z0-9]+", instruction.split(", and price")[0].lower())[:8]
    return " ".join(words) + "]"


class Recorder:
    """A scorer that records every score call and returns totals from ``values(continuations)``."""

    def __init__(self, values: Any = None, prior: Any = None):
        self.calls: list[tuple[str, list[str], list[float]]] = []
        self.priors: list[tuple[str, list[str], list[float]]] = []
        self.values = values or (
            lambda conts: [random.Random(c).uniform(-3, 0) * len(c.split()) for c in conts]
        )
        self.prior = prior or (lambda conts: [0.0] * len(conts))

    def __call__(self, request: ChatRequest, conts: Sequence[str]) -> list[float]:
        prompt = request.raw_prompt or ""
        if "Instruction:" not in prompt:  # the frame without the instruction: the choices' prior
            values = list(self.prior(list(conts)))
            self.priors.append((prompt, list(conts), values))
            return values
        values = list(self.values(list(conts)))
        self.calls.append((prompt, list(conts), values))
        return values


def choice_backend(recorder: Recorder | None = None) -> FunctionBackend:
    return FunctionBackend(query_fn, scorer=recorder or Recorder())


def run(task: WebShopTask, backend: Any, graph: str, **config: Any) -> LoopResult:
    return asyncio.run(run_task(task, backend, graph, config=LoopConfig(**config)))


def replay(outcome: Outcome, goal: int) -> list[bool]:
    env = WebShopEnv(CATALOG)
    env.reset(goal)
    return [env.step(a).valid for a in outcome.actions]


def episodes(result: LoopResult) -> list[list[str]]:
    return [c.answer.actions for c in result.candidates if isinstance(c.answer, Outcome)]


def test_choice_policy_always_emits_valid_actions_and_buys() -> None:
    for goal in range(6):
        task = WebShopTask(CATALOG, goal, policy="choice")
        result = run(task, choice_backend(), "best_of_n", n=3, rounds=1, seed=goal)
        assert len(result.candidates) == 3
        for c in result.candidates:
            out = c.answer
            assert isinstance(out, Outcome)
            assert all(replay(out, goal)), out.actions
            assert out.actions[0].startswith("search[") and out.ended == "purchase"


def test_greedy_takes_the_argmax_of_the_normalised_score() -> None:
    # Per-token means rise with the position: greedy must take the last, not the first
    # (which a tie, or a policy that ignored the scores, would give).
    rec = Recorder(lambda conts: [-(len(conts) - i) * len(c.split()) for i, c in enumerate(conts)])
    task = WebShopTask(CATALOG, 2, policy="choice")
    out = run(task, choice_backend(rec), "greedy").answer
    assert isinstance(out, Outcome) and rec.calls and out.ended == "purchase"
    for _, conts, values in rec.calls:
        means = [v / len(c.split()) for v, c in zip(values, conts, strict=True)]
        label = conts[means.index(max(means))].rstrip("\n")
        clicked = [a[len("click[") : -1] for a in out.actions if a.startswith("click[")]
        # Products are scored as "title (price)", as the results page lists them.
        names = [
            f"{CATALOG.products[c].name} ({CATALOG.products[c].price_tag})" if c in CATALOG.products else c
            for c in clicked
        ]
        assert label in names, (label, names)


def test_choices_are_calibrated_against_their_prior() -> None:
    # Given the instruction, the first product is likelier; but without it, it is likelier still:
    # the instruction raises the last one most, so the calibrated choice takes the last.
    def given(conts: list[str]) -> list[float]:
        return [-1.0 * len(c.split()) if i == 0 else -2.0 * len(c.split()) for i, c in enumerate(conts)]

    def prior(conts: list[str]) -> list[float]:
        k = len(conts) - 1
        return [
            -0.5 * len(c.split()) if i == 0 else (-4.0 if i == k else -2.0) * len(c.split())
            for i, c in enumerate(conts)
        ]

    rec = Recorder(given, prior)
    out = run(WebShopTask(CATALOG, 2, policy="choice"), choice_backend(rec), "greedy").answer
    assert isinstance(out, Outcome) and rec.priors
    prompt, conts, _ = next(c for c in rec.calls if c[0].endswith("Product: "))
    last = conts[-1].rstrip("\n")
    clicked = [a[len("click[") : -1] for a in out.actions if a.startswith("click[")]
    labels = [
        f"{CATALOG.products[c].name} ({CATALOG.products[c].price_tag})"
        for c in clicked
        if c in CATALOG.products
    ]
    assert labels == [last]
    assert all(p.startswith("Product: ") for p, _, _ in rec.priors)  # no instruction in the prior


def test_sampling_differs_across_seeds_and_repeats_for_the_same_seed() -> None:
    flat = Recorder(lambda conts: [0.0] * len(conts))  # a uniform choice: all diversity is the sampler's

    def sample(seed: int) -> list[list[str]]:
        task = WebShopTask(CATALOG, 0, policy="choice", verifier=lambda o: Verdict(0.5, False, "no"))
        return episodes(run(task, choice_backend(flat), "best_of_n", n=4, rounds=1, seed=seed))

    a, b, c = sample(0), sample(0), sample(1)
    assert a == b
    assert a != c
    assert len({tuple(e) for e in a}) > 1  # candidates of one round differ too


def test_choice_counts_score_calls_in_the_budget() -> None:
    rec = Recorder()
    backend = choice_backend(rec)
    result = run(WebShopTask(CATALOG, 0, policy="choice"), backend, "greedy")
    assert result.usage.candidates == 1
    assert result.usage.llm_calls == backend.calls + len(rec.calls) + len(rec.priors)
    scored = sum(
        len(p.split()) + sum(len(c.split()) for c in conts) for p, conts, _ in rec.calls + rec.priors
    )
    assert result.usage.prompt_tokens >= scored
    # A step limit still ends the episode: with one action allowed there is no purchase.
    short = run(WebShopTask(CATALOG, 0, policy="choice", max_steps=1), choice_backend(), "greedy")
    assert isinstance(short.answer, Outcome) and short.answer.ended == "step_limit"


def test_iad_feedback_reaches_the_choice_prompts() -> None:
    rec = Recorder()
    prompts: list[str] = []

    def fn(request: ChatRequest) -> str:
        prompts.append(request.raw_prompt or "")
        return query_fn(request)

    task = WebShopTask(CATALOG, 1, policy="choice", verifier=lambda o: Verdict(0.4, False, "MARKER-CRITIQUE"))
    result = run(task, FunctionBackend(fn, scorer=rec), "iad", n=2, rounds=2, seed=0)
    assert result.rounds == 2
    assert not any("MARKER-CRITIQUE" in p for p in prompts[:2])
    assert any("MARKER-CRITIQUE" in p and "Note: the best try so far" in p for p in prompts[2:])
    assert any("MARKER-CRITIQUE" in p for p, _, _ in rec.calls)
    # Lessons from memory reach it too.
    head = task.build_messages(["LESSON-TEXT"])[-1].content
    assert "Tip from earlier episodes: LESSON-TEXT" in head
    # before the goal's instruction, so the instruction still leads straight to the action
    tip, goal = head.rindex("Tip from earlier episodes"), head.rindex(f"Instruction: {task.instruction}")
    assert tip < goal and head.rstrip().endswith(task.instruction)


def test_first_is_search_first_click_buy_without_model_calls() -> None:
    def refuse(request: ChatRequest) -> str:
        raise AssertionError("the floor must not call the model")

    backend = FunctionBackend(refuse)
    tasks = load_webshop_tasks(policy="first")
    results = [run(t, backend, "greedy") for t in tasks]
    assert backend.calls == 0
    out = results[0].answer
    assert isinstance(out, Outcome)
    env = WebShopEnv(CATALOG)
    env.reset(0)
    env.step(f"search[{CATALOG.goals[0].instruction_text.lower()}]")
    first = [c for c in env.clickables() if c in CATALOG.products][0]
    assert out.actions == [
        f"search[{CATALOG.goals[0].instruction_text.lower()}]",
        f"click[{first}]",
        "click[Buy Now]",
    ]
    assert results[0].usage.prompt_tokens == results[0].usage.completion_tokens == 0
    m = webshop_metrics(results)
    # The floor the issue measured on the 116 shipped goals.
    assert m["tasks"] == 116
    assert round(m["avg_reward"], 3) == 0.582 and round(m["success_rate"], 3) == 0.078


def test_auto_picks_choice_for_in_process_models_and_react_otherwise() -> None:
    from agentloop.backends import resolve_backend

    transformers = resolve_backend("transformers")  # lazy: nothing loads until a request
    assert resolve_policy("auto", transformers) == "choice"
    assert resolve_policy("auto", FunctionBackend(lambda r: "x")) == "react"
    assert resolve_policy("auto", ScriptedBackend(["x"], scorer=lambda r, c: [0.0] * len(c))) == "choice"
    assert resolve_policy("auto", None) == "react"
    with pytest.raises(AgentloopError, match="lacks score"):
        resolve_policy("choice", FunctionBackend(lambda r: "x"))
    suite = WebShopSuite()
    items = suite.items(RunSpec(suite="webshop", limit=1), transformers)
    assert isinstance(items[0].task, WebShopTask) and items[0].task.policy == "choice"
    items = suite.items(RunSpec(suite="webshop", limit=1), FunctionBackend(lambda r: "x"))
    assert items[0].task.policy == "react"  # type: ignore[attr-defined]
    items = suite.items(RunSpec(suite="webshop", limit=1, policy="first"), FunctionBackend(lambda r: "x"))
    assert items[0].task.policy == "first"  # type: ignore[attr-defined]


def test_policy_is_part_of_the_run_config() -> None:
    from agentloop.runs.runner import RESULT_KEYS

    assert "policy" in RESULT_KEYS  # so --resume refuses a run with another policy
    from agentloop.runs.runner import STORED_DEFAULTS

    assert STORED_DEFAULTS["policy"] == "react"  # runs stored before --policy: the model wrote every action
    assert RunSpec(suite="webshop", policy="choice").to_dict()["policy"] == "choice"
    with pytest.raises(ValueError, match="policy"):
        RunSpec(suite="webshop", policy="greedy")


@pytest.mark.model
def test_cli_choice_policy_buys_on_the_embedded_model(tmp_path: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "run", "webshop", "--policy", "choice", "--graph", "greedy"]
        + ["--limit", "2", "--run-dir", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tasks"] == 2 and data["errors"] == 0
    assert data["metrics"]["avg_reward"] > 0.3  # it bought something that fits
