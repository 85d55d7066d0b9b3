"""Runs: how a suite's tasks are executed (the run spec, the runner, progress, and the local and Ray executors).

Names load on first use, so that reading a :class:`RunSpec` loads no graph or engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EXECUTORS": "spec",
    "RESULT_KEYS": "spec",
    "STORED_DEFAULTS": "spec",
    "RunSpec": "spec",
    "RunSummary": "spec",
    "RunAbortedError": "runner",
    "default_run_dir": "runner",
    "memory_run_id": "runner",
    "run_suite": "runner",
    "run_suite_sync": "runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentloop.runs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"agentloop.runs.{module}"), name)
    globals()[name] = value
    return value
