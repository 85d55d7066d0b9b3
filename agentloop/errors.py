"""Errors that agentloop raises on purpose: each one names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AgentloopError",
    "BackendError",
    "BackendUnavailableError",
    "DatasetError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModelPullError",
    "UnknownBackendError",
    "close_match",
    "did_you_mean",
]


class AgentloopError(Exception):
    """Base class. The CLI prints these as one line instead of a traceback."""


class DatasetError(AgentloopError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


def close_match(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name`` (difflib, similarity at least 0.5), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return close[0] if close else None


def did_you_mean(
    what: str, name: str, known: Iterable[str], *, why: str = "", note: str = "", like: str | None = None
) -> str:
    """``unknown WHAT 'name'. Did you mean 'x'? Known WHATs: a, b.``: the one "did you mean" message.

    ``why`` follows the name, ``note`` the list; ``like`` is what to match against ``known``
    when it is not ``name`` itself (a backend id is matched by its prefix).
    """
    known = list(known)
    close = close_match(name if like is None else like, known)
    hint = f" Did you mean '{close}'?" if close else ""
    return f"unknown {what} '{name}'{why}.{hint} Known {what}s: {', '.join(known) or '(none)'}{note}."


class UnknownBackendError(AgentloopError, ValueError):
    def __init__(self, backend_id: str, known: Iterable[str]):
        note = " (write them as 'openai:MODEL', 'transformers:PATH', ...)"
        prefix = backend_id.split(":", 1)[0]
        super().__init__(did_you_mean("backend", backend_id, sorted(known), note=note, like=prefix))


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
