"""Inference-time graphs on LangGraph: greedy, best-of-n, self-consistency, self-refine and IAD.

Run a task with :func:`run_task`; compose new graphs from :mod:`agentloop.graphs.nodes`.
"""

from agentloop.graphs import nodes
from agentloop.graphs._util import jsonable
from agentloop.graphs.budget import Budget, BudgetTracker, LoopUsage, Reservation
from agentloop.graphs.context import LessonSource, LoopConfig, LoopContext
from agentloop.graphs.library import (
    GRAPHS,
    CompiledLoopGraph,
    GraphSpec,
    LoopGraph,
    UnknownGraphError,
    build_graph,
    graph_spec,
    known_graphs,
    loop_graph,
)
from agentloop.graphs.result import LoopResult, build_result
from agentloop.graphs.run import run_task, run_task_sync
from agentloop.graphs.state import LoopState, initial_state
from agentloop.graphs.stopping import StopReason, evaluate, reached_threshold
from agentloop.graphs.task import (
    Candidate,
    Feedback,
    PromptTask,
    Rollout,
    RolloutTask,
    StepFn,
    Task,
    Verdict,
    render_lessons,
)

__all__ = [
    "GRAPHS",
    "Budget",
    "BudgetTracker",
    "Candidate",
    "CompiledLoopGraph",
    "Feedback",
    "GraphSpec",
    "LessonSource",
    "LoopConfig",
    "LoopContext",
    "LoopGraph",
    "LoopResult",
    "LoopState",
    "LoopUsage",
    "PromptTask",
    "Reservation",
    "Rollout",
    "RolloutTask",
    "StepFn",
    "StopReason",
    "Task",
    "UnknownGraphError",
    "Verdict",
    "build_graph",
    "build_result",
    "evaluate",
    "graph_spec",
    "initial_state",
    "jsonable",
    "known_graphs",
    "loop_graph",
    "nodes",
    "reached_threshold",
    "render_lessons",
    "run_task",
    "run_task_sync",
]
