"""The ``webshop`` suite, the agent side of WebShop: task, policies, verifiers and the suite.

The world itself (catalog, search, pages, reward) is :mod:`agentloop.webshop`, which knows
no agent. Everything here loads on first use.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr

_LAZY = {
    "WebShopSuite": "suite",
    "UnknownWebShopVerifierError": "suite",
    "WebShopTask": "task",
    "Outcome": "task",
    "load_webshop_tasks": "task",
    "task_outcome": "task",
    "webshop_metrics": "task",
    "POLICIES": "policies",
    "ChoicePolicy": "policies",
    "FirstPolicy": "policies",
    "resolve_policy": "policies",
    "VERIFIERS": "verifiers",
    "judge_purchase": "verifiers",
    "oracle_verdict": "verifiers",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
