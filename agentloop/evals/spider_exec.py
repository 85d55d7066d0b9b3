"""Execution accuracy for Text2SQL with the semantics of Spider's official evaluator.

This follows ``exec_eval.py`` from taoyds/test-suite-sql-eval run with its default flags:

- ``> =``, ``< =`` and ``! =`` are closed up in both queries before they run;
- DISTINCT is removed from both queries (everywhere, ``COUNT(DISTINCT x)`` included, as the
  official script does) unless ``keep_distinct=True``;
- results are compared as multisets of rows, up to a permutation of columns, matched by content;
- row order counts only when the gold query contains ORDER BY; two empty results are equal;
- a prediction that raises an error (or times out) scores 0.

Differences, on purpose: queries run through the read-only sandbox (``agentloop.tools.sql``), so
a prediction that writes fails instead of changing the database; only the example's own database
is used (the test-suite variant also runs every other ``*.sqlite`` in that folder); text that is
not valid UTF-8 is decoded with replacement characters instead of being dropped.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokens import TokenType

from agentloop.errors import AgentloopError
from agentloop.evals.spider_data import Text2SQLExample
from agentloop.evals.spider_hardness import DIFFICULTIES, Difficulty
from agentloop.tools.sql import SQLValue, run_sql_sync

__all__ = [
    "DifficultyScore",
    "EvalReport",
    "ExampleResult",
    "PredictionMismatchError",
    "gold_order_matters",
    "normalize_comparisons",
    "remove_distinct",
    "results_match",
    "score_one",
    "score_predictions",
]

Row = tuple[SQLValue, ...]
ProgressCallback = Callable[[int, int], None]

# The official script allows 60 s per query.
DEFAULT_TIMEOUT_S = 60.0
# Far above any Spider gold result; it bounds memory when a prediction is a huge cross join.
DEFAULT_MAX_ROWS = 100_000


class PredictionMismatchError(AgentloopError, ValueError):
    """The predictions do not line up with the examples."""


@dataclass(frozen=True, slots=True)
class ExampleResult:
    index: int
    db_id: str
    correct: bool
    error: str | None  # why the prediction (or the gold query) could not be scored
    difficulty: Difficulty | None = None


@dataclass(frozen=True, slots=True)
class DifficultyScore:
    total: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class EvalReport:
    execution_accuracy: float
    results: list[ExampleResult]

    def by_difficulty(self) -> dict[str, DifficultyScore]:
        """Scores per Spider difficulty (only those that occur) and ``"all"``."""
        out: dict[str, DifficultyScore] = {}
        for level in (*DIFFICULTIES, None):
            subset = [r for r in self.results if r.difficulty == level]
            if subset:
                out[level or "unknown"] = DifficultyScore(len(subset), sum(r.correct for r in subset))
        out["all"] = DifficultyScore(len(self.results), sum(r.correct for r in self.results))
        return out

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape: accuracy plus ``index, db_id, correct, error`` per example."""
        return {
            "execution_accuracy": self.execution_accuracy,
            "results": [
                {"index": r.index, "db_id": r.db_id, "correct": r.correct, "error": r.error}
                for r in self.results
            ],
        }


def score_predictions(
    examples: Sequence[Text2SQLExample],
    predictions: Sequence[str],
    keep_distinct: bool = False,
    *,
    max_workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    on_progress: ProgressCallback | None = None,
) -> EvalReport:
    """Score one predicted query per example by execution accuracy; queries run in a thread pool.

    ``on_progress(done, total)`` is called from the calling thread after each example.
    """
    if len(predictions) != len(examples):
        raise PredictionMismatchError(
            f"got {len(predictions)} predictions for {len(examples)} examples; give exactly one per "
            "example, in dataset order"
        )
    no_gold = [e.index for e in examples if not e.gold_sql]
    if no_gold:
        shown = ", ".join(map(str, no_gold[:5])) + (", ..." if len(no_gold) > 5 else "")
        raise PredictionMismatchError(
            f"{len(no_gold)} example(s) have no gold SQL to compare against (indexes {shown})"
        )
    workers = max_workers or min(16, (os.cpu_count() or 1) + 4)
    results: list[ExampleResult | None] = [None] * len(examples)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="text2sql-eval") as pool:
        futures = {
            pool.submit(score_one, ex, pred, keep_distinct, timeout_s=timeout_s, max_rows=max_rows): i
            for i, (ex, pred) in enumerate(zip(examples, predictions, strict=True))
        }
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if on_progress is not None:
                on_progress(done, len(examples))
    final = [r for r in results if r is not None]
    accuracy = sum(r.correct for r in final) / len(final) if final else 0.0
    return EvalReport(execution_accuracy=accuracy, results=final)


