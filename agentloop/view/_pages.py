"""The viewer's pages: Jinja templates (autoescaped) filled from the run sources, for the server and the export."""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal
from urllib.parse import quote, urlencode

from agentloop.errors import AgentloopError, MissingExtraError
from agentloop.records.report import UPPER_BOUND_NOTE, RunReport
from agentloop.records.store import StoredTask
from agentloop.view._data import (
    SORT_KEYS,
    Comparison,
    Interval,
    RunSource,
    TaskQuery,
    mean_interval,
    safe_config,
)
from agentloop.view._frontier import frontier_html, load_curves, nice

__all__ = ["Chart", "Links", "Renderer", "chart"]

Mode = Literal["server", "export"]


class Links:
    """Where each page lives: URLs for the server, fragments of the one file for the export."""

    def __init__(self, sources: Sequence[RunSource], mode: Mode):
        self.sources = sources
        self.mode = mode

    def home(self) -> str:
        return "/" if self.mode == "server" else "#home"

    def run(self, i: int, params: Mapping[str, str] | None = None) -> str:
        if self.mode == "export":
            return f"#r{i}"
        return f"/run/{i}" + (f"?{urlencode(params)}" if params else "")

    def task(self, i: int, task_id: str) -> str:
        if self.mode == "export":
            return f"#{self.task_anchor(i, task_id)}"
        return f"/run/{i}/task/{quote(task_id, safe='')}"

    def task_anchor(self, i: int, task_id: str) -> str:
        return f"r{i}-t{self.sources[i].position(task_id)}"

    def compare(self, params: Mapping[str, str] | None = None) -> str:
        if self.mode == "export":
            return "#compare"
        return "/compare" + (f"?{urlencode(params)}" if params else "")

    def version(self, i: int) -> str:
        return f"/run/{i}/version"


