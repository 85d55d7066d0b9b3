"""docs/graphs.md's worked graphs, executed from the page itself: they must run, match their example files,
and use only names the page documents."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path
from typing import Any

import pytest

from agentloop.backends import FunctionBackend, ScriptedBackend
from agentloop.graphs import Candidate, LoopConfig, PromptTask, Verdict, graph_spec

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "graphs.md").read_text()
# The reference a user reads before the worked graphs: every name those use must be in it.
REFERENCE = DOC[: DOC.index("### Worked graph")]

_BLOCK = re.compile(r"<!-- documented-(graph|run): (\w+)(?: \(([^)]+)\))? -->\n```python\n(.*?)```", re.S)
BLOCKS: dict[tuple[str, str], tuple[str, str | None]] = {
    (kind, name): (code, path) for kind, name, path, code in _BLOCK.findall(DOC)
}
GRAPHS = ("critic", "refine_best")
# Methods of the builtin types the examples call (str.format, dict.get, ...) need no documenting.
_BUILTIN_ATTRS = {a for t in (str, dict, list, tuple) for a in dir(t)}


def test_the_page_has_both_worked_graphs_and_a_run_of_each() -> None:
    assert set(BLOCKS) == {(kind, name) for kind in ("graph", "run") for name in GRAPHS}


@pytest.mark.parametrize("name", GRAPHS)
def test_each_documented_graph_is_its_example_file(name: str) -> None:
    code, path = BLOCKS["graph", name]
    assert path is not None
    source = (ROOT / path).read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    assert docstring is not None, f"{path} should open with a docstring"
    body = source.split('"""', 2)[2].lstrip("\n")
    assert code == body, f"docs/graphs.md's {name} block differs from {path}"


def _code_words(text: str) -> set[str]:
    """The identifiers in the page's code: fenced blocks and inline `spans`."""
    fence = re.compile(r"^```\w*\n(.*?)^```", re.S | re.M)
    spans = [*fence.findall(text), *re.findall(r"`([^`]+)`", fence.sub("", text))]
    return {word for span in spans for word in re.findall(r"\w+", span)}


DOCUMENTED = _code_words(REFERENCE)


def _names_used(code: str) -> set[str]:
    """agentloop names imported, attributes read and keywords passed: what a reader must look up."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentloop"):
            used.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Attribute) and node.attr not in _BUILTIN_ATTRS:
            used.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            used.add(node.arg)
    return used


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_the_worked_graphs_use_only_names_the_page_documents(block: tuple[str, str]) -> None:
    undocumented = sorted(n for n in _names_used(BLOCKS[block][0]) if n not in DOCUMENTED)
    assert undocumented == [], f"{block} uses names docs/graphs.md does not explain before it"


def _run(name: str, task: PromptTask, backend: Any) -> Any:
    """Execute the page's graph block, then its run block with ``task`` and ``backend``; the run's namespace."""
    namespace: dict[str, Any] = {"__builtins__": builtins, "task": task, "backend": backend}
    exec(compile(BLOCKS["graph", name][0], f"docs/graphs.md:{name}", "exec"), namespace)
    exec(compile(BLOCKS["run", name][0], f"docs/graphs.md:{name}-run", "exec"), namespace)
    return namespace


def prime_task() -> PromptTask:
    def verify(c: Candidate) -> Verdict:
        score = {"eleven": 1.0, "nine": 0.3, "ten": 0.1}.get(c.answer, 0.0)
        right = "" if score == 1 else "not "
        return Verdict(score, passed=score == 1.0, feedback=f"{c.answer} is {right}a prime above 10")

    return PromptTask("Name a prime number above 10, in words.", verify, id="prime")


def test_the_documented_critic_graph_puts_the_critics_note_into_the_next_prompt() -> None:
    backend = ScriptedBackend(
        [["eight", "nine", "ten", "twelve"], "Nine is divisible by three.", ["eleven", "ten", "ten", "ten"]]
    )
    result = _run("critic", prime_task(), backend)["result"]

    propose1, critique, propose2 = backend.requests
    assert propose1.n == 4 and propose2.n == 4
    assert (critique.n, critique.temperature, critique.max_tokens) == (1, 0.0, 64)
    assert "<best_attempt>" not in critique.messages[-1].content
    assert "Answer:\nnine\n" in critique.messages[-1].content  # the round's best is critiqued
    refine_prompt = propose2.messages[-1].content
    assert "nine is not a prime above 10 Critic: Nine is divisible by three." in refine_prompt
    assert result.answer == "eleven" and result.stop_reason == "threshold"
    assert result.usage.candidates == 8 and result.usage.llm_calls == 3  # the critique is no candidate


def test_the_documented_refine_best_graph_samples_n_then_revises_the_best_with_one() -> None:
    backend = ScriptedBackend([["eight", "nine", "ten", "twelve"], "eleven"])
    result = _run("refine_best", prime_task(), backend)["result"]

    first, second = backend.requests
    assert first.n == 4 and second.n == 1
    refine_prompt = second.messages[-1].content
    # the best of round 0 (not its last candidate) with its verdict, and nothing of the others
    assert "<previous_answer>\nnine\n</previous_answer>" in refine_prompt
    assert "nine is not a prime above 10" in refine_prompt and "score 0.30" in refine_prompt
    assert not {"eight", "ten", "twelve"} & set(re.findall(r"[a-z]+", refine_prompt))
    assert [c.round for c in result.candidates] == [0, 0, 0, 0, 1]
    assert result.answer == "eleven" and result.stop_reason == "threshold" and result.rounds == 2


def test_the_refine_best_graph_stops_after_round_zero_when_a_candidate_passes() -> None:
    backend = FunctionBackend(lambda request: ["nine", "eleven", "ten", "ten"])
    result = _run("refine_best", prime_task(), backend)["result"]
    assert backend.calls == 1 and result.answer == "eleven" and result.stop_reason == "threshold"


def test_the_refine_best_graph_by_file_path_keeps_its_config() -> None:
    spec = graph_spec(f"{ROOT / 'examples' / 'refine_best_graph.py'}:refine_best")
    adjusted = spec.adjust(LoopConfig(n=6, rounds=5))
    assert (adjusted.n_for(0), adjusted.n_for(1), adjusted.rounds) == (6, 1, 2)
