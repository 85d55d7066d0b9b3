"""The compare page's accuracy-vs-compute frontier, drawn as inline SVG from ``records.curves``.

The numbers are ``agentloop report --frontier``'s: :func:`load_curve` gives a sampling
run's curve over k (or another run's single point) and :func:`frontier` marks the Pareto
frontier; nothing is computed here but pixels. The figure is built as markup in Python so
it can be tested without a browser: every run name, label and note passes through
:func:`_e` (HTML escaping), because run names are chosen by users and notes quote them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agentloop.records.curves import COST_NOTES, CURVE_GRAPHS, Curve, load_curve, load_point
from agentloop.records.pareto import FrontierPoint, frontier, graph_series
from agentloop.records.report import RunReport, shared_tasks
from agentloop.view._data import RunSource

__all__ = ["FrontierChart", "frontier_chart", "frontier_html", "load_curves", "nice", "resamples_for"]

# Tableau's ten colours: told apart by most readers, and by position and shape as well.
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 320, 56, 16, 14, 44
# The report's bootstrap (1000 resamples over tasks) is pure Python: each resample draws every
# task and sums each k's column, about 48 s for a 10,000-task run's one point on a busy 2-CPU
# machine. A run with more than WORK task-columns gets fewer resamples (at least 50), so the
# page opens in seconds; smaller runs get exactly the report's intervals.
RESAMPLES, WORK = 1000, 2000


def resamples_for(report: RunReport) -> int:
    """The bootstrap resamples the viewer spends on ``report``: the report's 1000 while its tasks
    times (1 + its k columns) are at most WORK, then fewer, in proportion (at least 50)."""
    n = report.run.config.get("n") if report.run.graph in CURVE_GRAPHS else 1
    work = len(report.tasks) * (1 + (n if isinstance(n, int) and n > 0 else 1))
    return RESAMPLES if work <= WORK else max(50, RESAMPLES * WORK // work)


def nice(x: float) -> float:
    """The next round number at or above ``x`` (1, 2 or 5 times a power of ten)."""
    if x <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    return next(m * p for m in (1, 2, 5, 10) if m * p >= x)


def load_curves(sources: Sequence[RunSource], cost: str = "candidates") -> tuple[list[Curve], list[str]]:
    """Each run's curve, labelled as the viewer labels it, and a note per run drawn as less than asked.

    A sampling run whose curve cannot be read (stored before revision 0004, no candidates
    kept) is drawn as its single point, and the note says why; a run with no point at all
    (no tasks yet) is left out with a note. Never raises for what a store holds.
    """
    curves: list[Curve] = []
    notes: list[str] = []
    loaded: list[tuple[RunSource, RunReport]] = []
    for source in sources:
        try:
            loaded.append((source, source.report()))
        except Exception as exc:  # the viewer shows a note, never a traceback
            notes.append(f"{source.label}: not read ({type(exc).__name__}: {exc})")
    # As the report does: every run of a suite on the tasks they all stored.
    shared, cut = shared_tasks([report for _, report in loaded])
    if cut is not None:
        notes.append(cut)
    for (source, _), report in zip(loaded, shared, strict=True):
        resamples = resamples_for(report)
        try:
            curve = load_curve(report, cost=cost, store=source.store_url, resamples=resamples)
        except Exception as exc:
            try:
                curve = load_point(report, cost=cost, resamples=resamples)
            except Exception as again:
                notes.append(f"{source.label}: not drawn ({_reason(again)})")
                continue
            if report.run.graph in CURVE_GRAPHS:
                notes.append(f"{source.label}: drawn as one point, not a curve ({_reason(exc)})")
        curves.append(replace(curve, label=source.label))
        if resamples < RESAMPLES:
            notes.append(
                f"{source.label}: 95% intervals from {resamples} bootstrap resamples over its {len(report.tasks)} "
                f"tasks, not the report's {RESAMPLES}, to keep this page quick (agentloop report --frontier "
                "gives the full ones)"
            )
    return curves, notes


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) and str(exc) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class FrontierChart:
    """One suite's frontier in pixel coordinates: the scales, the curves and the frontier points."""

    suite: str
    metric: str
    cost: str
    curves: list[Curve]
    points: list[FrontierPoint]  # every configuration by cost, frontier ones marked
    x_max: float
    x_step: float
    y_min: float
    y_max: float

    def px(self, x: float) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * x / self.x_max, 1)

    def py(self, y: float) -> float:
        span = self.y_max - self.y_min
        return round(TOP + (HEIGHT - TOP - BOTTOM) * (self.y_max - y) / span, 1)

    @property
    def frontier(self) -> list[FrontierPoint]:
        return [p for p in self.points if p.on_frontier]