# --- the accuracy-vs-tokens picture ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartPoint:
    label: str
    x: float
    y: float
    low: float
    high: float
    value: Interval
    tokens: float
    current: bool
    upper_bound: bool


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG scatter in pixel coordinates: tokens per task across, the headline metric up, 95% bars."""

    width: int
    height: int
    left: int
    bottom: int
    top: int
    right: int
    points: list[ChartPoint]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    y_label: str


def chart(reports: Sequence[RunReport], current: int | None = None) -> Chart | None:
    """One point per run with its 95% interval (see :func:`mean_interval`); ``None`` with no tasks."""
    width, height, left, right, top, bottom = 620, 300, 56, 44, 14, 40
    rewarded = all(r.scores_reward for r in reports)
    values = []
    for r in reports:
        iv = mean_interval([t.value for t in r.tasks])
        tokens = sum(t.total_tokens for t in r.tasks) / len(r.tasks) if r.tasks else 0.0
        values.append((r, iv, tokens))
    if not any(iv is not None for _, iv, _ in values):
        return None
    x_max = nice(max((tok for _, iv, tok in values if iv is not None), default=1.0) * 1.1 or 1.0)

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def py(y: float) -> float:
        return top + (height - top - bottom) * (1.0 - y)

    points = [
        ChartPoint(
            label=r.label,
            x=round(px(tok), 1),
            y=round(py(iv.mean), 1),
            low=round(py(iv.low), 1),
            high=round(py(iv.high), 1),
            value=iv,
            tokens=tok,
            current=i == current,
            upper_bound=r.upper_bound,
        )
        for i, (r, iv, tok) in enumerate(values)
        if iv is not None
    ]
    x_ticks = [(round(px(x_max * k / 4), 1), f"{x_max * k / 4:,.0f}") for k in range(5)]
    y_ticks = [(round(py(k / 4), 1), f"{k / 4:.2f}") for k in range(5)]
    label = "average reward" if rewarded else "accuracy (reward for reward suites)"
    return Chart(width, height, left, bottom, top, right, points, x_ticks, y_ticks, label)


# --- rendering -----------------------------------------------------------------------------


class Renderer:
    """Fills the templates. ``mode="server"`` links pages by URL; ``"export"`` by fragment in one file."""

    def __init__(self, sources: Sequence[RunSource], mode: Mode = "server"):
        try:
            import jinja2
        except ImportError as exc:
            raise MissingExtraError("jinja2", "view") from exc
        if not sources:
            raise AgentloopError("agentloop view needs at least one run directory")
        self.sources = list(sources)
        self.mode = mode
        self.links = Links(self.sources, mode)
        self._lock = threading.Lock()
        self._compared: dict[tuple[tuple[str, ...], int], Comparison] = {}
        self._frontier: tuple[tuple[str, ...], str] | None = None
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("agentloop.view", "templates"),
            autoescape=True,  # every string a model wrote is text, never markup
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["num"] = _num
        self.env.filters["pct"] = _pct
        self.env.filters["value"] = _value
        self.env.filters["jsonpretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False, default=str)
        self.env.filters["answer"] = _answer_text
        self.env.globals.update(
            links=self.links,
            mode=mode,
            sort_keys=list(SORT_KEYS),
            upper_bound_note=UPPER_BOUND_NOTE,
            outcome_of=_outcome,
            sort_values=_sort_values,
            runs=self.sources,
        )
        files = resources.files("agentloop.view").joinpath("static")
        self.env.globals["css"] = jinja2.utils.markupsafe.Markup(
            files.joinpath("view.css").read_text("utf-8")
        )
        self.env.globals["js"] = jinja2.utils.markupsafe.Markup(files.joinpath("view.js").read_text("utf-8"))

    def _render(self, template: str, **context: Any) -> str:
        token = secrets.token_urlsafe(18)  # a fresh script nonce per page
        return self.env.get_template(template).render(nonce=lambda: token, **context)

    # -- pages -----------------------------------------------------------------------------

    def index(self) -> str:
        return self._render("index.html.jinja", cards=self._run_cards())

    def run_page(self, i: int, query: TaskQuery) -> str:
        return self._render("run.html.jinja", c=self._run_context(i, query))

    def task_page(self, i: int, task_id: str) -> str | None:
        detail = self.sources[i].task(task_id)
        if detail is None:
            return None
        return self._render("task.html.jinja", c=self._task_context(i, detail))

    def compare_page(self, against: int = 1, group: str = "", page: int = 1) -> str:
        return self._render("compare.html.jinja", c=self._compare_context(against, group, page))

    def export(self) -> str:
        """Every page in one file: the runs, each task, and the comparison when there are several runs."""
        runs = []
        for i, source in enumerate(self.sources):
            context = self._run_context(i, TaskQuery(per_page=10**9))
            tasks = []
            for t in context["report"].tasks:
                detail = source.task(t.task_id)
                if detail is not None:
                    tasks.append(self._task_context(i, detail))
            runs.append((context, tasks))
        comparison = self._compare_context(1, "", 1, per_page=10**9) if len(self.sources) > 1 else None
        return self._render(
            "export.html.jinja", run_pages=runs, cards=self._run_cards(), comparison=comparison
        )

    # -- contexts --------------------------------------------------------------------------

    def _run_cards(self) -> list[dict[str, Any]]:
        return [{"i": i, "source": s, "report": s.report()} for i, s in enumerate(self.sources)]

    def _run_context(self, i: int, query: TaskQuery) -> dict[str, Any]:
        source = self.sources[i]
        report = source.report()
        reports = [s.report() for s in self.sources]
        tasks = report.tasks
        return {
            "i": i,
            "source": source,
            "report": report,
            "config": safe_config(report.run.config),
            "metrics": report.metrics(),
            "usage": report.usage(),
            "chart": chart(reports, current=i),
            "query": query,
            "table": source.tasks(query),
            "stops": sorted({t.stop_reason or "none" for t in tasks}),
            "difficulties_here": [
                d
                for d in (*report.difficulties, "unknown")
                if any((t.difficulty or "unknown") == d for t in tasks)
            ],
            "version": source.version(),
            "partial": not report.complete,
        }

    def _task_context(self, i: int, detail: Any) -> dict[str, Any]:
        source = self.sources[i]
        report = source.report()
        prefix = f"{self.links.task_anchor(i, detail.task.task_id)}-" if self.mode == "export" else ""
        return {
            "i": i,
            "source": source,
            "report": report,
            "detail": detail,
            "task": detail.task,
            "prefix": prefix,
            "anchor": self.links.task_anchor(i, detail.task.task_id),
        }

    def _comparison(self, against: int) -> Comparison:
        """The comparison, computed again only when a run changed: the paired bootstrap over
        10,000 tasks takes seconds, and every group and page of it reads the same one."""
        key = (tuple(s.version() for s in self.sources), against)
        with self._lock:
            cached = self._compared.get(key)
        if cached is None:
            base, *others = self.sources
            cached = base.compare(others, against=against)
            with self._lock:
                self._compared = {key: cached}
        return cached

    def _frontier_html(self) -> Any:
        """The frontier figure (markup built and escaped by ``_frontier``), drawn again only when a run
        changed: a curve's bootstrap reads every task, as ``report --frontier`` does."""
        import jinja2

        key = tuple(s.version() for s in self.sources)
        with self._lock:
            cached = self._frontier
        if cached is None or cached[0] != key:
            cached = (key, frontier_html(*load_curves(self.sources)))
            with self._lock:
                self._frontier = cached
        return jinja2.utils.markupsafe.Markup(cached[1])

    def _compare_context(self, against: int, group: str, page: int, per_page: int = 100) -> dict[str, Any]:
        comparison = self._comparison(against)
        rows = comparison.select(group)
        pages = max(1, math.ceil(len(rows) / per_page))
        page = min(max(1, page), pages)
        reports = [s.report() for s in self.sources]
        return {
            "comparison": comparison,
            "reports": reports,
            "group": group if group in ("improved", "regressed", "unchanged") else "",
            "rows": rows[(page - 1) * per_page : page * per_page],
            "matching": len(rows),
            "page": page,
            "pages": pages,
            "chart": chart(reports),
            "frontier": self._frontier_html(),
        }


