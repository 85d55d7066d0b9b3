"""Execution accuracy for Text2SQL with the semantics of Spider's official evaluator.

This follows ``exec_eval.py`` from taoyds/test-suite-sql-eval run with its default flags:

- ``> =``, ``< =`` and ``! =`` are closed up in both queries before they run;
- only the first statement of each query runs, as ``sqlparse`` splits it (the official DISTINCT
  removal rebuilds the query from ``sqlparse.parse(sql)[0]``), so ``SELECT ...; LIMIT 1`` is
  scored as ``SELECT ...``; with ``keep_distinct=True`` no such step runs, and a text that
  Python's ``sqlite3`` refuses (a second statement after the first) scores 0;
- DISTINCT is removed from both queries (everywhere, ``COUNT(DISTINCT x)`` included, as the
  official script does) unless ``keep_distinct=True``;
- results are compared as multisets of rows, up to a permutation of columns, matched by content;
- row order counts only when the gold query contains ORDER BY; two empty results are equal;
- a prediction that raises an error (or times out) scores 0.

Differences, on purpose: queries run through the read-only sandbox (``agentloop.tools.sql``), so
a prediction that writes fails instead of changing the database; only the example's own database
is used (the test-suite variant also runs every other ``*.sqlite`` in that folder); text that is
not valid UTF-8 is decoded with replacement characters instead of being dropped; a prediction
with no statement to run (empty, or a first statement that is only ``;`` or comments) scores 0,
where the official runs the empty text and counts it right when the gold result is empty. Each
prediction may run for ``max(1 s, 20 x`` its gold query's time), at most ``timeout_s``, where
the official allows every query 60 s (see ``prediction_time_limit``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokens import TokenType
from sqlparse.engine import FilterStack

from agentloop.errors import AgentloopError
from agentloop.suites.text2sql.data import DatasetError, Text2SQLExample
from agentloop.suites.text2sql.hardness import DIFFICULTIES, Difficulty
from agentloop.tools.sql import SQLValue, run_sql_sync

__all__ = [
    "DifficultyScore",
    "EvalReport",
    "ExampleResult",
    "PredictionMismatchError",
    "executed_text",
    "first_statement",
    "gold_order_matters",
    "has_second_statement",
    "normalize_comparisons",
    "official_prediction_text",
    "prediction_time_limit",
    "read_predictions",
    "remove_distinct",
    "results_match",
    "score_one",
    "score_predictions",
]

Row = tuple[SQLValue, ...]
ProgressCallback = Callable[[int, int], None]

# The official script allows 60 s per query; here it is the cap on every query.
DEFAULT_TIMEOUT_S = 60.0
# A prediction may run GOLD_TIME_FACTOR times as long as its gold query, and never less than
# MIN_LIMIT_S: the slowest shipped Spider gold takes about 3 ms (benchmarks/bench_spider_eval.py),
# so a correct prediction has a wide margin, while a runaway one (an unbounded recursive CTE, a
# cross join of a table with itself six times) is stopped after a second instead of a minute.
GOLD_TIME_FACTOR = 20.0
MIN_LIMIT_S = 1.0
# Far above any Spider gold result; it bounds memory when a prediction is a huge cross join.
DEFAULT_MAX_ROWS = 100_000
# A db_id after a prediction's tab, as the official prediction files write it.
_DB_ID = re.compile(r"\w+")


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
    min_limit_s: float = MIN_LIMIT_S,
    gold_factor: float = GOLD_TIME_FACTOR,
    max_rows: int = DEFAULT_MAX_ROWS,
    on_progress: ProgressCallback | None = None,
) -> EvalReport:
    """Score one predicted query per example by execution accuracy; queries run in a thread pool.

    Each prediction's time limit is ``prediction_time_limit`` of its gold query's time; pass
    ``min_limit_s=timeout_s`` for the official flat limit. ``on_progress(done, total)`` is called
    from the calling thread after each example.
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
    # Queries release the GIL while SQLite runs them; count the cores this process may use.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max_workers or min(16, cores + 4)
    limits = {"timeout_s": timeout_s, "min_limit_s": min_limit_s, "gold_factor": gold_factor}
    results: list[ExampleResult | None] = [None] * len(examples)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="text2sql-eval") as pool:
        futures = {
            pool.submit(score_one, ex, pred, keep_distinct, max_rows=max_rows, **limits): i
            for i, (ex, pred) in enumerate(zip(examples, predictions, strict=True))
        }
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if on_progress is not None:
                on_progress(done, len(examples))
    final = [r for r in results if r is not None]
    accuracy = sum(r.correct for r in final) / len(final) if final else 0.0
    return EvalReport(execution_accuracy=accuracy, results=final)


