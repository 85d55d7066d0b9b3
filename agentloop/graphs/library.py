"""The named graphs (greedy, best_of_n, self_consistency, self_refine, iad) and their registry."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agentloop.errors import AgentloopError
from agentloop.graphs import nodes
from agentloop.graphs.context import LoopConfig, LoopContext
from agentloop.graphs.state import LoopState

__all__ = [
    "GRAPHS",
    "CompiledLoopGraph",
    "GraphSpec",
    "LoopGraph",
    "UnknownGraphError",
    "build_graph",
    "graph_spec",
    "known_graphs",
    "loop_graph",
]

Node = Callable[..., Any]
LoopGraph = StateGraph[LoopState, LoopContext, LoopState, LoopState]
CompiledLoopGraph = CompiledStateGraph[LoopState, LoopContext, LoopState, LoopState]


class UnknownGraphError(AgentloopError, ValueError):
    def __init__(self, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown graph '{name}'.{hint} Known graphs: {', '.join(known)}.")


def loop_graph(
    *,
    choose: Node = nodes.select,
    feedback: Node | None = nodes.refine,
    memory: bool = True,
    verify: bool = True,
) -> LoopGraph:
    """recall → propose → verify → choose → (feedback → propose)* → remember.

    ``choose`` picks the best and runs the stopping evaluator (``select`` or ``vote``);
    ``feedback`` builds the next round's prompt (``refine`` or ``revise``); without it
    the graph runs one round. ``memory=False`` leaves out ``recall`` and ``remember``
    (they do nothing without a memory, but each node is a superstep that costs time).
    ``verify=False`` leaves out the verify node, for a ``choose`` that needs no verdicts
    to choose (``vote`` verifies only its winner). Nodes are named after their functions.
    """
    pick = _name(choose)
    g: LoopGraph = StateGraph(LoopState, context_schema=LoopContext)
    g.add_node("propose", nodes.propose)
    g.add_node(pick, choose)
    if verify:
        g.add_node("verify", nodes.verify)
        g.add_edge("propose", "verify")
        g.add_edge("verify", pick)
    else:
        g.add_edge("propose", pick)
    first, last = "propose", END
    if memory:
        g.add_node("recall", nodes.recall)
        g.add_node("remember", nodes.remember)
        g.add_edge("recall", "propose")
        g.add_edge("remember", END)
        first, last = "recall", "remember"
    g.add_edge(START, first)
    if feedback is None:
        g.add_edge(pick, last)
    else:
        fb = _name(feedback)
        g.add_node(fb, feedback)
        g.add_conditional_edges(pick, nodes.should_continue, {"continue": fb, "stop": last})
        g.add_edge(fb, "propose")
    return g


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """A named graph: how to build it, and what it fixes in the config (greedy: n=1, T=0).

    ``build(memory)`` returns the graph with or without its ``recall``/``remember`` nodes.
    """

    name: str
    description: str
    build: Callable[[bool], LoopGraph]
    adjust: Callable[[LoopConfig], LoopConfig] = lambda cfg: cfg

    def compile(self, *, memory: bool = True) -> CompiledLoopGraph:
        return _compile(self, memory)


GRAPHS: dict[str, GraphSpec] = {
    spec.name: spec
    for spec in (
        GraphSpec(
            "greedy",
            "one candidate at temperature 0",
            lambda memory: loop_graph(feedback=None, memory=memory),
            lambda cfg: cfg.replace(n=1, rounds=1, temperature=0.0),
        ),
        GraphSpec(
            "best_of_n",
            "n samples, verify all, keep the highest score",
            lambda memory: loop_graph(feedback=None, memory=memory),
            lambda cfg: cfg.replace(rounds=1),
        ),
        GraphSpec(
            "self_consistency",
            "n samples, majority vote over the task's answer key",
            # The vote ignores verdicts: only the winner is verified (a judge costs LLM calls).
            lambda memory: loop_graph(choose=nodes.vote, feedback=None, memory=memory, verify=False),
            lambda cfg: cfg.replace(rounds=1),
        ),
        GraphSpec(
            "self_refine",
            "one candidate per round, revised from its own verdict",
            lambda memory: loop_graph(feedback=nodes.revise, memory=memory),
            lambda cfg: cfg.replace(n=1),
        ),
        GraphSpec(
            "iad",
            "n candidates per round; the next prompt contrasts the best and the worst",
            lambda memory: loop_graph(memory=memory),
        ),
    )
}


def known_graphs() -> list[str]:
    return list(GRAPHS)


def graph_spec(name: str) -> GraphSpec:
    try:
        return GRAPHS[name]
    except KeyError:
        raise UnknownGraphError(name, known_graphs()) from None


def build_graph(name: str, *, memory: bool = True) -> CompiledLoopGraph:
    """The compiled graph registered as ``name`` (compiled once, then shared)."""
    return graph_spec(name).compile(memory=memory)


def _name(node: Node) -> str:
    return getattr(node, "__name__", type(node).__name__)


@functools.cache
def _compile(spec: GraphSpec, memory: bool) -> CompiledLoopGraph:
    # A compiled graph without a checkpointer holds no run state, so runs can share it.
    return spec.build(memory).compile(name=spec.name)
