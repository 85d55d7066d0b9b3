"""Run one task through a graph: the entry point the CLI and the eval suites call."""

from __future__ import annotations

import asyncio
from typing import cast

from langgraph.graph import StateGraph

from agentloop import tracing
from agentloop.graphs.budget import Budget, BudgetTracker
from agentloop.graphs.context import LessonSource, LoopConfig, LoopContext
from agentloop.graphs.library import CompiledLoopGraph, GraphSpec, LoopGraph, graph_spec
from agentloop.graphs.result import LoopResult, build_result
from agentloop.graphs.state import LoopState, initial_state
from agentloop.graphs.task import Task
from agentloop.types import Backend

__all__ = ["run_task", "run_task_sync"]

GraphLike = str | GraphSpec | LoopGraph | CompiledLoopGraph


async def run_task(
    task: Task,
    backend: Backend,
    graph: GraphLike = "iad",
    *,
    config: LoopConfig | None = None,
    budget: Budget | BudgetTracker | None = None,
    memory: LessonSource | None = None,
) -> LoopResult:
    """Run ``task`` through ``graph`` (a registered name, a :class:`GraphSpec`, or your own graph) and return the result.

    A named graph fixes what it must in ``config`` (greedy: n=1, T=0; best_of_n: one
    round). Pass a :class:`BudgetTracker` instead of a :class:`Budget` to share one
    budget across several tasks; ``result.usage`` is always this task's own spend.
    """
    config = config or LoopConfig()
    compiled: CompiledLoopGraph
    if isinstance(graph, str | GraphSpec):
        spec = graph_spec(graph) if isinstance(graph, str) else graph
        compiled, config, name = spec.compile(memory=memory is not None), spec.adjust(config), spec.name
    else:
        compiled = graph.compile() if isinstance(graph, StateGraph) else graph
        name = compiled.name if compiled.name != "LangGraph" else "custom"
    tracker = budget if isinstance(budget, BudgetTracker) else BudgetTracker(budget)
    ctx = LoopContext(
        backend=backend,
        task=task,
        config=config,
        budget=tracker,
        memory=memory,
        graph=name,
        started=tracker.snapshot(),
    )
    # Each round is a handful of supersteps; leave room for custom graphs with extra nodes.
    limit = 16 * (config.rounds + 1)
    try:
        state = await compiled.ainvoke(initial_state(), context=ctx, config={"recursion_limit": limit})
    finally:
        tracing.end_round(ctx)  # a graph without a select node, or one that raised, leaves it open
    return build_result(cast(LoopState, state), ctx)


def run_task_sync(
    task: Task,
    backend: Backend,
    graph: GraphLike = "iad",
    *,
    config: LoopConfig | None = None,
    budget: Budget | BudgetTracker | None = None,
    memory: LessonSource | None = None,
) -> LoopResult:
    """Blocking wrapper around :func:`run_task` for scripts and notebooks."""
    return asyncio.run(run_task(task, backend, graph, config=config, budget=budget, memory=memory))