def read_predictions(path: Path, examples: list[Text2SQLExample]) -> list[str]:
    """One SQL query per line, in dataset order; a line may be ``SQL<TAB>db_id`` as in official files.

    Like the official reader, only the text before a line's first tab is the prediction.
    Every line is one prediction, so a blank line is an empty prediction (it scores 0;
    the official reader drops blank lines and then fails on the count).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"predictions file not found: {path}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"predictions file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read predictions file {path}: {exc.strerror}") from None
    lines = text.splitlines()
    if len(lines) != len(examples):
        blank_tail = len(lines) - len(text.rstrip().splitlines()) if text.strip() else len(lines)
        hint = f" (the last {blank_tail} of them blank)" if blank_tail else ""
        raise PredictionMismatchError(
            f"{path} has {len(lines)} lines{hint} but the dataset has {len(examples)} "
            "examples; write one SQL query per line, in dataset order"
        )
    preds: list[str] = []
    for lineno, (line, example) in enumerate(zip(lines, examples, strict=True), start=1):
        # As the official evaluation.py reads a line: stripped, then the text before the first tab.
        sql, _, tail = line.strip().partition("\t")
        db_id = tail.strip().split("\t", 1)[0]
        if db_id and _DB_ID.fullmatch(db_id) and db_id != example.db_id:
            raise PredictionMismatchError(
                f"{path}:{lineno}: the prediction is for database '{db_id}' but example "
                f"{example.index} uses '{example.db_id}'; keep predictions in dataset order"
            )
        preds.append(sql.strip())
    return preds


def official_prediction_text(prediction: str) -> str:
    """The prediction as the official ``evaluation.py`` hands it to execution.

    Before anything runs, it replaces every lowercase ``value`` in the prediction (not the
    gold) with ``1``: a leftover of Spider's value-free predictions, kept so that verdicts
    agree. A prediction that names a column ``value`` in lowercase therefore fails, there
    and here.
    """
    return prediction.replace("value", "1")


def score_one(
    example: Text2SQLExample,
    prediction: str,
    keep_distinct: bool = False,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    min_limit_s: float = MIN_LIMIT_S,
    gold_factor: float = GOLD_TIME_FACTOR,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ExampleResult:
    """Run the gold and the predicted query on the example's database and compare the results.

    The gold runs first, under ``timeout_s``; the prediction then gets its own clock, with the
    limit ``prediction_time_limit`` derives from the gold's run time.
    """

    def result(correct: bool, error: str | None = None) -> ExampleResult:
        return ExampleResult(example.index, example.db_id, correct, error, example.difficulty)

    if example.gold_sql is None:
        return result(False, "no gold SQL for this example")
    gold_sql = executed_text(example.gold_sql, keep_distinct)
    pred_sql = executed_text(official_prediction_text(prediction), keep_distinct)

    gold = run_sql_sync(example.db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    if gold.error is not None:
        return result(False, f"gold query failed: {gold.error}")
    if gold.truncated:
        return result(False, f"gold query returned more than {max_rows} rows; raise max_rows")
    if keep_distinct and has_second_statement(pred_sql):
        # Python's sqlite3 refuses the whole text, so the official scores it 0 without running it.
        return result(
            False,
            "more than one SQL statement: with keep_distinct the official evaluator runs the whole "
            "text, which sqlite3 refuses; send a single query",
        )
    limit = prediction_time_limit(gold.elapsed_s, timeout_s, min_limit_s=min_limit_s, factor=gold_factor)
    pred = run_sql_sync(example.db_path, pred_sql, timeout_s=limit, max_rows=max_rows)
    if pred.error is not None:
        if pred.error_kind == "timeout" and limit < timeout_s:
            return result(
                False,
                f"{pred.error} (the limit is max({min_limit_s:g} s, {gold_factor:g} x the gold "
                f"query's {gold.elapsed_s:.3f} s), at most {timeout_s:g} s)",
            )
        return result(False, pred.error)
    if pred.truncated:  # more rows than the gold result has, so it cannot match
        return result(False)
    return result(results_match(gold.rows, pred.rows, order_matters=gold_order_matters(gold_sql)))


def prediction_time_limit(
    gold_elapsed_s: float,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    min_limit_s: float = MIN_LIMIT_S,
    factor: float = GOLD_TIME_FACTOR,
) -> float:
    """Seconds a prediction may run: ``factor`` times its gold's run time, at least ``min_limit_s``,
    at most ``timeout_s``."""
    return min(timeout_s, max(min_limit_s, factor * gold_elapsed_s))


def executed_text(sql: str, keep_distinct: bool = False) -> str:
    """The text the official evaluator executes for ``sql``: comparisons closed up, then (unless
    ``keep_distinct``) the first statement only, with DISTINCT removed."""
    sql = normalize_comparisons(sql)
    return sql if keep_distinct else remove_distinct(first_statement(sql))


def first_statement(sql: str) -> str:
    """The first statement of ``sql`` as ``sqlparse`` splits it, verbatim ('' if there is none).

    It keeps its ``;`` and what follows up to the next statement (whitespace, ``--`` comments), as
    the official ``remove_distinct`` does when it joins the tokens of ``sqlparse.parse(sql)[0]``.
    """
    # FilterStack without grouping splits exactly as sqlparse.parse does, lazily and faster.
    for statement in FilterStack().run(sql):
        return str(statement)
    return ""


# How Python's sqlite3 (3.11+) checks the text after the first statement: only these spaces,
# ``--`` comments up to a newline and ``/* */`` comments (unterminated allowed) may follow.
_SQLITE_TAIL_OK = re.compile(r"(?:[ \t\f\n\r]+|--[^\n]*(?:\n|\Z)|/\*(?:(?!\*/).)*(?:\*/|\Z))*\Z", re.DOTALL)
# SQLite's tokens that can hold a ';' without ending the statement, then single characters.
_SQLITE_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)|[^'"`\[;/-]+|.""",
    re.DOTALL,
)


def has_second_statement(sql: str) -> bool:
    """Whether Python's ``sqlite3`` would refuse ``sql`` with "You can only execute one statement
    at a time": after the first statement's ``;`` comes more than whitespace and comments.

    Empty statements before the first one (a leading ``;``) are skipped, as SQLite skips them.
    """
    has_code = False
    for token in _SQLITE_TOKEN.finditer(sql):
        text = token.group()
        if text == ";":
            if has_code:
                return _SQLITE_TAIL_OK.match(sql, token.end()) is None
        elif not (text.isspace() or text.startswith(("--", "/*"))):
            has_code = True
    return False


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
