"""The compare page's accuracy-vs-compute frontier (agentloop.view._frontier) without a browser:
the numbers are ``report --frontier``'s, the markup is well formed and escaped, and runs without
a curve draw as points with a note. The Chromium check is in test_view_browser.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentloop.records import RunReport
from agentloop.records.curves import load_curve
from agentloop.records.pareto import frontier
from agentloop.view import Renderer, export_html, open_runs
from agentloop.view._frontier import frontier_chart, frontier_html, load_curves

pytest.importorskip("jinja2")

FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = "<img src=x onerror=alert(1)>"
SVG = "{http://www.w3.org/2000/svg}"


def load_runs_module():
    spec = importlib.util.spec_from_file_location("view_runs", FIXTURES / "view_runs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = load_runs_module()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return runs.frontier_runs(tmp_path_factory.mktemp("view-frontier"))


def parse(markup: str) -> ET.Element:
    """The figure as XML (it is written well formed), with the SVG's namespace made plain."""
    return ET.fromstring(f"<div>{markup.replace(' xmlns=', ' data-xmlns=')}</div>")


def classes(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(tag) if cls in (e.get("class") or "").split()]


def copy_run(src: Path, dst: Path, sql: str | None = None) -> Path:
    dst.mkdir()
    (dst / "run.sqlite").write_bytes((src / "run.sqlite").read_bytes())
    if sql:
        with sqlite3.connect(dst / "run.sqlite") as db:
            db.execute(sql)
    return dst


def test_the_chart_draws_the_reports_frontier(pair: tuple[Path, Path]) -> None:
    bon, greedy = pair
    curves, notes = load_curves(open_runs([bon, greedy]))
    assert notes == [] and [c.label for c in curves] == ["bon4", "greedy"]
    # The same numbers as the report's own curves: nothing is recomputed here.
    expected = [load_curve(RunReport.load(d)) for d in (bon, greedy)]
    assert [c.means for c in curves] == [c.means for c in expected]
    (chart,) = frontier_chart(curves)
    on = [p.config for p in frontier(expected) if p.on_frontier]
    assert [p.config for p in chart.frontier] == on == ["bon4 k=1", "bon4 k=2", "bon4 k=3", "bon4 k=4"]
    assert chart.x_max == 5 and chart.x_step == 1 and (chart.y_min, chart.y_max) == (0.0, 1.0)

    root = parse(frontier_html(curves, notes))
    (figure,) = root.iter("figure")
    (svg,) = classes(figure, "svg", "frontier-chart")
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "frontier-0-title"
    assert "accuracy against candidates per task" in next(svg.iter("title")).text
    # One curve for the sampling run, one point for greedy, the frontier line and a ring per frontier point.
    assert len(classes(svg, "polyline", "line")) == 1 and len(classes(svg, "g", "single")) == 1
    assert len(classes(svg, "path", "frontier-line")) == 1
    rings = classes(svg, "circle", "frontier-point")
    assert [r.find("title").text for r in rings] == [f"frontier: {c}" for c in on]
    labels = {t.text for t in classes(svg, "text", "axis-label")}
    assert labels == {"candidates per task", "accuracy"}
    assert "Pareto frontier" in "".join(figure.find("figcaption").itertext())
    legend = [e.text for e in classes(figure, "span", "legend-label")]
    assert legend == ["bon4", "greedy", "Pareto frontier"]
    rows = list(next(figure.iter("table")).find("tbody"))
    assert [r.find("td").text for r in rows] == ["bon4 k=1", "greedy", "bon4 k=2", "bon4 k=3", "bon4 k=4"]
    assert [r.get("class") == "on-frontier" for r in rows] == [True, False, True, True, True]


def test_hostile_names_and_notes_are_text(pair: tuple[Path, Path]) -> None:
    bon, greedy = pair
    curves, _ = load_curves(open_runs([bon, greedy]))
    name = '</title><script>alert(1)</script>"'
    hostile = [dataclasses.replace(curves[0], label=name), dataclasses.replace(curves[1], label=HOSTILE)]
    markup = frontier_html(hostile, [f"{name}: drawn as one point"])
    assert "<script" not in markup and "<img" not in markup
    assert "&lt;script&gt;" in markup and "&lt;img src=x" in markup
    root = parse(markup)  # still well formed: no name closed a tag or an attribute
    assert [e.text for e in classes(root, "span", "legend-label")] == [name, HOSTILE, "Pareto frontier"]
    assert [g.get("data-run") for g in classes(root, "g", "series")] == [name, HOSTILE]
    assert classes(root, "p", "frontier-note")[0].text == f"{name}: drawn as one point"
    assert not list(root.iter("script")) and not list(root.iter("img"))


