"""Errors that agentloop raises on purpose: each one names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AgentloopError",
    "BackendError",
    "BackendUnavailableError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModelPullError",
    "UnknownBackendError",
]


class AgentloopError(Exception):
    """Base class. The CLI prints these as one line instead of a traceback."""


class UnknownBackendError(AgentloopError, ValueError):
    def __init__(self, backend_id: str, known: Iterable[str]):
        known = sorted(known)
        prefix = backend_id.split(":", 1)[0]
        close = difflib.get_close_matches(prefix, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(
            f"unknown backend '{backend_id}'.{hint} Known backends: {', '.join(known)} "
            "(write them as 'openai:MODEL', 'transformers:PATH', ...)."
        )


class MissingExtraError(AgentloopError, ImportError):
    def __init__(self, package: str, extra: str):
        super().__init__(
            f"the '{package}' package is not installed; install it with: pip install 'agentloop[{extra}]'"
        )


class MissingAPIKeyError(AgentloopError):
    def __init__(self, env_var: str, backend: str):
        super().__init__(
            f"no API key for the {backend} backend: set the {env_var} environment variable "
            "(or pass api_key=...)."
        )


class BackendError(AgentloopError):
    """A backend failed after its retries were spent."""


class BackendUnavailableError(BackendError):
    """The backend's server could not be reached."""


class ModelPullError(AgentloopError):
    """Fetching or converting the embedded model failed."""
