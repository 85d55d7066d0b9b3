"""Suites: what a task is and how it is scored (the Suite API, its registry, and the built-in suites).

The API (:class:`Suite`, :class:`SuiteItem`, :class:`Score`) loads nothing heavy; the
built-in suites live in their own sub-packages (``text2sql``, ``webshop``, ``humaneval``) and the registry
(:data:`SUITES`, :func:`get_suite`) loads on first use.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr
from agentloop.errors import DatasetError
from agentloop.suites._base import (
    PROMPT_FORMATS,
    CannotRescoreError,
    Score,
    Suite,
    SuiteError,
    SuiteItem,
    SuiteOptions,
    UnknownVerifierError,
    content_hash,
)

_LAZY = {
    "SUITES": "agentloop.suites._registry",
    "SuiteLoadError": "agentloop.suites._registry",
    "UnknownSuiteError": "agentloop.suites._registry",
    "get_suite": "agentloop.suites._registry",
    "plugin_suites": "agentloop.suites._registry",
    "HumanEvalSuite": "agentloop.suites.humaneval.suite",
    "Text2SQLSuite": "agentloop.suites.text2sql.suite",
    "WebShopSuite": "agentloop.suites.webshop.suite",
}

__all__ = [
    "PROMPT_FORMATS",
    "SUITES",
    "CannotRescoreError",
    "DatasetError",
    "HumanEvalSuite",
    "Score",
    "Suite",
    "SuiteError",
    "SuiteItem",
    "SuiteLoadError",
    "SuiteOptions",
    "Text2SQLSuite",
    "UnknownSuiteError",
    "UnknownVerifierError",
    "WebShopSuite",
    "content_hash",
    "get_suite",
    "plugin_suites",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
