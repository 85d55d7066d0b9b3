"""``agentloop report --frontier`` and ``--compare --matched``: parse nothing, call records.curves, print.

With ``--rescore``, runs stored before their candidates kept official scores are rescored
offline first (agentloop.runs.rescore), here, where a suite may be loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from agentloop.cli._common import err, print_json
from agentloop.errors import AgentloopError

__all__ = ["curves_report"]


def curves_report(
    reports: list[Any],
    *,
    frontier: bool,
    matched: bool,
    cost: str,
    store: str | None,
    plot: Path | None,
    as_json: bool,
    rescore: bool = False,
    vote: bool = False,
) -> None:
    """Frontier tables and/or compute-matched comparisons of ``reports`` (the first is the base).

    ``vote``: each best_of_n run also gives its majority-vote curve, right after its own
    (compared, with ``matched``, like another run); missing vote keys are added offline first.
    """
    from agentloop.records.curves import COSTS, CURVE_GRAPHS, CurveError, load_curve, load_point
    from agentloop.records.pareto import frontier_json, matched_difference
    from agentloop.records.render import render_reports
    from agentloop.records.render_curves import plot_frontier, render_frontier, render_matched
    from agentloop.records.report import check_comparable, paired_difference, shared_tasks

    if cost not in COSTS:
        raise CurveError(f"unknown --cost {cost!r}; use one of {', '.join(COSTS)}")
    console = Console()
    out: dict[str, Any] = {}
    reports, cut = shared_tasks(reports)
    if cut is not None:
        if as_json:
            out["tasks_note"] = cut
        else:
            err.print(f"[dim]{cut}[/]", highlight=False)
    voters = {i for i, r in enumerate(reports) if vote and CURVE_GRAPHS.get(r.run.graph) == "best"}
    if vote and not voters:
        raise CurveError("--vote draws best_of_n runs' candidates by majority vote: give a best_of_n run")
    # --matched alone reads the other runs at their own spend only: their points, which need no
    # stored official scores even for a sampling run. Only the base (or a frontier) needs curves.
    curved = [frontier or i == 0 for i in range(len(reports))]
    officials = [
        _rescore(r, store, keys=i in voters) if (rescore and curved[i]) or i in voters else None
        for i, r in enumerate(reports)
    ]
    curves, compared = [], []
    for i, (r, o) in enumerate(zip(reports, officials, strict=True)):
        if curved[i]:
            curves.append(load_curve(r, cost=cost, store=store, officials=o))
        else:
            curves.append(load_point(r, cost=cost))
        compared.append(r)
        if i in voters:
            curves.append(load_curve(r, cost=cost, store=store, officials=o, vote=True))
            compared.append(r)
    reports = compared
    if matched and len(reports) < 2:
        raise AgentloopError(
            "--matched compares runs: give one with --compare (or --vote with a best_of_n run)"
        )
    if frontier:
        if plot is not None:
            err.print(f"[dim]plot: {plot_frontier(curves, plot)}[/]", highlight=False)
        if as_json:
            out["frontier"] = frontier_json(curves)
        else:
            render_frontier(curves, console)
    if matched:
        check_comparable(reports)
        base = curves[0]
        rows: list[dict[str, Any]] = []
        for report, curve in zip(reports[1:], curves[1:], strict=True):
            if base.suite != curve.suite:
                raise CurveError(
                    f"runs {base.label} ({base.suite}) and {curve.label} ({curve.suite}) are of other suites"
                )
            if not base.sampled:
                note = f"{base.label} has no curve ({base.graph} is not a sampling run): plain comparison"
                plain = paired_difference(reports[0], report)
                rows.append({**plain.to_json(), "matched": False, "note": note})
                if not as_json:
                    err.print(f"[yellow]{note}[/]", highlight=False)
                    render_reports([reports[0], report], console)
                continue
            d = matched_difference(base, reports[0], curve, report)
            rows.append({**d.to_json(), "matched": True})
            if not as_json:
                render_matched(d, console)
        out["matched"] = rows
    if as_json:
        print_json(out)


def _rescore(
    report: Any, store: str | None, *, keys: bool = False
) -> dict[tuple[str, int], dict[str, Any]] | None:
    """Rescore ``report``'s run where candidates lack official scores (or, with ``keys``, vote keys): a notice, a bar on a terminal, a result line.

    Returns the scores when the store could not keep them (they serve this report only).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from agentloop.runs.rescore import rescore_run_sync

    bar: list[Any] = []

    def on_start(count: int, suite: str) -> None:
        what = "scoring (and adding vote keys to)" if keys else "rescoring"
        err.print(
            f"{what} {count} candidates of {report.label} offline ({suite})…",
            highlight=False,
            soft_wrap=True,
        )
        if err.is_terminal:
            progress = Progress(
                TextColumn(report.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            progress.start()
            bar.extend([progress, progress.add_task("rescore", total=count)])

    def advance(n: int) -> None:
        if bar:
            bar[0].update(bar[1], advance=n)

    try:
        done = rescore_run_sync(
            report.run_dir, store=store, label=report.label, on_start=on_start, advance=advance, keys=keys
        )
    finally:
        if bar:
            bar[0].stop()
    if not done.candidates and not done.failed:
        return None
    failed = f" ({done.failed} could not be scored)" if done.failed else ""
    if done.saved:
        err.print(
            f"[dim]rescored {done.candidates} candidates of {done.run}{failed} (saved in its store)[/]",
            highlight=False,
            soft_wrap=True,
        )
        return None
    err.print(
        f"[yellow]rescored {done.candidates} candidates of {done.run}{failed}, but {done.note}: they serve "
        "this report only[/]",
        highlight=False,
        soft_wrap=True,
    )
    return done.officials
