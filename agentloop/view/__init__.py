"""``agentloop view``: a local, server-rendered web viewer over run stores, and its one-file HTML export.

Needs ``agentloop[view]`` (Jinja2). The core never imports this package::

    from agentloop.view import ViewServer, export_html, open_runs

    export_html(open_runs(["runs/a", "runs/b"]), "runs.html")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentloop.view._data import RunSource, TaskDetail, TaskPage, TaskQuery
from agentloop.view._pages import Renderer
from agentloop.view._server import ViewServer

__all__ = [
    "Renderer",
    "RunSource",
    "TaskDetail",
    "TaskPage",
    "TaskQuery",
    "ViewServer",
    "export_html",
    "open_runs",
]


def open_runs(run_dirs: Sequence[str | Path], *, store: str | None = None) -> list[RunSource]:
    """One source per run directory, labelled by its name (made unique where two share one).

    ``store`` (a database URL) reads names that are not directories as runs there, and gives
    the password of run dirs whose runs are there. Each is read once here, so a directory
    without a run fails now, with its path.
    """
    sources: list[RunSource] = []
    seen: dict[str, int] = {}
    for d in run_dirs:
        path = Path(d)
        label = path.resolve().name or str(path)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        source = RunSource(path, label, store=store)
        source.report()
        sources.append(source)
    return sources


def export_html(sources: Sequence[RunSource], path: str | Path) -> Path:
    """Write every page of ``sources`` into one self-contained HTML file; returns its path."""
    out = Path(path)
    html = Renderer(sources, mode="export").export()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
