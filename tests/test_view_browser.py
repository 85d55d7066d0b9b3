"""``agentloop view`` in a real headless Chromium (Debian's package), driven by Playwright.

The flows a reader follows: open a run, filter to wrong answers, open a task, step through
its rounds, open a comparison and check its counts and its frontier chart; the same in the
exported file, and a partial run that refreshes itself as tasks land. Screenshots go to
tests/artifacts/view/ (or $AGENTLOOP_TEST_ARTIFACTS). Without a chromium binary these tests
skip, unless AGENTLOOP_REQUIRE_BROWSER is set (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentloop.view import ViewServer, export_html, open_runs

pytestmark = pytest.mark.browser

FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = Path(os.environ.get("AGENTLOOP_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts") / "view"


def load_runs_module():
    spec = importlib.util.spec_from_file_location("view_runs", FIXTURES / "view_runs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = load_runs_module()


def chromium_path() -> str | None:
    """The Debian chromium binary ($AGENTLOOP_CHROMIUM first); never a browser Playwright downloads."""
    for candidate in (os.environ.get("AGENTLOOP_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def missing(reason: str) -> None:
    if os.environ.get("AGENTLOOP_REQUIRE_BROWSER", "").strip() not in ("", "0"):
        pytest.fail(f"AGENTLOOP_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        missing("no chromium binary (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield pg
        assert not errors, errors  # no script error, and no blocked inline script (CSP)
    finally:
        context.close()


@pytest.fixture(scope="module")
def t2s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return runs.text2sql_runs(tmp_path_factory.mktemp("view-browser"))


def shot(pg: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def visible_rows(pg: Any, table: str) -> list[Any]:
    return [tr for tr in pg.locator(f"{table} tbody tr").all() if tr.is_visible()]


def test_run_filter_task_and_rounds(browser: Any, page: Any, t2s: tuple[Path, Path]) -> None:
    greedy, iad = t2s
    with ViewServer(open_runs([greedy, iad])).start() as srv:
        page.goto(srv.url + "run/1")
        assert page.locator("h1").first.inner_text() == "t2s-iad"
        assert page.locator("svg.chart circle").count() == 2  # both runs, the current one marked
        assert len(visible_rows(page, "table.tasks")) == runs.LIMIT
        shot(page, "run-page")

        page.select_option("select[name=outcome]", "wrong")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**outcome=wrong**")
        rows = visible_rows(page, "table.tasks")
        assert [r.locator("td").first.inner_text() for r in rows] == ["4", "5"]
        assert all("wrong" in (r.get_attribute("class") or "") for r in rows)

        rows[0].locator("a.task-link").click()
        page.wait_for_url("**/task/dev-4")
        # The model's markup is on screen as text, and none of it ran.
        first = page.locator(".cand-text").first.inner_text()
        assert "</textarea><script>window.__pwned = 1</script><b>bold?</b>" in first
        assert page.evaluate("window.__pwned") is None
        assert page.locator(".cand b").count() == 0

        round1, round2 = page.locator("#round-1"), page.locator("#round-2")
        assert round1.is_visible() and round2.is_visible()  # no round picked: all show
        round1.locator("a.next-round").click()
        page.wait_for_url("**#round-2")
        assert round2.is_visible() and not round1.is_visible()
        assert "checked by a verifier" in round2.locator(".diff").inner_text()
        shot(page, "task-round-2")
        round2.locator("a.prev-round").click()
        page.wait_for_url("**#round-1")
        assert round1.is_visible() and not round2.is_visible()


def test_compare_counts_and_filters(browser: Any, page: Any, t2s: tuple[Path, Path]) -> None:
    greedy, iad = t2s
    with ViewServer(open_runs([greedy, iad])).start() as srv:
        page.goto(srv.url)
        page.click("text=Compare these runs")
        page.wait_for_url("**/compare")
        counts = {
            g: page.locator(f"[data-count-{g}]").inner_text() for g in ("improved", "regressed", "unchanged")
        }
        assert counts == {"improved": "2", "regressed": "1", "unchanged": "3"}
        assert page.locator("[data-difference]").inner_text() == "+0.167"
        page.click("a.group[data-group-name=improved]")
        page.wait_for_url("**group=improved**")
        rows = visible_rows(page, "#compare-rows")
        assert [r.locator("td").first.inner_text() for r in rows] == ["0", "2"]
        shot(page, "compare-improved")


def test_compare_shows_the_frontier_chart(browser: Any, page: Any, tmp_path: Path) -> None:
    """Best-of-4 against greedy: the curve, the point, the dashed frontier and its rings, the legend
    (a run named like markup shows as text), and the numbers in a table."""
    hostile = "<img src=x onerror=window.__pwned=1>"
    bon, greedy = runs.frontier_runs(tmp_path, names=("bon4", hostile))
    with ViewServer(open_runs([bon, greedy])).start() as srv:
        page.goto(srv.url + "compare")
        figure = page.locator("figure.frontier")
        chart = figure.locator("svg.frontier-chart")
        assert chart.is_visible() and chart.get_attribute("role") == "img"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150
        assert chart.locator("polyline.line").count() == 1  # best-of-4's curve over k
        assert chart.locator("g.single circle.point").count() == 1  # greedy's one point
        assert chart.locator("path.frontier-line").count() == 1
        assert chart.locator("circle.frontier-point").count() == 4
        assert chart.locator("text.axis-label").all_text_contents() == ["candidates per task", "accuracy"]
        assert figure.locator("ul.legend .legend-label").all_inner_texts() == [
            "bon4",
            hostile,
            "Pareto frontier",
        ]
        assert figure.locator("ul.legend img").count() == 0 and page.evaluate("window.__pwned") is None
        assert "Pareto frontier" in figure.locator("figcaption").inner_text()
        table = figure.locator("table.frontier-table")
        assert not table.is_visible()
        figure.locator("details.frontier-numbers summary").click()
        assert table.is_visible() and table.locator("tbody tr.on-frontier").count() == 4
        assert table.locator("tbody tr").nth(1).locator("td").first.inner_text() == hostile
        figure.scroll_into_view_if_needed()
        shot(page, "compare-frontier")


def test_exported_file_works_without_a_server(
    browser: Any, page: Any, t2s: tuple[Path, Path], tmp_path: Path
) -> None:
    greedy, iad = t2s
    out = export_html(open_runs([greedy, iad]), tmp_path / "runs.html")
    page.goto(out.as_uri())
    assert page.locator("section.page.home").is_visible()
    page.click("header.top >> text=t2s-iad")
    run = page.locator("section#r1")
    assert run.is_visible() and not page.locator("section.page.home").is_visible()
    run.locator("select[name=outcome]").select_option("wrong")
    rows = visible_rows(page, "#r1-tasks")
    assert [r.locator("td").first.inner_text() for r in rows] == ["4", "5"]
    assert "2 of 6 tasks" in run.locator("[data-count]").inner_text()
    run.locator("th button[data-sort=index]").click()  # already ascending: now descending
    rows = visible_rows(page, "#r1-tasks")
    assert [r.locator("td").first.inner_text() for r in rows] == ["5", "4"]

    rows[1].locator("a.task-link").click()
    task = page.locator("section#r1-t4")
    assert task.is_visible() and not run.is_visible()
    assert page.evaluate("window.__pwned") is None
    task.locator("#r1-t4-round-1 a.next-round").click()
    assert task.locator("#r1-t4-round-2").is_visible() and not task.locator("#r1-t4-round-1").is_visible()
    shot(page, "export-task-round-2")

    page.click("header.top >> text=compare")
    compare = page.locator("section#compare")
    assert compare.locator("[data-count-regressed]").inner_text() == "1"
    compare.locator("button[data-group=regressed]").click()
    rows = visible_rows(page, "#compare-rows")
    assert [r.locator("td").first.inner_text() for r in rows] == ["5"]


def test_a_running_run_refreshes_as_tasks_finish(browser: Any, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    run_dir = runs.partial_run(tmp_path)
    with ViewServer(open_runs([run_dir])).start() as srv:
        page.goto(srv.url + "run/0")
        assert "3 of 6 tasks stored" in page.locator("#live").inner_text()
        assert len(visible_rows(page, "table.tasks")) == 3
        finisher = threading.Thread(target=runs.finish_run, args=(run_dir,))
        finisher.start()
        finisher.join(timeout=120)
        # No reload by hand: the page notices the new tasks and reloads itself.
        expect(page.locator("table.tasks tbody tr")).to_have_count(runs.LIMIT, timeout=20_000)
        assert page.locator("#live").count() == 0
        shot(page, "live-finished")


def test_webshop_rewards_and_episode_steps(browser: Any, page: Any, tmp_path: Path) -> None:
    run_dir = runs.webshop_run(tmp_path)
    with ViewServer(open_runs([run_dir])).start() as srv:
        page.goto(srv.url)  # one run: straight to its page
        assert "average reward" in page.locator(".card").nth(1).inner_text()
        page.fill("input[name=rmin]", "0.01")
        page.fill("input[name=rmax]", "0.99")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**rmax=0.99**")
        rows = visible_rows(page, "table.tasks")
        assert [r.locator("td").first.inner_text() for r in rows] == ["1", "3"]
        assert all("partial" in (r.get_attribute("class") or "") for r in rows)
        rows[0].locator("a.task-link").click()
        steps = page.locator("ol.steps > li")
        assert steps.count() >= 3 and steps.first.locator("code").inner_text().startswith("search[")
        first_page = steps.first.locator("details")
        assert not first_page.locator("pre").is_visible()
        first_page.locator("summary").click()  # the page the search showed, folded until asked for
        assert "Page 1" in first_page.locator("pre").inner_text()
        shot(page, "webshop-task")
