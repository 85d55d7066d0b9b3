"""Runs on the screen: the report table, failed tasks, and the accuracy-vs-compute plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentloop.errors import AgentloopError, MissingExtraError
from agentloop.records.config import VERIFIER_ERROR
from agentloop.records.report import (
    UPPER_BOUND_NOTE,
    PairedDifference,
    RunReport,
    first_line,
    paired_difference,
)

__all__ = ["plot_reports", "pyplot_for", "render_failures", "render_reports"]


def render_reports(reports: Sequence[RunReport], console: Console) -> None:
    """A table with a column per run: accuracy (overall, by difficulty), verifier passes, cost, latency."""
    table = Table(title="Run report" if len(reports) == 1 else "Run comparison")
    table.add_column("")
    for r in reports:
        table.add_column(r.label, justify="right")
    metrics = [r.metrics() for r in reports]

    def row(name: str, cells: Sequence[str], style: str | None = None) -> None:
        table.add_row(name, *cells, style=style)

    def verifier_label(r: RunReport) -> str:
        return f"{r.verifier} (upper bound)" if r.upper_bound else r.verifier

    row("graph", [r.graph_label for r in reports])  # a file reference: its stem and attribute
    row("backend", [r.run.backend for r in reports])
    row("verifier", [verifier_label(r) for r in reports])
    row("n / rounds", [r.n_rounds for r in reports])
    row("tasks", [_tasks_cell(r) for r in reports], style=None)
    if any(r.scores_reward for r in reports):
        row("avg reward", [_acc(m.get("avg_reward")) for m in metrics], style="bold")
        row("success rate", [_acc(m.get("success_rate")) for m in metrics])
    if not all(r.scores_reward for r in reports):
        labels = sorted({r.metric_label for r in reports if not r.scores_reward})
        label = labels[0] if len(labels) == 1 else "accuracy"
        row(label, [_acc(m.get("execution_accuracy")) for m in metrics], style="bold")
        by_level = [m.get("by_difficulty", {}) for m in metrics]
        known = dict.fromkeys(level for r in reports for level in r.difficulties)
        levels = [lvl for lvl in (*known, "unknown") if any(lvl in b for b in by_level)]
        for level in levels:
            cells = []
            for b in by_level:
                d = b.get(level)
                cells.append(f"{_acc(d['accuracy'])} ({d['correct']}/{d['tasks']})" if d else "-")
            row(f"  {level}", cells)
    diffs = [paired_difference(reports[0], r) for r in reports[1:]]
    if diffs:
        row(f"Δ {diffs[0].metric} vs {reports[0].label}", ["", *(_diff_cell(d) for d in diffs)])
    row("verifier passed", [_pct(m["verifier_pass_rate"]) for m in metrics])
    row("candidates / task", [_num(m["candidates_per_task"]) for m in metrics])
    row("tokens / task", [_num(m["tokens_per_task"], 0) for m in metrics])
    row("  completion", [_num(m["completion_tokens_per_task"], 0) for m in metrics])
    if any(m.get("memory_tokens_per_task") for m in metrics):
        row("  memory", [_num(m.get("memory_tokens_per_task"), 0) for m in metrics])
    row("LLM calls / task", [_num(m["llm_calls_per_task"]) for m in metrics])
    budgets = [r.budget() for r in reports]
    if any(b is not None for b in budgets):
        row("run budget spent", [f"{b['spent']}/{b['total']} {b['unit']}" if b else "-" for b in budgets])
    row("latency / task (s)", [_latency(m) for m in metrics])
    row("wall (s)", [f"{r.run.wall_s:.1f}" for r in reports])
    console.print(table)
    if any(r.upper_bound for r in reports):
        console.print(f"[yellow]note:[/] {UPPER_BOUND_NOTE}", highlight=False)
    for d in diffs:
        console.print(d.explanation, highlight=False, markup=False, soft_wrap=True)
        if d.budget_differs:
            console.print(
                f"[yellow]note:[/] {d.other} and {d.base} did not run under the same budget "
                f"({', '.join(d.budget_differs)}): the difference is not compute-matched",
                highlight=False,
                soft_wrap=True,
            )
    for r in reports:
        if len(r.tasks) < r.run.planned:
            console.print(
                f"{r.label}: {len(r.tasks)} of {r.run.planned} tasks stored; finish it with "
                f"agentloop run --resume --run-dir {r.run_dir} (the stored flags are reused)",
                highlight=False,
            )


def pyplot_for(path: str | Path) -> tuple[Any, Path]:
    """matplotlib's pyplot (files only, never a window) and ``path`` checked as a .png, .svg or .pdf."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "plot") from exc
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise AgentloopError(f"--plot writes .png, .svg or .pdf files, not {out.name}")
    return plt, out


def plot_reports(reports: Sequence[RunReport], path: str | Path) -> Path:
    """Plot accuracy against tokens per task, one labelled point per run; needs ``agentloop[plot]``."""
    plt, out = pyplot_for(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    rewarded = all(r.scores_reward for r in reports)
    for r in reports:
        m = r.metrics()
        y = r.headline
        x, y = m["tokens_per_task"] or 0.0, y or 0.0
        marker = "^" if r.upper_bound else "o"
        label = f"{r.label} ({r.graph_label}, {r.verifier}{', upper bound' if r.upper_bound else ''})"
        ax.scatter([x], [y], marker=marker, s=48, label=label)
        ax.annotate(r.graph_label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("tokens per task (prompt + completion)")
    labels = sorted({r.metric_label for r in reports})
    ax.set_ylabel(labels[0] if len(labels) == 1 else " / ".join(labels))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Reward vs compute" if rewarded else "Accuracy vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def render_failures(reports: Sequence[RunReport], console: Console, *, limit: int = 5) -> None:
    """Up to ``limit`` failed tasks per run as ``id: message``, and where to see them all."""
    for r in reports:
        failed = r.failed_tasks()
        if not failed:
            continue
        raised = sum((t.error or "").startswith(f"{VERIFIER_ERROR}:") for t in failed)
        apart = f", {raised} of them verifier errors" if raised else ""
        console.print(f"[red]{len(failed)} task(s) failed in {r.label}{apart}:[/]", highlight=False)
        for t in failed[:limit]:
            console.print(f"  {t.task_id}: {first_line(t.error)}", highlight=False, markup=False)
        if len(failed) > limit:
            console.print(f"  and {len(failed) - limit} more", highlight=False)
        console.print(
            f"[dim]all of them: agentloop report {r.run_dir} --errors, or agentloop view {r.run_dir}[/]",
            highlight=False,
        )


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _diff_cell(d: PairedDifference) -> str:
    if d.difference is None:
        return "no shared tasks"
    # The paired mean difference, its 95% bootstrap interval, and the number of shared tasks.
    return f"{d.difference:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}] n={d.tasks}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _latency(m: dict[str, Any]) -> str:
    if m["latency_s_mean"] is None:
        return "-"
    return f"{m['latency_s_mean']:.2f} (p50 {m['latency_s_p50']:.2f})"


def _tasks_cell(r: RunReport) -> str:
    errors = sum(t.error is not None for t in r.tasks)
    cell = f"{len(r.tasks)}" if len(r.tasks) == r.run.planned else f"{len(r.tasks)} of {r.run.planned}"
    return f"{cell} ({errors} errors)" if errors else cell
