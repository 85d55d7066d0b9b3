"""The ``text2sql`` suite: Spider data, difficulty buckets, execution accuracy, the SQL grammar, task and verifiers.

Scoring a predictions file (:func:`score_predictions`) loads no graph; the task, the
verifiers and the suite load on first use.
"""

from __future__ import annotations

from agentloop._lazy import lazy_getattr
from agentloop.errors import DatasetError
from agentloop.suites.text2sql.data import (
    Text2SQLExample,
    default_spider_dir,
    load_jsonl_examples,
    load_spider,
    load_text2sql,
)
from agentloop.suites.text2sql.execution import (
    EvalReport,
    ExampleResult,
    PredictionMismatchError,
    read_predictions,
    results_match,
    score_one,
    score_predictions,
)
from agentloop.suites.text2sql.hardness import DIFFICULTIES, Difficulty, spider_difficulty

_LAZY = {
    "Text2SQLSuite": "suite",
    "Text2SQLTask": "task",
    "extract_sql": "task",
    "VERIFIERS": "verifiers",
    "ExecVerifier": "verifiers",
    "JudgeVerifier": "verifiers",
    "OracleVerifier": "verifiers",
    "Text2SQLVerifier": "verifiers",
    "make_verifier": "verifiers",
    "schema_grammar": "grammar",
    "sql_accepted": "grammar",
}

__all__ = [
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
    "Text2SQLSuite",
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
    "schema_grammar",
    "score_one",
    "score_predictions",
    "spider_difficulty",
    "sql_accepted",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
