"""Pareto frontiers over runs' curves, and compute-matched comparisons against a sampling run's curve."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentloop.records.curves import COST_NOTES, Curve, CurveError, _g, _r
from agentloop.records.report import RunReport, pair_tasks

__all__ = [
    "FrontierPoint",
    "MatchedDifference",
    "frontier",
    "frontier_json",
    "graph_series",
    "matched_difference",
]


# --- frontiers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """One configuration: a run at some k (or as it ran), its cost, value and interval."""

    config: str
    run: str
    k: int | None
    cost: float
    value: float
    ci_low: float
    ci_high: float
    on_frontier: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "run": self.run,
            "k": self.k,
            "cost": _r(self.cost),
            "value": _r(self.value),
            "ci": [_r(self.ci_low), _r(self.ci_high)],
            "on_frontier": self.on_frontier,
        }


def frontier(curves: Sequence[Curve]) -> list[FrontierPoint]:
    """Every curve's points by cost, each marked when no cheaper (or equally cheap) point does as well.

    The marked points are the Pareto frontier; read by cost, each is the best configuration
    at that spend or less.
    """
    points = [
        FrontierPoint(c.point_label(j), c.label, c.ks[j], c.costs[j], c.means[j], c.ci_low[j], c.ci_high[j])
        for c in curves
        for j in range(len(c.ks))
    ]
    points.sort(key=lambda p: (p.cost, -p.value))
    out, best = [], -math.inf
    for p in points:
        on = p.value > best
        best = max(best, p.value)
        out.append(FrontierPoint(p.config, p.run, p.k, p.cost, p.value, p.ci_low, p.ci_high, on))
    return out


def frontier_json(curves: Sequence[Curve]) -> dict[str, Any]:
    """``report --frontier --json``: per suite, every curve and the frontier."""
    suites: dict[str, list[Curve]] = {}
    for c in curves:
        suites.setdefault(c.suite, []).append(c)
    return {
        "cost": curves[0].cost if curves else None,
        "cost_note": COST_NOTES.get(curves[0].cost) if curves else None,
        "suites": [
            {
                "suite": suite,
                "curves": [c.to_json() for c in group],
                "frontier": [p.to_json() for p in frontier(group) if p.on_frontier],
            }
            for suite, group in suites.items()
        ],
    }


# --- compute-matched comparison ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchedDifference:
    """``other`` minus ``base``'s curve at ``other``'s mean cost, per paired task, with a bootstrap CI."""

    base: str
    other: str
    cost: str
    other_cost: float
    base_k: float  # where on base's curve: 2.5 is halfway between k=2 and k=3
    tasks: int
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    note: str = ""
    confidence: float = 0.95

    @property
    def verdict(self) -> str:
        """One sentence: which is better at equal compute, or that the interval includes 0."""
        if self.difference is None or self.ci_low is None or self.ci_high is None:
            return f"{self.other} and {self.base} share no task"
        at = f"at equal compute ({_g(self.other_cost)} {self.cost} per task, {self.base} at k={self.base_k:.2f})"
        if self.ci_low > 0:
            return f"{self.other} is better than {self.base} {at}"
        if self.ci_high < 0:
            return f"{self.base} is better than {self.other} {at}"
        return f"{self.other} and {self.base} cannot be told apart {at}: the interval includes 0"

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "other": self.other,
            "cost": self.cost,
            "other_cost": _r(self.other_cost),
            "base_k": round(self.base_k, 4),
            "paired_tasks": self.tasks,
            "difference": _r(self.difference),
            "ci": [_r(self.ci_low), _r(self.ci_high)],
            "confidence": self.confidence,
            "note": self.note,
            "verdict": self.verdict,
        }


def matched_difference(
    base: Curve,
    base_report: RunReport,
    other: Curve,
    other_report: RunReport,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> MatchedDifference:
    """``other`` against ``base``'s curve at ``other``'s mean cost (interpolating between neighbouring k)."""
    if not base.sampled:
        raise CurveError(f"run {base.label} has no curve ({base.graph} is not a sampling run)")
    if base.suite != other.suite:
        raise CurveError(
            f"runs {base.label} ({base.suite}) and {other.label} ({other.suite}) are of other suites"
        )
    target = other.costs[-1]
    j, w, note = _locate(base.costs, target)
    base_k = float(base.ks[j] or 0) + w  # type: ignore[operator]
    if note:
        note = f"{other.label} spent {_g(target)} {base.cost} per task, {note} of {base.label}'s curve"
    rows = {tid: row for tid, row in zip(base.task_ids, base.values, strict=True)}
    other_rows = {tid: row for tid, row in zip(other.task_ids, other.values, strict=True)}
    pairs, _ = pair_tasks(base_report.tasks, other_report.tasks)
    diffs = []
    for b, o in pairs:
        row = rows[b.task_id]
        a = row[j] if w == 0 else (1 - w) * row[j] + w * row[j + 1]
        diffs.append(other_rows[o.task_id][-1] - a)
    if not diffs:
        return MatchedDifference(
            base.label, other.label, base.cost, target, base_k, 0, None, None, None, note
        )
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    lo, hi = means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]
    return MatchedDifference(
        base.label, other.label, base.cost, target, base_k, n, statistics.fmean(diffs), lo, hi, note
    )


def graph_series(curves: Sequence[Curve]) -> list[list[Curve]]:
    """Runs of one graph drawn as points (not sampling runs) at two or more spends, by cost.

    Several caps of an iterative graph (``iad --n 4 --rounds 2`` and ``--n 2 --rounds 4``,
    ``adaptive`` at caps 4 and 8) are that graph's curve: the chart joins them. Runs at one
    spend stay points.
    """
    groups: dict[tuple[str, str], list[Curve]] = {}
    for c in curves:
        if not c.sampled:
            groups.setdefault((c.suite, c.graph), []).append(c)
    return [
        sorted(g, key=lambda c: c.costs[0])
        for g in groups.values()
        if len({round(c.costs[0], 9) for c in g}) >= 2
    ]


def _locate(costs: Sequence[float], target: float) -> tuple[int, float, str]:
    """Index j and weight w so that cost ``target`` is (1-w)*costs[j] + w*costs[j+1], clamped to the ends.

    Costs never fall as k grows, but they can stay level (a batched call prices its prompt
    and the call once for several k): there the largest k at that cost is the curve's point,
    the most it buys for the spend.
    """
    if target < costs[0] - 1e-9:
        return 0, 0.0, "at or below the cheapest point"
    j = max(i for i, c in enumerate(costs) if c <= target + 1e-9)
    if j == len(costs) - 1:
        return j, 0.0, "beyond the last point" if target > costs[-1] + 1e-9 else ""
    lo, hi = costs[j], costs[j + 1]
    return j, (target - lo) / (hi - lo), ""
