"""The named graphs (greedy, best_of_n, self_consistency, self_refine, iad, adaptive) and their registry."""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agentloop._plugins import (
    GRAPH_GROUP,
    PluginError,
    is_reference,
    load_plugin,
    load_reference,
    normalize_reference,
    plugin_names,
)
from agentloop.errors import AgentloopError, did_you_mean
from agentloop.graphs import adaptive, nodes
from agentloop.graphs.context import LoopConfig, LoopContext
from agentloop.graphs.state import LoopState

__all__ = [
    "GRAPHS",
    "CompiledLoopGraph",
    "GraphLoadError",
    "GraphSpec",
    "LoopGraph",
    "UnknownGraphError",
    "as_graph_spec",
    "build_graph",
    "graph_hash",
    "graph_spec",
    "known_graphs",
    "loop_graph",
    "plugin_graphs",
]

Node = Callable[..., Any]
LoopGraph = StateGraph[LoopState, LoopContext, LoopState, LoopState]
CompiledLoopGraph = CompiledStateGraph[LoopState, LoopContext, LoopState, LoopState]


class UnknownGraphError(AgentloopError, ValueError):
    def __init__(self, name: str, known: list[str]):
        note = " (or give your own as module:attr or path/to/file.py:attr)"
        super().__init__(did_you_mean("graph", name, known, note=note))


class GraphLoadError(PluginError):
    """A graph given by reference or plugin does not import, or does not fit agentloop's state and nodes."""


def loop_graph(
    *,
    choose: Node = nodes.select,
    feedback: Node | None = nodes.refine,
    memory: bool = True,
    verify: bool = True,
    review: Sequence[Node] = (),
) -> LoopGraph:
    """recall → propose → verify → review… → choose → (feedback → propose)* → remember.

    ``choose`` picks the best and runs the stopping evaluator (``select`` or ``vote``);
    ``feedback`` builds the next round's prompt (``refine`` or ``revise``); without it
    the graph runs one round. ``memory=False`` leaves out ``recall`` and ``remember``
    (they do nothing without a memory, but each node is a superstep that costs time).
    ``verify=False`` leaves out the verify node, for a ``choose`` that needs no verdicts
    to choose (``vote`` verifies only its winner). ``review`` nodes run in order just
    before ``choose``, where they may rewrite ``pending`` (an LLM critic amending
    verdicts). Nodes are named after their functions.
    """
    pick = _name(choose)
    g: LoopGraph = StateGraph(LoopState, context_schema=LoopContext)
    g.add_node("propose", nodes.propose)
    g.add_node(pick, choose)
    chain = ["propose"]
    if verify:
        g.add_node("verify", nodes.verify)
        chain.append("verify")
    for node in review:
        g.add_node(_name(node), node)
        chain.append(_name(node))
    chain.append(pick)
    for a, b in itertools.pairwise(chain):
        g.add_edge(a, b)
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

    ``build(memory)`` returns the graph with or without its ``recall``/``remember`` nodes
    (a user's graph may ignore ``memory``, and may return it compiled already).
    """

    name: str
    description: str
    build: Callable[[bool], LoopGraph | CompiledLoopGraph]
    adjust: Callable[[LoopConfig], LoopConfig] = lambda cfg: cfg

    def compile(self, *, memory: bool = True) -> CompiledLoopGraph:
        return _compile(self, memory)


def _one_round(cfg: LoopConfig) -> LoopConfig:
    # One round: only the schedule's first entry could apply, so it becomes n, and the
    # stored config says what ran.
    return cfg.replace(n=cfg.n_for(0), rounds=1, n_schedule=())


GRAPHS: dict[str, GraphSpec] = {
    spec.name: spec
    for spec in (
        GraphSpec(
            "greedy",
            "one candidate at temperature 0",
            lambda memory: loop_graph(feedback=None, memory=memory),
            lambda cfg: cfg.replace(n=1, rounds=1, temperature=0.0, n_schedule=()),
        ),
        GraphSpec(
            "best_of_n",
            "n samples, verify all, keep the highest score",
            lambda memory: loop_graph(feedback=None, memory=memory),
            _one_round,
        ),
        GraphSpec(
            "self_consistency",
            "n samples, majority vote over the task's answer key",
            # The vote ignores verdicts: only the winner is verified (a judge costs LLM calls).
            lambda memory: loop_graph(choose=nodes.vote, feedback=None, memory=memory, verify=False),
            _one_round,
        ),
        GraphSpec(
            "self_refine",
            "one candidate per round, revised from its own verdict",
            lambda memory: loop_graph(feedback=nodes.revise, memory=memory),
            lambda cfg: cfg.replace(n=1, n_schedule=()),
        ),
        GraphSpec(
            "iad",
            "n candidates per round; the next prompt contrasts the best and the worst",
            lambda memory: loop_graph(memory=memory),
        ),
        GraphSpec(
            "adaptive",
            "waves of 1, 2, 4… up to n, stopping once one passes; refines when a wave was informative",
            lambda memory: loop_graph(feedback=adaptive.adapt, memory=memory),
            adaptive.waves_config,
        ),
        GraphSpec(
            "adaptive_sample",
            "adaptive without refinement: every wave samples the prompt afresh",
            lambda memory: loop_graph(feedback=adaptive.resample, memory=memory),
            adaptive.waves_config,
        ),
        GraphSpec(
            "adaptive_flat",
            "adaptive without growth: waves of one candidate up to n",
            lambda memory: loop_graph(feedback=adaptive.adapt, memory=memory),
            functools.partial(adaptive.waves_config, geometric=False),
        ),
    )
}


def known_graphs() -> list[str]:
    """The built-in graphs' names (:func:`plugin_graphs` lists the installed plugins')."""
    return list(GRAPHS)


def plugin_graphs() -> list[str]:
    """Graph names installed packages register under the ``agentloop.graphs`` entry-point group."""
    return [name for name in plugin_names(GRAPH_GROUP) if name not in GRAPHS]


def graph_spec(name: str) -> GraphSpec:
    """The graph ``name``: a built-in, ``module:attr`` or ``file.py:attr``, or a plugin's entry point."""
    spec = GRAPHS.get(name)
    if spec is not None:
        return spec
    if is_reference(name):
        ref = normalize_reference(name)
        return _reference_spec(ref, _mtime(ref))
    spec = _plugin_spec(name)
    if spec is None:
        raise UnknownGraphError(name, [*known_graphs(), *plugin_graphs()])
    return spec


