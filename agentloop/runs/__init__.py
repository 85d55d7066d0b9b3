"""Runs: how a suite's tasks are executed (the run spec, the runner, progress, and the local and Ray executors).

Names load on first use, so that reading a :class:`RunSpec` loads no graph or engine.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY)
