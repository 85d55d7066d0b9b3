"""agentloop: spend inference-time compute well (propose, verify, refine).

``import agentloop`` is cheap: the shared types load at once, and every other name (the
graphs, the backends, the suites and the runner) loads on first use, so importing the
WebShop world or opening the viewer never loads LangGraph or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentloop._lazy import lazy_getattr
from agentloop.errors import AgentloopError
from agentloop.types import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    LoopUsage,
    Message,
    Usage,
)

if TYPE_CHECKING:
    from agentloop.backends import BackendOptions, FunctionBackend, ScriptedBackend, resolve_backend
    from agentloop.graphs import (
        Budget,
        LoopConfig,
        LoopResult,
        Task,
        Verdict,
        known_graphs,
        run_task,
        run_task_sync,
    )
    from agentloop.runs import RunSpec, run_suite, run_suite_sync
    from agentloop.suites import Score, Suite, SuiteItem

__version__ = "0.1.0"

_LAZY = {
    "BackendOptions": "agentloop.backends",
    "FunctionBackend": "agentloop.backends",
    "ScriptedBackend": "agentloop.backends",
    "resolve_backend": "agentloop.backends",
    "Budget": "agentloop.graphs",
    "LoopConfig": "agentloop.graphs",
    "LoopResult": "agentloop.graphs",
    "Task": "agentloop.graphs",
    "Verdict": "agentloop.graphs",
    "known_graphs": "agentloop.graphs",
    "run_task": "agentloop.graphs",
    "run_task_sync": "agentloop.graphs",
    "RunSpec": "agentloop.runs",
    "run_suite": "agentloop.runs",
    "run_suite_sync": "agentloop.runs",
    "Score": "agentloop.suites",
    "Suite": "agentloop.suites",
    "SuiteItem": "agentloop.suites",
}

__all__ = [
    "AgentloopError",
    "Backend",
    "BackendOptions",
    "Budget",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "Constraint",
    "FunctionBackend",
    "LoopConfig",
    "LoopResult",
    "LoopUsage",
    "Message",
    "RunSpec",
    "Score",
    "ScriptedBackend",
    "Suite",
    "SuiteItem",
    "Task",
    "Usage",
    "Verdict",
    "__version__",
    "known_graphs",
    "resolve_backend",
    "run_suite",
    "run_suite_sync",
    "run_task",
    "run_task_sync",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
