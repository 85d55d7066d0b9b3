"""``agentloop report``: summarize and compare stored runs, or list the runs in a database."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentloop.cli._common import err, friendly_errors, print_json
from agentloop.errors import AgentloopError

__all__ = ["STORE_HELP", "report"]

STORE_HELP = (
    "A run store database (postgresql://USER:PASS@HOST/DB or sqlite:///PATH; default: AGENTLOOP_STORE_URL): "
    "runs not found as run dirs are read there by name, and it gives the password of run dirs whose "
    "runs are there."
)


@friendly_errors
def report(
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="RUN...",
            help="Run directories written by agentloop run, or runs' names in --store; runs after "
            "the first are compared with it, as --compare does.",
        ),
    ] = None,
    compare: Annotated[
        list[Path] | None,
        typer.Option("--compare", help="Another run dir (or run name in --store) to compare (repeatable)."),
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help=f"{STORE_HELP} Alone, it lists the runs there.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write a chart to this .png, .svg or .pdf: with --frontier, accuracy vs compute and the "
            "frontier; else accuracy vs tokens per task (needs agentloop\\[plot]).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics and per-task results as JSON.")
    ] = False,
    errors: Annotated[
        bool, typer.Option("--errors", help="List every failed task with its whole error message.")
    ] = False,
    frontier: Annotated[
        bool,
        typer.Option(
            "--frontier",
            help="Accuracy vs compute: each sampling run's curve over k, other runs as points, the Pareto "
            "frontier, one table per suite (--plot draws it).",
        ),
    ] = False,
    matched: Annotated[
        bool,
        typer.Option(
            "--matched",
            help="With --compare: compare each run with the first run's curve at the other's own mean cost.",
        ),
    ] = False,
    cost: Annotated[
        str,
        typer.Option(
            "--cost",
            help="Compute axis for --frontier/--matched: tokens, completion, candidates, calls, usd.",
        ),
    ] = "candidates",
    rescore: Annotated[
        bool,
        typer.Option(
            "--rescore",
            help="With --frontier/--matched: first score offline the stored candidates of runs stored "
            "before candidates kept their official scores, and save those scores in the run's store.",
        ),
    ] = False,
    vote: Annotated[
        bool,
        typer.Option(
            "--vote",
            help="With --frontier/--matched: also draw each best_of_n run's candidates picked by majority "
            "vote (what self_consistency with the same n and seed samples); their vote keys are added "
            "offline and saved in the run's store.",
        ),
    ] = False,
) -> None:
    """Summarize runs: accuracy overall and by difficulty, verifier passes, tokens and latency per task."""
    from agentloop.records.render import plot_reports, render_reports
    from agentloop.records.report import RunReport, check_comparable, reports_json

    if not run_dirs:
        _list_runs(store, compare, as_json)
        return
    reports = [RunReport.load(d, store=store) for d in [*run_dirs, *(compare or [])]]
    if errors:
        _list_errors(reports, as_json)
        return
    if cost != "candidates" and not (frontier or matched):
        raise AgentloopError("--cost sets the compute axis of --frontier and --matched: give one of them")
    if rescore and not (frontier or matched):
        raise AgentloopError(
            "--rescore scores stored candidates for --frontier and --matched: give one of them"
        )
    if vote and not (frontier or matched):
        raise AgentloopError("--vote adds vote curves to --frontier and --matched: give one of them")
    if plot is not None and matched and not frontier:
        raise AgentloopError("--plot draws the --frontier chart; --matched alone has none: add --frontier")
    if frontier or matched:
        from agentloop.cli._curves import curves_report

        curves_report(
            reports,
            frontier=frontier,
            matched=matched,
            cost=cost,
            store=store,
            plot=plot,
            as_json=as_json,
            rescore=rescore,
            vote=vote,
        )
        return
    check_comparable(reports)
    if plot is not None:
        written = plot_reports(reports, plot)
        err.print(f"[dim]plot: {written}[/]", highlight=False)
    if as_json:
        print_json(reports_json(reports))
    else:
        render_reports(reports, Console())


def _list_errors(reports: list[Any], as_json: bool) -> None:
    """``agentloop report RUN --errors``: each failed task and its message, in task order."""
    if as_json:
        print_json(
            {
                "runs": [
                    {
                        "run_dir": str(r.run_dir),
                        "errors": [{"task_id": t.task_id, "error": t.error} for t in r.failed_tasks()],
                    }
                    for r in reports
                ]
            }
        )
        return
    console = Console()
    for r in reports:
        failed = r.failed_tasks()
        console.print(f"[bold]{r.label}[/]: {len(failed)} of {len(r.tasks)} tasks failed", highlight=False)
        for t in failed:
            console.print(f"{t.task_id}: {t.error}", highlight=False, markup=False, soft_wrap=True)


def _list_runs(store: str | None, compare: list[Path] | None, as_json: bool) -> None:
    """``agentloop report --store URL``: the runs in that database, newest first."""
    import os
    from dataclasses import asdict

    from agentloop.errors import AgentloopError
    from agentloop.records.store import STORE_ENV, RunStore

    url = store or os.environ.get(STORE_ENV)
    if url is None or compare:
        raise AgentloopError(
            "give a run dir (or a run's name with --store URL), or --store URL alone to list the runs there"
        )
    with RunStore(url, create=False) as opened:
        runs = opened.runs()
        where = opened.safe_url
    if as_json:
        print_json({"store": where, "runs": [asdict(r) for r in runs]})
        return
    table = Table(title=f"runs in {where}", title_justify="left")
    for column in ("run", "suite", "graph", "backend", "tasks", "updated"):
        table.add_column(column, justify="right" if column == "tasks" else "left")
    for r in runs:
        updated = datetime.datetime.fromtimestamp(r.updated).strftime("%Y-%m-%d %H:%M")
        table.add_row(r.name, r.suite, r.graph, r.backend, f"{r.tasks}/{r.planned}", updated)
    Console().print(table)
    if not runs:
        err.print("[dim]no runs yet[/]")