def _outcome(t: StoredTask | None, rewarded: bool) -> str:
    """``correct``, ``wrong``, ``error`` or ``missing``: the class a cell is coloured by."""
    if t is None:
        return "missing"
    if t.error is not None:
        return "error"
    if rewarded:
        return "correct" if t.value >= 1.0 else "partial" if t.value > 0 else "wrong"
    return "correct" if t.correct else "wrong"


def _sort_values(t: StoredTask) -> dict[str, Any]:
    """The task's sort key per column as one number or string, for the export's client-side sort."""
    out = {}
    for key, fn in SORT_KEYS.items():
        v = fn(t)
        out[key] = (v[1] if v[0] else -1) if isinstance(v, tuple) else v
    return out


def _value(t: StoredTask | None, rewarded: bool) -> str:
    if t is None:
        return "-"
    if t.error is not None:
        return "error"
    if rewarded:
        return f"{t.value:.3f}"
    return "correct" if t.correct else "wrong"


def _answer_text(answer: str | None) -> str:
    """An answer for reading: a JSON object (a WebShop episode) indented, without the pages it saw
    (each candidate shows them step by step); anything else as stored."""
    if answer is None:
        return "(no answer)"
    if answer.startswith("{"):
        try:
            parsed = json.loads(answer)
        except ValueError:
            return answer
        if isinstance(parsed, dict):
            parsed.pop("observations", None)  # the pages are shown step by step with the candidate
        return json.dumps(parsed, indent=1, ensure_ascii=False)
    return answer


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
