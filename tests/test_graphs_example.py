"""The documented example: a new graph with an LLM-critic node, composed from agentloop's nodes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from agentloop.backends import ScriptedBackend
from agentloop.graphs import Budget, Candidate, LoopConfig, PromptTask, Verdict, run_task

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llm_critic_graph.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llm_critic_graph", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prime_task() -> PromptTask:
    def verify(c: Candidate) -> Verdict:
        score = {"11": 1.0, "9": 0.3}.get(c.answer, 0.0)
        return Verdict(
            score, passed=score == 1.0, feedback=f"{c.answer} is {'' if score == 1 else 'not '}right"
        )

    return PromptTask("Name a prime number above 10.", verify, id="prime")


def test_the_example_stays_under_40_lines() -> None:
    assert len(EXAMPLE.read_text().splitlines()) < 40


async def test_the_critic_graph_runs_and_its_note_reaches_the_next_prompt() -> None:
    graph = load_example().critic_graph()
    backend = ScriptedBackend([["8", "9"], "Nine is divisible by three.", ["11", "12"]])
    result = await run_task(prime_task(), backend, graph, config=LoopConfig(n=2, rounds=3))

    propose1, critique, propose2 = backend.requests
    assert (critique.n, critique.temperature, critique.max_tokens) == (1, 0.0, 64)
    assert "Name a prime number above 10." in critique.messages[-1].content
    assert "9" in critique.messages[-1].content  # the round's best candidate is critiqued
    refine_prompt = propose2.messages[-1].content
    assert "9 is not right Critic: Nine is divisible by three." in refine_prompt
    assert result.answer == "11" and result.stop_reason == "threshold"
    # the critique spent tokens and a call, but it is not a candidate
    assert result.usage.candidates == 4 == len(result.candidates)
    assert result.usage.llm_calls == 3
    assert result.usage.completion_tokens == 4 + 5
    verdict = result.candidates[1].verdict
    assert verdict is not None and verdict.feedback.endswith("Critic: Nine is divisible by three.")


async def test_the_critic_is_skipped_when_the_budget_has_no_room_for_it() -> None:
    graph = load_example().critic_graph()
    words = " ".join(["w"] * 32)
    backend = ScriptedBackend([[words, words]])
    budget = Budget(max_tokens=64 + 10, min_tokens=16)  # one round fills 64; 10 is too few to ask
    config = LoopConfig(n=2, rounds=3, max_tokens=32)
    result = await run_task(prime_task(), backend, graph, config=config, budget=budget)
    assert len(backend.requests) == 1
    assert result.stop_reason == "budget" and result.usage.completion_tokens == 64
    assert all(c.verdict is not None and "Critic" not in c.verdict.feedback for c in result.candidates)