def build_graph(name: str, *, memory: bool = True) -> CompiledLoopGraph:
    """The compiled graph registered as ``name`` (compiled once, then shared)."""
    return graph_spec(name).compile(memory=memory)


def graph_hash(spec: GraphSpec) -> str:
    """A hash of the compiled graph's structure (its nodes and edges), so a resume can refuse a changed graph."""
    drawn = spec.compile(memory=True).get_graph()
    nodes_ = sorted(drawn.nodes)
    edges = sorted((e.source, e.target, bool(e.conditional), str(e.data)) for e in drawn.edges)
    text = json.dumps([nodes_, edges], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def as_graph_spec(obj: Any, name: str, description: str = "") -> GraphSpec:
    """A :class:`GraphSpec` from a GraphSpec, a StateGraph, a compiled graph, or a zero-argument factory of one.

    The graph is compiled and checked here: it must run over :class:`LoopState` with
    :class:`LoopContext`, and keep ``propose`` and a chooser (``select`` or ``vote``),
    since the run's result is read from what they write.
    """
    made = obj
    if not isinstance(obj, GraphSpec | StateGraph | CompiledStateGraph) and callable(obj):
        if _needs_arguments(obj):
            raise GraphLoadError(
                f"graph '{name}' is a function that takes arguments; give a graph or a zero-argument "
                "factory returning one"
            )
        try:
            made = obj()
        except Exception as exc:
            raise GraphLoadError(f"graph '{name}': its factory raised {type(exc).__name__}: {exc}") from exc
    description = description or _first_line(getattr(obj, "__doc__", None))
    if isinstance(made, GraphSpec):
        spec = replace(made, name=name)
    elif isinstance(made, StateGraph | CompiledStateGraph):
        graph = made
        spec = GraphSpec(name, description or "a user graph", lambda memory: graph)
    else:
        raise GraphLoadError(
            f"graph '{name}' is a {type(made).__name__}, not a LangGraph StateGraph, a compiled graph, a "
            "GraphSpec or a zero-argument factory of one"
        )
    try:
        compiled = spec.compile(memory=True)
    except AgentloopError:
        raise
    except Exception as exc:
        raise GraphLoadError(f"graph '{name}' does not compile: {type(exc).__name__}: {exc}") from exc
    _check_fits(compiled, name)
    return spec


def _check_fits(compiled: CompiledLoopGraph, name: str) -> None:
    builder = compiled.builder
    state = getattr(builder, "state_schema", None)
    missing_keys = sorted(set(LoopState.__annotations__) - set(getattr(state, "__annotations__", {})))
    if missing_keys:
        raise GraphLoadError(
            f"graph '{name}' runs over {getattr(state, '__name__', state)}, not agentloop's LoopState "
            f"(it lacks {', '.join(missing_keys)}); build it as StateGraph(LoopState, context_schema=LoopContext)"
        )
    context = getattr(builder, "context_schema", None)
    if not (isinstance(context, type) and issubclass(context, LoopContext)):
        raise GraphLoadError(
            f"graph '{name}' has context schema {getattr(context, '__name__', context)}, not LoopContext; "
            "build it as StateGraph(LoopState, context_schema=LoopContext)"
        )
    present = set(builder.nodes)
    missing = [n for n in ("propose",) if n not in present]
    if not present & {"select", "vote"}:
        missing.append("select (or vote)")
    if missing:
        raise GraphLoadError(
            f"graph '{name}' lacks the node(s) {', '.join(missing)}: candidates come from propose, and the "
            f"result is read from what select or vote writes (it has: {', '.join(sorted(present)) or 'none'})"
        )


def _needs_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
    )


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0].strip()


def _mtime(ref: str) -> int:
    target = ref.rpartition(":")[0]
    if not target.endswith(".py"):
        return 0
    try:
        return Path(target).stat().st_mtime_ns
    except OSError:
        return 0


@functools.cache
def _reference_spec(ref: str, mtime: int) -> GraphSpec:
    # Cached per file version: run_task resolves the graph once per task.
    return as_graph_spec(load_reference(ref, "graph"), ref)


@functools.cache
def _plugin_spec(name: str) -> GraphSpec | None:
    obj = load_plugin(GRAPH_GROUP, name, "graph")
    return None if obj is None else as_graph_spec(obj, name)


def _name(node: Node) -> str:
    return getattr(node, "__name__", type(node).__name__)


@functools.cache
def _compile(spec: GraphSpec, memory: bool) -> CompiledLoopGraph:
    # A compiled graph without a checkpointer holds no run state, so runs can share it.
    built = spec.build(memory)
    return built.compile(name=spec.name) if isinstance(built, StateGraph) else built
