"""Evaluations: Text2SQL data loading (Spider layout or JSONL), difficulty buckets, execution accuracy."""

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
    results_match,
    score_one,
    score_predictions,
)
from agentloop.evals.spider_hardness import DIFFICULTIES, Difficulty, spider_difficulty

__all__ = [
    "DIFFICULTIES",
    "DatasetError",
    "Difficulty",
    "EvalReport",
    "ExampleResult",
    "PredictionMismatchError",
    "Text2SQLExample",
    "default_spider_dir",
    "load_jsonl_examples",
    "load_spider",
    "load_text2sql",
    "results_match",
    "score_one",
    "score_predictions",
    "spider_difficulty",
]
