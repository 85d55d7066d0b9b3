"""Evaluations: Text2SQL data, difficulty buckets, execution accuracy, and suite runs with a run store.

The run machinery (tasks, verifiers, runner, store, reports) loads on first use, so that
scoring a predictions file does not import the graphs.
"""

from __future__ import annotations

import importlib
from typing import Any

from agentloop.evals.spider_data import (
    DatasetError,
    Text2SQLExample,
    default_spider_dir,
    load_jsonl_examples,
    load_spider,
    load_text2sql,
)
from agentloop.evals.spider_exec import (
    EvalReport,
    ExampleResult,
    PredictionMismatchError,
    read_predictions,
    results_match,
    score_one,
    score_predictions,
)
from agentloop.evals.spider_hardness import DIFFICULTIES, Difficulty, spider_difficulty

_LAZY = {
    "Text2SQLTask": "text2sql_task",
    "extract_sql": "text2sql_task",
    "VERIFIERS": "text2sql_verifiers",
    "ExecVerifier": "text2sql_verifiers",
    "JudgeVerifier": "text2sql_verifiers",
    "OracleVerifier": "text2sql_verifiers",
    "Text2SQLVerifier": "text2sql_verifiers",
    "make_verifier": "text2sql_verifiers",
    "SUITES": "suites",
    "Suite": "suites",
    "SuiteItem": "suites",
    "Score": "suites",
    "content_hash": "suites",
    "WebShopSuite": "webshop_suite",
    "WebShopTask": "webshop_task",
    "get_suite": "suites",
    "RunSpec": "run_spec",
    "RunSummary": "run_spec",
    "run_suite": "runner",
    "run_suite_sync": "runner",
    "RunStore": "run_store",
    "RunReport": "report",
}

__all__ = [
    "DIFFICULTIES",
    "SUITES",
    "VERIFIERS",
    "DatasetError",
    "Difficulty",
    "EvalReport",
    "ExampleResult",
    "ExecVerifier",
    "JudgeVerifier",
    "OracleVerifier",
    "PredictionMismatchError",
    "RunReport",
    "RunSpec",
    "RunStore",
    "RunSummary",
    "Score",
    "Suite",
    "SuiteItem",
    "Text2SQLExample",
    "Text2SQLTask",
    "Text2SQLVerifier",
    "WebShopSuite",
    "WebShopTask",
    "content_hash",
    "default_spider_dir",
    "extract_sql",
    "get_suite",
    "load_jsonl_examples",
    "load_spider",
    "load_text2sql",
    "make_verifier",
    "read_predictions",
    "results_match",
    "run_suite",
    "run_suite_sync",
    "score_one",
    "score_predictions",
    "spider_difficulty",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentloop.evals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"agentloop.evals.{module}"), name)
    globals()[name] = value
    return value
