"""Concept memory on WebShop: each goal searches and abstracts under its own instruction.

One SQLite store serves two goals with different instructions. Goal A runs, passes and is
abstracted (the abstraction prompt names A's instruction, not the few-shot demonstration);
goal B's lesson is written beside it. Each goal then retrieves its own lesson, in both
prompt formats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agentloop.backends import ScriptedBackend
from agentloop.graphs import LoopConfig, run_task
from agentloop.memory import ConceptDraft, ConceptMemory, SQLMemoryStore, default_query
from agentloop.prompts import render_prompt
from agentloop.suites.webshop.task import WebShopTask
from agentloop.webshop import Goal, load_catalog


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture
def store(tmp_path) -> Iterator[SQLMemoryStore]:
    s = SQLMemoryStore(tmp_path / "memory.sqlite")
    yield s
    s.close()


def two_goals(catalog) -> tuple[Goal, Goal]:
    """Two goals for different kinds of product (no shared search query)."""
    a = catalog.goals[0]
    b = next(g for g in catalog.goals if g.query != a.query)
    return a, b


LESSONS = [
    ("Shopping for {q}", "Search for {q} and check every wanted option before buying."),
    ("Picking {q} within budget", "Compare listed prices of {q} against the limit first."),
]


def lesson(goal: Goal, which: int) -> dict[str, object]:
    """A lesson whose words come from the goal's product type."""
    title, suggestion = LESSONS[which]
    return {
        "title": title.format(q=goal.query),
        "situation": f"The instruction asks for {goal.query}.",
        "cues": [goal.query],
        "suggestion": suggestion.format(q=goal.query),
        "kind": "strategy",
    }


def plan(goal: Goal, fmt: str) -> list[str]:
    """The replies that buy the goal's product with its options, in the given format."""
    actions = [f"search[{goal.name}]", f"click[{goal.asin}]", *(f"click[{v}]" for v in goal.goal_options)]
    actions.append("click[Buy Now]")
    if fmt == "fewshot":  # the prompt already holds "search[" or "click["
        return [" " + a.split("[", 1)[1] for a in actions]
    return [f"Action: {a}" for a in actions]


@pytest.mark.parametrize("fmt", ["chat", "fewshot"])
async def test_two_goals_retrieve_their_own_concepts(catalog, store, fmt):
    a, b = two_goals(catalog)
    task_a = WebShopTask(catalog, a, verifier="oracle", prompt_format=fmt)
    task_b = WebShopTask(catalog, b, verifier="oracle", prompt_format=fmt)
    backend = ScriptedBackend([*plan(a, fmt), json.dumps({"concepts": [lesson(a, 0)]})])
    memory = ConceptMemory(store, namespace="webshop", backend=backend, update="task", k=1)

    # The query is the instruction, not the prompt (whose demonstration is the same for all).
    assert default_query(task_a) == a.instruction_text
    assert default_query(task_b) == b.instruction_text

    result = await run_task(task_a, backend, "greedy", config=LoopConfig(max_tokens=64), memory=memory)
    assert result.passed and result.answer.reward == 1.0
    abstraction = backend.requests[-1].messages[-1].content
    assert f"Task:\n{a.instruction_text}\n" in abstraction
    if fmt == "fewshot":  # the demonstration is not what the lesson is abstracted from
        demo = render_prompt("webshop_fewshot", instruction="", notes="", steps="", lessons="").split(
            "Instruction:"
        )[0]
        assert demo.strip() and demo.strip()[:200] not in abstraction
    await memory.flush()
    assert store.add(ConceptDraft.from_dict(lesson(b, 1)), namespace="webshop").action == "inserted"

    got_a = await memory.retrieve(task_a)
    got_b = await memory.retrieve(task_b)
    assert len(got_a) == len(got_b) == 1
    assert a.query in got_a[0] and b.query in got_b[0]
    assert got_a != got_b