def frontier_chart(curves: Sequence[Curve]) -> list[FrontierChart]:
    """One chart per suite (the frontier compares runs of one suite), in the order runs were given."""
    suites: dict[str, list[Curve]] = {}
    for c in curves:
        suites.setdefault(c.suite, []).append(c)
    charts = []
    for suite, group in suites.items():
        step = nice(max(max(c.costs) for c in group) * 1.05 / 5)  # about five round ticks across
        x_max = step * max(1, math.ceil(max(max(c.costs) for c in group) * 1.05 / step))
        lows = [v for c in group for v in c.ci_low]
        highs = [v for c in group for v in c.ci_high]
        y_min = min(0.0, math.floor(min(lows) * 10) / 10)
        y_max = max(1.0, math.ceil(max(highs) * 10) / 10)
        charts.append(
            FrontierChart(
                suite, group[0].metric, group[0].cost, list(group), frontier(group), x_max, step, y_min, y_max
            )
        )
    return charts


# --- markup ----------------------------------------------------------------------------------


def _e(text: object) -> str:
    """Text for HTML (and the SVG inside it): ``<``, ``>``, ``&`` and both quotes escaped."""
    return html.escape(str(text), quote=True)


def _g(x: float) -> str:
    return f"{x:.4g}"


def frontier_html(curves: Sequence[Curve], notes: Sequence[str] = (), *, key: str = "frontier") -> str:
    """A ``<figure>`` per suite (SVG chart, caption, legend, the numbers as a table), then the notes.

    ``key`` prefixes element ids, so two figures on one page never share one.
    """
    parts = []
    if not curves:
        parts.append('<p class="muted frontier-empty">No run has a point to draw yet.</p>')
    for i, chart in enumerate(frontier_chart(curves)):
        parts.append(_figure(chart, f"{key}-{i}"))
    parts.extend(f'<p class="note small frontier-note">{_e(n)}</p>' for n in notes)
    if any(not c.exact for c in curves):
        parts.append(
            '<p class="muted small">Some vote curves were estimated from seeded samples of k-subsets.</p>'
        )
    return "\n".join(parts)


def _figure(chart: FrontierChart, fid: str) -> str:
    cost, metric = chart.cost, chart.metric
    title = f"{chart.suite}: {metric} against {cost} per task"
    caption = (
        f"{title}. Lines: sampling runs at each k, shaded by the 95% interval; dots: the other runs "
        f"with 95% bars (dotted between runs of one graph at several spends); dashed: the Pareto frontier, "
        f"its points ringed. Cost: {COST_NOTES.get(cost, cost)}."
    )
    out = [
        f'<figure class="frontier" id="{_e(fid)}">',
        f'<svg class="chart frontier-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-labelledby="{_e(fid)}-title" aria-describedby="{_e(fid)}-caption">',
        f'<title id="{_e(fid)}-title">{_e(title)}</title>',
        *_axes(chart),
    ]
    for series in graph_series(chart.curves):  # under the points they join
        points = " ".join(f"{chart.px(c.costs[0])},{chart.py(c.means[0])}" for c in series)
        out.append(
            f'<polyline class="graph-series" data-graph="{_e(series[0].graph)}" points="{points}" fill="none" '
            f'stroke="#8a93a6" stroke-width="1.2" stroke-dasharray="2 3"><title>'
            f"{_e(series[0].graph)}: {len(series)} runs by spend</title></polyline>"
        )
    for n, c in enumerate(chart.curves):
        out.extend(_series(chart, c, COLOURS[n % len(COLOURS)], n))
    out.extend(_frontier_marks(chart))
    out.append("</svg>")
    out.append(f'<figcaption id="{_e(fid)}-caption">{_e(caption)}</figcaption>')
    out.append(_legend(chart))
    out.append(_table(chart))
    out.append("</figure>")
    return "\n".join(out)


def _axes(chart: FrontierChart) -> list[str]:
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    out = []
    for j in range(5):
        v = chart.y_min + (chart.y_max - chart.y_min) * j / 4
        y = chart.py(v)
        out.append(f'<line class="gridline" x1="{x0}" x2="{x1}" y1="{y}" y2="{y}"/>')
        out.append(f'<text class="tick" x="{x0 - 6}" y="{y + 4}" text-anchor="end">{v:.2f}</text>')
    for j in range(round(chart.x_max / chart.x_step) + 1):
        v = chart.x_step * j
        out.append(
            f'<text class="tick" x="{chart.px(v)}" y="{y1 + 16}" text-anchor="middle">{_e(_g(v))}</text>'
        )
    out.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    out.append(f'<line class="axis" x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}"/>')
    out.append(
        f'<text class="axis-label x-label" x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{_e(chart.cost)} per task</text>"
    )
    out.append(
        f'<text class="axis-label y-label" transform="translate(14 {(y0 + y1) / 2}) rotate(-90)" '
        f'text-anchor="middle">{_e(chart.metric)}</text>'
    )
    return out