def score_one(
    example: Text2SQLExample,
    prediction: str,
    keep_distinct: bool = False,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ExampleResult:
    """Run the gold and the predicted query on the example's database and compare the results."""

    def result(correct: bool, error: str | None = None) -> ExampleResult:
        return ExampleResult(example.index, example.db_id, correct, error, example.difficulty)

    if example.gold_sql is None:
        return result(False, "no gold SQL for this example")
    gold_sql = normalize_comparisons(example.gold_sql)
    pred_sql = normalize_comparisons(prediction)
    if not keep_distinct:
        gold_sql, pred_sql = remove_distinct(gold_sql), remove_distinct(pred_sql)

    gold = run_sql_sync(example.db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    if gold.error is not None:
        return result(False, f"gold query failed: {gold.error}")
    if gold.truncated:
        return result(False, f"gold query returned more than {max_rows} rows; raise max_rows")
    pred = run_sql_sync(example.db_path, pred_sql, timeout_s=timeout_s, max_rows=max_rows)
    if pred.error is not None:
        return result(False, pred.error)
    if pred.truncated:  # more rows than the gold result has, so it cannot match
        return result(False)
    return result(results_match(gold.rows, pred.rows, order_matters=gold_order_matters(gold_sql)))


_SPACED_COMPARISON = re.compile(r"([<>!])\s+=")


def normalize_comparisons(sql: str) -> str:
    """Close up comparison operators split by spaces: ``> =`` to ``>=``, likewise ``< =`` and ``! =``."""
    return _SPACED_COMPARISON.sub(r"\1=", sql)


def remove_distinct(sql: str) -> str:
    """Drop every DISTINCT keyword (not ``IS [NOT] DISTINCT FROM``), leaving strings alone."""
    try:
        tokens = SQLite().tokenize(sql)
    except sqlglot.errors.SqlglotError:
        # Unterminated quotes and the like: the query will fail anyway; do what the official does.
        return re.sub(r"\bdistinct\b", " ", sql, flags=re.IGNORECASE)
    spans = []
    for i, token in enumerate(tokens):
        if token.token_type != TokenType.DISTINCT:
            continue
        before = [t.token_type for t in tokens[max(0, i - 2) : i]]
        if before[-1:] == [TokenType.IS] or before == [TokenType.IS, TokenType.NOT]:
            continue
        spans.append((token.start, token.end + 1))
    for start, end in reversed(spans):
        sql = sql[:start] + " " + sql[end:]
    return sql


def gold_order_matters(gold_sql: str) -> bool:
    """True when the gold query has an ORDER BY anywhere (the official check is a substring test)."""
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return re.search(r"\border\s+by\b", gold_sql, flags=re.IGNORECASE) is not None
    return tree.find(exp.Order) is not None


def results_match(gold: Sequence[Row], pred: Sequence[Row], order_matters: bool) -> bool:
    """Whether ``pred`` equals ``gold`` as a multiset (or list) of rows under some column permutation."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    n_cols = len(gold[0])
    gold_cols = list(zip(*gold, strict=True))
    pred_cols = list(zip(*pred, strict=True))
    if order_matters:
        # Row i must map to row i, so each gold column must equal some predicted column outright.
        return Counter(gold_cols) == Counter(pred_cols)

    # A predicted column can stand for a gold column only if their values agree as multisets.
    gold_counts = [Counter(c) for c in gold_cols]
    pred_counts = [Counter(c) for c in pred_cols]
    candidates = [[j for j in range(n_cols) if pred_counts[j] == gold_counts[i]] for i in range(n_cols)]
    if not all(candidates):
        return False
    # Identical predicted columns are interchangeable: trying one of them is enough.
    column_class: dict[tuple[SQLValue, ...], int] = {}
    class_of = [column_class.setdefault(col, j) for j, col in enumerate(pred_cols)]
    # Prefix projections of the gold rows: after choosing k columns, the chosen predicted columns
    # must give the same multiset of partial rows, which prunes most wrong branches early.
    gold_prefix = [Counter(zip(*gold_cols[: k + 1], strict=True)) for k in range(n_cols)]
    used = [False] * n_cols

    def search(k: int, partial: list[Row]) -> bool:
        if k == n_cols:
            return True
        tried: set[int] = set()
        for j in candidates[k]:
            if used[j] or class_of[j] in tried:
                continue
            tried.add(class_of[j])
            extended = [row + (value,) for row, value in zip(partial, pred_cols[j], strict=True)]
            if Counter(extended) != gold_prefix[k]:
                continue
            used[j] = True
            if search(k + 1, extended):
                return True
            used[j] = False
        return False

    return search(0, [() for _ in pred])
