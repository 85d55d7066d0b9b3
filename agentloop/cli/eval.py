"""``agentloop eval``: score a predictions file against a benchmark and print the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentloop.cli._common import friendly_errors

if TYPE_CHECKING:
    from agentloop.suites.text2sql.execution import EvalReport

__all__ = ["eval_app", "eval_command"]

eval_app = typer.Typer(no_args_is_help=True, help="Score predictions against a benchmark.")


@eval_app.command("text2sql")
@friendly_errors
def eval_text2sql(
    predictions: Annotated[
        Path,
        typer.Option("--predictions", help="One SQL per line in dataset order ('SQL<TAB>db_id' allowed)."),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Spider dir, Spider-style .json or .jsonl (default: shipped Spider dev)."
        ),
    ] = None,
    keep_distinct: Annotated[
        bool, typer.Option("--keep-distinct", help="Do not strip DISTINCT before comparing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Cap in seconds on any query (official: 60); a prediction gets max(1, 20 x its gold's time).",
        ),
    ] = 60.0,
) -> None:
    """Score a prediction file by execution accuracy (official Spider semantics)."""
    eval_command(data, predictions, keep_distinct=keep_distinct, as_json=as_json, timeout_s=timeout)


def eval_command(
    data: Path | None,
    predictions: Path,
    keep_distinct: bool = False,
    as_json: bool = False,
    timeout_s: float | None = None,
) -> EvalReport:
    """Load the dataset (``None``: the packaged Spider dev subset), score ``predictions`` and print.

    ``as_json`` prints ``{"execution_accuracy": float, "results": [...]}`` on stdout; otherwise a
    table of accuracy by Spider difficulty. ``timeout_s`` defaults to the official 60 s cap.
    """
    # Here, not at the top: the scorer imports sqlglot, which every other command would wait for.
    from agentloop.suites.text2sql.data import load_text2sql
    from agentloop.suites.text2sql.execution import DEFAULT_TIMEOUT_S, read_predictions, score_predictions

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
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            on_progress=lambda done, _total: progress.update(task, completed=done),
        )
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        _print_table(report, Console())
    return report


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
