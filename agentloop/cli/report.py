"""``agentloop report``: summarize and compare stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentloop.cli._common import err, friendly_errors, print_json

__all__ = ["report"]


@friendly_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by agentloop run.")],
    compare: Annotated[
        list[Path] | None, typer.Option("--compare", help="Another run dir to compare (repeatable).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write accuracy vs tokens per task to this .png (needs agentloop[plot])."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics and per-task results as JSON.")
    ] = False,
) -> None:
    """Summarize runs: accuracy overall and by difficulty, verifier passes, tokens and latency per task."""
    from agentloop.evals.report import (
        RunReport,
        check_comparable,
        plot_reports,
        render_reports,
        reports_json,
    )

    reports = [RunReport.load(d) for d in [run_dir, *(compare or [])]]
    check_comparable(reports)
    if plot is not None:
        written = plot_reports(reports, plot)
        err.print(f"[dim]plot: {written}[/]", highlight=False)
    if as_json:
        print_json(reports_json(reports))
    else:
        render_reports(reports, Console())
