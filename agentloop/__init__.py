"""agentloop: spend inference-time compute well (propose, verify, refine)."""

from agentloop.backends import (
    Backend,
    BackendOptions,
    ChatRequest,
    ChatResponse,
    Completion,
    FunctionBackend,
    Message,
    ScriptedBackend,
    Usage,
    resolve_backend,
)
from agentloop.errors import AgentloopError
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

__version__ = "0.1.0"

__all__ = [
    "AgentloopError",
    "Backend",
    "Budget",
    "BackendOptions",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "FunctionBackend",
    "LoopConfig",
    "LoopResult",
    "Message",
    "ScriptedBackend",
    "Task",
    "Usage",
    "Verdict",
    "__version__",
    "known_graphs",
    "resolve_backend",
    "run_task",
    "run_task_sync",
]
