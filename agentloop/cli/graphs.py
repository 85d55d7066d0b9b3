"""``agentloop graphs``: list the graphs a run can use, and draw one with LangGraph's own drawing API."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentloop.cli._common import err, friendly_errors, print_json
from agentloop.errors import AgentloopError

__all__ = ["graphs_app"]

graphs_app = typer.Typer(no_args_is_help=True, help="List the graphs and draw their nodes and edges.")

FORMATS = ("mermaid", "ascii", "png")


class GraphDrawError(AgentloopError):
    """A drawing format cannot be produced here (a missing package, no network for PNG)."""


@graphs_app.command("list")
@friendly_errors
def graphs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Every graph ``agentloop run --graph`` knows, built-in and plugin, with its one-line description."""
    rows = _rows()
    if as_json:
        print_json(rows)
        return
    table = Table(show_header=True, header_style="bold", box=None)
    for column in ("graph", "from", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["source"], row["description"])
    Console().print(table)
    err.print("[dim]also: --graph module:attr or --graph path/to/file.py:attr (docs/custom.md)[/]")


@graphs_app.command("show")
@friendly_errors
def graphs_show(
    name: Annotated[str, typer.Argument(help="A graph name, module:attr or path/to/file.py:attr.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="mermaid (text), ascii (needs grandalf) or png.")
    ] = "mermaid",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="png: the file to write (default: NAME.png).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print nodes, edges and the drawing as JSON.")
    ] = False,
) -> None:
    """Draw a graph's nodes and edges (with its recall and remember nodes, as runs with memory have them)."""
    from agentloop._plugins import reference_label
    from agentloop.graphs.library import graph_spec

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r}: use one of {', '.join(FORMATS)}", param_hint="--format")
    spec = graph_spec(name)
    drawn = spec.compile(memory=True).get_graph()
    out: dict[str, Any] = {
        "name": name,
        "description": spec.description,
        "nodes": list(drawn.nodes),
        "edges": [
            {"source": e.source, "target": e.target, "conditional": e.conditional, "label": e.data}
            for e in drawn.edges
        ],
        "format": fmt,
    }
    if fmt == "png":
        path = output or Path(f"{reference_label(name)}.png")
        path.write_bytes(_png(drawn))
        out["path"] = str(path)
        text = str(path)
    elif fmt == "ascii":
        if importlib.util.find_spec("grandalf") is None:
            raise GraphDrawError(
                "--format ascii needs the grandalf package: pip install grandalf (or 'agentloop[draw]')"
            )
        text = out["drawing"] = drawn.draw_ascii()
    else:
        text = out["drawing"] = drawn.draw_mermaid()
    if as_json:
        print_json(out)
    else:
        print(text)


def _png(drawn: Any) -> bytes:
    """PNG through pyppeteer (a local browser) when installed, else LangGraph's default web renderer."""
    from langchain_core.runnables.graph import MermaidDrawMethod

    local = importlib.util.find_spec("pyppeteer") is not None
    method = MermaidDrawMethod.PYPPETEER if local else MermaidDrawMethod.API
    try:
        return bytes(drawn.draw_mermaid_png(draw_method=method, max_retries=1))
    except Exception as exc:
        how = "pyppeteer could not render it" if local else "LangGraph renders PNG through a web service"
        raise GraphDrawError(
            f"cannot draw PNG here ({how}: {type(exc).__name__}); offline, use --format mermaid (or ascii) "
            "and render the text elsewhere, or pip install pyppeteer for a local browser"
        ) from exc


def _rows() -> list[dict[str, str]]:
    from agentloop.graphs.library import GRAPHS, graph_spec, plugin_graphs

    rows = [{"name": s.name, "source": "built-in", "description": s.description} for s in GRAPHS.values()]
    for name in plugin_graphs():
        try:
            description = graph_spec(name).description
        except AgentloopError as exc:  # one broken plugin is listed as such, the rest still show
            description = f"(does not load: {exc})"
        rows.append({"name": name, "source": "plugin", "description": description})
    return rows