def _series(chart: FrontierChart, c: Curve, colour: str, n: int) -> list[str]:
    xs = [chart.px(x) for x in c.costs]
    ys, lows, highs = ([chart.py(v) for v in vs] for vs in (c.means, c.ci_low, c.ci_high))
    out = [
        f'<g class="series{" curve" if c.sampled else " single"}" data-run="{_e(c.label)}" data-series="{n}">'
    ]
    if c.sampled:
        band = " ".join(f"{x},{y}" for x, y in zip(xs + xs[::-1], highs + lows[::-1], strict=True))
        out.append(
            f'<polygon class="band" points="{band}" fill="{colour}" fill-opacity="0.15" stroke="none"/>'
        )
        line = " ".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True))
        out.append(f'<polyline class="line" points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        radius = 3
    else:
        x = xs[0]
        out.append(
            f'<path class="ci" d="M{x} {lows[0]}V{highs[0]}M{x - 5} {lows[0]}h10M{x - 5} {highs[0]}h10" '
            f'stroke="{colour}" stroke-width="1.5" fill="none"/>'
        )
        radius = 5
    for j in range(len(c.ks)):
        tip = (
            f"{c.point_label(j)}: {c.means[j]:.3f} [{c.ci_low[j]:.3f}, {c.ci_high[j]:.3f}] "
            f"at {_g(c.costs[j])} {c.cost} per task"
        )
        out.append(
            f'<circle class="point" cx="{xs[j]}" cy="{ys[j]}" r="{radius}" fill="{colour}">'
            f"<title>{_e(tip)}</title></circle>"
        )
    out.append("</g>")
    return out


def _frontier_marks(chart: FrontierChart) -> list[str]:
    front = chart.frontier
    if not front:
        return []
    d = [f"M{chart.px(front[0].cost)} {chart.py(front[0].value)}"]
    for p in front[1:]:  # best at this spend or less: flat until the next frontier point, then up
        d.append(f"H{chart.px(p.cost)}V{chart.py(p.value)}")
    d.append(f"H{WIDTH - RIGHT}")
    out = [
        '<g class="frontier-marks">',
        f'<path class="frontier-line" d="{"".join(d)}" fill="none" stroke="#1d2330" stroke-width="1.2" '
        'stroke-dasharray="5 4"/>',
    ]
    for p in front:
        out.append(
            f'<circle class="frontier-point" cx="{chart.px(p.cost)}" cy="{chart.py(p.value)}" r="7" fill="none" '
            f'stroke="#1d2330" stroke-width="1.5"><title>frontier: {_e(p.config)}</title></circle>'
        )
    out.append("</g>")
    return out


def _legend(chart: FrontierChart) -> str:
    items = []
    for n, c in enumerate(chart.curves):
        colour = COLOURS[n % len(COLOURS)]
        shape = (
            f'<line x1="1" x2="21" y1="7" y2="7" stroke="{colour}" stroke-width="2"/><circle cx="11" cy="7" r="3" fill="{colour}"/>'
            if c.sampled
            else f'<circle cx="11" cy="7" r="5" fill="{colour}"/>'
        )
        kind = f"curve, k = 1 to {c.ks[-1]}" if c.sampled else "one point"
        items.append(
            f'<li data-run="{_e(c.label)}"><svg width="22" height="14" aria-hidden="true">{shape}</svg> '
            f'<span class="legend-label">{_e(c.label)}</span> <span class="muted">({_e(c.graph)}, {_e(kind)})</span></li>'
        )
    for series in graph_series(chart.curves):
        items.append(
            '<li class="graph-series"><svg width="22" height="14" aria-hidden="true"><line x1="1" x2="21" y1="7" '
            'y2="7" stroke="#8a93a6" stroke-dasharray="2 3"/></svg> '
            f'<span class="legend-label">{_e(series[0].graph)}</span> '
            f'<span class="muted">({len(series)} runs by spend: '
            f"{_e(', '.join(c.label for c in series))})</span></li>"
        )
    items.append(
        '<li><svg width="22" height="14" aria-hidden="true"><path d="M1 11H11V3H21" fill="none" stroke="#1d2330" '
        'stroke-dasharray="5 4"/></svg> <span class="legend-label">Pareto frontier</span></li>'
    )
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _table(chart: FrontierChart) -> str:
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ("configuration", f"{chart.cost} per task", chart.metric, "95% interval", "frontier")
    )
    rows = []
    for p in chart.points:
        mark = ' class="on-frontier"' if p.on_frontier else ""
        rows.append(
            f'<tr{mark}><td>{_e(p.config)}</td><td class="num">{_e(_g(p.cost))}</td>'
            f'<td class="num">{p.value:.3f}</td><td class="num">[{p.ci_low:.3f}, {p.ci_high:.3f}]</td>'
            f"<td>{'yes' if p.on_frontier else ''}</td></tr>"
        )
    return (
        '<details class="frontier-numbers"><summary>The numbers (as <code>agentloop report --frontier</code> prints them)'
        f'</summary><table class="grid-table frontier-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></details>"
    )
