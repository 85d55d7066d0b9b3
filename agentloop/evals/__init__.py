"""Deprecated: ``agentloop.evals`` was split into :mod:`agentloop.suites`, :mod:`agentloop.runs` and :mod:`agentloop.records`.

Its names and modules still import from here for one release, with a ``DeprecationWarning``
that names the new place.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

# Old module -> new module.
MOVED_MODULES: dict[str, str] = {
    "suites": "agentloop.suites._registry",
    "run_spec": "agentloop.runs.spec",
    "runner": "agentloop.runs.runner",
    "run_store": "agentloop.records.store",
    "report": "agentloop.records.report",
    "spider_data": "agentloop.suites.text2sql.data",
    "spider_exec": "agentloop.suites.text2sql.execution",
    "spider_hardness": "agentloop.suites.text2sql.hardness",
    "sql_grammar": "agentloop.suites.text2sql.grammar",
    "text2sql_task": "agentloop.suites.text2sql.task",
    "text2sql_verifiers": "agentloop.suites.text2sql.verifiers",
    "webshop_suite": "agentloop.suites.webshop.suite",
    "webshop_task": "agentloop.suites.webshop.task",
}

# Old ``agentloop.evals.NAME`` -> the public module that has it now.
MOVED_NAMES: dict[str, str] = {
    **dict.fromkeys(
        ["Score", "Suite", "SuiteItem", "content_hash", "get_suite", "SUITES", "WebShopSuite"],
        "agentloop.suites",
    ),
    **dict.fromkeys(["RunSpec", "RunSummary", "run_suite", "run_suite_sync"], "agentloop.runs"),
    **dict.fromkeys(["RunStore", "RunReport"], "agentloop.records"),
    **dict.fromkeys(
        [
            "DIFFICULTIES",
            "VERIFIERS",
            "DatasetError",
            "Difficulty",
            "EvalReport",
            "ExampleResult",
            "ExecVerifier",
            "JudgeVerifier",
            "OracleVerifier",
            "PredictionMismatchError",
            "Text2SQLExample",
            "Text2SQLTask",
            "Text2SQLVerifier",
            "default_spider_dir",
            "extract_sql",
            "load_jsonl_examples",
            "load_spider",
            "load_text2sql",
            "make_verifier",
            "read_predictions",
            "results_match",
            "score_one",
            "score_predictions",
            "spider_difficulty",
        ],
        "agentloop.suites.text2sql",
    ),
    "WebShopTask": "agentloop.suites.webshop",
}

__all__ = sorted(MOVED_NAMES)


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path goes away in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


def __getattr__(name: str) -> Any:
    if name in MOVED_NAMES:
        new = MOVED_NAMES[name]
        _warn(f"agentloop.evals.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)
    if name in MOVED_MODULES:
        return importlib.import_module(f"agentloop.evals.{name}")
    raise AttributeError(f"module 'agentloop.evals' has no attribute {name!r}")


def redirect(module: str) -> None:
    """Make the old module ``agentloop.evals.X`` the new one it moved to (its shim calls this)."""
    new = MOVED_MODULES[module.rpartition(".")[2]]
    _warn(module, new)
    sys.modules[module] = importlib.import_module(new)
