"""Model backends behind one async contract; see :class:`Backend`."""

from agentloop.backends._constraint import Constraint, ConstraintKind, UnsupportedCapabilityError
from agentloop.backends._types import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    ContinuationScore,
    Message,
    ScorePrompt,
    ScoreResponse,
    Usage,
)
from agentloop.backends.registry import DEFAULT_BACKEND, BackendOptions, known_backends, resolve_backend
from agentloop.backends.testing import FunctionBackend, ScriptedBackend

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