def test_a_hostile_run_directory_name_on_the_compare_page(pair: tuple[Path, Path], tmp_path: Path) -> None:
    bon, greedy = pair
    odd = copy_run(greedy, tmp_path / HOSTILE)
    page = Renderer(open_runs([bon, odd])).compare_page()
    assert 'class="frontier"' in page and "<img src=x" not in page
    assert '<span class="legend-label">&lt;img src=x onerror=alert(1)&gt;</span>' in page


def test_runs_without_a_curve_draw_as_points_with_a_note(pair: tuple[Path, Path], tmp_path: Path) -> None:
    bon, greedy = pair
    old = copy_run(bon, tmp_path / "old", "UPDATE candidates SET official = NULL")
    page = Renderer(open_runs([old, greedy])).compare_page()
    assert "Traceback" not in page
    assert "old: drawn as one point, not a curve (run old was stored before" in page
    assert "revision 0004" in page
    assert page.count('<g class="series single"') == 2 and '<g class="series curve"' not in page
    assert 'class="frontier-line"' in page  # the points still have a frontier

    # Two runs that are not sampling runs: points only, and nothing to apologise for.
    other = copy_run(greedy, tmp_path / "greedy2")
    curves, notes = load_curves(open_runs([greedy, other]))
    assert notes == [] and not any(c.sampled for c in curves)
    assert "polyline" not in frontier_html(curves, notes)


def test_a_run_with_no_point_is_left_out_with_a_note(pair: tuple[Path, Path], tmp_path: Path) -> None:
    bon, greedy = pair
    empty = copy_run(greedy, tmp_path / "empty", "DELETE FROM task_results")
    curves, notes = load_curves(open_runs([bon, empty]))
    assert [c.label for c in curves] == ["bon4"]
    assert notes == ["empty: not drawn (run empty stored no tasks)"]
    assert "No run has a point" in frontier_html([], ["x"])


def test_the_export_carries_the_chart(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = export_html(open_runs(list(pair)), tmp_path / "runs.html")
    html = out.read_text()
    assert html.count('<figure class="frontier"') == 1 and 'class="frontier-line"' in html


def test_large_runs_get_fewer_resamples_and_say_so(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentloop.view import _frontier

    bon, greedy = pair
    assert [_frontier.resamples_for(RunReport.load(d)) for d in pair] == [1000, 1000]
    full, _ = load_curves(open_runs([bon]))
    monkeypatch.setattr(_frontier, "WORK", 10)  # bon4: 5 tasks x (1 + 4 columns) = 25
    assert _frontier.resamples_for(RunReport.load(bon)) == 400
    assert _frontier.resamples_for(RunReport.load(greedy)) == 1000  # 5 x 2 = 10
    (curve,), notes = load_curves(open_runs([bon]))
    assert curve.means == full[0].means  # only the intervals are cheaper
    assert notes == [
        "bon4: 95% intervals from 400 bootstrap resamples over its 5 tasks, not the report's 1000, "
        "to keep this page quick (agentloop report --frontier gives the full ones)"
    ]


def test_runs_of_one_graph_at_several_spends_are_joined(pair: tuple[Path, Path]) -> None:
    from agentloop.records.pareto import graph_series

    bon, greedy = pair
    curves, _ = load_curves(open_runs([bon, greedy]))
    point = curves[1]
    wide = dataclasses.replace(point, label="iad4x2", graph="iad", costs=[5.5])
    deep = dataclasses.replace(point, label="iad2x4", graph="iad", costs=[3.5])
    again = dataclasses.replace(point, label="iad2x4-copy", graph="iad", costs=[3.5])
    # By cost; a sampling run is a curve already; one spend alone is not a series.
    assert [[c.label for c in s] for s in graph_series([curves[0], wide, deep])] == [["iad2x4", "iad4x2"]]
    assert graph_series([curves[0], deep, again]) == []
    (chart,) = frontier_chart([curves[0], wide, deep])
    root = parse(frontier_html([curves[0], wide, deep]))
    (line,) = classes(root, "polyline", "graph-series")
    xs = [float(p.split(",")[0]) for p in line.get("points").split()]
    assert line.get("data-graph") == "iad" and xs == [chart.px(3.5), chart.px(5.5)]
    (item,) = classes(root, "li", "graph-series")
    assert "2 runs by spend: iad2x4, iad4x2" in "".join(item.itertext())
    assert len(classes(root, "g", "single")) == 2  # each run is still its own point
