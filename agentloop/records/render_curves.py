"""Curves on the screen: the frontier tables, the compute-matched verdict and the frontier plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentloop.records.curves import COST_NOTES, Curve
from agentloop.records.pareto import MatchedDifference, frontier, graph_series
from agentloop.records.render import pyplot_for

__all__ = ["plot_frontier", "render_frontier", "render_matched"]


def _by_suite(curves: Sequence[Curve]) -> dict[str, list[Curve]]:
    out: dict[str, list[Curve]] = {}
    for c in curves:
        out.setdefault(c.suite, []).append(c)
    return out


def render_frontier(curves: Sequence[Curve], console: Console) -> None:
    """Per suite: every configuration by cost (frontier ones marked), then the best one per cost level."""
    cost = curves[0].cost
    for suite, group in _by_suite(curves).items():
        points = frontier(group)
        metric = group[0].metric
        table = Table(title=f"{suite}: {metric} vs {cost} per task", title_justify="left")
        for name in ("configuration", cost, metric, "95% CI", "frontier"):
            table.add_column(name, justify="left" if name == "configuration" else "right")
        for p in points:
            table.add_row(
                p.config,
                _g(p.cost),
                f"{p.value:.3f}",
                f"[{p.ci_low:.3f}, {p.ci_high:.3f}]",
                "*" if p.on_frontier else "",
                style="bold" if p.on_frontier else None,
            )
        console.print(table)
        best = Table(title=f"{suite}: best configuration at each cost level", title_justify="left")
        for name in (f"{cost} <=", "best configuration", metric, "95% CI"):
            best.add_column(name, justify="left" if name == "best configuration" else "right")
        for p in points:
            if p.on_frontier:
                best.add_row(_g(p.cost), p.config, f"{p.value:.3f}", f"[{p.ci_low:.3f}, {p.ci_high:.3f}]")
        console.print(best)
    console.print(f"[dim]cost: {COST_NOTES[cost]}[/]", highlight=False)
    if any(not c.exact for c in curves):
        console.print(
            "[dim]some vote curves were estimated from seeded samples of k-subsets[/]", highlight=False
        )


def render_matched(d: MatchedDifference, console: Console) -> None:
    """The compute-matched difference and its verdict in words."""
    if d.difference is not None and d.ci_low is not None and d.ci_high is not None:
        console.print(
            f"{d.other} - {d.base} at equal compute: {d.difference:+.3f} "
            f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] over {d.tasks} paired tasks",
            highlight=False,
            markup=False,
        )
    console.print(d.verdict, highlight=False, markup=False)
    if d.note:
        console.print(f"note: {d.note}", highlight=False, markup=False, style="dim")


def plot_frontier(curves: Sequence[Curve], path: str | Path) -> Path:
    """Curves for sampling runs, points for the others, the frontier as a step line; needs ``agentloop[plot]``."""
    plt, out = pyplot_for(path)
    groups = _by_suite(curves)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 4.4), dpi=120, squeeze=False)
    for ax, (suite, group) in zip(axes[0], groups.items(), strict=True):
        for c in group:
            if c.sampled:
                (line,) = ax.plot(c.costs, c.means, marker=".", label=f"{c.label} ({c.graph})")
                ax.fill_between(c.costs, c.ci_low, c.ci_high, alpha=0.15, color=line.get_color())
            else:
                ax.errorbar(
                    c.costs,
                    c.means,
                    yerr=[[c.means[0] - c.ci_low[0]], [c.ci_high[0] - c.means[0]]],
                    fmt="o",
                    capsize=3,
                    label=f"{c.label} ({c.graph})",
                )
        for series in graph_series(group):
            ax.plot(
                [c.costs[0] for c in series],
                [c.means[0] for c in series],
                color="grey",
                lw=1,
                ls=":",
                label=f"{series[0].graph}: {len(series)} runs by spend",
            )
        front = [p for p in frontier(group) if p.on_frontier]
        right = max(max(c.costs) for c in group)  # the best so far holds to the right edge
        ax.step(
            [p.cost for p in front] + [right],
            [p.value for p in front] + [front[-1].value],
            where="post",
            color="black",
            lw=1,
            ls="--",
            label="frontier",
        )
        ax.set_xlabel(f"{group[0].cost} per task")
        ax.set_ylabel(group[0].metric)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{suite}: {group[0].metric} vs compute")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _g(x: float) -> str:
    return f"{x:.4g}"
