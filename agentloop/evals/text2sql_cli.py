"""``agentloop eval text2sql``: score a predictions file by execution accuracy and print the result."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentloop.evals.spider_data import DatasetError, Text2SQLExample, load_text2sql
from agentloop.evals.spider_exec import (
    DEFAULT_TIMEOUT_S,
    EvalReport,
    PredictionMismatchError,
    score_predictions,
)

__all__ = ["eval_command", "read_predictions"]

_DB_ID = re.compile(r"\w+")


def eval_command(
    data: Path | None,
    predictions: Path,
    keep_distinct: bool = False,
    as_json: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> EvalReport:
    """Load the dataset (``None``: the packaged Spider dev subset), score ``predictions`` and print.

    ``as_json`` prints ``{"execution_accuracy": float, "results": [...]}`` on stdout; otherwise a
    table of accuracy by Spider difficulty.
    """
    examples = load_text2sql(data)
    preds = read_predictions(predictions, examples)
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        task = progress.add_task("scoring", total=len(examples))
        report = score_predictions(
            examples,
            preds,
            keep_distinct=keep_distinct,
            timeout_s=timeout_s,
            on_progress=lambda done, _total: progress.update(task, completed=done),
        )
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        _print_table(report, Console())
    return report


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


def _print_table(report: EvalReport, console: Console) -> None:
    table = Table(title="Text2SQL execution accuracy")
    table.add_column("difficulty")
    table.add_column("examples", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("accuracy", justify="right")
    scores = report.by_difficulty()
    for level, score in scores.items():
        style = "bold" if level == "all" else None
        table.add_row(level, str(score.total), str(score.correct), f"{score.accuracy:.3f}", style=style)
    console.print(table)
    failed = sum(1 for r in report.results if r.error is not None)
    if failed:
        console.print(
            f"{failed} of {len(report.results)} predictions could not be scored (errors); see --json"
        )
