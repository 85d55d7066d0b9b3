"""Model backends behind one async contract; see :class:`Backend`."""

from agentloop.backends.registry import DEFAULT_BACKEND, BackendOptions, known_backends, resolve_backend
from agentloop.backends.testing import FunctionBackend, ScriptedBackend
from agentloop.types import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    ConstraintKind,
    ContinuationScore,
    Message,
    ScorePrompt,
    ScoreResponse,
    UnsupportedCapabilityError,
    Usage,
)

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BackendOptions",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "Constraint",
    "ConstraintKind",
    "ContinuationScore",
    "FunctionBackend",
    "Message",
    "ScorePrompt",
    "ScoreResponse",
    "ScriptedBackend",
    "UnsupportedCapabilityError",
    "Usage",
    "known_backends",
    "resolve_backend",
]
