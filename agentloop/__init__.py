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

__version__ = "0.1.0"

__all__ = [
    "AgentloopError",
    "Backend",
    "BackendOptions",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "FunctionBackend",
    "Message",
    "ScriptedBackend",
    "Usage",
    "__version__",
    "resolve_backend",
]
